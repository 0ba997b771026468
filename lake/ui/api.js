// The lake's HTTP APIs as the page uses them. The read token lives in localStorage and
// travels only in the Authorization header (never in a URL).

const TOKEN_KEY = 'lake.readToken';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

export function token() {
  try {
    return localStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

function headers(extra) {
  const h = { ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/** `{required, valid}`: whether the lake wants a read token and accepts ours. */
export async function authStatus() {
  const r = await fetch('/ui/auth', { headers: headers(), cache: 'no-store' });
  if (!r.ok) throw new ApiError(r.status, `auth check failed: ${r.status}`);
  return r.json();
}

async function failure(r) {
  let message = `${r.status} ${r.statusText}`;
  try {
    const body = await r.json();
    if (body && body.error) message = body.error;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(r.status, message);
}

/** POSTs JSON and returns the parsed JSON answer. */
export async function postJson(path, body, signal) {
  const r = await fetch(path, {
    method: 'POST',
    headers: headers({ 'Content-Type': 'application/json' }),
    body: JSON.stringify(body),
    signal,
  });
  if (!r.ok) throw await failure(r);
  return r.json();
}

/** GETs JSON (for embedded files: the dashboards). */
export async function getJson(path, signal) {
  const r = await fetch(path, { headers: headers(), signal });
  if (!r.ok) throw await failure(r);
  return r.json();
}

/** Runs SQL through `/v1/sql`: `{columns, rows, truncated, row_count}`. */
export function sql(text, signal) {
  return postJson('/v1/sql', { sql: text, format: 'json' }, signal);
}

/** Runs SQL through `/v1/sql` as CSV, returned as a Blob. */
export async function sqlCsv(text, signal) {
  const r = await fetch('/v1/sql', {
    method: 'POST',
    headers: headers({ 'Content-Type': 'application/json' }),
    body: JSON.stringify({ sql: text, format: 'csv' }),
    signal,
  });
  if (!r.ok) throw await failure(r);
  return r.blob();
}
