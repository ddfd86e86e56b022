// Monitoring dashboard for house-price-api. Talks only to the public GraphQL API:
// POST /graphql for queries, graphql-ws at /ws for the live feed and drift alerts.
import Chart from 'chart.js/auto';
import { createClient } from 'graphql-ws';
import './dashboard.css';

Chart.defaults.animation = false;
Chart.defaults.responsive = true;
Chart.defaults.maintainAspectRatio = false;
Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';

// Consistent colours everywhere (also in dashboard.css).
const C = {
  OK: '#1a7f37',
  WARN: '#d4a72c',
  DRIFT: '#cf222e',
  REJECTED: '#d4a72c',
  FAILED: '#cf222e',
  reference: '#8c959f',
  live: '#0969da',
  p50: '#0969da',
  p99: '#8250df',
  mae: '#0969da',
  rmse: '#8250df',
  bias: '#bf5b00',
  share: '#1a7f37',
  estimate: '#57606a',
  coverage: '#1b7c83',
};
const SERIES = ['#0969da', '#8250df', '#bf5b00', '#1b7c83', '#bf3989', '#57606a'];
const STATUS_RANK = { DRIFT: 2, WARN: 1, OK: 0 };

const WINDOWS = {
  '1h': { ms: 3600e3, label: 'last 1 hour', traffic: 'HOUR', perf: 'HOUR' },
  '24h': { ms: 24 * 3600e3, label: 'last 24 hours', traffic: 'HOUR', perf: 'HOUR' },
  '7d': { ms: 7 * 24 * 3600e3, label: 'last 7 days', traffic: 'HOUR', perf: 'DAY' },
  '30d': { ms: 30 * 24 * 3600e3, label: 'last 30 days', traffic: 'DAY', perf: 'DAY' },
};

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// The API key (ACCESS=keys): kept in sessionStorage only, so it leaves with the tab.
const KEY_STORAGE = 'house-price-api:api-key';
function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || '';
}

async function gql(query, variables = {}) {
  const headers = {
    'content-type': 'application/json',
    accept: 'application/graphql-response+json, application/json',
  };
  if (apiKey()) headers['x-api-key'] = apiKey();
  const res = await fetch('/graphql', {
    method: 'POST',
    headers,
    body: JSON.stringify({ query, variables }),
  });
  let body;
  try {
    body = await res.json();
  } catch {
    throw new Error(`HTTP ${res.status} ${res.statusText}`.trim());
  }
  if (body && Array.isArray(body.errors) && body.errors.length) {
    throw new Error(body.errors.map((e) => e.message).join('; '));
  }
  if (!res.ok) throw new Error(`HTTP ${res.status} ${res.statusText}`.trim());
  if (!body || !body.data) throw new Error('empty response');
  return body.data;
}

const pad = (n) => String(n).padStart(2, '0');
function fmtDay(iso) {
  const d = new Date(iso);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}
