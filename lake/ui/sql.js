// The SQL console: any read-only SQL through `/v1/sql`, results as a table, and the
// same query downloaded as CSV.

import { sql, sqlCsv } from './api.js';

const SQL_KEY = 'lake.sql';
const SHOWN = 1000;

const EXAMPLES = [
  ['Tables and their rows', "SELECT 'metrics' AS t, count(*) AS rows FROM metrics\nUNION ALL SELECT 'http', count(*) FROM http\nUNION ALL SELECT 'logs', count(*) FROM logs\nUNION ALL SELECT 'probes', count(*) FROM probes"],
  ['Busiest vhosts today', "SELECT vhost, count(*) AS requests, round(quantile_cont(duration_ms, 0.95), 1) AS p95_ms\nFROM http\nWHERE ts > now() - INTERVAL 1 DAY\nGROUP BY vhost\nORDER BY requests DESC"],
  ['Latest load per host', "SELECT host, arg_max(value, ts) AS load1, max(ts) AS at\nFROM metrics\nWHERE name = 'load1' AND ts > now() - INTERVAL 1 HOUR\nGROUP BY host\nORDER BY host"],
  ['Recent errors in the journal', "SELECT ts, host, unit, message\nFROM logs\nWHERE priority <= 3 AND ts > now() - INTERVAL 1 DAY\nORDER BY ts DESC\nLIMIT 100"],
  ['Everything one address did', "SELECT * FROM events\nWHERE ip = '203.0.113.7'\nORDER BY ts DESC\nLIMIT 200"],
];

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

function cell(v) {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

const NUMERIC = /^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|FLOAT|DOUBLE|DECIMAL.*)$/;

/** Draws the console into `root`. */
export function renderSql(root, { onAuthError, setStatus }) {
  let controller = null;
  const saved = (() => {
    try {
      return localStorage.getItem(SQL_KEY);
    } catch {
      return null;
    }
  })();
  const text = el('textarea', { id: 'sql-text', rows: '9', spellcheck: 'false', autocomplete: 'off', 'aria-describedby': 'sql-help' });
  text.value = saved || EXAMPLES[0][1];
  const examples = el('select', { id: 'sql-examples' }, el('option', { value: '', text: 'Insert an example…' }),
    ...EXAMPLES.map(([label], i) => el('option', { value: String(i), text: label })));
  const run = el('button', { type: 'submit', id: 'sql-run', class: 'primary', text: 'Run' });
  const csv = el('button', { type: 'button', id: 'sql-csv', text: 'Download CSV' });
  const summary = el('p', { id: 'sql-summary', class: 'sql-summary', role: 'status' });
  const results = el('div', { id: 'sql-results', class: 'sql-results' });
  const form = el('form', { id: 'sql-form', class: 'sql-form' },
    el('label', { for: 'sql-text', text: 'SQL' }),
    text,
    el('p', { id: 'sql-help', class: 'hint', text: 'One read-only statement over the lake\'s tables (metrics, logs, spans, http, firewall, bans, probes, alerts, containers, …). Ctrl+Enter runs it.' }),
    el('div', { class: 'buttons' }, run, csv, el('label', { for: 'sql-examples', class: 'sr-only', text: 'Examples' }), examples));
  delete root.dataset.loaded;
  root.dataset.view = 'sql';
  root.replaceChildren(el('div', { class: 'view-head' }, el('h1', { id: 'view-title', tabindex: '-1', text: 'SQL console' })), form, summary, results);

  const remember = () => {
    try {
      localStorage.setItem(SQL_KEY, text.value);
    } catch {
      // storage full or disabled: nothing to keep
    }
  };
  const failed = (e) => {
    if (e.name === 'AbortError') return;
    if (e.status === 401) onAuthError();
    summary.textContent = '';
    results.replaceChildren(el('p', { class: 'panel-error', role: 'alert', text: e.message }));
    results.dataset.state = 'error';
  };

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    remember();
    if (controller) controller.abort();
    controller = new AbortController();
    results.dataset.state = 'loading';
    run.disabled = true;
    summary.textContent = 'Running…';
    const started = performance.now();
    try {
      const answer = await sql(text.value, controller.signal);
      const ms = Math.round(performance.now() - started);
      const shown = answer.rows.slice(0, SHOWN);
      const numeric = answer.columns.map((c) => NUMERIC.test(c.type));
      const table = el('table', {},
        el('caption', { class: 'sr-only', text: 'Query result' }),
        el('thead', {}, el('tr', {}, ...answer.columns.map((c, i) => el('th', { scope: 'col', class: numeric[i] ? 'num' : null, title: c.type, text: c.name })))),
        el('tbody', {}, ...shown.map((r) => el('tr', {}, ...r.map((v, i) => el('td', { class: numeric[i] ? 'num' : null, text: cell(v) }))))));
      results.replaceChildren(el('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': 'Query result' }, table));
      results.dataset.rows = String(answer.rows.length);
      results.dataset.state = 'done';
      const more = answer.rows.length > shown.length ? `, first ${shown.length} shown (download CSV for all)` : '';
      const cut = answer.truncated ? ' — cut at the lake\'s row limit' : '';
      summary.textContent = `${answer.row_count} row${answer.row_count === 1 ? '' : 's'} in ${ms} ms${more}${cut}.`;
      setStatus(`Query ran in ${ms} ms`);
    } catch (e) {
      failed(e);
    } finally {
      run.disabled = false;
    }
  });

  csv.addEventListener('click', async () => {
    remember();
    csv.disabled = true;
    try {
      const blob = await sqlCsv(text.value);
      const url = URL.createObjectURL(blob);
      const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
      const a = el('a', { href: url, download: `lake-query-${stamp}.csv`, class: 'sr-only' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      summary.textContent = `CSV downloaded (${blob.size} bytes).`;
    } catch (e) {
      failed(e);
    } finally {
      csv.disabled = false;
    }
  });

  text.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });

  examples.addEventListener('change', () => {
    const ex = EXAMPLES[Number(examples.value)];
    if (ex) {
      text.value = ex[1];
      remember();
      text.focus();
    }
    examples.value = '';
  });

  root.dataset.loaded = '1';
  return { destroy: () => controller && controller.abort(), refresh: () => {} };
}
