// Builds the web front end into web/dist (see README section in package.json scripts).
//   node build.mjs
// Output: dist/assets/<name>-<hash>.{js,css}, dist/{index,graphiql,dashboard,docs,redoc}.html, dist/manifest.json
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { readFile, writeFile, rm, mkdir, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(root, 'src');
const dist = path.join(root, 'dist');
const assets = path.join(dist, 'assets');

const entries = { graphiql: 'graphiql.jsx', dashboard: 'dashboard.js', docs: 'docs.js', redoc: 'redoc.js' };
const pages = ['index', 'graphiql', 'dashboard', 'docs', 'redoc'];

await rm(dist, { recursive: true, force: true });
await mkdir(assets, { recursive: true });

const result = await build({
  absWorkingDir: root,
  entryPoints: Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, path.join('src', v)])),
  bundle: true,
  minify: true,
  format: 'iife',
  platform: 'browser',
  target: 'es2020',
  jsx: 'automatic',
  define: { 'process.env.NODE_ENV': '"production"' },
  outdir: assets,
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  loader: { '.woff': 'file', '.woff2': 'file', '.ttf': 'file', '.svg': 'file', '.png': 'file' },
  legalComments: 'linked',
  charset: 'utf8',
  metafile: true,
  logLevel: 'warning',
});

// Map each entry point to its JS and CSS outputs.
const assetUrls = {};
for (const [out, meta] of Object.entries(result.metafile.outputs)) {
  if (!meta.entryPoint) continue;
  const name = Object.keys(entries).find((k) => meta.entryPoint === `src/${entries[k]}`);
  if (!name) continue;
  assetUrls[`${name}.js`] = '/assets/' + path.basename(out);
  if (meta.cssBundle) assetUrls[`${name}.css`] = '/assets/' + path.basename(meta.cssBundle);
}

// Prebuilt browser bundles that esbuild must not re-bundle (their UMD wrappers would take the
// CommonJS branch), copied with a content hash like the rest.
// `offline` replaces URLs a bundle would fetch at run time (ReDoc's "API docs by Redocly" logo
// comes from its CDN) with an empty inline image: the pages never leave the machine.
const copies = { 'redocbundle.js': 'node_modules/redoc/bundles/redoc.standalone.js' };
const offline = { 'https://cdn.redoc.ly/redoc/logo-mini.svg': 'data:image/svg+xml,%3Csvg%20xmlns%3D%22http%3A%2F%2Fwww.w3.org%2F2000%2Fsvg%22%2F%3E' };
for (const [key, file] of Object.entries(copies)) {
  let text = await readFile(path.join(root, file), 'utf8');
  for (const [url, local] of Object.entries(offline)) text = text.replaceAll(url, local);
  if (/https:\/\/cdn\./.test(text)) throw new Error(`${file} still references a CDN`);
  const buf = Buffer.from(text, 'utf8');
  const hash = createHash('sha256').update(buf).digest('hex').slice(0, 8).toUpperCase();
  const name = `${key.replace(/\.js$/, '')}-${hash}.js`;
  await writeFile(path.join(assets, name), buf);
  assetUrls[key] = '/assets/' + name;
}

// Render the HTML templates: {{name.js}} / {{name.css}} placeholders.
for (const page of pages) {
  const tpl = await readFile(path.join(src, `${page}.html`), 'utf8');
  const html = tpl.replace(/\{\{\s*([a-z]+\.(?:js|css))\s*\}\}/g, (m, key) => {
    if (!assetUrls[key]) throw new Error(`${page}.html: unknown asset placeholder ${m}`);
    return assetUrls[key];
  });
  if (/(?:src|href)\s*=\s*["']?(?:https?:)?\/\//i.test(html)) {
    throw new Error(`${page}.html references an external URL`);
  }
  await writeFile(path.join(dist, `${page}.html`), html);
}

// manifest.json: every file in dist (except the manifest itself), sorted, with sha256 and size.
async function walk(dir) {
  const out = [];
  for (const ent of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = path.join(dir, ent.name);
    if (ent.isDirectory()) out.push(...(await walk(p)));
    else out.push(p);
  }
  return out;
}
const files = [];
for (const p of await walk(dist)) {
  const rel = path.relative(dist, p).split(path.sep).join('/');
  if (rel === 'manifest.json') continue;
  const buf = await readFile(p);
  files.push({ path: rel, size: (await stat(p)).size, sha256: createHash('sha256').update(buf).digest('hex') });
}
files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
const manifest = { assets: assetUrls, files };
await writeFile(path.join(dist, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');

for (const f of files) console.log(`${String(f.size).padStart(9)}  ${f.path}`);