function fmtHour(iso) {
  const d = new Date(iso);
  return `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:00`;
}
function fmtTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? '');
  return `${fmtDay(iso)} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}
const fmtBucket = (iso, bucket) => (bucket === 'HOUR' ? fmtHour(iso) : fmtDay(iso));
const usd = (x) => (x === null || x === undefined ? '—' : `${Math.round(x).toLocaleString('en-US')} USD`);
const num = (x, d = 3) => (x === null || x === undefined || Number.isNaN(x) ? '—' : Number(x).toFixed(d));
const pct = (x) => (x === null || x === undefined ? '—' : `${(x * 100).toFixed(1)} %`);
const badge = (status) => el('span', { class: `badge badge-${String(status || '').toLowerCase()}`, text: status ?? '—' });

// ---------------------------------------------------------------- panels

const charts = new Map();
function chart(canvas, config) {
  const key = canvas.id;
  if (charts.has(key)) charts.get(key).destroy();
  const c = new Chart(canvas, config);
  charts.set(key, c);
  return c;
}

const panels = {};
function panel(name, title, { wide = false } = {}) {
  const msg = el('p', { class: 'panel-message', role: 'status', hidden: true });
  const body = el('div', { class: 'panel-body' });
  const caption = el('p', { class: 'panel-caption' });
  const section = el(
    'section',
    { class: `panel${wide ? ' wide' : ''}`, 'data-testid': `panel-${name}`, 'data-state': 'loading', 'aria-busy': 'true' },
    el('h2', { text: title }),
    caption,
    msg,
    body,
  );
  const p = {
    section,
    body,
    caption,
    setTitle(t) {
      section.querySelector('h2').textContent = t;
    },
    loading() {
      section.dataset.state = 'loading';
      section.setAttribute('aria-busy', 'true');
      msg.hidden = false;
      msg.className = 'panel-message';
      msg.textContent = 'Loading…';
    },
    set(state, message) {
      section.dataset.state = state;
      section.removeAttribute('aria-busy');
      msg.hidden = !message;
      msg.className = `panel-message ${state}`;
      msg.textContent = message || '';
    },
    fail(err) {
      p.set('error', `Could not load: ${err && err.message ? err.message : err}`);
    },
  };
  panels[name] = p;
  document.getElementById('panels').append(section);
  return p;
}

function canvasBox(id, cls = 'chart') {
  return el('div', { class: cls }, el('canvas', { id, role: 'img', 'aria-label': id }));
}

// ---------------------------------------------------------------- state

const params = new URLSearchParams(window.location.search);
const state = {
  model: params.get('model') || '',
  window: WINDOWS[params.get('window')] ? params.get('window') : '24h',
  from: null,
  to: null,
  drift: null,
  selectedFeature: null,
  generation: 0,
};

const modelSelect = document.getElementById('model');
const windowSelect = document.getElementById('window');
const rangeText = document.getElementById('range');
windowSelect.value = state.window;

function syncUrl() {
  const p = new URLSearchParams(window.location.search);
  p.set('model', state.model);
  p.set('window', state.window);
  window.history.replaceState(null, '', `${window.location.pathname}?${p}`);
}

// ---------------------------------------------------------------- traffic

const Q_TRAFFIC = `query Traffic($model: String, $from: DateTime, $to: DateTime, $bucket: Bucket!) {
  traffic(model: $model, from: $from, to: $to, bucket: $bucket) {
    start requests ok rejected failed errors { code count } latencyP50Us latencyP99Us
  }
}`;

async function loadTraffic(gen) {
  const p = panels.traffic;
  p.loading();
  const bucket = WINDOWS[state.window].traffic;
  try {
    const { traffic } = await gql(Q_TRAFFIC, { model: state.model || null, from: state.from, to: state.to, bucket });
    if (gen !== state.generation) return;
    renderTraffic(traffic, bucket);
  } catch (e) {
    if (gen === state.generation) {
      p.body.replaceChildren();
      p.fail(e);
    }
  }
}

function renderTraffic(buckets, bucket) {
  const p = panels.traffic;
  const total = buckets.reduce((s, b) => s + b.requests, 0);
  p.caption.textContent = `Requests per ${bucket === 'HOUR' ? 'hour' : 'day'} (UTC), ${total.toLocaleString('en-US')} in total.`;
  if (!total) {
    p.body.replaceChildren();
    p.set('empty', 'No predictions in this window');
    return;
  }
  const labels = buckets.map((b) => fmtBucket(b.start, bucket));
  const maxP99 = Math.max(0, ...buckets.map((b) => b.latencyP99Us ?? 0));
  const useMs = maxP99 >= 10000;
  const unit = useMs ? 'ms' : 'µs';
  const conv = (v) => (v === null || v === undefined ? null : useMs ? v / 1000 : v);

  const codes = new Map();
  for (const b of buckets) for (const e of b.errors || []) codes.set(e.code, (codes.get(e.code) || 0) + e.count);
  const sums = buckets.reduce(
    (s, b) => ({ ok: s.ok + b.ok, rejected: s.rejected + b.rejected, failed: s.failed + b.failed }),
    { ok: 0, rejected: 0, failed: 0 },
  );
  const errTable = el(
    'table',
    { class: 'small', 'data-testid': 'traffic-errors' },
    el('caption', { text: 'Rejected / failed requests by error code' }),
    el('thead', {}, el('tr', {}, el('th', { text: 'Error code' }), el('th', { class: 'num', text: 'Requests' }))),
    el(
      'tbody',
      {},
      codes.size
        ? [...codes.entries()]
            .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
            .map(([code, n]) => el('tr', {}, el('td', {}, el('code', { text: code })), el('td', { class: 'num', text: n.toLocaleString('en-US') })))
        : el('tr', {}, el('td', { colspan: 2, class: 'muted', text: 'No errors in this window' })),
    ),
  );
  const totals = el(
    'p',
    { class: 'totals' },
    el('span', { class: 'dot ok' }), `OK ${sums.ok.toLocaleString('en-US')} `,
    el('span', { class: 'dot warn' }), `Rejected ${sums.rejected.toLocaleString('en-US')} `,
    el('span', { class: 'dot drift' }), `Failed ${sums.failed.toLocaleString('en-US')}`,
  );
  p.body.replaceChildren(
    el('h3', { text: 'Requests (count)' }),
    canvasBox('chart-traffic'),
    totals,
    el('h3', { text: `Latency p50 / p99 (${unit})` }),
    canvasBox('chart-latency'),
    errTable,
  );
  chart(p.body.querySelector('#chart-traffic'), {
    type: 'bar',
    data: {
      labels,
      datasets: [
        { label: 'OK', data: buckets.map((b) => b.ok), backgroundColor: C.OK, stack: 'r' },
        { label: 'Rejected', data: buckets.map((b) => b.rejected), backgroundColor: C.REJECTED, stack: 'r' },
        { label: 'Failed', data: buckets.map((b) => b.failed), backgroundColor: C.FAILED, stack: 'r' },
      ],
    },
    options: {
      scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, title: { display: true, text: 'requests' } } },
      plugins: {
        tooltip: {
          callbacks: {
            afterBody(items) {
              const b = buckets[items[0].dataIndex];
              return (b.errors || []).map((e) => `${e.code}: ${e.count}`);
            },
          },
        },
      },
    },
  });
  chart(p.body.querySelector('#chart-latency'), {
    type: 'line',
    data: {
      labels,
      datasets: [
        { label: `p50 (${unit})`, data: buckets.map((b) => conv(b.latencyP50Us)), borderColor: C.p50, backgroundColor: C.p50, spanGaps: true },
        { label: `p99 (${unit})`, data: buckets.map((b) => conv(b.latencyP99Us)), borderColor: C.p99, backgroundColor: C.p99, spanGaps: true },
      ],
    },
    options: { scales: { y: { beginAtZero: true, title: { display: true, text: unit } } } },
  });
  p.set('ready');
}

// ---------------------------------------------------------------- drift (+ histogram, price distribution)

const FEATURE_FIELDS = `feature kind referenceSize sampleSize warnings psi jsDistance ksStatistic wassersteinNormalized status
  bins { label referenceShare liveShare }`;
const Q_DRIFT = `query Drift($model: String!, $from: DateTime, $to: DateTime) {
  drift(model: $model, from: $from, to: $to) {
    modelName modelVersion from to predictions status
    thresholds { psiWarn psiDrift wassersteinWarn wassersteinDrift minSample }
    features { ${FEATURE_FIELDS} }
    prediction { ${FEATURE_FIELDS} }
  }
}`;

function sortDrift(features) {
  return [...features].sort(
    (a, b) =>
      (STATUS_RANK[b.status] ?? -1) - (STATUS_RANK[a.status] ?? -1) ||
      (b.psi ?? -Infinity) - (a.psi ?? -Infinity) ||
      (a.feature < b.feature ? -1 : a.feature > b.feature ? 1 : 0),
  );
}

async function loadDrift(gen) {
  for (const n of ['drift', 'histogram', 'price-distribution']) panels[n].loading();
  try {
    const { drift } = await gql(Q_DRIFT, { model: state.model, from: state.from, to: state.to });
    if (gen !== state.generation) return null;
    state.drift = drift;
    renderDrift(drift);
    renderPriceDistribution(drift);
    return drift;
  } catch (e) {
    if (gen !== state.generation) return null;
    state.drift = null;
    for (const n of ['drift', 'histogram', 'price-distribution']) {
      panels[n].body.replaceChildren();
      panels[n].fail(e);
    }
    return null;
  }
}

function renderDrift(drift) {
  const p = panels.drift;
  const t = drift.thresholds;
  p.caption.replaceChildren(
    `${drift.modelName}@${drift.modelVersion}, ${drift.predictions.toLocaleString('en-US')} predictions. Overall `,
    badge(drift.status),
    `. Thresholds: PSI WARN ≥ ${num(t.psiWarn, 2)}, DRIFT ≥ ${num(t.psiDrift, 2)}; Wasserstein WARN ≥ ${num(t.wassersteinWarn, 2)}, DRIFT ≥ ${num(t.wassersteinDrift, 2)}; min. sample ${t.minSample}.`,
  );
  const rows = sortDrift(drift.features);
  if (!rows.some((f) => f.feature === state.selectedFeature)) state.selectedFeature = rows.length ? rows[0].feature : null;
  const tbody = el('tbody');
  for (const f of rows) {
    const tr = el(
      'tr',
      {
        'data-testid': 'drift-row',
        'data-feature': f.feature,
        'data-status': f.status,
        tabindex: 0,
        class: 'clickable',
        title: 'Show the reference vs live histogram',
        onclick: () => selectFeature(f.feature),
        onkeydown: (ev) => {
          if (ev.key === 'Enter' || ev.key === ' ') {
            ev.preventDefault();
            selectFeature(f.feature);
          }
        },
      },
      el('td', {}, el('code', { text: f.feature })),
      el('td', { text: f.kind ? String(f.kind).toLowerCase() : '' }),
      el('td', {}, badge(f.status)),
      el('td', { class: 'num', text: num(f.psi) }),
      el('td', { class: 'num', text: num(f.wassersteinNormalized) }),
      el('td', { class: 'num', text: (f.sampleSize ?? 0).toLocaleString('en-US') }),
    );
    tbody.append(tr);
  }
  p.body.replaceChildren(
    el(
      'table',
      { 'data-testid': 'drift-table' },
      el('caption', { text: `Input features, drifting first (PSI warn ${num(t.psiWarn, 2)} / drift ${num(t.psiDrift, 2)})` }),
      el(
        'thead',
        {},
        el('tr', {}, ...['Feature', 'Kind', 'Status', 'PSI', 'Wasserstein (norm.)', 'Live sample'].map((h, i) => el('th', { class: i >= 3 ? 'num' : null, text: h }))),
      ),
      tbody,
    ),
  );
  if (!drift.predictions) p.set('empty', 'No predictions in this window: drift needs live traffic.');
  else p.set('ready');
  renderHistogram();
}

function selectFeature(name) {
  state.selectedFeature = name;
  renderHistogram();
}

// Bin labels such as "[123491.7663320989, 133817.8)" → "[123k, 134k)".
function binLabel(label) {
  return String(label).replace(/-?\d+(?:\.\d+)?(?:e[+-]?\d+)?/gi, (m) => {
    const x = Number(m);
    if (!Number.isFinite(x)) return m;
    const a = Math.abs(x);
    if (a >= 10000) return `${Math.round(x / 1000).toLocaleString('en-US')}k`;
    if (a >= 100 || Number.isInteger(x)) return Math.round(x).toLocaleString('en-US');
    return String(Number(x.toFixed(2)));
  });
}

function binsChart(canvas, f, what) {
  const bins = f.bins || [];
  chart(canvas, {
    type: 'bar',
    data: {
      labels: bins.map((b) => binLabel(b.label)),
      datasets: [
        { label: 'Training reference (share %)', data: bins.map((b) => (b.referenceShare ?? 0) * 100), backgroundColor: C.reference + 'b3', borderColor: C.reference, borderWidth: 1, grouped: false, barPercentage: 0.95, categoryPercentage: 0.95 },
        { label: 'Live traffic (share %)', data: bins.map((b) => (b.liveShare ?? 0) * 100), backgroundColor: C.live + '80', borderColor: C.live, borderWidth: 1, grouped: false, barPercentage: 0.6, categoryPercentage: 0.95 },
      ],
    },
    options: {
      scales: { y: { beginAtZero: true, title: { display: true, text: 'share of values (%)' } }, x: { title: { display: true, text: what } } },
      plugins: { tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${ctx.parsed.y.toFixed(1)} %` } } },
    },
  });
}

