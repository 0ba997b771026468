// The Logs page (#/logs): the fleet's log lines without SQL. Filters (host, unit, source,
// priority, text) over the page's time range, a histogram of the matching lines by
// priority, the lines newest first with "Load older", a live tail, and every field of a
// line (its attrs too) in a dialog.
//
// It runs the lake's named queries `logs` and `logs_histogram` (query/src/named.rs), the
// ones `lake logs` and the Grafana `logs` dashboard run: every filter travels as a
// template variable, bound as a parameter by the lake, so no text typed here ever becomes
// SQL. The histogram is drawn from the Grafana dashboard's own panel (logs.json).
//
// Paging and the live tail follow `lake logs` (lake/src/cli/logs.rs): lines of one instant
// come in a fixed order, so "Load older" asks for lines at or before the oldest instant
// shown and skips those of that instant it already shows; the live tail asks for the last
// few minutes and shows a line only as many times as it occurs beyond those already shown,
// so identical lines, lines sharing an instant and lines arriving late are shown once.

import { getJson, postJson } from './api.js';
import { formatTime, niceInterval } from './format.js';
import { clearCharts, el, renderTimeseries } from './panels.js';

const PAGE = 200;
const LIVE_EVERY_MS = 2000;
/** How late a line may reach the lake and still appear in the live tail. */
const LIVE_WINDOW_MS = 5 * 60e3;
const PRIORITIES = ['emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug'];
const FILTERS = ['host', 'unit', 'source', 'priority', 'q'];

const iso = (ms) => new Date(ms).toISOString();

/** Epoch microseconds of an RFC 3339 text with up to 9 fractional digits. */
export function micros(text) {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(text);
  if (!m) return Date.parse(text) * 1000;
  const frac = (m[2] || '').padEnd(6, '0').slice(0, 6);
  return Date.parse(`${m[1]}${m[3]}`) * 1000 + Number(frac);
}

/** `2026-12-07 04:56:22.123456` in local time. */
function timeText(us) {
  const ms = Math.floor(us / 1000);
  return `${formatTime(ms)}.${String(((us % 1e6) + 1e6) % 1e6).padStart(6, '0')}`;
}

/** The lines of `next` (asked at or before the oldest instant of `shown`, newest first)
 * that `shown` does not hold yet. */
export function afterPage(shown, next) {
  if (!shown.length) return next;
  const oldest = shown[shown.length - 1].us;
  let skip = 0;
  for (let i = shown.length - 1; i >= 0 && shown[i].us === oldest; i -= 1) skip += 1;
  return next.filter((l) => {
    if (skip > 0 && l.us === oldest) {
      skip -= 1;
      return false;
    }
    return true;
  });
}

/** The lines of a live poll (newest first) not shown yet, given how often each distinct
 * line of the window is shown. */
export function unseen(lines, shownCounts, floorUs) {
  const counts = new Map();
  const out = [];
  for (let i = lines.length - 1; i >= 0; i -= 1) {
    const l = lines[i];
    if (l.us < floorUs) continue;
    const n = (counts.get(l.key) || 0) + 1;
    counts.set(l.key, n);
    if (n > (shownCounts.get(l.key) || 0)) out.push(l);
  }
  return out.reverse();
}

