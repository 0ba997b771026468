"""6. Scale of one lake: a generated lake of 90 days × 20 nodes, asked as a dashboard asks.

- The lake: `lake-gen --days 90 --hosts 20 --http-rows 500M --metric-samples 1000M`
  into `--scale-data` (default `/var/tmp/lake-bench-data-90d`), once: a stamp file there
  (`lake-gen.json`: the arguments, the time it took, rows and bytes per table) lets later
  runs reuse it while the arguments match. A lake made with other arguments (the stamp
  says so) is removed and generated again; a directory with tables but no stamp is
  someone else's and is left alone (the phase fails and says so).
- Queries and memory: a real `lake serve` on that directory (`lake.toml` defaults for the
  query engine; compaction and archive off, so the server only answers queries and the
  generated files stay as they are) is asked every default named query and dashboard
  panel by `lake/benches/query.rs` with `--url` (its HTTP client only, over each query's
  default range — the last 24 h before the newest `http` row, as the dashboards open —
  one warm-up, then `runs`; p50) and `--no-duckdb` (the plain DuckDB side would double
  the time and is measured by the query phase). Meanwhile the server's VmRSS is read
  from `/proc` every 100 ms: median and maximum during the queries, and VmHWM (the
  process' peak since it started) at the end.
- Nightly archive: one finished day of the lake (the day before its newest partition:
  a whole day) is hard-linked into a lake of its own, its files named as compaction
  names them (the compactor merges a finished day within its 10-minute interval, hours
  before the 02:00 run, so the nightly run finds compacted files and only uploads), and
  `lake archive --now --no-retention` uploads it to an S3 endpoint (moto's server mode
  from the peers venv of `scripts/setup peers`, on a loopback port; `verify = read_back`,
  the default: every object read back and its sha256 compared). Wall time of the
  command, its peak RSS (`wait4` rusage), files and bytes from its JSON report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from query import run_query_bench
from stack import Lake
from util import free_port, log, median, status_kib

# The lake: 90 days of 20 nodes, ~500 M http rows, ~1 B samples.
FULL = dict(days=90, hosts=20, http_rows=500_000_000, samples=1_000_000_000)
# --quick: the same 20 nodes over 4 days (a whole finished day to archive), small volumes.
QUICK = dict(days=4, hosts=20, http_rows=2_000_000, samples=4_000_000)

STAMP = "lake-gen.json"
# lake-gen's line per file: `[  12/1440]   80.1 s  http       2026-11-20    5,512,345 rows    230.1 MiB  21.0 s`
GEN_LINE = re.compile(r"^\[\s*\d+/\d+\]\s+[\d.]+ s\s+(\S+)\s+(\d{4}-\d\d-\d\d)\s+([\d,]+) rows", re.M)
MOTO_PYTHONS = [Path.home() / ".cache/lake/peers-venv/bin/python3", Path("python3")]


def _gen_args(size: dict) -> list[str]:
    return ["--days", str(size["days"]), "--hosts", str(size["hosts"]), "--http-rows", str(size["http_rows"]),
            "--metric-samples", str(size["samples"]), "--seed", "1"]


def _table_sizes(data: Path) -> dict:
    out = {}
    root = data / "tables"
    for t in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        files = list(t.rglob("*.parquet"))
        out[t.name] = {"files": len(files), "bytes": sum(f.stat().st_size for f in files),
                       "days": len({f.parent.name for f in files})}
    return out


def ensure_lake(bin_dir: Path, data: Path, size: dict, work: Path) -> dict:
    """The generated lake of `size` in `data`, made once; its stamp (arguments, time, sizes)."""
    args = _gen_args(size)
    stamp = data / STAMP
    if stamp.exists():
        info = json.loads(stamp.read_text())
        if info.get("args") == args:
            log(f"scale lake {data} is up to date ({info['bytes'] / 1e9:.1f} GB, generated in {info['seconds']:.0f} s)")
            return info
        log(f"scale lake {data} was made with {info.get('args')}: removing it, generating {args}")
        shutil.rmtree(data / "tables", ignore_errors=True)
        stamp.unlink()
    elif (data / "tables").is_dir() and any((data / "tables").iterdir()):
        raise RuntimeError(f"{data} holds a lake without {STAMP}: not made by this phase, so not replaced; "
                           "remove it or pass another --scale-data")
    data.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(data).free
    # Generated Parquet (zstd 3, as flushed), measured on 2 days × 20 nodes (11.1 M http
    # rows, 22.2 M samples: 402 MiB): 21.7 B per http row, 6.7 B per sample, the other
    # tables 7 % more; the check keeps a margin for everyone else on the disk.
    need = int((size["http_rows"] * 21.7 + size["samples"] * 6.7) * 1.07)
    if need > free * 0.8:
        raise RuntimeError(f"the scale lake needs ~{need / 1e9:.0f} GB; {free / 1e9:.0f} GB free on {data}: "
                           "pass smaller --scale-* sizes")
    logfile = work / "lake-gen.log"
    log(f"generating the scale lake: lake-gen {' '.join(args)} --data-dir {data} (~{need / 1e9:.0f} GB; log {logfile})")
    t = time.monotonic()
    with open(logfile, "w") as f:
        p = subprocess.run([str(bin_dir / "lake-gen"), *args, "--data-dir", str(data)], stdout=f, stderr=subprocess.STDOUT)
    secs = time.monotonic() - t
    if p.returncode != 0:
        raise RuntimeError(f"lake-gen failed ({p.returncode}); see {logfile}")
    tables = _table_sizes(data)
    # Rows of every (table, day), from lake-gen's line per file written.
    rows: dict[str, dict[str, int]] = {}
    for m in GEN_LINE.finditer(logfile.read_text()):
        rows.setdefault(m[1], {})[m[2]] = int(m[3].replace(",", ""))
    for t, days in rows.items():
        tables.setdefault(t, {})["rows"] = sum(days.values())
    info = {"args": args, "seconds": secs, "bytes": sum(v["bytes"] for v in tables.values()), "tables": tables,
            "rows_per_day": rows, "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    stamp.write_text(json.dumps(info, indent=2) + "\n")
    log(f"  generated {info['bytes'] / 1e9:.1f} GB in {secs:.0f} s")
    return info


class RssSampler:
    """VmRSS of one process every `interval` seconds, on a thread, until stopped."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "RssSampler":
        self.t.start()
        return self

    def _run(self) -> None:
        while not self.stop_ev.is_set():
            kib = status_kib(self.pid, "VmRSS")
            if kib is not None:
                self.samples.append(kib)
            self.stop_ev.wait(self.interval)

    def stop(self) -> dict:
        self.stop_ev.set()
        self.t.join(5)
        return {"rss_median_kib": median(self.samples), "rss_max_kib": max(self.samples, default=None),
                "samples": len(self.samples), "interval_s": self.interval}


