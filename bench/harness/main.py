"""bench/run: lake against its peers, every figure measured side by side in one run.

Phases (all by default, `--only` to pick): footprint, caddy, ingest, storage, query, scale.
Writes bench/results/latest.md and latest.json (also after each phase, so a failed
phase keeps the others' results). See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cargo_benches  # noqa: E402
import footprint  # noqa: E402
import metrics_storage  # noqa: E402
import query  # noqa: E402
import report  # noqa: E402
import scale  # noqa: E402
import storage  # noqa: E402
from util import loadavg, log  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PHASES = ["footprint", "caddy", "ingest", "storage", "query", "scale"]
# What `cargo build --release -p lake -p lake-collector` makes that the phases run.
BINARIES = ("lake", "lake-collector", "lake-gen", "lake-metrics-whatif")

# Sizes of a full run and of a smoke run (--quick). Every one can be overridden.
FULL = dict(runs=3, fp_warmup=60, fp_window=300, fp_interval=10, caddy_bytes=256 << 20, caddy_runs=5,
            ingest_secs=60, http_lines=1_000_000, metrics_interval=2, metrics_window=600, metrics_runs=1, query_runs=7,
            storage_days=2)
QUICK = dict(runs=1, fp_warmup=10, fp_window=30, fp_interval=10, caddy_bytes=32 << 20, caddy_runs=1,
             ingest_secs=10, http_lines=50_000, metrics_interval=1, metrics_window=60, metrics_runs=1, query_runs=2,
             storage_days=1)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: short windows, small inputs, one run")
    p.add_argument("--only", default=",".join(PHASES), help=f"comma-separated phases of {','.join(PHASES)}")
    p.add_argument("--runs", type=int, help="runs of footprint, storage http and ingest")
    p.add_argument("--fp-window", type=float, help="footprint measured window, s")
    p.add_argument("--fp-warmup", type=float, help="footprint warm-up before the window, s")
    p.add_argument("--fp-interval", type=float, help="host sampling = node_exporter scrape interval, s")
    p.add_argument("--fp-batch-wait", help="experiment: Caddy/journald batch_wait of the all-sources collector, e.g. 5s")
    p.add_argument("--fp-no-inventory", action="store_true", help="experiment: all-sources collector without [inventory]")
    p.add_argument("--caddy-bytes", type=int, help="size of the Caddy bench log")
    p.add_argument("--caddy-runs", type=int)
    p.add_argument("--ingest-secs", type=int)
    p.add_argument("--http-lines", type=int, help="Caddy lines of the http storage test")
    p.add_argument("--metrics-interval", type=float, help="scrape/sample interval of the metrics storage test, s")
    p.add_argument("--metrics-window", type=float, help="duration of the metrics storage test, s")
    p.add_argument("--metrics-runs", type=int)
    p.add_argument("--storage-days", type=int, help="finished days of the generated lake's metrics compared with "
                   "VictoriaMetrics and Prometheus in the storage phase (2; --quick 1)")
    p.add_argument("--query-runs", type=int)
    p.add_argument("--prom-days", type=int, help="load only the last N days of the lake's metrics into Prometheus "
                   "(the panels read the last 24 h; default: all)")
    p.add_argument("--no-prometheus-query", action="store_true", help="skip the PromQL side of the query phase")
    p.add_argument("--scale-data", help="the generated lake of the scale phase, made once and reused while its size "
                   "matches (default /var/tmp/lake-bench-data-90d; with --quick /var/tmp/lake-bench-data-scale-quick)")
    p.add_argument("--scale-days", type=int, help=f"days of the scale lake (default {scale.FULL['days']}, quick {scale.QUICK['days']})")
    p.add_argument("--scale-hosts", type=int, help=f"nodes of the scale lake (default {scale.FULL['hosts']})")
    p.add_argument("--scale-http-rows", type=int, help=f"http rows of the scale lake (default {scale.FULL['http_rows']:,})")
    p.add_argument("--scale-samples", type=int, help=f"metrics samples of the scale lake (default {scale.FULL['samples']:,})")
    p.add_argument("--work", default="/var/tmp/lake-bench", help="temp dirs of the run")
    p.add_argument("--data", default="/var/tmp/lake-bench-data", help="the generated 30-day lake (shared with lake/benches/query.rs)")
    p.add_argument("--results", default=str(REPO / "bench" / "results"))
    p.add_argument("--no-install", action="store_true", help="do not install missing peers")
    p.add_argument("--no-build", action="store_true", help="use the release binaries as they are")
    p.add_argument("--merge", action="store_true",
                   help="keep the other phases' results of the existing latest.json (to re-run a phase measured while busy)")
    a = p.parse_args()
    base = QUICK if a.quick else FULL
    for k, v in base.items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    size = scale.QUICK if a.quick else scale.FULL
    a.scale_size = {k: getattr(a, f"scale_{k}") or v for k, v in size.items()}
    if a.scale_data is None:
        a.scale_data = "/var/tmp/lake-bench-data-scale-quick" if a.quick else "/var/tmp/lake-bench-data-90d"
    a.phases = [x.strip() for x in a.only.split(",") if x.strip()]
    bad = [x for x in a.phases if x not in PHASES]
    if bad:
        p.error(f"unknown phase(s) {bad}; known: {PHASES}")
    return a


def install_peers(phases: list[str]) -> None:
    """Debian packages of the peers (idempotent), and DuckDB's Python package for the export."""
    need = {"prometheus-node-exporter": "prometheus-node-exporter", "prometheus": "prometheus", "promtool": "prometheus",
            "/lib/systemd/systemd-journal-remote": "systemd-journal-remote", "journalctl": "systemd", "gzip": "gzip",
            # collectd's daemon and plugins without the package's recommends (rrdtool, its
            # CGI, the init script): the footprint phase runs it in the foreground.
            "/usr/sbin/collectd": "collectd-core",
            "victoria-metrics": "victoria-metrics"}
    missing = sorted({pkg for tool, pkg in need.items() if not (shutil.which(tool) or Path(tool).exists())})
    if missing:
        log(f"installing {' '.join(missing)} (apt)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=True)
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env, check=True)
    if "scale" in phases and not any(
            subprocess.run([str(py), "-c", "import moto.server"], capture_output=True).returncode == 0
            for py in scale.MOTO_PYTHONS if shutil.which(str(py))):
        log("installing moto (S3 server of the archive run) with `scripts/setup peers`")
        subprocess.run(["scripts/setup", "peers"], cwd=REPO, check=True)
    if {"query", "storage"} & set(phases) and importlib.util.find_spec("duckdb") is None:
        log("installing DuckDB's Python package (pip) for the OpenMetrics export")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "duckdb>=1.5,<3"], check=True)


