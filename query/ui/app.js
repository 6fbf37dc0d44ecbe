// Skein's web UI: trace search, the trace waterfall (critical path, clock-skew warnings, placeholders for missing
// parents) and the service dependency graph. Plain ES2020, no dependencies and no build step; the query service
// embeds this file in its binary (query/src/ui.rs). Every call goes to the query service's own HTTP API
// with a relative URL, so the UI also works behind a proxy that serves it under a path prefix.
//
// Routes live in the URL fragment: #/search?service=&operation=&tags=&lookback=&start=&end=&minDuration=
// &maxDuration=&limit=, #/trace/{traceID}, #/dependencies?endTs=&lookback=. Times in the fragment are Jaeger UI's
// units: start/end in microseconds since the Unix epoch, endTs and the dependency lookback in milliseconds.

const ROW_HEIGHT_PX = 24;
const OVERSCAN_ROWS = 12;
const LOOKBACKS = [
  ['5m', 'Last 5 minutes', 5 * 60e3],
  ['15m', 'Last 15 minutes', 15 * 60e3],
  ['1h', 'Last hour', 3600e3],
  ['2h', 'Last 2 hours', 2 * 3600e3],
  ['6h', 'Last 6 hours', 6 * 3600e3],
  ['12h', 'Last 12 hours', 12 * 3600e3],
  ['24h', 'Last 24 hours', 24 * 3600e3],
  ['2d', 'Last 2 days', 2 * 86400e3],
  ['7d', 'Last 7 days', 7 * 86400e3],
  ['custom', 'Custom time range', 0],
];

// ---------------------------------------------------------------------------------------------------------------
// DOM helpers. Text always goes through textContent (never innerHTML), so span data cannot inject markup.

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'style') Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

const view = () => document.getElementById('view');

// ---------------------------------------------------------------------------------------------------------------
// API and formatting.

// With --query-auth-token-file the API wants `Authorization: Bearer <token>`: the UI asks for it on the first 401
// and keeps it for this browser tab only (sessionStorage).
const TOKEN_KEY = 'skein.queryToken';

/** GETs `path` (relative) and returns its JSON; throws an Error carrying the API's own message on non-2xx. */
async function api(path) {
  const headers = { Accept: 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { headers });
  if (response.status === 401) sessionStorage.removeItem(TOKEN_KEY);
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body?.errors?.[0]?.msg ?? body?.error?.message ?? `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

/** A duration in microseconds as Jaeger UI writes it: 870μs, 12.35ms, 1.2s, 3m 4s. */
function fmtDuration(us) {
  if (!Number.isFinite(us)) return '';
  if (us < 1000) return `${Math.round(us)}μs`;
  if (us < 1e6) return `${trim(us / 1000)}ms`;
  if (us < 60e6) return `${trim(us / 1e6)}s`;
  const m = Math.floor(us / 60e6);
  return `${m}m ${Math.round((us - m * 60e6) / 1e6)}s`;
}
const trim = (x) => String(Number(x.toFixed(2)));

const pad = (n, w = 2) => String(n).padStart(w, '0');
/** Local wall-clock time of `ms` (Unix milliseconds): 2026-06-21 10:31:05.123. */
function fmtTime(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}
/** `ms` as an <input type=datetime-local> value (local time, minutes). */
function toLocalInput(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
const fromLocalInput = (v) => (v ? new Date(v).getTime() : NaN);

function ago(ms) {
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)} minutes ago`;
  if (s < 86400) return `${Math.round(s / 3600)} hours ago`;
  return `${Math.round(s / 86400)} days ago`;
}

/** A stable colour per service name. */
function serviceColour(name) {
  let hash = 2166136261;
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 16777619);
  return `hsl(${(hash >>> 0) % 360} 55% 48%)`;
}

/**
 * Parses Jaeger UI's tag syntax, logfmt: `error=true http.status_code=500 msg="a b"`, into an object.
 * Throws on text that is not `key=value`.
 */
function parseLogfmt(text) {
  const out = {};
  const re = /\s*([^\s=]+)=("((?:[^"\\]|\\.)*)"|\S*)\s*/y;
  let at = 0;
  const src = text.trim();
  while (at < src.length) {
    re.lastIndex = at;
    const m = re.exec(src);
    if (!m) throw new Error(`tags: expected key=value at "${src.slice(at, at + 20)}"`);
    out[m[1]] = m[3] !== undefined ? m[3].replace(/\\(.)/g, '$1') : m[2];
    at = re.lastIndex;
  }
  return out;
}

function showError(where, error) {
  if (error.status === 401) {
    view().replaceChildren(tokenForm(error.message));
    return;
  }
  where.replaceChildren(h('div', { class: 'error-box', role: 'alert' }, error.message ?? String(error)));
}

/** Asks for the query API's bearer token, then reloads the current view with it. */
function tokenForm(message) {
  const input = h('input', { id: 'token-input', type: 'password', autocomplete: 'current-password', required: true });
  const form = h('form', { class: 'token-form', id: 'token-form' },
    h('h2', {}, 'Access token'),
    h('p', { class: 'hint' }, `This Skein's query API needs a bearer token (${message}). Ask your cluster admin for one.`),
    field('Token', input),
    h('button', { type: 'submit', id: 'token-submit' }, 'Continue'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    services = null;
    route();
  });
  return form;
}

