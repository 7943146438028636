// sluice console: plain JavaScript, no framework, nothing fetched from
// elsewhere. It reads the admin API with the admin token, which it keeps in
// this tab's sessionStorage; without a token the API answers 401 and the
// page shows the sign-in form only. Data is put in the page as text
// (textContent), never as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'sluice-admin-token';
let token = sessionStorage.getItem(TOKEN_KEY) || '';
let signedIn = false;
let viewTimer = null;
let headerTimer = null;
let prevStatus = null;
let tail = null; // {ctl: AbortController}
let rulesInfo = null;

class Unauthorized extends Error {}

// api calls the admin API and returns its JSON; a refused token signs out.
async function api(path, opts = {}) {
  const headers = {};
  if (token) headers.Authorization = 'Bearer ' + token;
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, {
    method: opts.method || 'GET', headers, signal: opts.signal,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  if (resp.status === 401) throw new Unauthorized('the admin token was refused');
  const text = await resp.text();
  let data;
  try { data = text ? JSON.parse(text) : {}; } catch (e) { data = { error: text }; }
  if (!resp.ok && !opts.anyStatus) throw new Error(data.error || resp.status + ' ' + resp.statusText);
  data.httpStatus = resp.status;
  return data;
}

// el makes an element: el('td', {class: 'x'}, 'text', child, ...).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

// fill replaces a table's rows; each cell is labelled with its column's
// heading, which a narrow screen shows beside it (app.css).
function fill(tbody, rows) {
  const heads = [...tbody.parentElement.tHead.rows[0].cells].map((th) => th.textContent);
  for (const r of rows) [...r.cells].forEach((td, i) => { td.dataset.label = heads[i] || ''; });
  tbody.replaceChildren(...rows);
}

function fmtTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const now = new Date();
  const t = d.toLocaleTimeString([], { hour12: false });
  return d.toDateString() === now.toDateString() ? t : d.toLocaleDateString() + ' ' + t;
}

function fmtAge(iso) {
  const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  return fmtSeconds(s);
}

function fmtSeconds(s) {
  s = Math.round(s);
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm' + (s % 60) + 's';
  return Math.floor(s / 3600) + 'h' + Math.floor((s % 3600) / 60) + 'm';
}

function fmtValue(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(Math.round(v * 1000) / 1000);
  return String(v);
}

function fmtNumber(v) {
  if (v >= 100) return Math.round(v).toLocaleString();
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function fmtBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

// ---- sign in ----

function showLogin(message) {
  signedIn = false;
  stopView();
  clearInterval(headerTimer);
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('login-error').hidden = !message;
  $('token').value = '';
  $('token').focus();
}

async function boot() {
  try {
    await api('/api/v1/status');
  } catch (e) {
    if (e instanceof Unauthorized) {
      showLogin(token ? 'That is not the admin token.' : '');
    } else {
      showLogin('sluice cannot be reached: ' + e.message);
    }
    return;
  }
  signedIn = true;
  $('login').hidden = true;
  $('app').hidden = false;
  $('signout').hidden = !token;
  refreshHeader();
  clearInterval(headerTimer);
  headerTimer = setInterval(refreshHeader, 5000);
  route();
}

// failed handles an error of a view: a refused token signs out.
function failed(e, where) {
  if (e instanceof Unauthorized) { showLogin('The admin token was refused.'); return; }
  if (e.name === 'AbortError') return;
  if (where) where.textContent = e.message;
}

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token = $('token').value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  boot();
});

$('signout').addEventListener('click', () => {
  token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin('');
});

async function refreshHeader() {
  try {
    const [st, al] = await Promise.all([api('/api/v1/status'), api('/api/v1/alerts')]);
    $('state').textContent = st.ready ? 'ready' : 'not ready';
    $('state').className = 'state ' + (st.ready ? 'ready' : 'notready');
    $('state').title = (st.problems || []).join('\n');
    const n = al.firing.length;
    $('firing-count').textContent = n;
    $('firing-count').hidden = n === 0;
  } catch (e) { failed(e); }
}

// ---- views ----

