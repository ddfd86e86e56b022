// Browser test of the REST docs with every non-loopback request blocked.
//   BASE_URL=http://127.0.0.1:43123 node tests/docs.mjs
// Prints one JSON line: {"ok":true,"operations":14,"tryItOut":{"status":"200","previsao":…},"redoc":"…","blocked":[]}
// Swagger UI at /docs lists the document's operations and "Try it out" on POST /prever_precos/
// prices a house through the real API; ReDoc at /redoc renders the same document; the landing
// page links both.
import { runBrowserTest } from './browser.mjs';

await runBrowserTest('docs', async ({ page, base, out }) => {
  await page.goto(`${base}/docs`, { waitUntil: 'load', timeout: 15000 });
  await page.waitForSelector('.opblock', { timeout: 30000 });
  out.operations = await page.locator('.opblock').count();
  if (out.operations < 14) throw new Error(`Swagger UI shows ${out.operations} operations`);

  const op = page.locator('#operations-seed-prever_precos');
  await op.locator('.opblock-summary').click();
  await op.locator('button.try-out__btn').click();
  await op.locator('textarea.body-param__text').fill('{"square_feet": 1500, "num_bedrooms": 3, "num_bathrooms": 2}');
  await op.locator('button.execute').click();
  const status = op.locator('.live-responses-table tr.response .response-col_status').first();
  await status.waitFor({ timeout: 30000 });
  const body = await op.locator('.live-responses-table .response-col_description pre').first().textContent();
  out.tryItOut = { status: (await status.textContent()).trim(), body: body.trim() };
  if (out.tryItOut.status !== '200' || !/"previsao"/.test(out.tryItOut.body)) {
    throw new Error(`Try it out answered ${JSON.stringify(out.tryItOut)}`);
  }

  await page.goto(`${base}/redoc`, { waitUntil: 'load', timeout: 15000 });
  await page.waitForSelector('h1', { timeout: 30000 });
  out.redoc = (await page.locator('h1').first().textContent()).trim();
  if (!out.redoc.includes('house-price-api')) throw new Error(`ReDoc title: ${out.redoc}`);
  await page.waitForFunction(() => document.body.innerText.includes('/v2/models/{name}/infer'), null, { timeout: 30000 });

  await page.goto(`${base}/`, { waitUntil: 'load', timeout: 15000 });
  out.landingLinks = await page.evaluate(() => [...document.querySelectorAll('a')].map((a) => a.getAttribute('href')));
  for (const link of ['/graphql', '/docs', '/redoc', '/dashboard']) {
    if (!out.landingLinks.includes(link)) throw new Error(`the landing page does not link ${link}`);
  }
});
