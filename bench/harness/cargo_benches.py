"""2. Caddy parse throughput and 3. ingest: the crates' own benchmarks, run and parsed.

- `cargo bench -p lake-collector --bench caddy` (one thread: real tailer, parser, batch
  builder) prints each run on stderr and the median on stdout.
- `cargo bench -p lake --bench ingest` (8 simulated collectors → one `lake serve`, WAL
  fsync and Parquet commit) prints one JSON line: rows/s, ack and freshness latencies,
  and the RSS of `lake serve` (sampled every 200 ms, and its `VmHWM`); it is run `runs`
  times, the harness takes the medians.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from util import log, median


def _cargo_bench(repo: Path, args: list[str], env: dict, logfile: Path, timeout: float) -> tuple[str, str]:
    full_env = dict(os.environ)
    full_env.update(env)
    p = subprocess.run(["cargo", "bench", *args], cwd=repo, env=full_env, capture_output=True, text=True, timeout=timeout)
    logfile.write_text(f"$ cargo bench {' '.join(args)}  env={env}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}")
    if p.returncode != 0:
        raise RuntimeError(f"cargo bench {' '.join(args)} failed ({p.returncode}), see {logfile}:\n{p.stderr[-3000:]}")
    return p.stdout, p.stderr


RUN_RE = re.compile(r"run (\d+): (\d+) lines in ([\d.]+)s: (\d+) lines/s, ([\d.]+) MB/s")


def caddy(repo: Path, work: Path, runs: int, log_bytes: int) -> dict:
    out = {}
    for encode in (False, True):
        label = "parse_encode" if encode else "parse"
        env = {"LAKE_BENCH_BYTES": str(log_bytes), "LAKE_BENCH_RUNS": str(runs)}
        if encode:
            env["LAKE_BENCH_ENCODE"] = "1"
        log(f"caddy bench ({label}): {runs} runs over {log_bytes / 2**20:.0f} MiB")
        stdout, stderr = _cargo_bench(repo, ["-p", "lake-collector", "--bench", "caddy"], env,
                                      work / f"caddy-{label}.log", timeout=3600)
        per_run = [{"lines": int(m[1]), "secs": float(m[2]), "lines_per_s": int(m[3]), "mb_per_s": float(m[4])}
                   for m in RUN_RE.findall(stderr)]
        if not per_run:
            raise RuntimeError(f"no run lines in the caddy bench output:\n{stderr[-2000:]}")
        out[label] = {"runs": len(per_run), "median_lines_per_s": median([r["lines_per_s"] for r in per_run]),
                      "median_mb_per_s": median([r["mb_per_s"] for r in per_run]), "per_run": per_run,
                      "summary": stdout.strip().splitlines()[-1] if stdout.strip() else ""}
        log(f"  {label}: median {out[label]['median_lines_per_s']:,.0f} lines/s")
    out["log_bytes"] = log_bytes
    return out


def ingest(repo: Path, work: Path, runs: int, secs: int, collectors: int = 8) -> dict:
    per_run = []
    for i in range(runs):
        log(f"ingest bench run {i + 1}/{runs}: {collectors} collectors, {secs}s")
        stdout, _ = _cargo_bench(repo, ["-p", "lake", "--bench", "ingest"],
                                 {"LAKE_BENCH_SECS": str(secs), "LAKE_BENCH_COLLECTORS": str(collectors)},
                                 work / f"ingest-{i}.log", timeout=secs + 1800)
        line = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        if not line:
            raise RuntimeError(f"no JSON line in the ingest bench output:\n{stdout[-2000:]}")
        r = json.loads(line[-1])
        per_run.append(r)
        log(f"  {r['rows_per_sec']:,.0f} rows/s, ack p99 {r['ack_p99_ms']} ms, freshness p99 {r['fresh_p99_ms']} ms, "
            f"refused {r['refused']}, lake VmHWM {r['rss_hwm_kib'] * 1024 / 1e6:.0f} MB")
    keys = ["rows_per_sec", "ack_p50_ms", "ack_p99_ms", "fresh_p50_ms", "fresh_p99_ms", "refused",
            "rss_hwm_kib", "rss_max_kib", "rss_median_kib", "rss_anon_median_kib", "rss_file_median_kib"]
    return {"runs": runs, "seconds": secs, "collectors": collectors,
            "median": {k: median([r[k] for r in per_run]) for k in keys}, "per_run": per_run}
