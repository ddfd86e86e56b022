// GraphQL-over-HTTP conformance audit of POST/GET /graphql with graphql-http's serverAudits.
//   BASE_URL=http://127.0.0.1:43123 node tests/audit.mjs
// Prints one JSON line: {"ok":bool,"counts":{"MUST":{"ok":n,"warn":n,"error":n},"SHOULD":{...},"MAY":{...}},
//   "failures":[{"id","name","status","reason"}]}
// Exits 1 if any MUST or SHOULD audit is not "ok"; MAY audits are reported (in failures too) but never fail.
import { serverAudits } from 'graphql-http';
import { baseUrl } from './browser.mjs';

const result = { ok: false, counts: {}, failures: [] };
try {
  const url = `${baseUrl()}/graphql`;
  const audits = serverAudits({ url, fetchFn: fetch });
  const levels = ['MUST', 'SHOULD', 'MAY'];
  for (const l of levels) result.counts[l] = { ok: 0, warn: 0, error: 0 };
  let failing = 0;
  for (const audit of audits) {
    const level = levels.find((l) => audit.name.startsWith(l)) || 'MAY';
    let r;
    try {
      r = await Promise.race([audit.fn(), new Promise((_, rej) => setTimeout(() => rej(new Error('audit timed out after 10 s')), 10000))]);
    } catch (e) {
      r = { status: 'error', reason: e && e.message ? e.message : String(e) };
    }
    const status = r.status === 'ok' || r.status === 'warn' ? r.status : 'error';
    result.counts[level][status] += 1;
    if (status !== 'ok') {
      result.failures.push({ id: audit.id, name: audit.name, status, reason: r.reason || '' });
      if (level !== 'MAY') failing += 1;
    }
  }
  result.total = audits.length;
  result.ok = failing === 0;
  if (!result.ok) result.error = `${failing} MUST/SHOULD audit(s) did not pass`;
} catch (e) {
  result.ok = false;
  result.error = e && e.message ? e.message : String(e);
}
if (!result.ok) process.stderr.write(`audit: FAILED: ${result.error}\n${result.failures.map((f) => `  ${f.status} ${f.id} ${f.name}: ${f.reason}`).join('\n')}\n`);
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(result.ok ? 0 : 1);