// ---------------------------------------------------------------------------------------------------------------
// Routing.

function route() {
  repaint = null;
  const hash = location.hash.replace(/^#/, '') || '/search';
  const q = hash.indexOf('?');
  const path = q < 0 ? hash : hash.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : hash.slice(q + 1));
  const section = path.startsWith('/trace/') ? 'trace' : path === '/dependencies' ? 'dependencies' : 'search';
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === section);
  }
  if (section === 'trace') showTrace(decodeURIComponent(path.slice('/trace/'.length)));
  else if (section === 'dependencies') showDependencies(params);
  else showSearch(params);
}

// ---------------------------------------------------------------------------------------------------------------
// Search.

let services = null;

async function showSearch(params) {
  document.title = 'Search · Skein';
  const lookback = params.get('lookback') ?? '1h';
  const now = Date.now();
  const startMs = Number(params.get('start')) / 1000 || now - 3600e3;
  const endMs = Number(params.get('end')) / 1000 || now;

  const service = h('select', { id: 'search-service', name: 'service', required: true });
  const operation = h('select', { id: 'search-operation', name: 'operation' });
  const tags = h('input', {
    id: 'search-tags', name: 'tags', value: params.get('tags') ?? '', spellcheck: 'false',
    placeholder: 'http.status_code=500 error=true',
  });
  const lookbackSel = h('select', { id: 'search-lookback', name: 'lookback' },
    LOOKBACKS.map(([v, label]) => h('option', { value: v, selected: v === lookback }, label)));
  const start = h('input', { id: 'search-start', type: 'datetime-local', value: toLocalInput(startMs) });
  const end = h('input', { id: 'search-end', type: 'datetime-local', value: toLocalInput(endMs) });
  const custom = h('div', { class: 'custom-range' }, field('Start', start), field('End', end));
  const minDuration = h('input', { id: 'search-min-duration', value: params.get('minDuration') ?? '', placeholder: 'e.g. 1.2s, 100ms, 500us' });
  const maxDuration = h('input', { id: 'search-max-duration', value: params.get('maxDuration') ?? '', placeholder: 'e.g. 1.1s' });
  const limit = h('input', { id: 'search-limit', type: 'number', min: 1, max: 1500, value: params.get('limit') ?? '20' });
  const showCustom = () => custom.classList.toggle('hidden', lookbackSel.value !== 'custom');
  lookbackSel.addEventListener('change', showCustom);
  showCustom();

  const form = h('form', { class: 'search-form', id: 'search-form', autocomplete: 'off' },
    h('h2', {}, 'Search'),
    field('Service', service), field('Operation', operation), field('Tags', tags),
    field('Lookback', lookbackSel), custom,
    h('div', { class: 'pair' }, field('Min duration', minDuration), field('Max duration', maxDuration)),
    field('Limit results', limit),
    h('button', { type: 'submit', id: 'search-submit' }, 'Find Traces'));
  const results = h('section', { class: 'results', id: 'search-results' },
    h('p', { class: 'hint' }, 'Choose a service and find traces.'));
  view().replaceChildren(h('div', { class: 'search-layout' }, form, results));

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    next.set('service', service.value);
    if (operation.value) next.set('operation', operation.value);
    if (tags.value.trim()) next.set('tags', tags.value.trim());
    next.set('lookback', lookbackSel.value);
    if (lookbackSel.value === 'custom') {
      next.set('start', String(fromLocalInput(start.value) * 1000));
      next.set('end', String(fromLocalInput(end.value) * 1000));
    }
    if (minDuration.value.trim()) next.set('minDuration', minDuration.value.trim());
    if (maxDuration.value.trim()) next.set('maxDuration', maxDuration.value.trim());
    next.set('limit', limit.value || '20');
    const target = `#/search?${next}`;
    // Submitting the same query again re-runs it (a hash change alone would not fire).
    if (location.hash === target) runSearch(next, results);
    else location.hash = target;
  });

  try {
    services ??= (await api('api/services')).data ?? [];
  } catch (e) {
    showError(results, e);
    return;
  }
  const wanted = params.get('service');
  service.replaceChildren(h('option', { value: '' }, 'Select a service…'), ...
    services.map((name) => h('option', { value: name, selected: name === wanted }, name)));
  const loadOperations = async (selected) => {
    operation.replaceChildren(h('option', { value: '' }, 'all'));
    if (!service.value) return;
    try {
      const ops = (await api(`api/services/${encodeURIComponent(service.value)}/operations`)).data ?? [];
      operation.append(...ops.map((name) => h('option', { value: name, selected: name === selected }, name)));
    } catch (e) {
      showError(results, e);
    }
  };
  service.addEventListener('change', () => loadOperations(null));
  await loadOperations(params.get('operation'));
  if (wanted) runSearch(params, results);
}

function field(label, input) {
  return h('label', { class: 'field' }, h('span', {}, label), input);
}

