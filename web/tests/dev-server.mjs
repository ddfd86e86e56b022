// Development server: serves web/dist like the Rust server will (/, /dashboard, GET /graphql
// for browsers, /assets/*) and proxies the API (POST /graphql, GET /graphql for non-HTML,
// /ws WebSocket upgrades, /health/*, /metrics) to a running house-price-api.
//   UPSTREAM=http://127.0.0.1:8123 PORT=8124 node tests/dev-server.mjs
import http from 'node:http';
import net from 'node:net';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const upstream = new URL(process.env.UPSTREAM || 'http://127.0.0.1:8123');
const port = Number(process.env.PORT || 8124);
const host = process.env.HOST || '127.0.0.1';
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.txt': 'text/plain; charset=utf-8' };

async function sendFile(res, rel) {
  const file = path.join(dist, rel);
  if (!file.startsWith(dist + path.sep)) return res.writeHead(404).end();
  try {
    const body = await readFile(file);
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'cache-control': rel.startsWith('assets/') ? 'public, max-age=31536000, immutable' : 'no-cache' });
    res.end(body);
  } catch {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
  }
}

function proxy(req, res) {
  const up = http.request(
    { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
    (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    },
  );
  up.on('error', (e) => res.writeHead(502, { 'content-type': 'text/plain' }).end(`upstream error: ${e.message}`));
  req.pipe(up);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const wantsHtml = req.method === 'GET' && /text\/html/.test(req.headers.accept || '');
  if (url.pathname === '/' && req.method === 'GET') return sendFile(res, 'index.html');
  if (url.pathname === '/dashboard' && req.method === 'GET') return sendFile(res, 'dashboard.html');
  if (url.pathname === '/graphql' && wantsHtml) return sendFile(res, 'graphiql.html');
  if (url.pathname.startsWith('/assets/') && req.method === 'GET') return sendFile(res, url.pathname.slice(1));
  return proxy(req, res);
});

server.on('upgrade', (req, socket, head) => {
  const up = net.connect(Number(upstream.port), upstream.hostname, () => {
    const lines = [`${req.method} ${req.url} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const k = req.rawHeaders[i];
      lines.push(`${k}: ${k.toLowerCase() === 'host' ? upstream.host : req.rawHeaders[i + 1]}`);
    }
    up.write(lines.join('\r\n') + '\r\n\r\n');
    if (head && head.length) up.write(head);
    up.pipe(socket);
    socket.pipe(up);
  });
  up.on('error', () => socket.destroy());
  socket.on('error', () => up.destroy());
});

server.listen(port, host, () => console.log(`dev server on http://${host}:${port} → ${upstream.origin}`));
