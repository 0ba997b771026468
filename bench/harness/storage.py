"""4. Storage efficiency, through the real programs.

http: `lines` realistic Caddy JSON lines (caddylog.py; timestamps two days ago, ~100
req/s with the daily curve) are written to a file; a real `lake-collector` tails it into
a real `lake serve`; once the lake has every row it is stopped (it flushes), `lake
compact` merges the day's files, and the Parquet bytes of `tables/http` are divided by
the rows. Peers: the raw log, and the same log through `gzip -6`.

metrics: for the same window, at the same scrape interval, from one node_exporter:
- Prometheus (Debian's) scrapes it into its TSDB;
- VictoriaMetrics (Debian's) scrapes it too (its promscrape, same interval); after the
  window `/internal/force_flush` and `/internal/force_merge`, then its rows
  (`vm_rows`) and bytes (`data/` + `indexdb/`) at one moment, merges finished;
- lake A gets the very same series through the collector's `[[prometheus_scrape]]`
  source (plus the collector's own health rows, every 60 s);
- lake B gets the collector's own host metrics (`[host]`, the same interval).
Samples: Prometheus' `prometheus_tsdb_head_samples_appended_total` (includes its 5
per-scrape series such as `up`); rows of `metrics` in each lake. Bytes: Prometheus'
data directory (WAL + head chunks, what it holds on disk during the window), and a
snapshot (`/api/v1/admin/tsdb/snapshot`: the head written as a compacted block, i.e.
what the data costs once Prometheus compacts it); each lake's Parquet after it stops
(flush) and after `lake compact`. Lake A's compacted samples then go through
`lake-metrics-whatif` (bytes per sample under each encoding lever).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from caddylog import write_log
from metrics_storage import whatif
from stack import Collector, Lake, NodeExporter, Prometheus, VictoriaMetrics
from util import du_bytes, log, median


def _gzip_size(path: Path) -> int:
    p = subprocess.run(f"gzip -6 -c '{path}' | wc -c", shell=True, capture_output=True, text=True, check=True)
    return int(p.stdout.strip())


def http_once(bin_dir: Path, work: Path, lines: int, seed: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    logfile = work / "caddy" / "access.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    # Two days ago from 06:00 UTC: a finished day, which compaction merges fully.
    start = (int(time.time()) // 86400 - 2) * 86400 + 6 * 3600
    t = time.monotonic()
    raw = write_log(logfile, lines, seed, float(start), rate=100.0)
    log(f"  generated {lines:,} lines, {raw / 2**20:.0f} MiB in {time.monotonic() - t:.0f}s")
    gz = _gzip_size(logfile)
    lake = Lake(bin_dir, work, "lake", ["web"]).start()
    coll = None
    try:
        coll = Collector(bin_dir, work, "web", lake,
                         f'[host]\nenabled = false\ninterval = "1h"\n[inventory]\nenabled = false\n'
                         f'[caddy]\nenabled = true\npaths = ["{logfile}"]\nstart_at = "beginning"\n').start()
        t = time.monotonic()
        deadline = t + max(600, lines / 2000)
        n = 0
        while time.monotonic() < deadline:
            n = lake.sql("select count(*) from http")[0][0]
            if n >= lines:
                break
            if not coll.proc.alive():
                raise RuntimeError(f"collector died:\n{coll.proc.tail()}")
            time.sleep(1)
        ingest_s = time.monotonic() - t
        unparsed = lake.sql("select count(*) from logs")[0][0]
        if n < lines:
            raise RuntimeError(f"only {n} of {lines} http rows arrived in time")
        log(f"  {n:,} rows in the lake after {ingest_s:.0f}s ({n / ingest_s:,.0f} rows/s through tail → ship → WAL)")
    finally:
        if coll:
            coll.stop()
        lake.stop()
    flushed = du_bytes(lake.data / "tables" / "http", ".parquet")
    files_flushed = len(lake.table_files("http"))
    report = lake.compact("http")
    files = lake.table_files("http")
    compacted = du_bytes(lake.data / "tables" / "http", ".parquet")
    res = {
        "lines": lines, "seed": seed, "rows": n, "unparsed_rows": unparsed,
        "raw_bytes": raw, "gzip_bytes": gz, "parquet_bytes_flushed": flushed, "files_flushed": files_flushed,
        "parquet_bytes": compacted, "files": len(files),
        "bytes_per_row": compacted / n, "raw_bytes_per_row": raw / n, "gzip_bytes_per_row": gz / n,
        "ingest_seconds": ingest_s, "compact_report": report,
    }
    res["column_bytes"] = _column_sizes(files)
    log(f"  http: {res['bytes_per_row']:.1f} B/row (flushed {flushed / n:.1f}), raw {res['raw_bytes_per_row']:.0f}, gzip {res['gzip_bytes_per_row']:.1f}")
    logfile.unlink()
    shutil.rmtree(lake.data / "wal", ignore_errors=True)
    return res


def _column_sizes(files: list[Path]) -> dict | None:
    """Compressed bytes per column (from the Parquet footers), to say where the bytes go."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    sizes: dict[str, int] = {}
    for f in files:
        md = pq.ParquetFile(f).metadata
        for rg in range(md.num_row_groups):
            g = md.row_group(rg)
            for c in range(g.num_columns):
                col = g.column(c)
                sizes[col.path_in_schema] = sizes.get(col.path_in_schema, 0) + col.total_compressed_size
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))


