// Browser test of the GraphiQL page.
//   BASE_URL=http://127.0.0.1:43123 [API_KEY=…] SCREENSHOT=/tmp/graphiql.png node tests/graphiql.mjs
// With API_KEY (a server with ACCESS=keys), the key is put in the tab's session storage as a user's
// earlier visit would have; the run reports whether the WebSocket's connection_init carried it
// ("initHadKey") and whether it ever reached localStorage ("localHasKey").
// Prints one JSON line: {"ok":true,"docsHasPredictPrice":true,"price":180774.28,"subscriptionEvent":true,"blocked":[]}
import { runBrowserTest, gqlFromNode, TRIGGER_PREDICTION } from './browser.mjs';

const QUERY = '{ predictPrice(input: {squareFeet: 1500, bedrooms: 3, bathrooms: 2}) { price } }';

// Sets the active tab's query through the CodeMirror 5 instance GraphiQL 4 attaches to its editor.
async function setQuery(page, text) {
  await page.evaluate((t) => {
    const cm = document.querySelector('.graphiql-query-editor .CodeMirror');
    if (!cm || !cm.CodeMirror) throw new Error('query editor (CodeMirror) not found');
    cm.CodeMirror.setValue(t);
  }, text);
  // GraphiQL derives the operation name (and the tab title) from the editor content with a
  // debounce; executing before that would send the previous tab's operationName.
  const name = (/^\s*(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)/.exec(text) || [])[1] || '<untitled>';
  await page
    .waitForFunction((n) => (document.querySelector('.graphiql-tab-active .graphiql-tab-button')?.textContent || '').trim() === n, name, { timeout: 3000 })
    .catch(() => page.waitForTimeout(1000));
}

const responseText = (page) =>
  page.evaluate(() => {
    const cm = document.querySelector('.result-window .CodeMirror');
    return cm && cm.CodeMirror ? cm.CodeMirror.getValue() : '';
  });

await runBrowserTest('graphiql', async ({ page, base, out }) => {
  Object.assign(out, { docsHasPredictPrice: false, price: null, subscriptionEvent: false });
  const sockets = [];
  page.on('websocket', (ws) => {
    const s = { url: ws.url(), sent: [], received: [] };
    sockets.push(s);
    ws.on('framesent', (f) => s.sent.push(String(f.payload)));
    ws.on('framereceived', (f) => s.received.push(String(f.payload)));
  });

  const key = process.env.API_KEY || '';
  if (key) await page.addInitScript((k) => sessionStorage.setItem('house-price-api:api-key', k), key);
  const resp = await page.goto(`${base}/graphql`, { waitUntil: 'load', timeout: 15000 });
  if (!resp || !resp.ok()) throw new Error(`GET /graphql answered ${resp ? resp.status() : 'nothing'}`);
  const ctype = resp.headers()['content-type'] || '';
  if (!ctype.includes('text/html')) throw new Error(`GET /graphql (Accept text/html) answered ${ctype}, not HTML`);
  out.title = await page.title();
  await page.waitForSelector('.graphiql-query-editor .CodeMirror', { timeout: 15000 });
  out.tabs = await page.$$eval('.graphiql-tab', (ts) => ts.map((t) => (t.querySelector('.graphiql-tab-button') || t).textContent.trim()));

  // Docs explorer → Query → predictPrice. The schema arrives by introspection first.
  await page.click('.graphiql-sidebar button[aria-label="Show Documentation Explorer"]', { timeout: 5000 });
  const queryLink = page.locator('.graphiql-doc-explorer a.graphiql-doc-explorer-type-name', { hasText: /^Query$/ }).first();
  await queryLink.waitFor({ timeout: 15000 });
  await queryLink.click();
  await page.waitForSelector('.graphiql-doc-explorer-field-name', { timeout: 10000 });
  const fields = await page.$$eval('.graphiql-doc-explorer-field-name', (xs) => xs.map((x) => x.textContent.trim()));
  out.docsHasPredictPrice = fields.includes('predictPrice');
  if (!out.docsHasPredictPrice) throw new Error(`docs explorer: Query fields lack predictPrice (${fields.join(', ')})`);

  // A query in the active tab.
  await setQuery(page, QUERY);
  await page.click('.graphiql-execute-button');
  await page.waitForFunction(
    () => {
      const cm = document.querySelector('.result-window .CodeMirror');
      return cm && cm.CodeMirror && /"(price|errors)"\s*:/.test(cm.CodeMirror.getValue());
    },
    null,
    { timeout: 15000 },
  );
  const text = await responseText(page);
  const m = /"price"\s*:\s*(-?[0-9.eE+-]+)/.exec(text);
  if (!m) throw new Error(`query result has no "price": ${text.slice(0, 300)}`);
  out.price = Number(m[1]);

  // The subscription tab (default tab "Live"); fall back to typing it in the active tab.
  const liveTab = page.locator('.graphiql-tab .graphiql-tab-button', { hasText: 'Live' }).first();
  if (await liveTab.count()) {
    await liveTab.click();
    out.subscriptionTab = 'Live';
  } else {
    await setQuery(page, 'subscription Live { predictionLogged { id createdAt status price model { name version } } }');
    out.subscriptionTab = 'typed';
  }
  await page.waitForFunction(
    () => /subscription\s+Live/.test(document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.getValue()),
    null,
    { timeout: 5000 },
  );
  await page.waitForTimeout(300);
  await page.click('.graphiql-execute-button');
  // Wait until graphql-ws has sent `subscribe` on an acknowledged connection.
  const t0 = Date.now();
  while (Date.now() - t0 < 10000) {
    const s = sockets.find((x) => x.received.some((p) => p.includes('connection_ack')) && x.sent.some((p) => p.includes('"subscribe"')));
    if (s) break;
    await page.waitForTimeout(100);
  }
  out.wsUrl = sockets.length ? sockets[0].url : null;
  if (!sockets.some((x) => x.sent.some((p) => p.includes('"subscribe"')))) throw new Error('GraphiQL did not open a graphql-ws subscription on /ws');
  await page.waitForTimeout(300);
  const trigger = await gqlFromNode(base, TRIGGER_PREDICTION);
  out.triggeredId = trigger.predictPrice.id;
  try {
    await page.waitForFunction(
      () => /"predictionLogged"\s*:/.test(document.querySelector('.result-window .CodeMirror').CodeMirror.getValue()),
      null,
      { timeout: 10000 },
    );
    out.subscriptionEvent = true;
  } catch {
    throw new Error(`no predictionLogged event shown within 10 s; result pane: ${(await responseText(page)).slice(0, 300)}`);
  }
  // Stop the subscription (the execute button turns into a stop button while it runs).
  await page.click('.graphiql-execute-button').catch(() => {});
  if (key) {
    out.initHadKey = sockets.some((x) => x.sent.some((p) => p.includes('connection_init') && p.includes(key)));
    out.localKeysWithKey = await page.evaluate((k) => Object.entries(localStorage).filter(([, v]) => v.includes(k)).map(([n]) => n), key);
    out.localHasKey = out.localKeysWithKey.length > 0;
  }
  return out;
});