function renderHistogram() {
  const p = panels.histogram;
  const drift = state.drift;
  if (!drift) return;
  for (const tr of panels.drift.body.querySelectorAll('tr[data-testid="drift-row"]')) {
    tr.setAttribute('aria-selected', tr.dataset.feature === state.selectedFeature ? 'true' : 'false');
  }
  const f = drift.features.find((x) => x.feature === state.selectedFeature);
  if (!f) {
    p.body.replaceChildren();
    p.set('empty', 'No input features');
    return;
  }
  p.setTitle(`Histogram: ${f.feature} — reference vs live (share %)`);
  p.caption.replaceChildren(
    'Status ',
    badge(f.status),
    `, PSI ${num(f.psi)}, live sample ${(f.sampleSize ?? 0).toLocaleString('en-US')}. Click a row of the drift table to pick another feature.`,
  );
  p.body.replaceChildren(canvasBox('chart-histogram'));
  p.section.dataset.feature = f.feature;
  binsChart(p.body.querySelector('#chart-histogram'), f, f.feature);
  if (!f.sampleSize) p.set('empty', 'No live values for this feature in this window (reference only).');
  else p.set('ready');
}

function renderPriceDistribution(drift) {
  const p = panels['price-distribution'];
  const f = drift.prediction;
  p.caption.replaceChildren(
    'Predicted price (USD) vs the training reference. Status ',
    badge(f.status),
    `, PSI ${num(f.psi)}, ${(f.sampleSize ?? 0).toLocaleString('en-US')} predictions.`,
  );
  p.body.replaceChildren(canvasBox('chart-price'));
  binsChart(p.body.querySelector('#chart-price'), f, 'predicted price (USD)');
  if (!f.sampleSize) p.set('empty', 'No predictions in this window (reference only).');
  else p.set('ready');
}