def queries(repo: Path, bin_dir: Path, work: Path, data: Path, runs: int) -> dict:
    # The query time limit raised from its default 30 s: the fleet dashboard's `anomalies`
    # panel ran past it on a 10-day, 20-node lake (under load), and a timed-out query
    # would stop the bench; its p50 is then reported (a miss) instead.
    lake = Lake(bin_dir, work, "lake", [], extra='[query]\ntimeout = "600s"\n[http]\nrequest_timeout = "660s"\n', data=data)
    lake.start()
    try:
        pid = lake.proc.pid
        idle = {"rss_kib": status_kib(pid, "VmRSS"), "hwm_kib": status_kib(pid, "VmHWM")}
        log(f"  lake serve up on the scale lake: VmRSS {idle['rss_kib'] / 1024:.0f} MiB idle")
        sampler = RssSampler(pid).start()
        try:
            bench = run_query_bench(repo, work, data, runs, extra=["--url", lake.url, "--no-duckdb"])
        finally:
            rss = sampler.stop()
        rss["hwm_kib"] = status_kib(pid, "VmHWM")
        rss["idle"] = idle
        rss["config"] = lake.config.read_text()
    finally:
        lake.stop()
    worst = max(bench["queries"], key=lambda q: q["lake_p50_ms"])
    log(f"  lake serve: VmHWM {rss['hwm_kib'] / 1024:.0f} MiB, VmRSS median {rss['rss_median_kib'] / 1024:.0f} MiB "
        f"during the queries; slowest p50 {worst['lake_p50_ms']:.0f} ms ({worst['query']})")
    return {"bench": bench, "lake_serve": rss}


def _moto_python() -> str:
    for py in MOTO_PYTHONS:
        if subprocess.run([str(py), "-c", "import moto.server"], capture_output=True).returncode == 0:
            return str(py)
    raise RuntimeError("moto's server mode is missing: run `scripts/setup peers` (it goes into ~/.cache/lake/peers-venv)")