const views = {
  overview: { start: () => every(5000, refreshOverview) },
  alerts: { start: () => every(3000, refreshAlerts) },
  tail: { start: startTail, stop: stopTail },
  deadletters: { start: () => every(5000, refreshDeadLetters) },
  playground: { start: startPlayground },
};
let current = null;

function every(ms, f) {
  f();
  viewTimer = setInterval(f, ms);
}

function stopView() {
  clearInterval(viewTimer);
  viewTimer = null;
  if (current && views[current].stop) views[current].stop();
  current = null;
}

function route() {
  if (!signedIn) return;
  const name = (location.hash || '#overview').slice(1);
  const view = views[name] ? name : 'overview';
  if (view === current) return;
  stopView();
  current = view;
  for (const v of Object.keys(views)) $('view-' + v).hidden = v !== view;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === view);
  views[view].start();
}
window.addEventListener('hashchange', route);

// ---- overview ----

async function refreshOverview() {
  let ov, st;
  try {
    [ov, st] = await Promise.all([api('/api/v1/overview'), api('/api/v1/status')]);
  } catch (e) { failed(e, $('summary')); return; }
  const pts = ov.points || [];
  drawChart('chart-rate', pts, [(p) => p.in, (p) => p.out, (p) => p.dead_letters], (v) => fmtNumber(v) + '/s', ov.every_seconds);
  drawChart('chart-latency', pts, [(p) => p.p50, (p) => p.p99], (v) => fmtNumber(v) + ' s', ov.every_seconds);
  $('problems').replaceChildren(...(st.problems || []).map((p) => el('p', { class: 'error' }, p)));
  const prev = prevStatus && prevStatus.uptime_seconds < st.uptime_seconds ? prevStatus : null;
  const secs = prev ? st.uptime_seconds - prev.uptime_seconds : 0;
  const old = {};
  if (prev) for (const p of prev.pipelines) for (const s of p.sinks) old[p.name + '/' + s.name] = s;
  const rows = [];
  for (const p of st.pipelines) {
    for (const s of p.sinks) {
      const o = old[p.name + '/' + s.name];
      const rate = o && secs > 0 ? Math.max(0, (s.written_total - o.written_total) / secs) : null;
      const state = !s.ready ? 'DOWN' : s.failing_for_seconds > 0 ? 'retrying' : 'ok';
      rows.push(el('tr', {},
        el('td', {}, p.name), el('td', {}, s.name),
        el('td', { class: 'st-' + state.toLowerCase() }, state),
        el('td', { class: 'num' }, rate === null ? '…' : fmtNumber(rate)),
        el('td', { class: 'num' }, s.backlog_records + ' (' + fmtBytes(s.backlog_bytes) + ')'),
        el('td', { class: 'num' }, fmtSeconds(s.backlog_age_seconds)),
        el('td', { class: 'num' }, s.failures_total),
        el('td', {}, s.failing_for_seconds > 0 ? s.last_error || '' : '')));
    }
  }
  fill($('sinks').tBodies[0], rows);
  prevStatus = st;
  const journals = st.pipelines.map((p) => p.name + ': journal ' + fmtBytes(p.journal_bytes) + ' of ' + fmtBytes(p.journal_max_bytes)).join('; ');
  $('summary').textContent = 'sluice ' + st.version + ', up ' + fmtSeconds(st.uptime_seconds) + ', ' +
    st.connections + ' connections. ' + journals;
}

// drawChart draws series (functions of a point) as polylines.
function drawChart(id, points, series, label, every) {
  const svg = $(id);
  const W = 600, H = 160;
  let max = 0;
  for (const p of points) for (const f of series) { const v = f(p); if (v !== null && v > max) max = v; }
  const ns = 'http://www.w3.org/2000/svg';
  const lines = series.map((f, i) => {
    const pl = document.createElementNS(ns, 'polyline');
    pl.setAttribute('class', 's' + (i + 1));
    const xy = [];
    points.forEach((p, k) => {
      const v = f(p);
      if (v === null || v === undefined) return;
      const x = points.length > 1 ? (k / (points.length - 1)) * W : W;
      const y = H - 4 - (max > 0 ? (v / max) * (H - 12) : 0);
      xy.push(x.toFixed(1) + ',' + y.toFixed(1));
    });
    pl.setAttribute('points', xy.join(' '));
    return pl;
  });
  svg.replaceChildren(...lines);
  $(id + '-max').textContent = points.length < 2 ? 'collecting: a point every ' + every + ' s' : 'top: ' + label(max);
  $(id + '-span').textContent = points.length < 2 ? '' : 'last ' + fmtSeconds(points.length * every);
}

