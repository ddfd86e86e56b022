// Browser test of the dashboard against a server with ACCESS=keys.
//   BASE_URL=http://127.0.0.1:43123 API_KEY=… node tests/dashboard-key.mjs
// Prints one JSON line: {"ok":true,"withoutKey":"error","message":"…","withKey":{"drift":"empty",…},
//   "liveStatus":"connected","sessionKey":true,"localKey":false,"blocked":[]}
// Without a key the panels show the API's refusal; once the key is typed they load, the live feed
// connects (the key in the WebSocket's connection_init), and the key is in sessionStorage only.
import { runBrowserTest } from './browser.mjs';

const PANELS = ['traffic', 'drift', 'accuracy', 'models', 'live'];

await runBrowserTest('dashboard-key', async ({ page, base, out }) => {
  const key = process.env.API_KEY;
  if (!key) throw new Error('set API_KEY');
  const states = () =>
    page.evaluate((names) => Object.fromEntries(names.map((n) => [n, document.querySelector(`[data-testid="panel-${n}"]`)?.dataset.state ?? 'missing'])), PANELS);
  const settled = (names) =>
    page.waitForFunction(
      (ns) => ns.every((n) => {
        const s = document.querySelector(`[data-testid="panel-${n}"]`);
        return s && s.dataset.state && s.dataset.state !== 'loading';
      }),
      names,
      { timeout: 30000 },
    );

  await page.goto(`${base}/dashboard?model=price-blend&window=24h`, { waitUntil: 'load', timeout: 15000 });
  // The model list itself needs a key: the traffic panel shows the refusal.
  await page.waitForFunction(() => document.querySelector('[data-testid="panel-traffic"]')?.dataset.state === 'error', null, { timeout: 30000 });
  out.withoutKey = (await states()).traffic;
  out.message = await page.evaluate(() => document.querySelector('[data-testid="panel-traffic"] .panel-message')?.textContent ?? '');

  await page.fill('[data-testid="api-key"]', key);
  await Promise.all([
    page.waitForNavigation({ waitUntil: 'load', timeout: 15000 }),
    page.dispatchEvent('[data-testid="api-key"]', 'change'),
  ]);
  await settled(PANELS);
  out.withKey = await states();
  await page.waitForFunction(() => /connected/.test(document.querySelector('[data-testid="live-status"]')?.textContent || ''), null, { timeout: 10000 });
  out.liveStatus = 'connected';
  out.sessionKey = await page.evaluate((k) => Object.values(sessionStorage).includes(k), key);
  out.localKey = await page.evaluate((k) => Object.values(localStorage).some((v) => v.includes(k)), key);
  out.inputKept = await page.evaluate(() => document.querySelector('[data-testid="api-key"]').value.length > 0);
  if (Object.values(out.withKey).includes('error')) throw new Error(`panels in error with the key: ${JSON.stringify(out.withKey)}`);
});