/** The search window [startMs, endMs] of a route's parameters. */
function searchWindow(params) {
  const lookback = params.get('lookback') ?? '1h';
  if (lookback === 'custom') {
    return [Number(params.get('start')) / 1000, Number(params.get('end')) / 1000];
  }
  const ms = LOOKBACKS.find(([v]) => v === lookback)?.[2] ?? 3600e3;
  const now = Date.now();
  return [now - ms, now];
}

async function runSearch(params, results) {
  const q = new URLSearchParams();
  q.set('query.serviceName', params.get('service') ?? '');
  if (params.get('operation')) q.set('query.operationName', params.get('operation'));
  try {
    if (params.get('tags')) q.set('query.attributes', JSON.stringify(parseLogfmt(params.get('tags'))));
  } catch (e) {
    showError(results, e);
    return;
  }
  const [startMs, endMs] = searchWindow(params);
  if (!Number.isFinite(startMs) || !Number.isFinite(endMs)) {
    showError(results, new Error('choose both a start and an end time'));
    return;
  }
  q.set('query.startTimeMin', new Date(startMs).toISOString());
  q.set('query.startTimeMax', new Date(endMs).toISOString());
  if (params.get('minDuration')) q.set('query.durationMin', params.get('minDuration'));
  if (params.get('maxDuration')) q.set('query.durationMax', params.get('maxDuration'));
  q.set('query.searchDepth', params.get('limit') ?? '20');
  results.replaceChildren(h('p', { class: 'hint' }, 'Searching…'));
  let summaries;
  try {
    summaries = (await api(`api/v3/trace-summaries?${q}`)).summaries ?? [];
  } catch (e) {
    // api_v3 answers an empty search with 404, as Jaeger does.
    if (e.status === 404) summaries = [];
    else {
      showError(results, e);
      return;
    }
  }
  renderResults(summaries, results);
}

function renderResults(summaries, results) {
  const traces = summaries.map((t) => {
    const startUs = Number(BigInt(t.minStartTimeUnixNano) / 1000n);
    const endUs = Number(BigInt(t.maxEndTimeUnixNano) / 1000n);
    return { ...t, startUs, durationUs: endUs - startUs };
  });
  if (traces.length === 0) {
    results.replaceChildren(h('p', { class: 'hint', id: 'no-results' }, 'No traces found. Widen the time range or remove filters.'));
    return;
  }
  const sort = h('select', { id: 'results-sort', 'aria-label': 'Sort results' },
    h('option', { value: 'recent' }, 'Most recent'), h('option', { value: 'longest' }, 'Longest first'),
    h('option', { value: 'shortest' }, 'Shortest first'), h('option', { value: 'spans' }, 'Most spans'),
    h('option', { value: 'errors' }, 'Most errors'));
  const list = h('ol', { class: 'result-list' });
  const maxDuration = Math.max(...traces.map((t) => t.durationUs), 1);
  const draw = () => {
    const by = {
      recent: (a, b) => b.startUs - a.startUs,
      longest: (a, b) => b.durationUs - a.durationUs,
      shortest: (a, b) => a.durationUs - b.durationUs,
      spans: (a, b) => b.spanCount - a.spanCount,
      errors: (a, b) => b.errorSpanCount - a.errorSpanCount,
    }[sort.value];
    list.replaceChildren(...[...traces].sort(by).map((t) => resultItem(t, maxDuration)));
  };
  sort.addEventListener('change', draw);
  draw();
  results.replaceChildren(
    h('div', { class: 'results-head' }, h('h2', {}, `${traces.length} ${traces.length === 1 ? 'trace' : 'traces'}`), sort),
    list);
}

/** Jaeger UI's short trace ID (7 hex digits), skipping the zero high half of a 64-bit ID. */
const shortId = (id) => (id.length === 32 && id.startsWith('0'.repeat(16)) ? id.slice(16) : id).slice(0, 7);

function resultItem(t, maxDuration) {
  const link = `#/trace/${t.traceId}`;
  return h('li', { class: 'result', 'data-trace-id': t.traceId },
    h('a', { href: link, class: 'result-title' },
      h('span', { class: 'svc-dot', style: { background: serviceColour(t.rootServiceName) } }),
      `${t.rootServiceName}: ${t.rootOperationName}`,
      h('span', { class: 'trace-id' }, shortId(t.traceId))),
    h('div', { class: 'result-bar' },
      h('div', { style: { width: `${Math.max(0.5, (100 * t.durationUs) / maxDuration)}%` } })),
    h('div', { class: 'result-meta' },
      h('span', { class: 'duration' }, fmtDuration(t.durationUs)),
      h('span', {}, `${t.spanCount} spans`),
      t.errorSpanCount > 0 ? h('span', { class: 'badge error' }, `${t.errorSpanCount} errors`) : null,
      h('span', { class: 'when', title: fmtTime(t.startUs / 1000) }, `${fmtTime(t.startUs / 1000)} (${ago(t.startUs / 1000)})`)),
    h('div', { class: 'chips' }, (t.services ?? []).map((sv) =>
      h('span', { class: `chip${sv.errorSpanCount > 0 ? ' has-error' : ''}` },
        h('span', { class: 'svc-dot', style: { background: serviceColour(sv.name) } }),
        `${sv.name} (${sv.spanCount})`))));
}

