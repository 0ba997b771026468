// The lake's built-in web UI: routes (#/fleet, #/web, …, #/logs, #/sql), the time range and
// auto-refresh controls, and the read-token dialog.

import { authStatus, setToken, token } from './api.js';
import { DashboardView } from './dashboard.js';
import { presetRange, toLocalInput } from './format.js';
import { LogsView } from './logs.js';
import { renderSql } from './sql.js';

const DASHBOARDS = ['fleet', 'web', 'security', 'mesh', 'uptime', 'alerts'];
const REFRESH_KEY = 'lake.refresh';

const $ = (id) => document.getElementById(id);
const main = $('main');
const rangeSelect = $('range');
const customBox = $('custom-range');
const refreshSelect = $('refresh');
const status = $('status');
const dialog = $('token-dialog');

let current = null;
let timer = null;
let authWaiters = [];

function setStatus(text) {
  status.textContent = text;
}

/** `#/view?k=v&…` → `{view, params}`. */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [view, query] = raw.split('?');
  return { view: view || 'fleet', params: new URLSearchParams(query || '') };
}

function writeHash(view, params, replace) {
  const q = params.toString();
  const hash = `#/${view}${q ? `?${q}` : ''}`;
  if (replace) history.replaceState(null, '', hash);
  else location.hash = hash;
}

/** The range the hash asks for: a preset ending now, or fixed instants. */
function rangeOf(params) {
  const from = Number(params.get('from'));
  const to = Number(params.get('to'));
  if (from > 0 && to > from) return { preset: 'custom', from, to };
  const preset = params.get('range') || '24h';
  return { preset, ...presetRange(preset) };
}

function showRange(range) {
  rangeSelect.value = [...rangeSelect.options].some((o) => o.value === range.preset) ? range.preset : '24h';
  customBox.hidden = range.preset !== 'custom';
  if (range.preset === 'custom') {
    $('range-from').value = toLocalInput(range.from);
    $('range-to').value = toLocalInput(range.to);
  }
}

// ---------------------------------------------------------------- token

function openTokenDialog(message) {
  $('token-message').textContent = message;
  $('token-input').value = '';
  if (!dialog.open) dialog.showModal();
  $('token-input').focus();
  return new Promise((resolve) => authWaiters.push(resolve));
}

function closeTokenDialog() {
  if (dialog.open) dialog.close();
  const waiters = authWaiters;
  authWaiters = [];
  for (const w of waiters) w();
}

$('token-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const value = $('token-input').value.trim();
  if (!value) return;
  setToken(value);
  const s = await authStatus();
  if (s.valid) {
    closeTokenDialog();
    route();
  } else {
    $('token-message').textContent = 'That token was not accepted. Check [query] read_tokens of the lake.';
    $('token-input').select();
  }
});
$('token-forget').addEventListener('click', () => {
  setToken('');
  $('token-input').value = '';
  $('token-message').textContent = 'Token forgotten. The lake asks for one again.';
});
$('token-cancel').addEventListener('click', closeTokenDialog);
dialog.addEventListener('cancel', () => closeTokenDialog());
$('token-button').addEventListener('click', () => openTokenDialog(token() ? 'A token is saved; enter another to replace it.' : 'Enter a read token.'));

let asking = false;
async function onAuthError() {
  if (asking) return;
  asking = true;
  try {
    const s = await authStatus();
    if (s.required && !s.valid) await openTokenDialog('The lake refused the saved read token. Enter a valid one.');
  } finally {
    asking = false;
  }
}

// ---------------------------------------------------------------- views

