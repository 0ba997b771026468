// One of the lake's Grafana dashboards (embedded as /ui/dashboards/<name>.json), run
// against this lake's Grafana API and drawn without Grafana: its template variables
// become selects, its panels a responsive grid, its annotations marks on every chart.

import { getJson, postJson } from './api.js';
import { intervalText, niceInterval } from './format.js';
import { clearCharts, RENDERERS } from './panels.js';

const cache = new Map();

async function loadDashboard(name, signal) {
  if (!cache.has(name)) cache.set(name, await getJson(`/ui/dashboards/${encodeURIComponent(name)}.json`, signal));
  return cache.get(name);
}

// Grafana's template variable syntax: $name, [[name]], ${name} and ${name:format}.
const VARIABLE = /\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}/g;

/**
 * A target's payload after variable interpolation, as the JSON datasource plugin sends
 * it: each known variable is replaced by its JSON text (an array for the multi-value
 * variables, a bare value for a single string), then the text is parsed.
 */
export function interpolatePayload(text, vars) {
  const replaced = String(text).replace(VARIABLE, (match, a, b, _f, c) => {
    const name = a || b || c;
    if (!Object.prototype.hasOwnProperty.call(vars, name)) return match;
    const json = JSON.stringify(vars[name]);
    return json.startsWith('"') && json.endsWith('"') ? JSON.parse(json) : json;
  });
  return JSON.parse(replaced);
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const iso = (ms) => new Date(ms).toISOString();

/** Runs `jobs` (functions returning promises) with at most `limit` at a time. */
async function pool(jobs, limit) {
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const job = jobs[next];
      next += 1;
      await job();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
}

/**
 * A rendered dashboard. `render()` builds the page and its filters once; `refresh()`
 * re-runs every query for the range and filters and redraws the panels (auto-refresh
 * calls it, so the filter selects keep their focus).
 */
export class DashboardView {
  constructor(root, name, { range, selections, onSelect, onAuthError, setStatus }) {
    this.root = root;
    this.name = name;
    this.range = range;
    this.selections = selections || {};
    this.onSelect = onSelect;
    this.onAuthError = onAuthError;
    this.setStatus = setStatus;
    this.charts = [];
    this.observers = [];
    this.generation = 0;
    this.controller = null;
    this.options = {};
    this.ready = false;
  }

  /** A filter changed: one value, or every value for "All" (`''`). */
  select(name, value) {
    this.vars = { ...this.vars, [name]: value ? [value] : this.options[name] || [] };
    this.refresh();
  }

  destroy() {
    // A load still in flight belongs to a view that is gone: bumping the
    // generation keeps it from marking the shared root, which by now holds the
    // next view, as loaded.
    this.generation += 1;
    if (this.controller) this.controller.abort();
    this.clearCharts();
  }

  clearCharts() {
    clearCharts(this);
  }

  async render() {
    this.controller = new AbortController();
    delete this.root.dataset.loaded;
    this.root.dataset.view = this.name;
    this.dashboard = await loadDashboard(this.name, this.controller.signal);
    const d = this.dashboard;
    this.root.replaceChildren();
    const heading = el('h1', { id: 'view-title', tabindex: '-1', text: d.title.replace(/^lake · /, '') });
    const head = el('div', { class: 'view-head' }, heading, el('p', { class: 'desc', text: d.description || '' }));
    this.variableBox = el('div', { class: 'variables', role: 'group', 'aria-label': 'Filters' });
    head.append(this.variableBox);
    this.grid = el('div', { class: 'grid' });
    this.root.append(head, this.grid);
    this.panels = (d.panels || []).filter((p) => RENDERERS[p.type]).map((p) => this.panelShell(p));
    try {
      this.vars = await this.loadVariables(this.controller.signal);
    } catch (e) {
      if (e.name === 'AbortError') return;
      if (e.status === 401) this.onAuthError();
      this.setStatus(`Could not load the filters: ${e.message}`);
      for (const p of this.panels) this.showError(p, e);
      return;
    }
    this.ready = true;
    await this.refresh(true);
  }

  panelShell(panel) {
    const titleId = `panel-${this.name}-${panel.id}`;
    const body = el('div', { class: 'panel-body', 'data-type': panel.type, 'data-state': 'loading' });
    const section = el('section', { class: `panel panel-${panel.type}`, 'aria-labelledby': titleId, 'data-panel-id': panel.id },
      el('h2', { id: titleId, text: panel.title }),
      panel.description ? el('p', { class: 'panel-desc', text: panel.description }) : null,
      body);
    const g = panel.gridPos || { w: 24, h: 8 };
    section.style.gridColumn = `span ${Math.min(24, Math.max(1, g.w))}`;
    section.style.setProperty('--rows', String(g.h));
    this.grid.append(section);
    return { panel, section, body, height: Math.max(110, g.h * 30 - 80) };
  }

  /** Variable values from `/grafana/variable`, as selects ("All" or one value). */
  async loadVariables(signal) {
    const vars = (this.dashboard.templating && this.dashboard.templating.list) || [];
    const values = {};
    this.variableBox.replaceChildren();
    for (const v of vars) {
      const query = v.query && typeof v.query === 'object' ? v.query.query : v.query;
      const options = await postJson('/grafana/variable', { payload: { target: query }, range: { from: iso(this.range.from), to: iso(this.range.to) } }, signal);
      const all = options.map((o) => o.__value);
      this.options[v.name] = all;
      const chosen = this.selections[v.name];
      const current = chosen && all.includes(chosen) ? [chosen] : all;
      values[v.name] = current;
      const id = `var-${v.name}`;
      const select = el('select', { id });
      select.append(el('option', { value: '', text: 'All' }));
      for (const o of options) select.append(el('option', { value: o.__value, text: o.__text, selected: chosen === o.__value }));
      select.addEventListener('change', () => this.onSelect(v.name, select.value));
      this.variableBox.append(el('label', { for: id, text: v.label || v.name }), select);
    }
    return values;
  }

  async refresh(first = false) {
    // A timer tick while the page is still being built waits for the next one.
    if (!first && !this.ready) return;
    if (this.controller && !first) this.controller.abort();
    if (!first) this.controller = new AbortController();
    const { signal } = this.controller;
    const generation = ++this.generation;
    // `data-loaded` says the panels on screen are this generation's answers;
    // a refresh (timer, range, filter) takes it away until they are.
    delete this.root.dataset.loaded;
    const started = performance.now();
    this.setStatus('Loading…');
    const vars = this.vars || {};
    const intervalMs = niceInterval(this.range.from, this.range.to);
    const gvars = { ...vars, __interval: intervalText(intervalMs), __interval_ms: intervalMs };
    const scopedVars = Object.fromEntries(Object.entries(vars).map(([k, v]) => [k, { text: k, value: v }]));
    const request = (target) => ({
      range: { from: iso(this.range.from), to: iso(this.range.to) },
      intervalMs,
      maxDataPoints: 1000,
      targets: [{ refId: target.refId, target: target.target, payload: interpolatePayload(target.payload, gvars) }],
      scopedVars,
      adhocFilters: [],
    });
    let annotations = [];
    const notes = ((this.dashboard.annotations && this.dashboard.annotations.list) || []).filter((a) => a.target && a.enable !== false);
    for (const a of notes) {
      try {
        const answer = await postJson('/grafana/query', request(a.target), signal);
        annotations = annotations.concat(toAnnotations(answer));
      } catch (e) {
        if (e.name === 'AbortError') return;
      }
    }
    if (generation !== this.generation) return;
    this.clearCharts();
    let failed = 0;
    const jobs = this.panels.map((p) => async () => {
      p.body.dataset.state = 'loading';
      p.section.setAttribute('aria-busy', 'true');
      try {
        const answers = [];
        for (const t of p.panel.targets || []) answers.push(...(await postJson('/grafana/query', request(t), signal)));
        if (generation !== this.generation) return;
        p.body.replaceChildren();
        RENDERERS[p.panel.type](p.body, p.panel, answers, {
          from: this.range.from, to: this.range.to, intervalMs, height: p.height, annotations, charts: this.charts, observers: this.observers,
        });
        p.body.dataset.state = 'done';
      } catch (e) {
        if (e.name === 'AbortError' || generation !== this.generation) return;
        failed += 1;
        if (e.status === 401) this.onAuthError();
        this.showError(p, e);
      } finally {
        p.section.removeAttribute('aria-busy');
      }
    });
    await pool(jobs, 4);
    if (generation !== this.generation) return;
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    this.root.dataset.loaded = String(generation);
    this.setStatus(failed ? `${failed} panel(s) failed; updated ${new Date().toLocaleTimeString()}` : `Updated ${new Date().toLocaleTimeString()} (${secs} s)`);
  }

  showError(p, e) {
    p.body.replaceChildren(el('p', { class: 'panel-error', text: e.message || String(e) }));
    p.body.dataset.state = 'error';
  }
}

/** Table answers with time/title/text/tags columns as annotation events. */
function toAnnotations(answers) {
  const out = [];
  for (const a of answers) {
    if (!a || a.type !== 'table') continue;
    const col = (n) => a.columns.findIndex((c) => c.text === n);
    const [t, title, text, tags] = [col('time'), col('title'), col('text'), col('tags')];
    if (t < 0) continue;
    for (const r of a.rows) out.push({ time: r[t], title: title >= 0 ? r[title] : '', text: text >= 0 ? r[text] : '', tags: tags >= 0 ? r[tags] : '' });
  }
  return out;
}
