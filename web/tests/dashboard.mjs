// Browser test of the monitoring dashboard.
//   BASE_URL=http://127.0.0.1:43123 [MODEL=gradient-boosting] [WINDOW=24h] SCREENSHOT=/tmp/dashboard.png node tests/dashboard.mjs
// Prints one JSON line: {"ok":true,"panels":{"traffic":"ready",...},"driftRows":[{"feature":"squareFeet","status":"DRIFT"},...],
//   "mae":"13,916 USD","histogramShown":true,"liveRows":1,"blocked":[]}
// Fails (exit 1) if a panel ends in data-state="error", a request left the machine, or the page threw.
import { runBrowserTest, gqlFromNode, TRIGGER_PREDICTION } from './browser.mjs';

const PANELS = ['traffic', 'drift', 'histogram', 'drift-history', 'accuracy', 'price-distribution', 'models', 'live'];

await runBrowserTest('dashboard', async ({ page, base, out }) => {
  const model = process.env.MODEL || 'gradient-boosting';
  const window = process.env.WINDOW || '24h';
  Object.assign(out, { model, window, panels: {}, panelMessages: {}, driftRows: [], mae: null, histogramShown: false, liveRows: 0 });

  const resp = await page.goto(`${base}/dashboard?model=${encodeURIComponent(model)}&window=${encodeURIComponent(window)}`, { waitUntil: 'load', timeout: 15000 });
  if (!resp || !resp.ok()) throw new Error(`GET /dashboard answered ${resp ? resp.status() : 'nothing'}`);

  // Every panel exists and leaves `loading` (the live panel once its WebSocket is connected).
  await page.waitForFunction(
    (names) => names.every((n) => {
      const s = document.querySelector(`[data-testid="panel-${n}"]`);
      return s && s.dataset.state && s.dataset.state !== 'loading';
    }),
    PANELS,
    { timeout: 30000 },
  ).catch(async () => {
    const states = await page.evaluate((names) => Object.fromEntries(names.map((n) => [n, document.querySelector(`[data-testid="panel-${n}"]`)?.dataset.state ?? 'missing'])), PANELS);
    throw new Error(`panels still loading after 30 s: ${JSON.stringify(states)}`);
  });

  const read = () =>
    page.evaluate((names) => {
      const panels = {};
      const messages = {};
      for (const n of names) {
        const s = document.querySelector(`[data-testid="panel-${n}"]`);
        panels[n] = s.dataset.state;
        const m = s.querySelector('.panel-message');
        if (m && !m.hidden && m.textContent) messages[n] = m.textContent;
      }
      const driftRows = [...document.querySelectorAll('[data-testid="drift-row"]')].map((r) => ({ feature: r.dataset.feature, status: r.dataset.status }));
      const mae = document.querySelector('[data-testid="mae"]');
      const text = (id) => document.querySelector(`[data-testid="${id}"]`)?.textContent.trim() ?? null;
      const hist = document.querySelector('[data-testid="panel-histogram"]');
      const histogramShown = !!(hist && hist.querySelector('canvas') && hist.dataset.state !== 'error' && hist.getBoundingClientRect().height > 0);
      return { panels, messages, driftRows, mae: mae ? mae.textContent.trim() : null, coverage: text('coverage'), estimatedMae: text('estimated-mae'), histogramShown, histogramFeature: hist ? hist.dataset.feature ?? null : null };
    }, PANELS);

  let r = await read();
  Object.assign(out, { panels: r.panels, panelMessages: r.messages, driftRows: r.driftRows, mae: r.mae, coverage: r.coverage, estimatedMae: r.estimatedMae, histogramShown: r.histogramShown, histogramFeature: r.histogramFeature });
  // As first rendered (the final read below comes after a prediction made by this script).
  Object.assign(out, { initialPanels: r.panels, initialMessages: r.messages });
  // Problems are collected and reported together at the end (the live feed is still checked).
  const problems = [];
  if (r.driftRows.length && r.histogramFeature !== r.driftRows[0].feature) {
    problems.push(`histogram shows ${r.histogramFeature}, not the worst feature ${r.driftRows[0].feature}`);
  }

  // Clicking another drift row switches the histogram.
  if (r.driftRows.length > 1) {
    const second = r.driftRows[1].feature;
    await page.click(`[data-testid="drift-row"][data-feature="${second}"]`);
    await page.waitForFunction((f) => document.querySelector('[data-testid="panel-histogram"]').dataset.feature === f, second, { timeout: 5000 });
    out.histogramClick = true;
    await page.click(`[data-testid="drift-row"][data-feature="${r.driftRows[0].feature}"]`);
  }

  // One prediction from node; the live feed (predictionLogged over /ws) shows it within 10 s.
  const before = await page.locator('[data-testid="live-row"]').count();
  await page.waitForFunction(() => /connected/.test(document.querySelector('[data-testid="live-status"]')?.textContent || ''), null, { timeout: 10000 });
  await page.waitForTimeout(300);
  const trigger = await gqlFromNode(base, TRIGGER_PREDICTION);
  out.triggeredId = trigger.predictPrice.id;
  try {
    await page.waitForSelector(`[data-testid="live-row"][data-id="${trigger.predictPrice.id}"]`, { timeout: 10000 });
  } catch {
    problems.push(`the live feed showed no row for prediction ${trigger.predictPrice.id} within 10 s (rows before: ${before})`);
  }
  out.liveRows = await page.locator('[data-testid="live-row"]').count();

  r = await read();
  out.panels = r.panels;
  out.panelMessages = r.messages;
  const errors = Object.entries(r.panels).filter(([, s]) => s === 'error');
  if (errors.length) problems.unshift(`panels in error: ${errors.map(([n]) => `${n}: ${r.messages[n] || ''}`).join(' | ')}`);
  await page.evaluate(() => window.scrollTo(0, 0));
  if (problems.length) throw new Error(problems.join('; '));
  return out;
});
