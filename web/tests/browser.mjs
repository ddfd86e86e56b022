// Shared helpers of the browser tests: launch Debian's Chromium through playwright-core, block
// every request that leaves the machine, collect page errors, print the one-line JSON result.
//
// Environment: BASE_URL (required, e.g. http://127.0.0.1:43123), SCREENSHOT (optional PNG path),
// CHROMIUM (optional, default /usr/bin/chromium), HEADFUL unset.
import { chromium } from 'playwright-core';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

export function baseUrl() {
  const base = process.env.BASE_URL;
  if (!base) throw new Error('BASE_URL is not set (e.g. BASE_URL=http://127.0.0.1:43123)');
  const u = new URL(base);
  if (!LOCAL_HOSTS.has(u.hostname)) throw new Error(`BASE_URL must point at 127.0.0.1 or localhost, not ${u.hostname}`);
  return base.replace(/\/+$/, '');
}

export function isLocal(url) {
  try {
    const u = new URL(url);
    if (u.protocol === 'data:' || u.protocol === 'blob:' || u.protocol === 'about:') return true;
    return LOCAL_HOSTS.has(u.hostname);
  } catch {
    return false;
  }
}

/**
 * Opens a browser with a fresh profile. Returns { browser, context, page, blocked, pageErrors, close }.
 * `blocked` collects every request to a non-local host (all aborted); `pageErrors` every uncaught
 * page error. WebSocket requests are checked too (page.on('websocket')).
 */
export async function openBrowser({ viewport = { width: 1440, height: 1000 } } = {}) {
  const userDataDir = await mkdtemp(path.join(tmpdir(), 'hpa-web-test-'));
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  const context = await chromium.launchPersistentContext(userDataDir, {
    headless: true,
    executablePath,
    args: CHROMIUM_ARGS,
    viewport,
    serviceWorkers: 'block',
  });
  const blocked = [];
  const pageErrors = [];
  const consoleErrors = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (isLocal(url)) return route.continue();
    blocked.push(url);
    return route.abort('blockedbyclient');
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (err) => pageErrors.push(String(err && err.stack ? err.stack.split('\n')[0] : err)));
  page.on('console', (msg) => {
    if (msg.type() === 'error') consoleErrors.push(msg.text());
  });
  page.on('websocket', (ws) => {
    if (!isLocal(ws.url())) blocked.push(ws.url());
  });
  page.on('request', (req) => {
    // Belt and braces: route() already aborts these; record anything that slipped past it.
    if (!isLocal(req.url()) && !blocked.includes(req.url())) blocked.push(req.url());
  });
  async function close() {
    await context.close().catch(() => {});
    await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  }
  return { context, page, blocked, pageErrors, consoleErrors, close };
}

export async function screenshot(page) {
  const file = process.env.SCREENSHOT;
  if (!file || !page) return null;
  try {
    await page.screenshot({ path: file, fullPage: true, timeout: 10000 });
    return file;
  } catch (e) {
    process.stderr.write(`screenshot failed: ${e.message}\n`);
    return null;
  }
}

/** POSTs one GraphQL operation from node (not the browser). */
export async function gqlFromNode(base, query, variables = {}) {
  const res = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json, application/json',
      ...(process.env.API_KEY ? { 'x-api-key': process.env.API_KEY } : {}),
    },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  if (body.errors && body.errors.length) throw new Error(body.errors.map((e) => e.message).join('; '));
  return body.data;
}

export const TRIGGER_PREDICTION = '{ predictPrice(input: {squareFeet: 1500, bedrooms: 3, bathrooms: 2}) { id price } }';

/**
 * Runs `body(ctx)` with a browser, a hard deadline and the common result rules; prints exactly
 * one JSON object as the last stdout line and exits 0 (ok) or 1.
 * body returns an object merged into the result; throw to fail.
 */
export async function runBrowserTest(name, body, { deadlineMs = 55000 } = {}) {
  const result = { ok: false };
  let b = null;
  let timer;
  try {
    const base = baseUrl();
    b = await openBrowser();
    const deadline = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${name}: timed out after ${deadlineMs} ms`)), deadlineMs);
    });
    // `out` is the result object itself, so fields a test sets before failing are reported too.
    const returned = await Promise.race([body({ ...b, base, out: result }), deadline]);
    if (returned && returned !== result) Object.assign(result, returned);
    if (b.blocked.length) throw new Error(`requests to non-local hosts were attempted: ${b.blocked.join(', ')}`);
    if (b.pageErrors.length) throw new Error(`uncaught page errors: ${b.pageErrors.join(' | ')}`);
    result.ok = true;
  } catch (e) {
    result.ok = false;
    result.error = e && e.message ? e.message : String(e);
  } finally {
    clearTimeout(timer);
    if (b) {
      result.blocked = [...new Set(b.blocked)];
      result.pageErrors = b.pageErrors;
      if (b.consoleErrors.length) result.consoleErrors = b.consoleErrors.slice(0, 20);
      result.screenshot = await screenshot(b.page);
      await b.close();
    } else {
      result.blocked = [];
    }
  }
  if (!result.ok) process.stderr.write(`${name}: FAILED: ${result.error}\n`);
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(result.ok ? 0 : 1);
}
