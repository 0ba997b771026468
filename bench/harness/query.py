"""5. Query: the default named queries and dashboard panels over the generated 30-day lake.

- Lake vs plain DuckDB: `cargo bench -p lake --bench query` (lake/benches/query.rs) runs
  every named query and panel through the lake's HTTP APIs (an in-process server with
  `lake.toml`'s default limits) and as the same SQL in plain DuckDB on the same files,
  alternating, and writes JSON with the medians; the harness reads it.
- Lake vs Prometheus: every `metrics` sample of the lake (all 100 M) is exported as
  OpenMetrics text, one UTC day at a time (DuckDB's Python package), and loaded with
  `promtool tsdb create-blocks-from openmetrics --max-block-duration=24h` into a TSDB
  kept beside the lake (`<data>-prometheus/`, rebuilt when the lake's files change).
  Prometheus serves it (block compaction off, so the blocks stay as loaded, retention
  long enough to keep them) and the equivalent PromQL of each metrics panel is timed
  through `/api/v1/query_range` (or `/api/v1/query` for a table), over the same range
  as the query bench (the last 24 h before the newest `http` row), on one keep-alive
  connection: one warm-up, then `runs` times; medians.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

from stack import Prometheus
from util import KeepAlive, log, median

# Panel (name in the query bench) → PromQL asking the same question. `range` queries
# use the panel's 1-minute buckets; `instant` ones are evaluated at the range's end.
PROMQL = [
    ("panel: cpu of one host ($host)", "range",
     'avg_over_time(cpu_usage_percent{cpu="total",host="amber-web"}[1m])'),
    ("panel: net rx per host", "range",
     'avg by (host) (avg_over_time(net_rx_bytes_per_second{iface="eth0"}[1m]))'),
    ("named: disk_usage_per_mount", "instant",
     'last_over_time({__name__=~"filesystem_used_bytes|filesystem_total_bytes|filesystem_used_ratio"}[24h])'),
]


def ensure_lake(bin_dir: Path, data: Path) -> None:
    if (data / "tables").is_dir() and any((data / "tables").iterdir()):
        return
    log(f"no lake in {data}: generating the 30-day lake with `lake-gen` (a few minutes)")
    subprocess.run([str(bin_dir / "lake-gen"), "--data-dir", str(data)], check=True)


def run_query_bench(repo: Path, work: Path, data: Path, runs: int, extra: list[str] | None = None) -> dict:
    """The query bench's JSON; `extra`: more of its arguments (`--url`, `--no-duckdb`)."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "query-bench.json"
    logfile = work / "query-bench.log"
    extra = extra or []
    log(f"query bench: cargo bench -p lake --bench query -- --data {data} --runs {runs} {' '.join(extra)}")
    # LAKE_QUERY_BENCH_BIN: an already built bench binary (target/release/deps/query-*), to
    # skip cargo's rebuild when others are editing the crates while the harness runs.
    prebuilt = os.environ.get("LAKE_QUERY_BENCH_BIN")
    argv = ([prebuilt, "--bench"] if prebuilt else ["cargo", "bench", "-p", "lake", "--bench", "query", "--"])
    with open(logfile, "w") as f:
        p = subprocess.run(argv + ["--data", str(data), "--runs", str(runs), "--out", str(out), *extra], cwd=repo, stdout=f,
                           stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise RuntimeError(f"the query bench failed ({p.returncode}); see {logfile}")
    return json.loads(out.read_text())


def _signature(data: Path) -> str:
    h = hashlib.sha256()
    for f in sorted((data / "tables" / "metrics").rglob("*.parquet")):
        st = f.stat()
        h.update(f"{f.relative_to(data)} {st.st_size} {int(st.st_mtime)}\n".encode())
    return h.hexdigest()


def _export_day(day_dir: Path, om: Path, millis: bool = False) -> None:
    """One day of the lake's samples as OpenMetrics text (seconds, `# EOF`: promtool), or
    with `millis` as Prometheus text with millisecond timestamps (VictoriaMetrics' import)."""
    import duckdb  # installed by bench/run (pip) when missing
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.execute("SET enable_progress_bar = false")
    files = f"{day_dir}/*.parquet"
    ts_fmt, ts_expr = ("%d", "epoch_ms(ts)") if millis else ("%.3f", "epoch_ms(ts) / 1000.0")
    con.execute(f"""
COPY (
  SELECT printf('%s{{host="%s"%s}} %s {ts_fmt}', name, host,
     array_to_string(list_transform(map_entries(labels), lambda e: ',' || e.key || '="' ||
         replace(replace(e.value, '\\', '\\\\'), '"', '\\"') || '"'), ''),
     value::VARCHAR, {ts_expr}) AS line
  FROM read_parquet('{files}')
  WHERE NOT isnan(value)
  ORDER BY name, host, labels::VARCHAR, ts
) TO '{om}' (FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\t')""")
    con.close()
    if not millis:
        with open(om, "a") as f:
            f.write("# EOF\n")


def ensure_tsdb(data: Path, tsdb: Path, tmp: Path, days_limit: int | None = None,
                day_names: list[str] | None = None) -> dict:
    """A Prometheus TSDB of the lake's samples: the last `days_limit` days (all by
    default), or exactly the partitions `day_names` (`date=…`)."""
    sig = _signature(data) + f" days={day_names or days_limit or 'all'}"
    stamp = tsdb / "lake-signature"
    if stamp.exists() and stamp.read_text().strip() == sig:
        log(f"Prometheus TSDB of the lake's metrics is up to date: {tsdb}")
        return json.loads((tsdb / "lake-export.json").read_text())
    log(f"building a Prometheus TSDB of every metrics sample of {data} in {tsdb} (once; a few minutes)")
    shutil.rmtree(tsdb, ignore_errors=True)
    blocks = tsdb / "data"
    blocks.mkdir(parents=True)
    tmp.mkdir(parents=True, exist_ok=True)
    days = sorted(d for d in (data / "tables" / "metrics").iterdir() if d.is_dir())
    if day_names is not None:
        days = [d for d in days if d.name in day_names]
    elif days_limit:
        days = days[-days_limit:]
    t0 = time.monotonic()

    def one(day: Path) -> int:
        om = tmp / f"{day.name}.om"
        _export_day(day, om)
        lines = om.stat().st_size
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=24h", "--quiet",
                        str(om), str(blocks)], check=True, stdout=subprocess.DEVNULL)
        om.unlink()
        return lines

    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as ex:
        om_bytes = sum(ex.map(one, days))
    info = {"days": len(days), "day_dirs": [d.name for d in days], "openmetrics_bytes": om_bytes, "build_seconds": time.monotonic() - t0}
    (tsdb / "lake-export.json").write_text(json.dumps(info))
    stamp.write_text(sig)
    log(f"  built in {info['build_seconds']:.0f}s")
    return info