def http(bin_dir: Path, work: Path, runs: int, lines: int) -> dict:
    per_run = []
    for i in range(runs):
        log(f"storage http run {i + 1}/{runs}: {lines:,} Caddy lines, seed {i + 1}")
        per_run.append(http_once(bin_dir, work / f"storage-http-{i}", lines, i + 1))
    keys = ["bytes_per_row", "raw_bytes_per_row", "gzip_bytes_per_row", "parquet_bytes", "raw_bytes", "gzip_bytes"]
    return {"runs": runs, "lines": lines, "median": {k: median([r[k] for r in per_run]) for k in keys},
            "per_run": per_run}


def metrics_once(bin_dir: Path, work: Path, interval: float, window: float) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    ne = NodeExporter(work).start()
    lake_a = Lake(bin_dir, work, "lake-scrape", ["scrape"])
    lake_b = Lake(bin_dir, work, "lake-host", ["host"])
    prom = Prometheus(work, "prometheus", [ne.url.split("/")[2]], interval,
                      extra_args=["--storage.tsdb.retention.time=30d"])
    vm = VictoriaMetrics(work, "victoria-metrics", [ne.url.split("/")[2]], interval)
    colls = []
    try:
        lake_a.start()
        lake_b.start()
        prom.start()
        vm.start()
        colls.append(Collector(bin_dir, work, "scrape", lake_a,
                               f'[host]\nenabled = false\ninterval = "60s"\n[inventory]\nenabled = false\n'
                               f'[[prometheus_scrape]]\nname = "node"\nurl = "{ne.url}"\ninterval = "{interval:g}s"\n'
                               f'timeout = "{min(interval, 10):g}s"\n').start())
        colls.append(Collector(bin_dir, work, "host", lake_b,
                               f'[host]\ninterval = "{interval:g}s"\n[inventory]\nenabled = false\n').start())
        log(f"  Prometheus, VictoriaMetrics, lake A (same node_exporter series) and lake B (host source) for {window:.0f}s "
            f"at {interval:g}s")
        time.sleep(window)
        for c in colls:
            c.stop()
        time.sleep(1)
        own = prom.own_metrics()  # Prometheus' own /metrics (it does not scrape itself here)
        samples = sum(v for k, v in own.items() if k.startswith("prometheus_tsdb_head_samples_appended_total"))
        series = own.get("prometheus_tsdb_head_series", 0.0)
        if not samples:
            raise RuntimeError("Prometheus appended no samples: did it scrape node_exporter?")
        scrapes = sum(float(r["value"][1]) for r in prom.query('count_over_time(up{job="node"}[1d])'))
        prom_dir_bytes = du_bytes(prom.data)
        prom_wal_bytes = du_bytes(prom.data / "wal")
        snap = prom.snapshot()
        snap_bytes = du_bytes(snap)
        # It scrapes on while it merges: its rows and bytes are read at the same moment.
        vm_res = vm.settle([time.strftime("%Y_%m", time.gmtime())])
        vm_res.update(rows=vm.rows(), **vm.sizes())
        rows_a = lake_a.sql("select count(*), count(*) filter (where labels['job'] = 'node') from metrics")[0]
        series_a = lake_a.sql("select count(distinct name || labels::VARCHAR) from metrics")[0][0]
        rows_b = lake_b.sql("select count(*) from metrics")[0][0]
        series_b = lake_b.sql("select count(distinct name || labels::VARCHAR) from metrics")[0][0]
    finally:
        for c in colls:
            c.stop()
        prom.stop()
        vm.stop()
        ne.stop()
        lake_a.stop()
        lake_b.stop()
    out = {
        "window_s": window, "interval_s": interval,
        "prometheus": {"samples": samples, "series": series, "scrapes": scrapes,
                       "data_dir_bytes": prom_dir_bytes, "wal_bytes": prom_wal_bytes, "snapshot_bytes": snap_bytes,
                       "bytes_per_sample_snapshot": snap_bytes / samples, "bytes_per_sample_data_dir": prom_dir_bytes / samples},
        "victoria_metrics": {**vm_res, "bytes_per_sample": vm_res["total_bytes"] / vm_res["rows"] if vm_res["rows"] else None},
    }
    for key, lake, rows, series_n, extra in (("lake_scrape", lake_a, rows_a[0], series_a, {"node_exporter_rows": rows_a[1]}),
                                             ("lake_host", lake_b, rows_b, series_b, {})):
        flushed = du_bytes(lake.data / "tables" / "metrics", ".parquet")
        files_flushed = len(lake.table_files("metrics"))
        lake.compact("metrics")
        compacted = du_bytes(lake.data / "tables" / "metrics", ".parquet")
        out[key] = {"rows": rows, "series": series_n, "parquet_bytes_flushed": flushed, "files_flushed": files_flushed,
                    "parquet_bytes": compacted, "files": len(lake.table_files("metrics")),
                    "bytes_per_sample": compacted / rows if rows else None,
                    "bytes_per_sample_flushed": flushed / rows if rows else None,
                    "column_bytes": _column_sizes(lake.table_files("metrics")), **extra}
        if key == "lake_scrape" and rows:
            out[key]["whatif"] = whatif(bin_dir, work, [lake.data / "tables" / "metrics"], "node-exporter")
    log(f"  metrics: Prometheus {out['prometheus']['bytes_per_sample_snapshot']:.2f} B/sample (snapshot), "
        f"{out['prometheus']['bytes_per_sample_data_dir']:.2f} (data dir); VictoriaMetrics "
        f"{_fmt(out['victoria_metrics']['bytes_per_sample'])} (force-merged); lake (same series) "
        f"{out['lake_scrape']['bytes_per_sample']:.2f}; lake (host source) {out['lake_host']['bytes_per_sample']:.2f}")
    return out


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.2f}"