function route(focus = false) {
  const { view, params } = parseHash();
  if (view !== 'sql' && view !== 'logs' && !DASHBOARDS.includes(view)) {
    writeHash('fleet', new URLSearchParams(), true);
    return route(focus);
  }
  if (current) current.destroy();
  current = null;
  for (const a of document.querySelectorAll('nav a[data-view]')) {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const range = rangeOf(params);
  showRange(range);
  document.title = `lake · ${view === 'sql' ? 'SQL' : view}`;
  if (view === 'logs') {
    const logs = new LogsView(main, {
      range,
      params,
      setStatus,
      onAuthError,
      onParams: (values) => {
        const p = new URLSearchParams();
        const { params: now } = parseHash();
        for (const k of ['range', 'from', 'to']) if (now.get(k)) p.set(k, now.get(k));
        for (const [k, v] of Object.entries(values)) p.set(k, v);
        writeHash('logs', p, true);
      },
    });
    show(logs, view, focus);
    return undefined;
  }
  if (view === 'sql') {
    current = renderSql(main, { onAuthError, setStatus });
    if (focus) $('view-title').focus();
    return undefined;
  }
  const selections = Object.fromEntries([...params.entries()].filter(([k]) => !['range', 'from', 'to'].includes(k)));
  const dash = new DashboardView(main, view, {
    range,
    selections,
    setStatus,
    onAuthError,
    onSelect: (name, value) => {
      const p = parseHash().params;
      if (value) p.set(name, value);
      else p.delete(name);
      writeHash(view, p, true);
      dash.select(name, value);
    },
  });
  show(dash, view, focus);
  return undefined;
}

/** Makes `page` (a dashboard or the Logs page) the current view and renders it. */
function show(page, view, focus) {
  current = page;
  page.render().then(() => {
    if (focus && current === page) $('view-title').focus();
  }).catch((e) => {
    if (e.name === 'AbortError') return;
    if (e.status === 401) onAuthError();
    setStatus(`Could not show ${view}: ${e.message}`);
  });
}

function refreshNow() {
  if (!current || !(current instanceof DashboardView || current instanceof LogsView)) return;
  const { params } = parseHash();
  current.range = rangeOf(params);
  current.refresh();
}

function setTimer(seconds) {
  if (timer) clearInterval(timer);
  timer = null;
  if (seconds > 0) {
    timer = setInterval(() => {
      if (!document.hidden && !dialog.open) refreshNow();
    }, seconds * 1000);
  }
}

rangeSelect.addEventListener('change', () => {
  const { view, params } = parseHash();
  if (rangeSelect.value === 'custom') {
    const r = rangeOf(params);
    $('range-from').value = toLocalInput(r.from);
    $('range-to').value = toLocalInput(r.to);
    customBox.hidden = false;
    $('range-from').focus();
    return;
  }
  params.delete('from');
  params.delete('to');
  params.set('range', rangeSelect.value);
  writeHash(view, params, false);
});

$('range-apply').addEventListener('click', () => {
  const from = new Date($('range-from').value).getTime();
  const to = new Date($('range-to').value).getTime();
  if (!(from > 0 && to > from)) {
    setStatus('The custom range needs a start before its end.');
    return;
  }
  const { view, params } = parseHash();
  params.delete('range');
  params.set('from', String(from));
  params.set('to', String(to));
  writeHash(view, params, false);
});

refreshSelect.addEventListener('change', () => {
  const secs = Number(refreshSelect.value);
  try {
    localStorage.setItem(REFRESH_KEY, String(secs));
  } catch {
    // storage disabled: the choice lasts for this page only
  }
  setTimer(secs);
});

$('reload').addEventListener('click', () => {
  if (current instanceof DashboardView || current instanceof LogsView) refreshNow();
  else route();
});

window.addEventListener('hashchange', () => route(true));

async function start() {
  try {
    const saved = localStorage.getItem(REFRESH_KEY);
    if (saved !== null && [...refreshSelect.options].some((o) => o.value === saved)) refreshSelect.value = saved;
  } catch {
    // storage disabled: keep the default
  }
  setTimer(Number(refreshSelect.value));
  let s = { required: false, valid: true };
  try {
    s = await authStatus();
  } catch (e) {
    setStatus(`The lake did not answer: ${e.message}`);
  }
  $('token-button').hidden = !s.required;
  if (s.required && !s.valid) {
    main.replaceChildren();
    await openTokenDialog(token() ? 'The saved read token was not accepted. Enter a valid one.' : 'This lake needs a read token ([query] read_tokens of lake.toml).');
    return;
  }
  route();
}

start();