def target_dir() -> Path:
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO, capture_output=True, check=True)
    return Path(json.loads(out.stdout)["target_directory"])


def build(phases: list[str]) -> None:
    log("scripts/setup (libduckdb)")
    subprocess.run(["scripts/setup"], cwd=REPO, check=True)
    log("cargo build --release -p lake -p lake-collector")
    subprocess.run(["cargo", "build", "--release", "-p", "lake", "-p", "lake-collector"], cwd=REPO, check=True)
    benches = {"caddy": ["-p", "lake-collector", "--bench", "caddy"], "ingest": ["-p", "lake", "--bench", "ingest"],
               "query": ["-p", "lake", "--bench", "query"]}
    for ph, args in benches.items():
        # The scale phase runs the query bench too.
        if ph in phases or (ph == "query" and "scale" in phases):
            log(f"cargo bench --no-run {' '.join(args)}")
            subprocess.run(["cargo", "bench", "--no-run", *args], cwd=REPO, check=True)


def versions() -> dict:
    def first_line(argv):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            return (p.stdout or p.stderr).splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "missing"
    def collectd():
        # `collectd -h` ends with "collectd 5.12.0.git, http://collectd.org/"; Debian's
        # package version says which release that is.
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "collectd-core"], capture_output=True, text=True, timeout=20)
            return out.stdout.strip() or "missing"
        except (OSError, subprocess.TimeoutExpired):
            return "missing"
    return {"node_exporter": first_line(["prometheus-node-exporter", "--version"]).split(" (")[0].replace("node_exporter, version ", ""),
            "Prometheus": first_line(["prometheus", "--version"]).split(" (")[0].replace("prometheus, version ", ""),
            "collectd": collectd(),
            # Debian's build prints no version of its own (`-version` is empty): the package's.
            "VictoriaMetrics": first_line(["dpkg-query", "-W", "-f", "${Version}\\n", "victoria-metrics"]).split("+")[0]}


