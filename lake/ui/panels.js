// Renders the answers of `/grafana/query` the way the Grafana panel types of the
// dashboards show them: timeseries (uPlot), stat, table and bargauge.

import { formatTime, formatValue, humanize } from './format.js';

const PALETTE = ['#2f7ed8', '#e8743b', '#19a979', '#ed4a7b', '#945ecf', '#13a4b4', '#d4a20b', '#6c8893', '#c43c35', '#5a9e2f', '#a05195', '#3b6fa9'];

/** A DOM element with attributes (`class`, `text`, others as is) and children. */
export function el(tag, attrs = {}, ...children) {
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

// Grafana's named colours, as the palette draws them.
const NAMED_COLORS = { red: '#c43c35', orange: '#e8743b', yellow: '#d4a20b', green: '#19a979', blue: '#2f7ed8', purple: '#945ecf', text: '#6c8893' };

/** A series' colour from the panel's "fixed colour by name" override, if it has one. */
function overrideColor(panel, name) {
  for (const o of (panel.fieldConfig && panel.fieldConfig.overrides) || []) {
    if (!o.matcher || o.matcher.id !== 'byName' || o.matcher.options !== name) continue;
    for (const p of o.properties || []) {
      const c = p.id === 'color' && p.value ? p.value.fixedColor : null;
      if (c) return NAMED_COLORS[c] || (/^#[0-9a-f]{6}$/i.test(c) ? c : null);
    }
  }
  return null;
}

function defaults(panel) {
  return (panel.fieldConfig && panel.fieldConfig.defaults) || {};
}

function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

/** The threshold colour (`green`, `orange`, `red`, …) of a value. */
function thresholdColor(thresholds, v) {
  const steps = (thresholds && thresholds.steps) || [];
  let color = steps.length ? steps[0].color : 'green';
  for (const s of steps) if (s.value !== null && s.value !== undefined && v >= s.value) color = s.color;
  return color;
}

/** A Grafana table answer with its transformations applied: `{columns, rows}`. */
function transform(table, panel) {
  let t = table;
  for (const tr of panel.transformations || []) {
    if (tr.id === 'groupingToMatrix') t = matrix(t, tr.options || {});
  }
  return t;
}

/** Grafana's "Grouping to matrix": one row per `rowField`, one column per `columnField`. */
function matrix(table, { rowField, columnField, valueField }) {
  const idx = (name) => table.columns.findIndex((c) => c.text === name);
  const [r, c, v] = [idx(rowField), idx(columnField), idx(valueField)];
  if (r < 0 || c < 0 || v < 0) return table;
  const rowKeys = [];
  const colKeys = [];
  const cells = new Map();
  for (const row of table.rows) {
    const rk = String(row[r]);
    const ck = String(row[c]);
    if (!rowKeys.includes(rk)) rowKeys.push(rk);
    if (!colKeys.includes(ck)) colKeys.push(ck);
    cells.set(`${rk}\u0000${ck}`, row[v]);
  }
  colKeys.sort();
  rowKeys.sort();
  return {
    columns: [{ text: `${rowField} \\ ${columnField}`, type: 'string' }, ...colKeys.map((k) => ({ text: k, type: 'number' }))],
    rows: rowKeys.map((rk) => [rk, ...colKeys.map((ck) => (cells.has(`${rk}\u0000${ck}`) ? cells.get(`${rk}\u0000${ck}`) : null))]),
  };
}

// Numbers that are names, not quantities: no thousands separators.
const IDENTIFIER = /(^|_)(port|status|pid|code|id|year)s?$/i;

function cellText(value, type, name) {
  if (value === null || value === undefined) return '–';
  if (type === 'time') return formatTime(value);
  if (typeof value === 'number' && IDENTIFIER.test(name || '') && Number.isInteger(value)) return String(value);
  if (typeof value === 'number') return formatValue(value, 'none');
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** A table answer as an HTML table in a keyboard-scrollable region. */
export function renderTable(body, panel, answers) {
  const table = answers.find((a) => a && a.type === 'table');
  if (!table) throw new Error('expected a table answer');
  const t = transform(table, panel);
  body.dataset.rows = String(t.rows.length);
  if (!t.rows.length) {
    body.append(el('p', { class: 'empty', text: 'No rows in this range.' }));
    return;
  }
  const shown = t.rows.slice(0, 500);
  const head = el('tr', {}, ...t.columns.map((c) => el('th', { scope: 'col', class: c.type === 'number' ? 'num' : null, text: c.text })));
  const rows = shown.map((row) =>
    el('tr', {}, ...row.map((v, i) => {
      const type = t.columns[i] ? t.columns[i].type : 'string';
      const name = t.columns[i] ? t.columns[i].text : '';
      return el(i === 0 ? 'th' : 'td', { scope: i === 0 ? 'row' : null, class: type === 'number' ? 'num' : null, text: cellText(v, type, name) });
    })),
  );
  const tbl = el('table', {}, el('caption', { class: 'sr-only', text: panel.title }), el('thead', {}, head), el('tbody', {}, ...rows));
  body.append(el('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': `${panel.title} (table)` }, tbl));
  if (t.rows.length > shown.length) body.append(el('p', { class: 'note', text: `First ${shown.length} of ${t.rows.length} rows.` }));
}

/** Numeric columns of the first row as big numbers (series: their last value). */
export function renderStat(body, panel, answers) {
  const d = defaults(panel);
  const tiles = [];
  for (const a of answers) {
    if (a && a.type === 'table') {
      const row = a.rows[0] || [];
      a.columns.forEach((c, i) => {
        if (c.type === 'number') tiles.push({ name: c.text, value: row[i] ?? null });
      });
    } else if (a && a.datapoints) {
      const last = [...a.datapoints].reverse().find((p) => p[0] !== null);
      tiles.push({ name: a.target, value: last ? last[0] : null });
    }
  }
  if (!tiles.length) throw new Error('no numeric value to show');
  body.dataset.values = String(tiles.length);
  const list = el('dl', { class: 'stats' });
  for (const t of tiles) {
    const color = t.value === null ? 'none' : thresholdColor(d.thresholds, t.value);
    list.append(el('div', { class: 'stat', 'data-color': color },
      el('dt', { text: humanize(t.name) }),
      el('dd', { text: formatValue(t.value, d.unit, d.decimals) })));
  }
  body.append(list);
}

/** One bar per row: label from the text columns, value from the first numeric one. */
export function renderBarGauge(body, panel, answers) {
  const table = answers.find((a) => a && a.type === 'table');
  if (!table) throw new Error('expected a table answer');
  const d = defaults(panel);
  const num = table.columns.findIndex((c) => c.type === 'number');
  if (num < 0) throw new Error('no numeric column');
  const labels = table.columns.map((c, i) => (c.type === 'number' ? -1 : i)).filter((i) => i >= 0);
  body.dataset.rows = String(table.rows.length);
  if (!table.rows.length) {
    body.append(el('p', { class: 'empty', text: 'No rows in this range.' }));
    return;
  }
  const values = table.rows.map((r) => r[num]).filter((v) => typeof v === 'number');
  const min = d.min ?? 0;
  const max = d.max ?? Math.max(min + 1, ...values);
  const steps = (d.thresholds && d.thresholds.steps) || [];
  const list = el('ul', { class: 'bars' });
  table.rows.forEach((row, n) => {
    const label = labels.map((i) => row[i]).filter((v) => v !== null).join(' ') || `row ${n + 1}`;
    const v = row[num];
    const meter = el('meter', { min, max, value: v ?? min, 'aria-label': `${label}: ${formatValue(v, d.unit, d.decimals)}` });
    // Three-step thresholds map onto the meter's low/high/optimum colouring.
    if (steps.length >= 3) {
      meter.low = steps[1].value;
      meter.high = steps[2].value;
      meter.optimum = steps[0].color === 'green' ? min : max;
    }
    list.append(el('li', { 'data-color': v === null ? 'none' : thresholdColor(d.thresholds, v) },
      el('span', { class: 'bar-label', text: label }), meter, el('span', { class: 'bar-value', text: formatValue(v, d.unit, d.decimals) })));
  });
  body.append(list);
}

function annotationColor(a) {
  const tags = a.tags || '';
  if (/firing/.test(tags) || /firing/.test(a.title)) return cssVar('--red', '#c43c35');
  if (/resolved/.test(tags) || /resolved/.test(a.title)) return cssVar('--green', '#19a979');
  return cssVar('--orange', '#e8743b');
}

/**
 * Series aligned on one time axis, as uPlot wants them: `[xs(seconds), ys…]`. With a
 * `grid` (bucket width, ms) every bucket of the range gets an x, so bars keep their width
 * where there are no events.
 */
function align(series, grid) {
  const times = new Set();
  for (const s of series) for (const p of s.datapoints) times.add(p[1]);
  if (grid && grid.step > 0 && (grid.to - grid.from) / grid.step <= 5000) {
    for (let t = Math.floor(grid.from / grid.step) * grid.step; t < grid.to; t += grid.step) times.add(t);
  }
  const xs = [...times].sort((a, b) => a - b);
  const index = new Map(xs.map((t, i) => [t, i]));
  let points = 0;
  const ys = series.map((s) => {
    const arr = new Array(xs.length).fill(null);
    for (const [v, t] of s.datapoints) {
      arr[index.get(t)] = v;
      if (v !== null) points += 1;
    }
    return arr;
  });
  return { data: [xs.map((t) => t / 1000), ...ys], points };
}

/** Running sums of the series (nulls count as 0), for a stacked chart. */
function stack(data) {
  const out = [data[0]];
  let below = data[0].map(() => 0);
  for (let i = 1; i < data.length; i += 1) {
    const sum = data[i].map((v, j) => below[j] + (v ?? 0));
    out.push(sum);
    below = sum;
  }
  return out;
}

/** Y-axis labels with as many decimals as the tick step needs. */
function axisLabels(splits, unit) {
  const step = splits.length > 1 ? Math.abs(splits[1] - splits[0]) : 1;
  const decimals = step >= 1 ? 0 : step >= 0.1 ? 1 : step >= 0.01 ? 2 : 3;
  const fixed = ['percent', 'short', 'reqps', 'ms', 'd', 'none', undefined, ''].includes(unit);
  return splits.map((v) => formatValue(v, unit, fixed ? decimals : undefined));
}

/** Room for the widest y-axis label. */
function axisSize(u, values) {
  if (!values || !values.length) return 48;
  const longest = Math.max(...values.map((v) => String(v).length));
  return Math.min(130, 22 + longest * 8);
}

/** Time series as a uPlot line chart with a legend of toggle buttons. */
export function renderTimeseries(body, panel, answers, ctx) {
  const series = answers.filter((a) => a && Array.isArray(a.datapoints));
  const d = defaults(panel);
  const bars = d.custom && d.custom.drawStyle === 'bars';
  const { data, points } = align(series, bars ? { from: ctx.from, to: ctx.to, step: ctx.intervalMs } : null);
  body.dataset.series = String(series.length);
  body.dataset.points = String(points);
  if (!points) {
    body.append(el('p', { class: 'empty', text: 'No data in this range.' }));
    return;
  }
  if (typeof window.uPlot !== 'function') throw new Error('the chart library did not load');
  const unit = d.unit;
  const stacked = d.custom && d.custom.stacking && d.custom.stacking.mode === 'normal';
  const fg = cssVar('--fg-muted', '#666');
  const grid = cssVar('--grid', 'rgba(128,128,128,0.15)');
  const colors = series.map((s, i) => overrideColor(panel, s.target) || PALETTE[i % PALETTE.length]);
  const chart = el('div', { class: 'chart', role: 'img', 'aria-label': `${panel.title}: line chart of ${series.length} series from ${formatTime(ctx.from)} to ${formatTime(ctx.to)}` });
  const legend = el('ul', { class: 'legend', 'aria-label': `${panel.title} series` });
  body.append(chart, legend);
  const annotations = ctx.annotations || [];
  // uPlot slot of each series (its index + 1): reversed for stacked bars.
  const reversed = stacked && bars;
  const order = series.map((_, i) => (reversed ? series.length - 1 - i : i));
  const slot = (i) => (reversed ? series.length - i : i + 1);
  const opts = {
    width: Math.max(200, chart.clientWidth || body.clientWidth || 400),
    height: Math.max(120, ctx.height || 220),
    legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { size: 6 } },
    scales: { x: { time: true, range: [ctx.from / 1000, ctx.to / 1000] } },
    axes: [
      { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } },
      { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, size: axisSize, values: (u, splits) => axisLabels(splits, unit) },
    ],
    // Stacked lines: each series is drawn at the running sum and filled down to the one
    // below. Stacked bars are drawn tallest first, so each shorter one shows in front.
    bands: stacked && !bars ? series.slice(1).map((_, i) => ({ series: [i + 2, i + 1], fill: `${colors[i + 1]}33` })) : [],
    series: [
      {},
      ...order.map((i) => ({
        label: series[i].target,
        stroke: colors[i],
        width: bars ? 1 : 1.5,
        fill: bars ? `${colors[i]}bb` : stacked && i === 0 ? `${colors[i]}33` : undefined,
        paths: bars ? window.uPlot.paths.bars({ size: [0.8, 40], align: 1 }) : undefined,
        points: { show: false },
        spanGaps: false,
      })),
    ],
    hooks: {
      draw: [
        (u) => {
          const c = u.ctx;
          const { top, height } = u.bbox;
          c.save();
          c.lineWidth = 1.5 * devicePixelRatio;
          c.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
          for (const a of annotations) {
            const x = u.valToPos(a.time / 1000, 'x', true);
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
            c.strokeStyle = annotationColor(a);
            c.beginPath();
            c.moveTo(x, top);
            c.lineTo(x, top + height);
            c.stroke();
          }
          c.restore();
        },
      ],
      setCursor: [
        (u) => {
          const idx = u.cursor.idx;
          values.forEach((span, i) => {
            const v = idx === null || idx === undefined ? lastValue(data[i + 1]) : data[i + 1][idx];
            span.textContent = formatValue(v, unit);
          });
        },
      ],
    },
  };
  const values = [];
  series.forEach((s, i) => {
    const value = el('span', { class: 'legend-value', text: formatValue(lastValue(data[i + 1]), unit) });
    values.push(value);
    const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true' });
    swatch.style.backgroundColor = colors[i];
    const button = el('button', { type: 'button', 'aria-pressed': 'true', title: 'Show or hide this series' }, swatch, el('span', { class: 'legend-name', text: s.target }), value);
    button.addEventListener('click', () => {
      const on = button.getAttribute('aria-pressed') !== 'true';
      button.setAttribute('aria-pressed', String(on));
      u.setSeries(slot(i), { show: on });
    });
    legend.append(el('li', {}, button));
  });
  const drawn = stacked ? stack(data) : data;
  const u = new window.uPlot(opts, [drawn[0], ...order.map((i) => drawn[i + 1])], chart);
  ctx.charts.push(u);
  const ro = new ResizeObserver(() => {
    const w = chart.clientWidth;
    if (w > 0 && Math.abs(w - u.width) > 2) u.setSize({ width: w, height: u.height });
  });
  ro.observe(chart);
  ctx.observers.push(ro);
}

function lastValue(arr) {
  for (let i = arr.length - 1; i >= 0; i -= 1) if (arr[i] !== null && arr[i] !== undefined) return arr[i];
  return null;
}

/** Destroys a view's charts (`view.charts`) and their resize observers (`view.observers`). */
export function clearCharts(view) {
  for (const u of view.charts) u.destroy();
  for (const o of view.observers) o.disconnect();
  view.charts = [];
  view.observers = [];
}

export const RENDERERS = {
  timeseries: renderTimeseries,
  stat: renderStat,
  table: renderTable,
  bargauge: renderBarGauge,
  gauge: renderStat,
};