// ---- alerts ----

async function refreshAlerts() {
  let al;
  try { al = await api('/api/v1/alerts'); } catch (e) { failed(e); return; }
  fill($('firing').tBodies[0], al.firing.map((a) => el('tr', {},
    el('td', {}, a.rule),
    el('td', {}, a.series && a.series !== a.device ? a.device + ' (' + a.series + ')' : a.device),
    el('td', { class: 'sev-' + a.severity }, a.severity),
    el('td', {}, fmtTime(a.since)),
    el('td', { class: 'num' }, fmtAge(a.since)),
    el('td', { class: 'num' }, fmtValue(a.value)),
    el('td', {}, a.message))));
  $('firing-none').hidden = al.firing.length > 0;
  fill($('transitions').tBodies[0], al.recent.map((a) => el('tr', {},
    el('td', {}, fmtTime(a.time)),
    el('td', { class: 'st-' + a.status }, a.status),
    el('td', {}, a.rule), el('td', {}, a.device),
    el('td', { class: 'sev-' + a.severity }, a.severity),
    el('td', { class: 'num' }, fmtValue(a.value)),
    el('td', {}, a.message))));
}

// ---- a message and what the rules made of it (tail and playground) ----

function renderMessage(m) {
  const head = el('div', { class: 'head' },
    el('span', { class: 'time' }, fmtTime(m.time)),
    m.pipeline ? el('span', {}, m.pipeline) : null,
    el('span', { class: 'topic' }, m.topic),
    m.timer ? el('span', { class: 'muted' }, 'timer: no message') : el('span', { class: 'muted' }, 'qos ' + m.qos + (m.client_id ? ' from ' + m.client_id : '')));
  const li = el('li', {}, head);
  if (!m.timer) {
    const payload = m.payload !== undefined ? m.payload : 'hex ' + (m.payload_hex || '');
    li.append(el('div', { class: 'payload mono' }, payload.length > 2000 ? payload.slice(0, 2000) + '…' : payload));
    if (m.payload === undefined && m.decoded) li.append(el('div', { class: 'out mono' }, 'decoded ' + m.decoded.map((d) => JSON.stringify(d)).join(' ')));
  }
  const nothing = (m.rules || []).filter((r) => r.result === 'nothing').map((r) => r.rule);
  if (!m.timer && (m.rules || []).length === 0) li.append(el('div', { class: 'out none' }, 'no rule matched the topic'));
  if (nothing.length) li.append(el('div', { class: 'out none' }, 'nothing from ' + nothing.join(', ')));
  for (const r of m.records || []) {
    li.append(el('div', { class: 'out record mono' }, r.rule + ': record ' + JSON.stringify(r.tags) + ' ' + JSON.stringify(r.fields)));
  }
  for (const a of m.alerts || []) {
    li.append(el('div', { class: 'out alert ' + a.status },
      a.rule + ': alert ' + a.status + ' ' + a.device + ' ' + a.severity + ' value=' + fmtValue(a.value) + ': ' + a.message));
  }
  for (const d of m.dead_letters || []) {
    li.append(el('div', { class: 'out dead' }, (d.rule ? d.rule + ' ' : '') + '(' + d.stage + '): dead letter'),
      el('div', { class: 'reason mono' }, d.reason));
  }
  return li;
}

// ---- tail ----

const TAIL_MAX = 200;

$('tail-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  stopTail();
  $('tail').replaceChildren();
  startTail();
});