// ---------------------------------------------------------------- drift history

const Q_DRIFT_HISTORY = `query DriftHistory($model: String!, $from: DateTime, $to: DateTime) {
  driftHistory(model: $model, from: $from, to: $to) { day feature sampleSize psi status }
  driftReports(model: $model, from: $from, to: $to, first: 50) {
    id evaluatedAt modelName modelVersion status windowFrom windowTo drifting
  }
}`;

let alertsBody = null;
function alertRow(r, live = false) {
  return el(
    'tr',
    { 'data-testid': live ? 'drift-alert-live' : 'drift-alert', class: live ? 'live' : null },
    el('td', { text: fmtTime(r.evaluatedAt) }),
    el('td', { text: `${r.modelName}@${r.modelVersion}` }),
    el('td', {}, badge(r.status)),
    el('td', { text: r.drifting ? r.drifting.join(', ') || '—' : '' }, live ? el('span', { class: 'muted', text: ' (live)' }) : null),
    el('td', { text: r.windowFrom ? `${fmtTime(r.windowFrom)} → ${fmtTime(r.windowTo)}` : r.live || '' }),
  );
}

async function loadDriftHistory(gen, driftPromise) {
  const p = panels['drift-history'];
  p.loading();
  // The thresholds come from drift(); wait for it (it may fail independently).
  const drift = await driftPromise;
  try {
    const data = await gql(Q_DRIFT_HISTORY, { model: state.model, from: state.from, to: state.to });
    if (gen !== state.generation) return;
    renderDriftHistory(data.driftHistory, data.driftReports, drift && drift.thresholds);
  } catch (e) {
    if (gen !== state.generation) return;
    p.body.replaceChildren();
    p.fail(e);
  }
}