// ---------------------------------------------------------------------------------------------------------------
// The trace view.

const tagValue = (tags, key) => tags?.find((t) => t.key === key)?.value;

function isError(span) {
  const e = tagValue(span.tags, 'error');
  return e === true || e === 'true' || tagValue(span.tags, 'otel.status_code') === 'ERROR';
}

/**
 * Builds the span tree of a Jaeger JSON trace: nodes in DFS order with depth, children sorted by start time, and a
 * placeholder node for each parent span ID that is referenced but missing. Iterative, so a 10,000-deep trace does
 * not exhaust the stack. Spans in a parent cycle (never reachable from a root) become roots.
 */
function buildTree(trace) {
  const processes = trace.processes ?? {};
  const nodes = [];
  const byId = new Map();
  for (const span of trace.spans ?? []) {
    const node = {
      id: span.spanID, span, children: [], depth: 0, placeholder: false,
      service: processes[span.processID]?.serviceName ?? 'unknown',
      startUs: span.startTime, endUs: span.startTime + span.duration, error: isError(span),
    };
    nodes.push(node);
    if (!byId.has(node.id)) byId.set(node.id, node);
  }
  const roots = [];
  const placeholders = new Map();
  for (const node of nodes) {
    const refs = node.span.references ?? [];
    const ref = refs.find((r) => r.refType === 'CHILD_OF') ?? refs[0];
    const parentId = ref?.spanID;
    const parent = parentId !== undefined && parentId !== node.id ? byId.get(parentId) : undefined;
    if (parent) {
      parent.children.push(node);
    } else if (parentId !== undefined && parentId !== node.id) {
      let p = placeholders.get(parentId);
      if (!p) {
        p = { id: parentId, span: null, children: [], depth: 0, placeholder: true, service: 'missing span',
          startUs: Infinity, endUs: -Infinity, error: false };
        placeholders.set(parentId, p);
        roots.push(p);
      }
      p.children.push(node);
      p.startUs = Math.min(p.startUs, node.startUs);
      p.endUs = Math.max(p.endUs, node.endUs);
    } else {
      roots.push(node);
    }
  }
  const byStart = (a, b) => a.startUs - b.startUs;
  roots.sort(byStart);
  for (const n of nodes) n.children.sort(byStart);
  for (const p of placeholders.values()) p.children.sort(byStart);

  const order = [];
  const seen = new Set();
  const walk = (root) => {
    const stack = [[root, 0]];
    while (stack.length) {
      const [n, depth] = stack.pop();
      if (seen.has(n)) continue;
      seen.add(n);
      n.depth = depth;
      order.push(n);
      for (let i = n.children.length - 1; i >= 0; i--) stack.push([n.children[i], depth + 1]);
    }
  };
  roots.forEach(walk);
  for (const n of nodes) {
    if (!seen.has(n)) {
      roots.push(n);
      walk(n);
    }
  }
  return { roots, order };
}

let traceRequest = 0;
/** Repaints the waterfall on screen (after a window resize); replaced by each trace view. */
let repaint = null;
window.addEventListener('resize', () => repaint?.(true));

async function showTrace(traceId) {
  const request = ++traceRequest;
  document.title = `Trace ${traceId.slice(0, 7)} · Skein`;
  view().replaceChildren(h('p', { class: 'hint' }, 'Loading trace…'));
  const id = encodeURIComponent(traceId);
  const [traceResult, analysisResult] = await Promise.allSettled([
    api(`api/traces/${id}?adjust=skew`),
    api(`api/traces/${id}/analysis`),
  ]);
  if (request !== traceRequest) return; // the user moved on
  if (traceResult.status === 'rejected') {
    showError(view(), traceResult.reason);
    return;
  }
  const trace = traceResult.value.data?.[0];
  if (!trace) {
    showError(view(), new Error('trace not found'));
    return;
  }
  const analysis = analysisResult.status === 'fulfilled' ? analysisResult.value.data : null;
  const started = performance.now();
  renderTrace(trace, analysis, analysisResult.status === 'rejected' ? analysisResult.reason : null);
  document.body.dataset.traceRenderMs = String(Math.round(performance.now() - started));
}