def metrics(bin_dir: Path, work: Path, runs: int, interval: float, window: float) -> dict:
    per_run = []
    for i in range(runs):
        log(f"storage metrics run {i + 1}/{runs}")
        per_run.append(metrics_once(bin_dir, work / f"storage-metrics-{i}", interval, window))
    med = {
        "prometheus_bytes_per_sample_snapshot": median([r["prometheus"]["bytes_per_sample_snapshot"] for r in per_run]),
        "prometheus_bytes_per_sample_data_dir": median([r["prometheus"]["bytes_per_sample_data_dir"] for r in per_run]),
        "victoria_metrics_bytes_per_sample": median([r["victoria_metrics"]["bytes_per_sample"] for r in per_run]),
        "victoria_metrics_rows": median([r["victoria_metrics"]["rows"] for r in per_run]),
        "lake_scrape_bytes_per_sample": median([r["lake_scrape"]["bytes_per_sample"] for r in per_run]),
        "lake_scrape_bytes_per_sample_flushed": median([r["lake_scrape"]["bytes_per_sample_flushed"] for r in per_run]),
        "lake_host_bytes_per_sample": median([r["lake_host"]["bytes_per_sample"] for r in per_run]),
        "prometheus_samples": median([r["prometheus"]["samples"] for r in per_run]),
        "lake_scrape_rows": median([r["lake_scrape"]["rows"] for r in per_run]),
        "lake_host_rows": median([r["lake_host"]["rows"] for r in per_run]),
    }
    return {"runs": runs, "interval_s": interval, "window_s": window, "median": med, "per_run": per_run}