$('tail-pause').addEventListener('click', () => {
  if (tail) { stopTail(); $('tail-state').textContent = 'paused'; } else startTail();
});

function stopTail() {
  if (tail) tail.ctl.abort();
  tail = null;
  $('tail-pause').textContent = 'Resume';
}

async function startTail() {
  const q = new URLSearchParams();
  const topic = $('tail-topic').value.trim();
  const device = $('tail-device').value.trim();
  if (topic) q.set('topic', topic);
  if (device) q.set('device', device);
  const t = { ctl: new AbortController() };
  tail = t;
  $('tail-pause').textContent = 'Pause';
  $('tail-state').textContent = 'connecting…';
  const headers = token ? { Authorization: 'Bearer ' + token } : {};
  let resp;
  try {
    resp = await fetch('/api/v1/tail?' + q, { headers, signal: t.ctl.signal });
  } catch (e) { failed(e, $('tail-state')); return; }
  if (resp.status === 401) { showLogin('The admin token was refused.'); return; }
  if (!resp.ok) { $('tail-state').textContent = (await resp.json().catch(() => ({}))).error || resp.statusText; return; }
  $('tail-state').textContent = 'watching ' + (topic || 'every topic') + (device ? ', device ' + device : '');
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let dropped = 0;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let event = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (!data.length) continue;
        const payload = JSON.parse(data.join('\n'));
        if (event === 'dropped') {
          dropped = payload.dropped;
          $('tail-state').textContent = 'watching; ' + dropped + ' not shown (this page reads more slowly than they come)';
        } else if (event === 'message') {
          const list = $('tail');
          list.prepend(renderMessage(payload));
          while (list.children.length > TAIL_MAX) list.lastChild.remove();
        }
      }
    }
    if (tail === t) $('tail-state').textContent = 'the stream ended (sluice stopped?)';
  } catch (e) {
    if (tail === t) failed(e, $('tail-state'));
  }
}

// ---- dead letters ----

async function refreshDeadLetters() {
  let v;
  try { v = await api('/api/v1/deadletters'); } catch (e) { failed(e, $('dl-summary')); return; }
  $('dl-summary').textContent = v.held + ' held, ' + v.total + ' since start, newest first. ' +
    'sluice deadletters -replay sends them through the rules again after a fix.';
  $('deadletters').replaceChildren(...v.dead_letters.map((d) => {
    const what = d.stage === 'sink' ? 'sink ' + d.sink + ' refused it' :
      'rule ' + d.rule + (d.stage === 'decode' ? ' could not decode it' : ' failed');
    const li = el('li', {},
      el('div', { class: 'head' }, el('span', {}, '#' + d.id), el('span', { class: 'time' }, fmtTime(d.time)),
        el('span', {}, d.pipeline), el('span', { class: 'topic' }, what)),
      el('div', { class: 'reason mono' }, d.reason),
      el('div', { class: 'muted' }, d.topic + ' qos ' + d.qos + (d.client_id ? ' from ' + d.client_id : '') + ', received ' + fmtTime(d.received)),
      el('div', { class: 'payload mono' }, d.payload !== undefined ? d.payload : 'hex ' + d.payload_hex));
    if (d.replay) {
      li.append(el('div', { class: 'out' }, d.replay.sent ? 'replayed: sent ' + d.replay.records + ' record(s)' : 'not replayed: ' + d.replay.error));
    }
    return li;
  }));
}

// ---- playground ----

const NEW_RULE = `rules:
  - name: my_rule
    match: plant/+site/+line/+device/telemetry
    alert:
      when: temperature > 90
      severity: warning
      message: "{{ device }} at {{ temperature }}"
`;

async function startPlayground() {
  if (rulesInfo) return;
  try { rulesInfo = await api('/api/v1/rules'); } catch (e) { failed(e, $('pg-state')); return; }
  const sel = $('pg-pipeline');
  sel.replaceChildren(...rulesInfo.pipelines.map((p) => el('option', { value: p.name }, p.name)));
  pickPipeline();
}

function pipelineInfo() {
  return rulesInfo.pipelines.find((p) => p.name === $('pg-pipeline').value);
}