function renderTrace(trace, analysis, analysisError) {
  const tree = buildTree(trace);
  const all = tree.order;
  // Loops rather than Math.min(...spread): a 100,000-span trace would exceed the engine's argument limit.
  let traceStartUs = Infinity;
  let traceEndUs = -Infinity;
  let maxDepth = 0;
  for (const n of all) {
    maxDepth = Math.max(maxDepth, n.depth);
    if (n.placeholder) continue;
    traceStartUs = Math.min(traceStartUs, n.startUs);
    traceEndUs = Math.max(traceEndUs, n.endUs);
  }
  const spanUs = Math.max(traceEndUs - traceStartUs, 1);
  const pct = (us) => (100 * (us - traceStartUs)) / spanUs;

  // Critical path: the span IDs, self times and time sections from the analysis (nanoseconds).
  const critical = new Map();
  for (const c of analysis?.criticalPath ?? []) critical.set(c.spanId, { selfNanos: c.selfTimeNanos, sections: [] });
  for (const sec of analysis?.criticalPathSections ?? []) {
    critical.get(sec.spanId)?.sections.push([Number(sec.startUnixNanos) / 1000, Number(sec.endUnixNanos) / 1000]);
  }
  const adjusted = new Map((analysis?.adjustments ?? []).map((a) => [a.spanId, a]));

  const root = tree.roots.find((n) => !n.placeholder) ?? all[0];
  const summary = analysis?.summary;
  const servicesInTrace = summary?.services ?? [...new Set(all.filter((n) => !n.placeholder).map((n) => n.service))];
  const errors = summary?.errorCount ?? all.filter((n) => n.error).length;
  const warnings = [...(trace.warnings ?? []), ...(analysis?.warnings ?? [])];

  const showCritical = h('input', { type: 'checkbox', id: 'show-critical-path', checked: critical.size > 0, disabled: critical.size === 0 });
  const header = h('div', { class: 'trace-header' },
    h('h1', {}, h('span', { class: 'svc-dot', style: { background: serviceColour(root.service) } }),
      `${root.service}: ${root.span?.operationName ?? 'missing span'}`,
      h('span', { class: 'trace-id', id: 'trace-id' }, trace.traceID)),
    h('dl', { class: 'facts' },
      fact('Start', fmtTime(traceStartUs / 1000)), fact('Duration', fmtDuration(spanUs)),
      fact('Services', servicesInTrace.length), fact('Depth', summary?.depth ?? maxDepth + 1),
      fact('Spans', trace.spans.length), fact('Errors', errors)),
    h('div', { class: 'toolbar' },
      h('button', { type: 'button', id: 'expand-all' }, 'Expand all'),
      h('button', { type: 'button', id: 'collapse-all' }, 'Collapse all'),
      h('label', { class: 'check' }, showCritical, h('span', { class: 'cp-swatch' }), 'Critical path'),
      h('a', { href: `api/traces/${encodeURIComponent(trace.traceID)}`, target: '_blank', rel: 'noopener' }, 'JSON')),
    analysisError ? h('div', { class: 'error-box' }, `analysis unavailable: ${analysisError.message}`) : null,
    warnings.length ? h('details', { class: 'warnings', id: 'trace-warnings' },
      h('summary', {}, `${warnings.length} ${warnings.length === 1 ? 'warning' : 'warnings'} (clock skew, missing spans)`),
      h('ul', {}, warnings.map((w) => h('li', {}, w)))) : null);

  // Time axis ticks.
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) =>
    h('span', { class: 'tick', style: { left: `${f * 100}%` } }, fmtDuration(f * spanUs)));
  const axis = h('div', { class: 'waterfall-axis' }, h('div', { class: 'name-col' }, 'Service & operation'), h('div', { class: 'time-col' }, ticks));

  const collapsed = new Set();
  let visible = [];
  let selected = null;
  const inner = h('div', { class: 'waterfall-inner' });
  const scroller = h('div', { class: 'waterfall', id: 'waterfall', tabindex: 0 }, inner);
  const details = h('aside', { class: 'span-details hidden', id: 'span-details' });

  const computeVisible = () => {
    visible = [];
    const stack = [...tree.roots].reverse();
    // buildTree made spans in a parent cycle roots; `seen` stops the walk going round the cycle.
    const seen = new Set();
    while (stack.length) {
      const n = stack.pop();
      if (seen.has(n)) continue;
      seen.add(n);
      visible.push(n);
      if (!collapsed.has(n)) for (let i = n.children.length - 1; i >= 0; i--) stack.push(n.children[i]);
    }
    inner.style.height = `${visible.length * ROW_HEIGHT_PX}px`;
  };

  const row = (n, i) => {
    const cp = showCritical.checked ? critical.get(n.id) : undefined;
    const left = pct(n.startUs);
    const width = Math.max(pct(n.endUs) - left, 0.05);
    const bar = h('div', {
      class: `bar${n.placeholder ? ' placeholder' : ''}`,
      style: { left: `${left}%`, width: `${width}%`, background: n.placeholder ? '' : serviceColour(n.service) },
    });
    const segments = (cp?.sections ?? []).map(([a, b]) =>
      h('div', { class: 'cp-segment', style: { left: `${pct(a)}%`, width: `${Math.max(pct(b) - pct(a), 0.05)}%` } }));
    const label = h('span', { class: 'bar-label', style: left > 70 ? { right: `${100 - left}%` } : { left: `${left + width}%` } },
      n.placeholder ? 'missing parent' : fmtDuration(n.endUs - n.startUs));
    const toggle = n.children.length
      ? h('button', { type: 'button', class: 'toggle', 'aria-label': collapsed.has(n) ? 'Expand' : 'Collapse', 'data-toggle': '1' },
        collapsed.has(n) ? '▸' : '▾')
      : h('span', { class: 'toggle leaf' });
    const indent = Math.min(n.depth, 30) * 14;
    const classes = ['row'];
    if (n.error) classes.push('error');
    if (cp) classes.push('critical');
    if (n.placeholder) classes.push('placeholder-row');
    if (selected === n) classes.push('selected');
    const el = h('div', {
      class: classes.join(' '), style: { top: `${i * ROW_HEIGHT_PX}px` }, 'data-span-id': n.id, 'data-depth': n.depth,
      role: 'row',
    },
    h('div', { class: 'name-col', style: { paddingLeft: `${indent + 4}px` }, title: `${n.service} ${n.span?.operationName ?? ''}` },
      toggle,
      n.depth > 30 ? h('span', { class: 'deep' }, `${n.depth}`) : null,
      h('span', { class: 'svc-dot', style: { background: n.placeholder ? '#999' : serviceColour(n.service) } }),
      h('span', { class: 'svc' }, n.service),
      h('span', { class: 'op' }, n.placeholder ? n.id : n.span.operationName),
      n.error ? h('span', { class: 'err-icon', title: 'error' }, '!') : null,
      adjusted.has(n.id) ? h('span', { class: 'skew-icon', title: 'start adjusted for clock skew' }, '⇄') : null),
    h('div', { class: 'time-col' }, bar, segments, label));
    el.addEventListener('click', (e) => {
      if (e.target.closest('[data-toggle]')) {
        if (collapsed.has(n)) collapsed.delete(n);
        else collapsed.add(n);
        computeVisible();
      } else {
        selected = n;
        showDetails(n);
      }
      paint(true);
    });
    return el;
  };

  let painted = [-1, -1];
  const paint = (force = false) => {
    const first = Math.max(0, Math.floor(scroller.scrollTop / ROW_HEIGHT_PX) - OVERSCAN_ROWS);
    const last = Math.min(visible.length, Math.ceil((scroller.scrollTop + scroller.clientHeight) / ROW_HEIGHT_PX) + OVERSCAN_ROWS);
    if (!force && painted[0] === first && painted[1] === last) return;
    painted = [first, last];
    const rows = [];
    for (let i = first; i < last; i++) rows.push(row(visible[i], i));
    inner.replaceChildren(...rows);
  };
  let frame = 0;
  scroller.addEventListener('scroll', () => {
    if (!frame) frame = requestAnimationFrame(() => { frame = 0; paint(); });
  });
  repaint = paint;

  const showDetails = (n) => {
    details.classList.remove('hidden');
    details.replaceChildren(spanDetails(n, trace, traceStartUs, critical.get(n.id), adjusted.get(n.id), () => {
      selected = null;
      details.classList.add('hidden');
      paint(true);
    }));
  };

  header.querySelector('#expand-all').addEventListener('click', () => { collapsed.clear(); computeVisible(); paint(true); });
  header.querySelector('#collapse-all').addEventListener('click', () => {
    collapsed.clear();
    for (const n of all) if (n.children.length && n.depth >= 1) collapsed.add(n);
    computeVisible();
    paint(true);
  });
  showCritical.addEventListener('change', () => paint(true));

  view().replaceChildren(h('div', { class: 'trace-view' }, header, axis, scroller, details));
  computeVisible();
  paint(true);
}