function renderDriftHistory(points, reports, thresholds) {
  const p = panels['drift-history'];
  const days = [...new Set(points.map((x) => fmtDay(x.day)))].sort();
  const byFeature = new Map();
  for (const x of points) {
    if (!byFeature.has(x.feature)) byFeature.set(x.feature, new Map());
    byFeature.get(x.feature).set(fmtDay(x.day), x.psi);
  }
  const lastPsi = (m) => {
    for (let i = days.length - 1; i >= 0; i--) {
      const v = m.get(days[i]);
      if (v !== null && v !== undefined) return v;
    }
    return -Infinity;
  };
  const ranked = [...byFeature.entries()].sort((a, b) => lastPsi(b[1]) - lastPsi(a[1]) || (a[0] < b[0] ? -1 : 1));
  const shown = ranked.slice(0, 6);
  const t = thresholds || {};
  p.caption.textContent =
    `PSI per feature per day (UTC)` +
    (thresholds ? `; dashed lines: WARN ${num(t.psiWarn, 2)}, DRIFT ${num(t.psiDrift, 2)}.` : '.') +
    (ranked.length > shown.length ? ` Showing the top ${shown.length} of ${ranked.length} features by latest PSI.` : '') +
    ' _price is the predicted price.';

  alertsBody = el('tbody', {}, reports.map((r) => alertRow(r)));
  const noAlerts = el('p', { class: 'muted', 'data-testid': 'no-alerts', text: 'No drift alerts in this window.', hidden: reports.length > 0 });
  const alerts = el(
    'table',
    { class: 'small', 'data-testid': 'drift-alerts' },
    el('caption', { text: 'Drift alerts (WARN / DRIFT evaluations, newest first; live alerts are added on top)' }),
    el('thead', {}, el('tr', {}, ...['Evaluated (UTC)', 'Model', 'Status', 'Drifting features', 'Window (UTC)'].map((h) => el('th', { text: h })))),
    alertsBody,
  );
  const content = [];
  if (days.length) content.push(canvasBox('chart-drift-history', 'chart tall'));
  content.push(alerts, noAlerts);
  p.body.replaceChildren(...content);
  if (!days.length) {
    p.set('empty', 'No drift history in this window');
    return;
  }
  const datasets = shown.map(([feature, m], i) => ({
    label: feature,
    data: days.map((d) => m.get(d) ?? null),
    borderColor: SERIES[i % SERIES.length],
    backgroundColor: SERIES[i % SERIES.length],
    spanGaps: true,
  }));
  if (thresholds) {
    datasets.push(
      { label: `WARN threshold (${num(t.psiWarn, 2)})`, data: days.map(() => t.psiWarn), borderColor: C.WARN, borderDash: [6, 4], pointRadius: 0, borderWidth: 1.5 },
      { label: `DRIFT threshold (${num(t.psiDrift, 2)})`, data: days.map(() => t.psiDrift), borderColor: C.DRIFT, borderDash: [6, 4], pointRadius: 0, borderWidth: 1.5 },
    );
  }
  chart(p.body.querySelector('#chart-drift-history'), {
    type: 'line',
    data: { labels: days, datasets },
    options: { scales: { y: { beginAtZero: true, title: { display: true, text: 'PSI' } } } },
  });
  p.set('ready');
}

// ---------------------------------------------------------------- accuracy

const Q_PERF = `query Performance($model: String!, $from: DateTime, $to: DateTime, $bucket: Bucket!) {
  performance(model: $model, from: $from, to: $to, bucket: $bucket) {
    start predictions labelled mae rmse mape meanError intervalLabelled coverage meanIntervalWidth estimatedMae
  }
}`;

// The mean of a per-bucket mean `key` over the window, weighted by each bucket's `weight` count.
function weightedMean(buckets, key, weight) {
  let n = 0;
  let s = 0;
  for (const b of buckets) {
    if (b[weight] > 0 && b[key] !== null && b[key] !== undefined) {
      n += b[weight];
      s += b[weight] * b[key];
    }
  }
  return n ? s / n : null;
}

const overallMae = (buckets) => weightedMean(buckets, 'mae', 'labelled');

async function loadAccuracy(gen) {
  const p = panels.accuracy;
  p.loading();
  const bucket = WINDOWS[state.window].perf;
  try {
    const { performance } = await gql(Q_PERF, { model: state.model, from: state.from, to: state.to, bucket });
    if (gen !== state.generation) return;
    renderAccuracy(performance, bucket);
  } catch (e) {
    if (gen !== state.generation) return;
    p.body.replaceChildren(el('p', { class: 'stat' }, 'MAE ', el('span', { 'data-testid': 'mae', text: '—' })));
    p.fail(e);
  }
}