def _one_day(data: Path, dst: Path) -> str:
    """Hard-links every table's files of one whole finished day of `data` into `dst`, named
    as compaction names its files; returns the date."""
    days = sorted(p.name.removeprefix("date=") for p in (data / "tables" / "http").iterdir() if p.name.startswith("date="))
    if len(days) < 3:
        raise RuntimeError(f"the scale lake has {len(days)} days of http: no whole day to archive")
    day = days[-2]
    for part in sorted((data / "tables").glob(f"*/date={day}")):
        out = dst / "tables" / part.parent.name / part.name
        out.mkdir(parents=True)
        for i, f in enumerate(sorted(part.glob("*.parquet"))):
            os.link(f, out / f"c-{i:016}.parquet")
    return day


def archive(bin_dir: Path, work: Path, data: Path, gen: dict) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    day_data = work / "data"
    day = _one_day(data, day_data)
    port = free_port()
    moto_log = open(work / "moto.log", "wb")
    moto = subprocess.Popen([_moto_python(), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=moto_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(f"{endpoint}/lake-archive", method="PUT"), timeout=5).read()
                break
            except OSError:
                if moto.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto did not start; see {work / 'moto.log'}")
                time.sleep(0.2)
        config = work / "lake.toml"
        config.write_text(f'version = 1\ndata_dir = "{day_data}"\nlisten = "127.0.0.1:{free_port()}"\n'
                          f'[archive]\nstore = "s3"\nbucket = "lake-archive"\nendpoint = "{endpoint}"\n'
                          'region = "us-east-1"\nprefix = "lake"\nallow_http = true\n')
        env = dict(os.environ, LAKE_ARCHIVE_ACCESS_KEY_ID="bench", LAKE_ARCHIVE_SECRET_ACCESS_KEY="bench",
                   LOG_FILTER="warn")
        env.pop("AWS_ACCESS_KEY_ID", None)
        env.pop("AWS_SECRET_ACCESS_KEY", None)
        local_bytes = sum(f.stat().st_size for f in day_data.rglob("*.parquet"))
        log(f"  archiving {day} ({local_bytes / 1e6:.0f} MB) to moto: lake archive --now --no-retention")
        with open(work / "archive.json", "wb") as out, open(work / "archive.log", "wb") as err:
            t = time.monotonic()
            p = subprocess.Popen([str(bin_dir / "lake"), "archive", "--now", "--no-retention", "--config", str(config),
                                  "--format", "json"], stdout=out, stderr=err, env=env)
            # wait4: this child's own peak RSS (ru_maxrss, KiB), not the maximum of all children.
            _, status, usage = os.wait4(p.pid, 0)
            secs = time.monotonic() - t
            p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise RuntimeError(f"lake archive failed ({p.returncode}): {(work / 'archive.log').read_text()[-2000:]}")
        report = json.loads((work / "archive.json").read_text())
    finally:
        moto.terminate()
        try:
            moto.wait(10)
        except subprocess.TimeoutExpired:
            moto.kill()
        moto_log.close()
        shutil.rmtree(day_data, ignore_errors=True)
    day_rows = {t: days.get(day) for t, days in gen.get("rows_per_day", {}).items() if days.get(day)}
    res = {"date": day, "seconds": secs, "local_bytes": local_bytes, "files_uploaded": report.get("files_uploaded"),
           "bytes_uploaded": report.get("bytes_uploaded"), "multipart_uploads": report.get("multipart_uploads"),
           "partitions": report.get("partitions"), "partitions_verified": report.get("partitions_verified"),
           "files_compacted": report.get("files_compacted"), "peak_rss_kib": usage.ru_maxrss,
           "cpu_seconds": usage.ru_utime + usage.ru_stime, "rows": day_rows, "report": report}
    if res["files_uploaded"] is None or res["partitions_verified"] != res["partitions"]:
        raise RuntimeError(f"the archive run did not verify every partition: {report}")
    log(f"  archived {res['files_uploaded']} files, {res['bytes_uploaded'] / 1e6:.0f} MB in {secs:.1f} s "
        f"({res['bytes_uploaded'] / 1e6 / secs:.0f} MB/s), peak RSS {usage.ru_maxrss / 1024:.0f} MiB")
    return res


def run(repo: Path, bin_dir: Path, work: Path, data: Path, size: dict, runs: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    gen = ensure_lake(bin_dir, data, size, work)
    out = {"size": size, "data": str(data), "lake": gen, "runs": runs}
    out.update(queries(repo, bin_dir, work / "queries", data, runs))
    out["archive"] = archive(bin_dir, work / "archive", data, gen)
    return out