const fact = (k, v) => h('div', {}, h('dt', {}, k), h('dd', {}, String(v)));

function kvTable(rows, id) {
  if (!rows.length) return h('p', { class: 'hint' }, 'none');
  return h('table', { class: 'kv', id },
    h('tbody', {}, rows.map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, typeof v === 'object' ? JSON.stringify(v) : String(v))))));
}

function spanDetails(n, trace, traceStartUs, cp, adjustment, close) {
  const closeButton = h('button', { type: 'button', class: 'close', 'aria-label': 'Close span details', onclick: close }, '×');
  if (n.placeholder) {
    return h('div', {}, closeButton, h('h3', {}, `Missing span ${n.id}`),
      h('p', {}, `${n.children.length} span(s) name this span as their parent, but it was never received. `
        + 'Its service may not be instrumented, or the span was dropped or sampled out.'));
  }
  const span = n.span;
  const process = trace.processes?.[span.processID] ?? { tags: [] };
  const parent = (span.references ?? []).find((r) => r.refType === 'CHILD_OF')?.spanID;
  const facts = [
    ['Service', n.service], ['Operation', span.operationName], ['Span ID', span.spanID], ['Parent', parent ?? '(root)'],
    ['Start', `${fmtDuration(span.startTime - traceStartUs)} after the trace start (${fmtTime(span.startTime / 1000)})`],
    ['Duration', fmtDuration(span.duration)],
  ];
  if (cp) facts.push(['Critical path self time', fmtDuration(Number(cp.selfNanos) / 1000)]);
  if (adjustment) facts.push(['Clock skew', `shifted by ${fmtDuration(Number(adjustment.offsetNanos) / 1000)}`]);
  const links = (span.references ?? []).filter((r) => r.refType !== 'CHILD_OF' || r.spanID !== parent);
  return h('div', {},
    closeButton,
    h('h3', {}, h('span', { class: 'svc-dot', style: { background: serviceColour(n.service) } }), `${n.service}: ${span.operationName}`),
    kvTable(facts, 'span-facts'),
    (span.warnings ?? []).length ? h('ul', { class: 'span-warnings' }, span.warnings.map((w) => h('li', {}, w))) : null,
    h('h4', {}, 'Attributes'), kvTable((span.tags ?? []).map((t) => [t.key, t.value]), 'span-tags'),
    h('h4', {}, 'Resource'), kvTable([['service.name', n.service], ...(process.tags ?? []).map((t) => [t.key, t.value])], 'span-resource'),
    h('h4', {}, `Events (${(span.logs ?? []).length})`),
    (span.logs ?? []).length
      ? h('ol', { class: 'events', id: 'span-events' }, span.logs.map((log) => h('li', {},
        h('span', { class: 'at' }, fmtDuration(log.timestamp - traceStartUs)),
        kvTable((log.fields ?? []).map((f) => [f.key, f.value])))))
      : h('p', { class: 'hint' }, 'none'),
    links.length ? [h('h4', {}, 'Links'), kvTable(links.map((r) => [r.refType, `${r.traceID} / ${r.spanID}`]))] : null);
}