function pickPipeline() {
  const p = pipelineInfo();
  if (!p) return;
  $('pg-file').replaceChildren(el('option', { value: '' }, 'a new rule'), ...p.files.map((f) => el('option', { value: f.path }, f.path)));
  if (p.files.length) $('pg-file').value = p.files[0].path;
  $('pg-topic').placeholder = p.topics.join(' ') || 'every topic';
  pickFile();
}

function pickFile() {
  const p = pipelineInfo();
  const f = p && p.files.find((x) => x.path === $('pg-file').value);
  $('pg-rules').value = f ? f.content : NEW_RULE;
  $('pg-save').hidden = !(rulesInfo.write_rules && f);
  $('pg-errors').replaceChildren();
}

$('pg-pipeline').addEventListener('change', pickPipeline);
$('pg-file').addEventListener('change', pickFile);

$('pg-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const req = { pipeline: $('pg-pipeline').value, file: $('pg-file').value || 'playground.yaml', rules: $('pg-rules').value };
  if (document.querySelector('input[name=pg-source]:checked').value === 'pasted') {
    req.payloads = $('pg-payloads').value.split('\n').map((l) => l.trim()).filter((l) => l).map((l) => {
      const i = l.search(/\s/);
      return i < 0 ? { topic: l, payload: '' } : { topic: l.slice(0, i), payload: l.slice(i + 1).trim() };
    });
  } else {
    req.topic = $('pg-topic').value.trim();
    req.last = parseInt($('pg-last').value, 10) || 50;
  }
  $('pg-state').textContent = 'running…';
  let res;
  try { res = await api('/api/v1/playground', { method: 'POST', body: req }); } catch (e) { failed(e, $('pg-state')); return; }
  $('pg-state').textContent = '';
  showErrors(res.errors || []);
  $('pg-result').hidden = !!(res.errors && res.errors.length);
  if (res.errors && res.errors.length) return;
  const s = res.summary;
  $('pg-summary').textContent = s.messages + ' messages: ' + s.records + ' records, ' + s.alerts + ' alert transitions, ' +
    s.dead_letters + ' dead letters (on a simulated clock, from no state; nothing was written).';
  fill($('pg-firing').tBodies[0], res.firing.map((a) => el('tr', {},
    el('td', {}, a.rule), el('td', {}, a.device), el('td', { class: 'sev-' + a.severity }, a.severity),
    el('td', {}, fmtTime(a.since)), el('td', { class: 'num' }, fmtValue(a.value)), el('td', {}, a.message))));
  $('pg-messages').replaceChildren(...res.messages.slice(-200).map(renderMessage));
});

function showErrors(errors) {
  $('pg-errors').replaceChildren(...errors.map((e) => {
    const li = el('li', { title: 'show the line' }, e.text);
    li.addEventListener('click', () => selectLine(e.line));
    return li;
  }));
}

// selectLine selects a line of the rules being edited.
function selectLine(n) {
  const ta = $('pg-rules');
  if (!n) return;
  const lines = ta.value.split('\n');
  let start = 0;
  for (let i = 0; i < n - 1 && i < lines.length; i++) start += lines[i].length + 1;
  const end = start + (lines[n - 1] || '').length;
  ta.focus();
  ta.setSelectionRange(start, end);
}

$('pg-save').addEventListener('click', async () => {
  const path = $('pg-file').value;
  if (!path) return;
  $('pg-state').textContent = 'saving…';
  let res;
  try {
    res = await api('/api/v1/rules/file', { method: 'PUT', anyStatus: true, body: { pipeline: $('pg-pipeline').value, path, content: $('pg-rules').value } });
  } catch (e) { failed(e, $('pg-state')); return; }
  if (res.httpStatus === 200) {
    $('pg-state').textContent = 'saved ' + path + '; the rules are reloaded';
    showErrors([]);
    const f = pipelineInfo().files.find((x) => x.path === path);
    if (f) f.content = $('pg-rules').value;
  } else {
    $('pg-state').textContent = res.error || 'not saved';
    showErrors(res.errors || []);
  }
});

boot();
