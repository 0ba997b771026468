#!/usr/bin/env python3
"""psycopg against `lake serve`'s PostgreSQL port, for lake/tests/pg_wire.rs.

Usage: client.py MODE DSN [FIXTURE...]; prints one JSON document. Exit status 3 when
psycopg is not installed (`scripts/setup peers` puts it in the peers venv).

  types   server-side types round-tripped, text and binary, with $n parameters
  replay  each fixture as Grafana's pgx sends it: Parse + Describe statement, then
          Bind/Execute with binary results ("-- ping" as a simple query)
  errors  statements the lake refuses, each followed by a query on the same connection
  cancel  a long query cancelled from another thread (a CancelRequest), then a query
  cancel-wrong-key PORT  the same with a forged secret key: the query runs to its limit
  hold N  N authenticated sessions held open, then one more: its error
"""
import datetime
import json
import sys

try:
    import psycopg
    from psycopg import pq
except ImportError:
    sys.exit(3)


def plain(v):
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    return v


def types(dsn):
    out = {}
    # Not autocommit: psycopg opens with BEGIN and ends with COMMIT, as applications do.
    with psycopg.connect(dsn) as conn:
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            cur.execute(
                "SELECT ts, host, value, labels, CAST(value AS BIGINT) AS n, value > 5 AS big, "
                "['a', 'b'] AS l, CAST(ts AS DATE) AS d FROM metrics "
                "WHERE name = %s AND value >= %s ORDER BY ts LIMIT 2",
                ("pg_seq", 3),
            )
            rows = cur.fetchall()
            r = rows[0]
            out["binary" if binary else "text"] = {
                "oids": [d.type_code for d in cur.description],
                "names": [d.name for d in cur.description],
                "python": [type(v).__name__ for v in r],
                "ts": r[0].isoformat(),
                "utcoffset": r[0].utcoffset().total_seconds(),
                "row": [plain(v) for v in r[1:7]] + [r[7].isoformat()],
                "rows": len(rows),
            }
        conn.commit()
        cur = conn.cursor()
        got = []
        for v in (1, 10):
            cur.execute(
                "SELECT count(*) FROM metrics WHERE name = %s AND value >= %s", ("pg_seq", v), prepare=True
            )
            got.append(cur.fetchone()[0])
        out["prepared"] = got
        # A parameter is data, never SQL text.
        cur.execute("SELECT count(*) FROM metrics WHERE name = %s", ("pg_seq' OR '1'='1",))
        out["injection"] = cur.fetchone()[0]
        since = datetime.datetime(2026, 12, 7, 10, 30, tzinfo=datetime.timezone.utc)
        cur.execute("SELECT count(*) FROM metrics WHERE name = 'pg_seq' AND ts >= %s", (since,))
        out["since"] = cur.fetchone()[0]
        cur.execute("SELECT %s::DOUBLE * 2 AS x, %s AS flag", (1.25, True))
        out["echo"] = list(cur.fetchone())
    print(json.dumps(out))


def replay(dsn, files):
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for path in files:
            name = path.rsplit("/", 1)[-1].removesuffix(".sql")
            sql = open(path, encoding="utf-8").read().rstrip("\n")
            if sql.lstrip().startswith("--"):
                # pgconn.Ping: Exec(ctx, "-- ping"), the simple protocol.
                res = conn.pgconn.exec_(sql.encode())
                out[name] = {"status": pq.ExecStatus(res.status).name}
                continue
            res = conn.pgconn.prepare(b"", sql.encode())
            if res.status != pq.ExecStatus.COMMAND_OK:
                out[name] = {"error": res.error_message.decode()}
                continue
            d = conn.pgconn.describe_prepared(b"")
            described = [d.fname(i).decode() for i in range(d.nfields)]
            cur = conn.cursor(binary=True)
            try:
                cur.execute(sql)
            except psycopg.Error as e:
                out[name] = {"error": str(e), "sqlstate": e.sqlstate}
                continue
            out[name] = {
                "described": described,
                "columns": [c.name for c in cur.description],
                "rows": [[plain(v) for v in r] for r in cur.fetchall()],
            }
    print(json.dumps(out, default=str))


def errors(dsn):
    statements = [
        "CREATE TABLE t (a INT)",
        "INSERT INTO metrics SELECT * FROM metrics",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELEC 1",
        "SELECT count(*) FROM range(1000000000) a, range(1000) b",
        "COPY metrics FROM STDIN",
        "SELECT rolname FROM pg_catalog.pg_roles",
        "SELECT * FROM no_such_table",
    ]
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            one = {"sql": s}
            try:
                conn.execute(s).fetchall()
                one["error"] = None
            except psycopg.Error as e:
                one["sqlstate"] = e.sqlstate
                one["error"] = str(e)
            one["after"] = conn.execute("SELECT 41 + 1").fetchone()[0]
            out.append(one)
    print(json.dumps(out))


def cancel(dsn):
    import threading
    import time
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        t = threading.Timer(1.0, conn.cancel)
        t.start()
        t0 = time.monotonic()
        try:
            conn.execute("SELECT count(*) FROM range(1000000000) a, range(1000) b").fetchall()
            out["error"] = None
        except psycopg.Error as e:
            out["sqlstate"] = e.sqlstate
            out["error"] = str(e)
        out["seconds"] = time.monotonic() - t0
        t.join()
        out["after"] = conn.execute("SELECT 41 + 1").fetchone()[0]
    print(json.dumps(out))


def cancel_wrong_key(dsn, port):
    """A CancelRequest naming the session's process id with a wrong secret: ignored."""
    import socket
    import struct
    import threading
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        pid = conn.info.backend_pid

        def forge():
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(struct.pack("!iiii", 16, 80877102, pid, 12345))
                s.recv(1)

        t = threading.Timer(0.5, forge)
        t.start()
        try:
            conn.execute("SELECT count(*) FROM range(1000000000) a, range(1000) b").fetchall()
        except psycopg.Error as e:
            out["sqlstate"] = e.sqlstate
            out["error"] = str(e)
        t.join()
        out["after"] = conn.execute("SELECT 41 + 1").fetchone()[0]
    print(json.dumps(out))


def hold(dsn, n):
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(n)]
    for c in conns:
        c.execute("SELECT 1").fetchone()
    out = {}
    try:
        psycopg.connect(dsn, autocommit=True, connect_timeout=5)
        out["extra"] = "connected"
    except psycopg.Error as e:
        out["extra"] = str(e)
    conns.pop().close()
    # The lake frees the slot once it sees the socket close: retry briefly.
    import time
    for _ in range(50):
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                out["after_one_left"] = c.execute("SELECT 7").fetchone()[0]
            break
        except psycopg.Error as e:
            out["after_one_left"] = str(e)
            time.sleep(0.1)
    print(json.dumps(out))


if __name__ == "__main__":
    mode, dsn = sys.argv[1], sys.argv[2]
    if mode == "types":
        types(dsn)
    elif mode == "replay":
        replay(dsn, sys.argv[3:])
    elif mode == "errors":
        errors(dsn)
    elif mode == "cancel":
        cancel(dsn)
    elif mode == "cancel-wrong-key":
        cancel_wrong_key(dsn, int(sys.argv[3]))
    elif mode == "hold":
        hold(dsn, int(sys.argv[3]))
    else:
        sys.exit(f"unknown mode {mode}")