// ---------------------------------------------------------------------------------------------------------------
// The dependency graph.

const DEP_LOOKBACKS = [['1h', 3600e3], ['6h', 6 * 3600e3], ['24h', 86400e3], ['2d', 2 * 86400e3], ['7d', 7 * 86400e3], ['30d', 30 * 86400e3]];

async function showDependencies(params) {
  document.title = 'Dependencies · Skein';
  const endTs = Number(params.get('endTs')) || Date.now();
  const lookback = Number(params.get('lookback')) || 86400e3;
  const end = h('input', { type: 'datetime-local', id: 'deps-end', value: toLocalInput(endTs) });
  const lookbackSel = h('select', { id: 'deps-lookback' },
    DEP_LOOKBACKS.map(([label, ms]) => h('option', { value: ms, selected: ms === lookback }, `Last ${label}`)));
  const form = h('form', { class: 'deps-form', id: 'deps-form' },
    field('Window ends', end), field('Lookback', lookbackSel), h('button', { type: 'submit', id: 'deps-submit' }, 'Show'));
  const out = h('section', { class: 'deps', id: 'deps' }, h('p', { class: 'hint' }, 'Loading…'));
  view().replaceChildren(h('div', { class: 'deps-view' }, h('h2', {}, 'Service dependencies'), form, out));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const target = `#/dependencies?endTs=${fromLocalInput(end.value) || Date.now()}&lookback=${lookbackSel.value}`;
    if (location.hash === target) route();
    else location.hash = target;
  });
  let links;
  try {
    links = (await api(`api/dependencies?endTs=${Math.round(endTs)}&lookback=${Math.round(lookback)}`)).data ?? [];
  } catch (e) {
    showError(out, e);
    return;
  }
  if (links.length === 0) {
    out.replaceChildren(h('p', { class: 'hint', id: 'no-dependencies' }, 'No service dependencies in this window.'));
    return;
  }
  out.replaceChildren(dependencyGraph(links), dependencyTable(links));
}

/**
 * Lays the services out in columns by their longest call chain from a caller with no callers (cycles broken at
 * the edge that closes them), orders each column by its callers' positions, and draws edges as curves labelled
 * with call and error counts.
 */