export class LogsView {
  constructor(root, { range, params, onParams, onAuthError, setStatus }) {
    this.root = root;
    this.range = range;
    this.filters = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || '']));
    this.live = params.get('live') === '1';
    this.onParams = onParams;
    this.onAuthError = onAuthError;
    this.setStatus = setStatus;
    this.lines = [];
    this.more = false;
    this.charts = [];
    this.observers = [];
    this.controller = null;
    this.timer = null;
    this.polling = false;
    this.generation = 0;
  }

  destroy() {
    // As in DashboardView: nothing still in flight may mark the next view loaded.
    this.generation += 1;
    if (this.controller) this.controller.abort();
    this.stopLive();
    this.clearCharts();
  }

  clearCharts() {
    clearCharts(this);
  }

  async render() {
    this.controller = new AbortController();
    this.root.dataset.view = 'logs';
    delete this.root.dataset.loaded;
    this.root.replaceChildren();
    const head = el('div', { class: 'view-head' },
      el('h1', { id: 'view-title', tabindex: '-1', text: 'Logs' }),
      el('p', { class: 'desc', text: 'Log lines of every node: journald, Docker, log files and OTLP. Filter, then click a line for all its fields.' }));
    this.form = el('form', { class: 'variables log-filters', role: 'search', 'aria-label': 'Log filters' });
    const select = (name, label) => {
      const s = el('select', { id: `logs-${name}`, name });
      s.append(el('option', { value: '', text: 'All' }));
      this.form.append(el('label', { for: s.id, text: label }), s);
      return s;
    };
    this.selects = { host: select('host', 'Host'), unit: select('unit', 'Unit'), source: select('source', 'Source') };
    const prio = el('select', { id: 'logs-priority', name: 'priority' }, el('option', { value: '', text: 'All' }));
    PRIORITIES.forEach((p, i) => prio.append(el('option', { value: String(i), text: i === 7 ? `${i} ${p}` : `${i} ${p} and worse`, selected: this.filters.priority === String(i) })));
    this.form.append(el('label', { for: 'logs-priority', text: 'Priority' }), prio);
    this.text = el('input', { id: 'logs-q', name: 'q', type: 'search', placeholder: 'text in the message', spellcheck: 'false', autocomplete: 'off' });
    this.text.value = this.filters.q;
    this.form.append(el('label', { for: 'logs-q', text: 'Text' }), this.text,
      el('button', { type: 'submit', id: 'logs-apply', text: 'Apply' }));
    this.liveBox = el('input', { id: 'logs-live', type: 'checkbox', checked: this.live });
    this.form.append(el('span', { class: 'live-toggle' }, this.liveBox, el('label', { for: 'logs-live', text: 'Live tail' })));
    head.append(this.form);
    this.chartBody = el('div', { class: 'panel-body', 'data-type': 'timeseries', 'data-state': 'loading' });
    const chart = el('section', { class: 'panel panel-timeseries logs-chart', 'aria-labelledby': 'logs-hist-title' },
      el('h2', { id: 'logs-hist-title', text: 'Matching lines over time' }), this.chartBody);
    this.count = el('p', { id: 'logs-count', class: 'note', role: 'status' });
    this.tbody = el('tbody');
    const table = el('table', { id: 'logs-table', class: 'logs' },
      el('caption', { class: 'sr-only', text: 'Log lines, newest first' }),
      el('thead', {}, el('tr', {}, ...['Time', 'Host', 'Unit', 'Priority', 'Message'].map((t) => el('th', { scope: 'col', text: t })))),
      this.tbody);
    this.older = el('button', { type: 'button', id: 'logs-older', text: 'Load older', hidden: true });
    const list = el('section', { class: 'panel log-list', 'aria-label': 'Log lines' },
      this.count, el('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': 'Log lines (table)' }, table), this.older);
    this.detail = el('dialog', { id: 'log-detail', 'aria-labelledby': 'log-detail-title' });
    this.root.append(head, el('div', { class: 'grid' }, chart), list, this.detail);

    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.readFilters();
      this.reload();
    });
    for (const s of [...Object.values(this.selects), prio]) s.addEventListener('change', () => this.form.requestSubmit());
    this.liveBox.addEventListener('change', () => {
      this.live = this.liveBox.checked;
      this.saveParams();
      if (this.live) this.startLive();
      else this.stopLive();
    });
    this.older.addEventListener('click', () => this.loadOlder());
    this.tbody.addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr');
      if (tr && tr.dataset.index !== undefined) this.showDetail(this.lines[Number(tr.dataset.index)]);
    });

    this.panel = await this.histogramPanel();
    await this.loadOptions();
    await this.reload();
    if (this.live) this.startLive();
  }

  /** The histogram panel of the Grafana `logs` dashboard. */
  async histogramPanel() {
    const d = await getJson('/ui/dashboards/logs.json', this.controller.signal);
    const p = (d.panels || []).find((x) => x.type === 'timeseries');
    if (!p) throw new Error('logs.json has no histogram panel');
    return p;
  }

  readFilters() {
    for (const k of ['host', 'unit', 'source']) this.filters[k] = this.selects[k].value;
    this.filters.priority = this.form.querySelector('#logs-priority').value;
    this.filters.q = this.text.value;
    this.saveParams();
  }

  saveParams() {
    const p = {};
    for (const k of FILTERS) if (this.filters[k]) p[k] = this.filters[k];
    if (this.live) p.live = '1';
    this.onParams(p);
  }

  /** The named queries' variables for the current filters (`''`: any). */
  vars() {
    const one = (v) => [v || ''];
    const p = this.filters.priority;
    return {
      host: one(this.filters.host),
      unit: one(this.filters.unit),
      source: one(this.filters.source),
      priority: p === '' ? [''] : Array.from({ length: Number(p) + 1 }, (_, i) => String(i)),
      grep: [this.filters.q],
    };
  }

  /** Host, unit and source values seen in the range, for the selects. */
  async loadOptions() {
    for (const k of ['host', 'unit', 'source']) {
      const options = await postJson('/grafana/variable', {
        payload: { target: `SELECT DISTINCT ${k} FROM logs WHERE $__timeFilter(ts) AND ${k} IS NOT NULL ORDER BY 1 LIMIT 500` },
        range: { from: iso(this.range.from), to: iso(this.range.to) },
      }, this.controller.signal);
      const s = this.selects[k];
      s.replaceChildren(el('option', { value: '', text: 'All' }));
      const chosen = this.filters[k];
      const values = options.map((o) => o.__value);
      if (chosen && !values.includes(chosen)) values.unshift(chosen);
      for (const v of values) s.append(el('option', { value: v, text: v, selected: v === chosen }));
    }
  }

  /** Up to `limit` lines in [from, to), newest first, at or before `beforeUs`. */
  async page(from, to, limit, beforeUs, signal) {
    const before = beforeUs === undefined ? '' : `${new Date(Math.floor(beforeUs / 1000)).toISOString().slice(0, 19)}.${String(beforeUs % 1e6).padStart(6, '0')}Z`;
    const answer = await postJson('/v1/sql', {
      query: 'logs', from: Math.floor(from), to: Math.ceil(to) + 1, format: 'json',
      vars: { ...this.vars(), before: [before], limit: [String(limit)] },
    }, signal);
    const names = answer.columns.map((c) => c.name);
    const lines = answer.rows.map((r) => {
      const fields = Object.fromEntries(names.map((n, i) => [n, r[i]]));
      return { us: micros(fields.ts), key: JSON.stringify(r), fields };
    });
    return { lines, full: answer.truncated || lines.length >= limit };
  }

  /** The range's newest lines and the histogram, from scratch. */
  async reload() {
    if (this.controller) this.controller.abort();
    this.controller = new AbortController();
    const { signal } = this.controller;
    const generation = ++this.generation;
    delete this.root.dataset.loaded;
    this.setStatus('Loading…');
    try {
      if (this.live) this.range = { ...this.range, to: Date.now() };
      const [page] = await Promise.all([this.page(this.range.from, this.range.to, PAGE, undefined, signal), this.drawHistogram(signal)]);
      if (generation !== this.generation) return;
      this.lines = page.lines;
      this.more = page.full;
      this.draw();
      this.root.dataset.loaded = String(generation);
      this.setStatus(`Updated ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      this.failed(e);
    }
  }

  failed(e) {
    if (e.name === 'AbortError') return;
    if (e.status === 401) this.onAuthError();
    this.count.textContent = `Could not load the lines: ${e.message}`;
    this.count.dataset.state = 'error';
    this.setStatus(`Logs failed: ${e.message}`);
  }

  async drawHistogram(signal) {
    const intervalMs = niceInterval(this.range.from, this.range.to, 120);
    const t = this.panel.targets[0];
    const answers = await postJson('/grafana/query', {
      range: { from: iso(this.range.from), to: iso(this.range.to) },
      intervalMs,
      maxDataPoints: 1000,
      targets: [{ refId: t.refId, target: t.target, payload: { format: 'timeseries', ...this.vars() } }],
      adhocFilters: [],
    }, signal);
    this.clearCharts();
    this.chartBody.replaceChildren();
    renderTimeseries(this.chartBody, this.panel, answers, {
      from: this.range.from, to: this.range.to, intervalMs, height: 150, annotations: [], charts: this.charts, observers: this.observers,
    });
    this.chartBody.dataset.state = 'done';
  }

  row(line, index, fresh) {
    const f = line.fields;
    const p = f.priority;
    const unit = f.unit || f.ident || f.source || '–';
    const tr = el('tr', { 'data-index': index, class: `prio-${p ?? 'none'}${fresh ? ' fresh' : ''}` },
      el('td', { class: 'time' }, el('button', { type: 'button', class: 'linklike', 'aria-label': `Show every field of the line at ${timeText(line.us)}`, text: timeText(line.us) })),
      el('td', { text: f.host || '–' }),
      el('td', { text: f.pid !== null && f.pid !== undefined ? `${unit}[${f.pid}]` : unit }),
      el('td', { class: 'prio', text: p === null || p === undefined ? '–' : PRIORITIES[p] || String(p) }),
      el('td', { class: 'message', text: f.message ?? '' }));
    return tr;
  }

  draw(freshKeys = new Set()) {
    this.tbody.replaceChildren(...this.lines.map((l, i) => this.row(l, i, freshKeys.has(l))));
    const n = this.lines.length;
    this.count.dataset.state = 'done';
    this.count.textContent = n ? `${n} line${n === 1 ? '' : 's'}, newest first${this.live ? ' (live)' : ''}` : 'No lines match in this range.';
    this.root.dataset.lines = String(n);
    this.older.hidden = !this.more;
  }

  async loadOlder() {
    if (!this.lines.length) return;
    this.older.disabled = true;
    try {
      const oldest = this.lines[this.lines.length - 1].us;
      let tail = 0;
      for (let i = this.lines.length - 1; i >= 0 && this.lines[i].us === oldest; i -= 1) tail += 1;
      const page = await this.page(this.range.from, this.range.to, PAGE + tail, oldest, this.controller.signal);
      const fresh = afterPage(this.lines, page.lines);
      this.lines = this.lines.concat(fresh);
      this.more = page.full && fresh.length > 0;
      this.draw();
    } catch (e) {
      this.failed(e);
    } finally {
      this.older.disabled = false;
    }
  }

  startLive() {
    this.stopLive();
    this.range = { ...this.range, to: Date.now() };
    // One poll at a time: on a slow lake, ticks that find one running are skipped.
    const tick = async () => {
      if (document.hidden || this.polling) return;
      this.polling = true;
      try {
        await this.poll();
      } catch (e) {
        this.failed(e);
      } finally {
        this.polling = false;
      }
    };
    this.timer = setInterval(tick, LIVE_EVERY_MS);
    this.draw();
  }

  stopLive() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.count && this.lines) this.draw();
  }

  /** New lines of the last few minutes on top; the histogram follows. */
  async poll() {
    const now = Date.now();
    const floorUs = Math.max(this.range.from, now - LIVE_WINDOW_MS) * 1000;
    const counts = new Map();
    for (const l of this.lines) if (l.us >= floorUs) counts.set(l.key, (counts.get(l.key) || 0) + 1);
    let got = [];
    for (;;) {
      const before = got.length ? got[got.length - 1].us : undefined;
      const page = await this.page(floorUs / 1000, now + 3600e3, 1000, before, this.controller.signal);
      const fresh = afterPage(got, page.lines);
      got = got.concat(fresh);
      if (!page.full || !fresh.length) break;
    }
    const add = unseen(got, counts, floorUs);
    this.range = { ...this.range, to: now };
    if (add.length) {
      this.lines = add.concat(this.lines).sort((a, b) => b.us - a.us);
      this.draw(new Set(add));
    }
    await this.drawHistogram(this.controller.signal);
    this.root.dataset.polled = String((Number(this.root.dataset.polled) || 0) + 1);
  }

  /** Auto-refresh and "Refresh now": a new range, unless the tail is live. */
  refresh() {
    if (this.live) return;
    this.reload();
  }

  showDetail(line) {
    if (!line) return;
    const dl = el('dl', { class: 'fields' });
    for (const [k, v] of Object.entries(line.fields)) {
      if (k === 'attrs' && v && typeof v === 'object') {
        for (const [ak, av] of Object.entries(v).sort(([a], [b]) => a.localeCompare(b))) dl.append(el('dt', { text: `attrs.${ak}` }), el('dd', { text: String(av) }));
      } else {
        dl.append(el('dt', { text: k }), el('dd', { text: v === null || v === undefined ? '–' : k === 'priority' ? `${v} (${PRIORITIES[v] || '?'})` : String(v) }));
      }
    }
    const close = el('button', { type: 'button', id: 'log-detail-close', text: 'Close' });
    close.addEventListener('click', () => this.detail.close());
    this.detail.replaceChildren(el('h2', { id: 'log-detail-title', text: `Line at ${timeText(line.us)}` }), dl, el('div', { class: 'buttons' }, close));
    this.detail.showModal();
    close.focus();
  }
}