def git(*args) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def main() -> int:
    # SIGTERM unwinds like Ctrl-C, so every started server is stopped by its `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    a = parse_args()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = Path(a.work) / stamp
    work.mkdir(parents=True, exist_ok=True)
    results_dir = Path(a.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    res: dict = {"meta": {
        "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "bench/run " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
        "mode": "quick (smoke)" if a.quick else "full", "settings": {k: v for k, v in vars(a).items() if k != "phases"},
        "phases": a.phases, "git_rev": git("rev-parse", "--short", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
        "cores": os.cpu_count(), "load_before": loadavg(), "work": str(work),
    }, "errors": {}, "phase_load": {}}
    if a.merge and (results_dir / "latest.json").exists():
        old = json.loads((results_dir / "latest.json").read_text())
        for k, v in old.items():
            if k not in ("meta", "errors", "phase_load"):
                res.setdefault(k, v)
        res["phase_load"] = old.get("phase_load", {})
        res["errors"] = {k: v for k, v in old.get("errors", {}).items() if k.split("_")[0] not in a.phases}
        res["meta"]["merged_into"] = old["meta"]
        res["meta"]["command"] = f"{old['meta']['command']}, then {res['meta']['command']}"
        res["meta"]["load_before"] = old["meta"]["load_before"]
    if not a.no_install:
        install_peers(a.phases)
    res["meta"]["peers"] = versions()
    if not a.no_build:
        build(a.phases)
    built = target_dir() / "release"
    for b in BINARIES:
        if not (built / b).exists():
            log(f"missing {built / b}: build it (cargo build --release -p lake -p lake-collector)")
            return 2
    # A copy, so every run of this harness uses the same binaries even if a build in the
    # shared target/ replaces them meanwhile (libduckdb is found through its absolute rpath).
    bin_dir = work / "bin"
    bin_dir.mkdir(exist_ok=True)
    for b in BINARIES:
        shutil.copy2(built / b, bin_dir / b)
    res["meta"]["binaries"] = {b: dt.datetime.fromtimestamp((built / b).stat().st_mtime, dt.timezone.utc).isoformat()
                               for b in BINARIES}

    def save() -> None:
        res["meta"]["load_after"] = loadavg()
        (results_dir / "latest.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        (results_dir / "latest.md").write_text(report.markdown(res))
        shutil.copy(results_dir / "latest.json", work / "results.json")
        shutil.copy(results_dir / "latest.md", work / "results.md")

    steps = {
        "footprint": [("footprint", lambda: footprint.run(bin_dir, work, a.runs, a.fp_interval, a.fp_warmup, a.fp_window,
                                                                 batch_wait=a.fp_batch_wait, inventory=not a.fp_no_inventory))],
        "caddy": [("caddy", lambda: cargo_benches.caddy(REPO, work, a.caddy_runs, a.caddy_bytes))],
        "ingest": [("ingest", lambda: cargo_benches.ingest(REPO, work, a.runs, a.ingest_secs))],
        "storage": [("storage_http", lambda: storage.http(bin_dir, work, a.runs, a.http_lines)),
                    ("storage_metrics", lambda: storage.metrics(bin_dir, work, a.metrics_runs, a.metrics_interval, a.metrics_window)),
                    ("storage_generated", lambda: metrics_storage.run(bin_dir, work / "storage-generated", Path(a.data),
                                                                      a.storage_days))],
        "query": [("query", lambda: query.run(REPO, bin_dir, work / "query", Path(a.data), a.query_runs,
                                              with_prometheus=not a.no_prometheus_query, prom_days=a.prom_days))],
        "scale": [("scale", lambda: scale.run(REPO, bin_dir, work / "scale", Path(a.scale_data), a.scale_size, a.query_runs))],
    }
    for ph in PHASES:
        if ph not in a.phases:
            continue
        for key, step in steps[ph]:
            before, t0 = loadavg(), time.monotonic()
            log(f"=== {key} (load average {before})")
            try:
                res[key] = step()
            except Exception as e:  # noqa: BLE001 - one failed phase must not lose the others
                traceback.print_exc()
                res["errors"][key] = f"{type(e).__name__}: {str(e)[:1500]}"
            res["phase_load"][key] = {"before": before, "after": loadavg(), "seconds": time.monotonic() - t0}
            save()
    save()
    print(report.markdown(res))
    log(f"wrote {results_dir / 'latest.md'} and latest.json (work files: {work})")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