function dependencyGraph(links) {
  const names = [...new Set(links.flatMap((l) => [l.parent, l.child]))].sort();
  const out = new Map(names.map((n) => [n, []]));
  for (const l of links) out.get(l.parent).push(l.child);
  // Back edges by iterative DFS colouring.
  const state = new Map();
  const back = new Set();
  for (const start of names) {
    if (state.has(start)) continue;
    const stack = [[start, 0]];
    state.set(start, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [node, i] = top;
      const next = out.get(node)[i];
      if (next === undefined) {
        state.set(node, 2);
        stack.pop();
        continue;
      }
      top[1] = i + 1;
      if (state.get(next) === 1) back.add(`${node}\u0000${next}`);
      else if (!state.has(next)) {
        state.set(next, 1);
        stack.push([next, 0]);
      }
    }
  }
  const forward = links.filter((l) => l.parent !== l.child && !back.has(`${l.parent}\u0000${l.child}`));
  // Longest-path layering over the DAG (Kahn's order).
  const indeg = new Map(names.map((n) => [n, 0]));
  for (const l of forward) indeg.set(l.child, indeg.get(l.child) + 1);
  const layer = new Map(names.map((n) => [n, 0]));
  const queue = names.filter((n) => indeg.get(n) === 0);
  while (queue.length) {
    const n = queue.shift();
    for (const l of forward.filter((f) => f.parent === n)) {
      layer.set(l.child, Math.max(layer.get(l.child), layer.get(n) + 1));
      indeg.set(l.child, indeg.get(l.child) - 1);
      if (indeg.get(l.child) === 0) queue.push(l.child);
    }
  }
  const columns = [];
  for (const n of names) (columns[layer.get(n)] ??= []).push(n);
  const row = new Map();
  columns.forEach((col, c) => {
    if (c > 0) {
      const bary = (n) => {
        const ps = forward.filter((l) => l.child === n).map((l) => row.get(l.parent) ?? 0);
        return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : 0;
      };
      col.sort((a, b) => bary(a) - bary(b) || a.localeCompare(b));
    }
    col.forEach((n, i) => row.set(n, i));
  });
  const NODE_W = 170;
  const NODE_H = 38;
  const COL_GAP = 120;
  const ROW_GAP = 34;
  const tallest = Math.max(...columns.map((c) => c.length));
  const pos = new Map();
  columns.forEach((col, c) => {
    const offset = ((tallest - col.length) * (NODE_H + ROW_GAP)) / 2;
    col.forEach((n, i) => pos.set(n, { x: 20 + c * (NODE_W + COL_GAP), y: 30 + offset + i * (NODE_H + ROW_GAP) }));
  });
  const width = 40 + columns.length * (NODE_W + COL_GAP) - COL_GAP;
  const height = 60 + tallest * (NODE_H + ROW_GAP);

  const edges = links.map((l) => {
    const a = pos.get(l.parent);
    const b = pos.get(l.child);
    let d;
    let lx;
    let ly;
    if (l.parent === l.child) {
      d = `M${a.x + NODE_W - 30},${a.y} C${a.x + NODE_W + 30},${a.y - 40} ${a.x + NODE_W + 30},${a.y + NODE_H + 40} ${a.x + NODE_W - 30},${a.y + NODE_H}`;
      lx = a.x + NODE_W + 26;
      ly = a.y + NODE_H / 2;
    } else if (b.x > a.x) {
      const x1 = a.x + NODE_W;
      const y1 = a.y + NODE_H / 2;
      const x2 = b.x;
      const y2 = b.y + NODE_H / 2;
      const mx = (x1 + x2) / 2;
      d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
      lx = mx;
      ly = (y1 + y2) / 2 - 4;
    } else {
      // A call back to an earlier (or the same) column: loop below the nodes.
      const x1 = a.x + NODE_W / 2;
      const y1 = a.y + NODE_H;
      const x2 = b.x + NODE_W / 2;
      const y2 = b.y + NODE_H;
      const dip = Math.max(y1, y2) + 50;
      d = `M${x1},${y1} C${x1},${dip} ${x2},${dip} ${x2},${y2}`;
      lx = (x1 + x2) / 2;
      ly = dip - 8;
    }
    const errors = l.errorCount ?? 0;
    const label = errors > 0 ? `${l.callCount} calls · ${errors} errors` : `${l.callCount} calls`;
    return s('g', { class: `edge${errors > 0 ? ' has-error' : ''}`, 'data-parent': l.parent, 'data-child': l.child },
      s('path', { d, 'marker-end': errors > 0 ? 'url(#arrow-error)' : 'url(#arrow)' }),
      s('text', { x: lx, y: ly, 'text-anchor': 'middle', class: 'edge-label' }, label));
  });
  const nodes = names.map((n) => {
    const p = pos.get(n);
    const text = n.length > 22 ? `${n.slice(0, 21)}…` : n;
    return s('g', {
      class: 'node', 'data-service': n, transform: `translate(${p.x},${p.y})`,
      onclick: () => { location.hash = `#/search?service=${encodeURIComponent(n)}`; },
    },
      s('title', {}, n),
      s('rect', { width: NODE_W, height: NODE_H, rx: 6, style: { stroke: serviceColour(n) } }),
      s('text', { x: NODE_W / 2, y: NODE_H / 2 + 5, 'text-anchor': 'middle' }, text));
  });
  const marker = (id) => s('marker', { id, viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
    s('path', { d: 'M0,0 L10,5 L0,10 z' }));
  return h('div', { class: 'graph-wrap' },
    s('svg', { id: 'dependency-graph', viewBox: `0 0 ${width + 60} ${height + 40}`, width: width + 60, height: height + 40, role: 'img',
      'aria-label': `Service dependency graph: ${names.length} services, ${links.length} edges` },
    s('defs', {}, marker('arrow'), marker('arrow-error')), edges, nodes));
}

function dependencyTable(links) {
  return h('table', { class: 'deps-table', id: 'deps-table' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Caller'), h('th', {}, 'Callee'), h('th', {}, 'Calls'), h('th', {}, 'Errors'))),
    h('tbody', {}, links.map((l) => h('tr', { class: (l.errorCount ?? 0) > 0 ? 'has-error' : '' },
      h('td', {}, l.parent), h('td', {}, l.child), h('td', {}, String(l.callCount)), h('td', {}, String(l.errorCount ?? 0))))));
}

// ---------------------------------------------------------------------------------------------------------------

document.getElementById('lookup').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = document.getElementById('lookup-id');
  const id = input.value.trim().toLowerCase();
  if (id) location.hash = `#/trace/${encodeURIComponent(id)}`;
  input.value = '';
});
window.addEventListener('hashchange', route);
route();