def _sum_parquet(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.parquet"))


def prometheus_side(work: Path, data: Path, tsdb_root: Path, runs: int, lake_bench: dict,
                    days_limit: int | None = None) -> dict:
    info = ensure_tsdb(data, tsdb_root, work / "om", days_limit)
    import duckdb
    day_files = "[" + ",".join(f"'{data}/tables/metrics/{d}/*.parquet'" for d in info["day_dirs"]) + "]"
    end_ms, samples = duckdb.connect().execute(
        f"select epoch_ms(max(ts)) + 1, (select count(*) from read_parquet({day_files})) "
        f"from read_parquet('{data}/tables/http/date=*/*.parquet')").fetchone()
    range_ms = {"24h": 86_400_000, "7d": 7 * 86_400_000}.get(lake_bench.get("range", "24h"), 86_400_000)
    from_ms = end_ms - range_ms
    prom = Prometheus(work, "prometheus-query", None, 60.0, data=tsdb_root / "data",
                      extra_args=["--storage.tsdb.retention.time=3650d", "--storage.tsdb.min-block-duration=2h",
                                  "--storage.tsdb.max-block-duration=2h", "--query.max-samples=500000000"])
    results = []
    try:
        prom.start(timeout=600)
        blocks_loaded = prom.own_metrics().get("prometheus_tsdb_blocks_loaded")
        conn = KeepAlive("127.0.0.1", prom.port)
        lake_by_name = {q["query"]: q for q in lake_bench.get("queries", [])}
        for name, kind, promql in PROMQL:
            if kind == "range":
                path = "/api/v1/query_range?" + urlencode({"query": promql, "start": f"{from_ms / 1000:.3f}",
                                                           "end": f"{end_ms / 1000:.3f}", "step": "60"})
            else:
                path = "/api/v1/query?" + urlencode({"query": promql, "time": f"{end_ms / 1000:.3f}"})

            def ask():
                t = time.perf_counter()
                status, body = conn.request("GET", path)
                ms = (time.perf_counter() - t) * 1000
                if status != 200:
                    raise RuntimeError(f"Prometheus {status} for {promql}: {body[:500]!r}")
                res = json.loads(body)["data"]["result"]
                points = sum(len(r.get("values", [])) or 1 for r in res)
                return ms, len(res), points

            _, nseries, points = ask()
            times = [ask()[0] for _ in range(runs)]
            lake = lake_by_name.get(name, {})
            p50 = median(times)
            results.append({"query": name, "promql": promql, "kind": kind, "prometheus_p50_ms": p50,
                            "prometheus_ms": times, "series": nseries, "points": points,
                            "lake_p50_ms": lake.get("lake_p50_ms"), "lake_rows": lake.get("lake_rows"),
                            "ratio_lake_over_prometheus": (lake["lake_p50_ms"] / p50) if lake.get("lake_p50_ms") else None})
            log(f"  {name}: Prometheus {p50:.1f} ms ({nseries} series, {points} points); lake {lake.get('lake_p50_ms')}")
    finally:
        prom.stop()
    tsdb_bytes = sum(f.stat().st_size for f in (tsdb_root / "data").rglob("*")
                     if f.is_file() and "wal" not in f.parts and "chunks_head" not in f.parts)
    lake_bytes = sum(_sum_parquet(data / "tables" / "metrics" / d) for d in info["day_dirs"])
    return {"range_from_ms": from_ms, "range_to_ms": end_ms, "runs": runs, "tsdb": info, "blocks_loaded": blocks_loaded,
            "queries": results,
            "storage_30d": {"days": info["days"], "samples": samples, "prometheus_block_bytes": tsdb_bytes, "lake_parquet_bytes": lake_bytes,
                            "prometheus_bytes_per_sample": tsdb_bytes / samples, "lake_bytes_per_sample": lake_bytes / samples}}


def run(repo: Path, bin_dir: Path, work: Path, data: Path, runs: int, with_prometheus: bool = True,
        prom_days: int | None = None) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    ensure_lake(bin_dir, data)
    bench = run_query_bench(repo, work, data, runs)
    out = {"lake_vs_duckdb": bench}
    if with_prometheus:
        out["lake_vs_prometheus"] = prometheus_side(work, data, Path(str(data) + "-prometheus"), runs, bench, prom_days)
    return out
