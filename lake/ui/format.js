// Numbers, units, times and time ranges.

const SPANS = { m: 60e3, h: 3600e3, d: 86400e3 };

/** `{from, to}` in epoch ms for a preset such as `24h`, ending now. */
export function presetRange(preset, now = Date.now()) {
  const m = /^(\d+)([mhd])$/.exec(preset);
  const span = m ? Number(m[1]) * SPANS[m[2]] : SPANS.d;
  return { from: now - span, to: now };
}

/** Bucket widths Grafana-like panels snap to, in ms. */
const NICE = [1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);

/** A nice bucket width giving at most about `points` buckets over the range. */
export function niceInterval(from, to, points = 500) {
  const raw = Math.max(1000, (to - from) / points);
  return NICE.find((n) => n >= raw) || NICE[NICE.length - 1];
}

/** `2m`, `30s`, `1h`: how Grafana writes `$__interval`. */
export function intervalText(ms) {
  if (ms % 86400e3 === 0) return `${ms / 86400e3}d`;
  if (ms % 3600e3 === 0) return `${ms / 3600e3}h`;
  if (ms % 60e3 === 0) return `${ms / 60e3}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

const pad = (n) => String(n).padStart(2, '0');

/** Local time as `YYYY-MM-DD HH:MM:SS`. */
export function formatTime(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** The value of a `datetime-local` input for an instant. */
export function toLocalInput(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function scaled(v, base, units, decimals) {
  let i = 0;
  let x = Math.abs(v);
  while (x >= base && i < units.length - 1) {
    x /= base;
    i += 1;
  }
  const d = decimals ?? (x >= 100 || i === 0 ? 0 : 1);
  return `${v < 0 ? '-' : ''}${x.toFixed(d)} ${units[i]}`.trim();
}

function plain(v, decimals) {
  if (decimals !== undefined && decimals !== null) return v.toFixed(decimals);
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  const a = Math.abs(v);
  const d = a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
  return v.toFixed(d);
}

/** A number in a Grafana unit (`percent`, `ms`, `bytes`, `Bps`, `reqps`, `d`, `short`, …). */
export function formatValue(v, unit, decimals) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (typeof v !== 'number') return String(v);
  switch (unit) {
    case 'percent':
      return `${plain(v, decimals ?? (Math.abs(v) >= 10 ? 1 : 2))}%`;
    case 'percentunit':
      return `${plain(v * 100, decimals ?? 1)}%`;
    case 'ms':
      return Math.abs(v) >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${plain(v, decimals)} ms`;
    case 's':
      return Math.abs(v) >= 86400 ? `${(v / 86400).toFixed(1)} d` : Math.abs(v) >= 3600 ? `${(v / 3600).toFixed(1)} h` : `${plain(v, decimals)} s`;
    case 'd':
      return `${plain(v, decimals ?? 0)} d`;
    case 'bytes':
    case 'decbytes':
      return scaled(v, 1024, ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'], decimals);
    case 'Bps':
      return `${scaled(v, 1024, ['B', 'KiB', 'MiB', 'GiB', 'TiB'], decimals)}/s`;
    case 'reqps':
      return `${plain(v, decimals ?? (Math.abs(v) >= 10 ? 0 : 2))} req/s`;
    case 'short':
      return Math.abs(v) >= 10000 ? scaled(v, 1000, ['', 'k', 'M', 'G', 'T'], decimals ?? 1) : plain(v, decimals);
    default:
      return plain(v, decimals);
  }
}

/** `cpu_percent` → `cpu percent`. */
export function humanize(name) {
  return String(name).replace(/_/g, ' ');
}