function renderAccuracy(buckets, bucket) {
  const p = panels.accuracy;
  const labelled = buckets.reduce((s, b) => s + b.labelled, 0);
  const predictions = buckets.reduce((s, b) => s + b.predictions, 0);
  const mae = overallMae(buckets);
  const coverage = weightedMean(buckets, 'coverage', 'intervalLabelled');
  const estimated = weightedMean(buckets, 'estimatedMae', 'predictions');
  const tiles = el(
    'div',
    { class: 'tiles' },
    el('div', { class: 'tile' }, el('span', { class: 'tile-label', text: 'MAE in window' }), el('span', { class: 'tile-value', 'data-testid': 'mae', text: usd(mae) })),
    el(
      'div',
      { class: 'tile', title: "The error model's estimate of the MAE from the features, made before any sale is known. It cannot see shifts in what the model has no input for." },
      el('span', { class: 'tile-label', text: 'Estimated MAE (estimate)' }),
      el('span', { class: 'tile-value estimate', 'data-testid': 'estimated-mae', text: usd(estimated) }),
    ),
    el(
      'div',
      { class: 'tile', title: 'Share of sale prices inside their 90 % prediction interval; calibrated to 90 %, alerted below 85 %.' },
      el('span', { class: 'tile-label', text: '90 % interval coverage' }),
      el('span', { class: 'tile-value', 'data-testid': 'coverage', text: coverage === null ? '—' : pct(coverage) }),
    ),
    el('div', { class: 'tile' }, el('span', { class: 'tile-label', text: 'Labelled / predictions' }), el('span', { class: 'tile-value', 'data-testid': 'labelled', text: `${labelled.toLocaleString('en-US')} / ${predictions.toLocaleString('en-US')}` })),
    el('div', { class: 'tile' }, el('span', { class: 'tile-label', text: 'Labelled share' }), el('span', { class: 'tile-value', 'data-testid': 'labelled-share', text: predictions ? pct(labelled / predictions) : '—' })),
  );
  p.caption.textContent = `Error of predictions with a recorded sale price, per ${bucket === 'HOUR' ? 'hour' : 'day'} (UTC): MAE, RMSE and bias (mean error, predicted − actual) in USD, and how often the sale price fell inside its 90 % interval. The estimated MAE is an estimate made before sales are known, for every prediction.`;
  if (!labelled) {
    p.body.replaceChildren(tiles);
    p.set('empty', 'No outcomes recorded in this window (the estimated MAE is an estimate)');
    return;
  }
  const labels = buckets.map((b) => fmtBucket(b.start, bucket));
  p.body.replaceChildren(
    tiles,
    el('h3', { text: 'Error (USD)' }),
    canvasBox('chart-accuracy'),
    el('h3', { text: '90 % interval coverage (%)' }),
    canvasBox('chart-coverage', 'chart short'),
    el('h3', { text: 'Labelled share (%)' }),
    canvasBox('chart-labelled', 'chart short'),
  );
  chart(p.body.querySelector('#chart-accuracy'), {
    type: 'line',
    data: {
      labels,
      datasets: [
        { label: 'MAE (USD)', data: buckets.map((b) => b.mae), borderColor: C.mae, backgroundColor: C.mae, spanGaps: true },
        { label: 'RMSE (USD)', data: buckets.map((b) => b.rmse), borderColor: C.rmse, backgroundColor: C.rmse, spanGaps: true },
        { label: 'Bias / mean error (USD)', data: buckets.map((b) => b.meanError), borderColor: C.bias, backgroundColor: C.bias, borderDash: [4, 3], spanGaps: true },
        { label: 'Estimated MAE (estimate, USD)', data: buckets.map((b) => b.estimatedMae), borderColor: C.estimate, backgroundColor: C.estimate, borderDash: [2, 2], spanGaps: true },
      ],
    },
    options: {
      scales: { y: { title: { display: true, text: 'USD' }, ticks: { callback: (v) => Number(v).toLocaleString('en-US') } } },
      plugins: { tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${usd(ctx.parsed.y)}` } } },
    },
  });
  chart(p.body.querySelector('#chart-coverage'), {
    type: 'line',
    data: {
      labels,
      datasets: [
        { label: 'Realized coverage (%)', data: buckets.map((b) => (b.coverage === null ? null : 100 * b.coverage)), borderColor: C.coverage, backgroundColor: C.coverage, spanGaps: true },
        { label: 'Calibrated level (90 %)', data: buckets.map(() => 90), borderColor: C.reference, borderDash: [4, 3], pointRadius: 0 },
      ],
    },
    options: { scales: { y: { min: 0, max: 100, title: { display: true, text: '%' } } } },
  });
  chart(p.body.querySelector('#chart-labelled'), {
    type: 'bar',
    data: {
      labels,
      datasets: [{ label: 'Labelled share (%)', data: buckets.map((b) => (b.predictions ? (100 * b.labelled) / b.predictions : null)), backgroundColor: C.share }],
    },
    options: { scales: { y: { beginAtZero: true, max: 100, title: { display: true, text: '%' } } } },
  });
  p.set('ready');
}

// ---------------------------------------------------------------- models

const Q_MODELS = `query Models {
  models {
    name version description algorithm isDefault isShadow checksum trainedAt
    metrics { mae rmse rmsle r2 trainRows holdoutRows }
  }
}`;
const Q_MODEL_EVENTS = `query ModelEvents {
  modelEvents(first: 50) { id occurredAt event trigger actor models added removed defaultModel shadowModel error }
}`;

function renderModelsTable(models) {
  const sorted = [...models].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.version < b.version ? -1 : a.version > b.version ? 1 : 0));
  return el(
    'table',
    { 'data-testid': 'models-table' },
    el('caption', { text: 'Loaded model versions and their holdout metrics (MAE, RMSE in USD)' }),
    el('thead', {}, el('tr', {}, ...['Model', 'Algorithm', 'Role', 'MAE', 'RMSE', 'RMSLE', 'R²', 'Trained (UTC)'].map((h, i) => el('th', { class: i >= 3 && i <= 6 ? 'num' : null, text: h })))),
    el(
      'tbody',
      {},
      sorted.map((m) =>
        el(
          'tr',
          { 'data-testid': 'model-row', 'data-model': `${m.name}@${m.version}` },
          el('td', { title: m.description || '' }, el('code', { text: `${m.name}@${m.version}` })),
          el('td', { text: m.algorithm }),
          el('td', {}, m.isDefault ? el('span', { class: 'badge badge-default', text: 'default' }) : null, m.isShadow ? el('span', { class: 'badge badge-shadow', text: 'shadow' }) : null),
          el('td', { class: 'num', text: usd(m.metrics?.mae) }),
          el('td', { class: 'num', text: usd(m.metrics?.rmse) }),
          el('td', { class: 'num', text: num(m.metrics?.rmsle, 4) }),
          el('td', { class: 'num', text: num(m.metrics?.r2, 4) }),
          el('td', { text: m.trainedAt ? fmtTime(m.trainedAt) : '—' }),
        ),
      ),
    ),
  );
}

function renderEventsTable(events) {
  const list = (xs) => (xs && xs.length ? xs.join(', ') : '—');
  return el(
    'table',
    { class: 'small', 'data-testid': 'model-events' },
    el('caption', { text: 'Model reload history (newest first)' }),
    el('thead', {}, el('tr', {}, ...['When (UTC)', 'Event', 'Trigger', 'Actor', 'Added', 'Removed', 'Default', 'Shadow', 'Error'].map((h) => el('th', { text: h })))),
    el(
      'tbody',
      {},
      events.length
        ? events.map((e) =>
            el(
              'tr',
              { class: e.error ? 'failed' : null },
              el('td', { text: fmtTime(e.occurredAt) }),
              el('td', { text: e.event }),
              el('td', { text: e.trigger }),
              el('td', { text: e.actor || '—' }),
              el('td', { text: list(e.added) }),
              el('td', { text: list(e.removed) }),
              el('td', { text: e.defaultModel }),
              el('td', { text: e.shadowModel || '—' }),
              el('td', { class: e.error ? 'error-text' : null, text: e.error || '—' }),
            ),
          )
        : el('tr', {}, el('td', { colspan: 9, class: 'muted', text: 'No reloads recorded' })),
    ),
  );
}

async function loadModelsPanel(gen, modelsPromise) {
  const p = panels.models;
  p.loading();
  const [models, events] = await Promise.allSettled([modelsPromise, gql(Q_MODEL_EVENTS).then((d) => d.modelEvents)]);
  if (gen !== state.generation) return;
  const content = [];
  if (models.status === 'fulfilled') content.push(renderModelsTable(models.value));
  if (events.status === 'fulfilled') content.push(renderEventsTable(events.value));
  p.body.replaceChildren(...content);
  if (models.status === 'rejected') return p.fail(models.reason);
  if (events.status === 'rejected') return p.set('error', `Could not load the reload history: ${events.reason?.message || events.reason}`);
  if (!models.value.length) return p.set('empty', 'No models loaded');
  p.set('ready');
}

// ---------------------------------------------------------------- live feed (graphql-ws)

const wsUrl = `${window.location.protocol === 'https:' ? 'wss:' : 'ws:'}//${window.location.host}/ws`;
const live = { list: null, status: null, rows: 0 };

function setLiveStatus(text, cls) {
  live.status.textContent = text;
  live.status.className = `conn ${cls}`;
}

function startLive() {
  const p = panels.live;
  p.caption.textContent = 'Predictions as they are logged (all models, newest on top, at most 50). Times in UTC, prices in USD.';
  live.status = el('span', { class: 'conn', 'data-testid': 'live-status', role: 'status' });
  live.list = el('ol', { class: 'live-list', 'data-testid': 'live-list', reversed: true });
  p.body.replaceChildren(el('p', {}, 'Connection: ', live.status), live.list);
  setLiveStatus('connecting…', 'connecting');
  p.set('loading', 'Connecting to the live feed…');

  const client = createClient({
    url: wsUrl,
    // Browsers cannot set WebSocket headers: the key goes in the connection_init payload.
    connectionParams: () => (apiKey() ? { 'x-api-key': apiKey() } : {}),
    lazy: false,
    retryAttempts: Infinity,
    shouldRetry: () => true,
    retryWait: async (retries) => new Promise((r) => setTimeout(r, Math.min(1000 * 2 ** retries, 15000))),
    on: {
      connecting: () => setLiveStatus('connecting…', 'connecting'),
      connected: () => {
        setLiveStatus(`connected (${wsUrl})`, 'connected');
        if (p.section.dataset.state === 'loading' || p.section.dataset.state === 'error') {
          if (live.rows) p.set('ready');
          else p.set('empty', 'Waiting for predictions…');
        }
      },
      closed: (ev) => {
        setLiveStatus(`disconnected${ev && ev.code ? ` (code ${ev.code})` : ''}, retrying…`, 'closed');
      },
      error: () => {
        setLiveStatus('connection error, retrying…', 'closed');
        p.set('error', `Could not connect to the live feed at ${wsUrl}`);
      },
    },
  });

  client.subscribe(
    { query: 'subscription Live { predictionLogged { id createdAt status price latencyUs model { name version } error { code field } } }' },
    {
      next: (msg) => {
        if (msg.errors && msg.errors.length) {
          p.set('error', `Live feed error: ${msg.errors.map((e) => e.message).join('; ')}`);
          return;
        }
        const r = msg.data && msg.data.predictionLogged;
        if (r) addLiveRow(r);
      },
      error: (err) => p.set('error', `Live feed error: ${err && err.message ? err.message : Array.isArray(err) ? err.map((e) => e.message).join('; ') : 'connection failed'}`),
      complete: () => setLiveStatus('subscription ended', 'closed'),
    },
  );

  client.subscribe(
    { query: 'subscription Alerts { driftAlert { modelName modelVersion feature status previous psi sampleSize evaluatedAt } }' },
    {
      next: (msg) => {
        const a = msg.data && msg.data.driftAlert;
        if (!a || !alertsBody) return;
        alertsBody.prepend(
          alertRow({ evaluatedAt: a.evaluatedAt, modelName: a.modelName, modelVersion: a.modelVersion, status: a.status, drifting: [`${a.feature} (${a.previous} → ${a.status}, PSI ${num(a.psi)})`], live: `live alert, ${a.sampleSize} values` }, true),
        );
        const none = panels['drift-history'].body.querySelector('[data-testid="no-alerts"]');
        if (none) none.hidden = true;
      },
      error: () => {},
      complete: () => {},
    },
  );
}

function addLiveRow(r) {
  const p = panels.live;
  const model = r.model ? `${r.model.name}@${r.model.version}` : '—';
  const li = el(
    'li',
    { 'data-testid': 'live-row', 'data-status': r.status, 'data-id': r.id },
    el('time', { datetime: r.createdAt, text: fmtTime(r.createdAt) }),
    badge(r.status),
    el('span', { class: 'price', text: r.price !== null && r.price !== undefined ? usd(r.price) : r.error ? r.error.code : '—' }),
    el('code', { text: model }),
  );
  live.list.prepend(li);
  while (live.list.children.length > 50) live.list.lastElementChild.remove();
  live.rows = live.list.children.length;
  p.set('ready');
}

// ---------------------------------------------------------------- wiring

function buildPanels() {
  panel('traffic', 'Traffic — requests by outcome (count) and latency');
  panel('accuracy', 'Accuracy — MAE / RMSE / bias (USD) and labelled share (%)');
  panel('drift', 'Input drift — PSI and normalised Wasserstein per feature');
  panel('histogram', 'Histogram — reference vs live (share %)');
  panel('drift-history', 'Drift history — PSI per feature per day', { wide: true });
  panel('price-distribution', 'Predicted price distribution (USD) vs training reference');
  panel('live', 'Live feed — predictions (USD)');
  panel('models', 'Models — holdout metrics and reload history', { wide: true });
}

let modelsPromise = null;
function loadModels() {
  modelsPromise = gql(Q_MODELS).then((d) => d.models);
  return modelsPromise;
}

async function fillModelSelect() {
  let models = [];
  try {
    models = await modelsPromise;
  } catch {
    models = [];
  }
  const names = [...new Set(models.map((m) => m.name))].sort();
  const options = [];
  for (const n of names) {
    options.push(n);
    const versions = models.filter((m) => m.name === n).map((m) => `${n}@${m.version}`).sort();
    if (versions.length > 1) options.push(...versions);
  }
  if (!state.model) {
    const def = models.find((m) => m.isDefault);
    state.model = def ? def.name : names[0] || 'gradient-boosting';
  }
  if (!options.includes(state.model)) options.unshift(state.model);
  modelSelect.replaceChildren(
    ...options.map((o) => {
      const m = models.find((x) => `${x.name}@${x.version}` === o || (x.name === o && x.isDefault));
      return el('option', { value: o, text: o + (m && m.isDefault && !o.includes('@') ? ' (default)' : '') });
    }),
  );
  modelSelect.value = state.model;
}

function refresh() {
  const gen = ++state.generation;
  const w = WINDOWS[state.window];
  const to = new Date();
  const from = new Date(to.getTime() - w.ms);
  state.to = to.toISOString();
  state.from = from.toISOString();
  rangeText.textContent = `${w.label}: ${fmtTime(state.from)} → ${fmtTime(state.to)} UTC`;
  syncUrl();
  if (gen > 1) loadModels();
  const driftPromise = loadDrift(gen);
  loadTraffic(gen);
  loadDriftHistory(gen, driftPromise);
  loadAccuracy(gen);
  loadModelsPanel(gen, modelsPromise);
}

async function main() {
  buildPanels();
  loadModels();
  await fillModelSelect();
  modelSelect.addEventListener('change', () => {
    state.model = modelSelect.value;
    state.selectedFeature = null;
    refresh();
  });
  windowSelect.addEventListener('change', () => {
    state.window = windowSelect.value;
    refresh();
  });
  document.getElementById('refresh').addEventListener('click', () => refresh());
  const keyInput = document.getElementById('api-key');
  keyInput.value = apiKey();
  keyInput.addEventListener('change', () => {
    sessionStorage.setItem(KEY_STORAGE, keyInput.value.trim());
    // Everything (the live feed included) starts again with the new key.
    window.location.reload();
  });
  refresh();
  startLive();
}

main();
