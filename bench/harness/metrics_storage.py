"""Metrics storage on the generated lake: lake vs VictoriaMetrics vs Prometheus, the same
samples, and the what-if table of the `metrics` encoding levers (issue 23 §1).

The last `days` finished UTC days of the generated lake's `metrics` (`--storage-days`,
2 by default: at least 24 h of samples at ~7 s):
- lake: the Parquet bytes as generated (`lake-gen` writes with the lake writer's
  properties), and as the lake keeps a finished day: the partitions copied into a
  scratch data directory and rewritten by `lake compact --table metrics`;
- VictoriaMetrics (Debian's): every sample exported as Prometheus text with millisecond
  timestamps (the query phase's export), POSTed to `/api/v1/import/prometheus`, then
  `/internal/force_flush` and `/internal/force_merge` of each monthly partition; once no
  merge runs and the directory stops growing, the bytes of `data/` and `indexdb/`. Its
  sample count (`vm_rows` of its storage parts) must equal the lake's;
- Prometheus: the same days as promtool blocks (`promtool tsdb create-blocks-from
  openmetrics --max-block-duration=24h`), built in the run's work directory.
Then `lake-metrics-whatif` rewrites the first of those days under each lever.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

from query import _export_day, ensure_lake, ensure_tsdb
from stack import Lake, VictoriaMetrics
from util import du_bytes, log


def day_dirs(data: Path, days: int) -> list[Path]:
    """The last `days` finished UTC days (today's partition still grows, and compaction
    leaves a growing day's single file as it is)."""
    today = "date=" + dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    return sorted(d for d in (data / "tables" / "metrics").iterdir() if d.is_dir() and d.name < today)[-days:]


def samples_of(dirs: list[Path]) -> int:
    import duckdb
    files = "[" + ",".join(f"'{d}/*.parquet'" for d in dirs) + "]"
    return duckdb.connect().execute(f"select count(*) from read_parquet({files}) where not isnan(value)").fetchone()[0]


def whatif(bin_dir: Path, work: Path, dirs: list[Path], name: str) -> dict:
    """`lake-metrics-whatif` over `dirs`: bytes per sample of every lever variant."""
    out = work / f"whatif-{name}.json"
    with open(work / f"whatif-{name}.txt", "w") as f:
        subprocess.run([str(bin_dir / "lake-metrics-whatif"), *map(str, dirs), "--json", str(out), "--tmp", str(work)],
                       check=True, stdout=f, stderr=subprocess.STDOUT)
    res = json.loads(out.read_text())
    log(f"  what-if ({name}): " + "; ".join(f"{v['variant']} {v['bytes_per_sample']:.2f}" for v in res["variants"]
                                           if v["variant"].startswith(("before", "together"))))
    return res


def lake_compacted(bin_dir: Path, work: Path, dirs: list[Path]) -> dict:
    """The days as the lake keeps them: copied into a scratch lake and compacted."""
    lake = Lake(bin_dir, work, "lake-compacted", [])
    dest = lake.data / "tables" / "metrics"
    for d in dirs:
        shutil.copytree(d, dest / d.name)
    report = lake.compact("metrics")
    files = lake.table_files("metrics")
    out = {"parquet_bytes": du_bytes(dest, ".parquet"), "files": len(files), "compact_report": report}
    shutil.rmtree(lake.dir)
    return out


def run(bin_dir: Path, work: Path, data: Path, days: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    ensure_lake(bin_dir, data)
    dirs = day_dirs(data, days)
    samples = samples_of(dirs)
    log(f"metrics storage, generated lake: {len(dirs)} days ({dirs[0].name} .. {dirs[-1].name}), {samples:,} samples")
    res = {"days": len(dirs), "day_dirs": [d.name for d in dirs], "samples": samples,
           "lake_generated_bytes": sum(du_bytes(d, ".parquet") for d in dirs)}
    res["lake_compacted"] = lake_compacted(bin_dir, work, dirs)
    res["lake_bytes"] = res["lake_compacted"]["parquet_bytes"]

    vm = VictoriaMetrics(work, "victoria-metrics")
    try:
        vm.start()
        for d in dirs:
            text = work / f"{d.name}.prom"
            _export_day(d, text, millis=True)
            vm.import_prometheus(text)
            text.unlink()
        months = sorted({d.name.removeprefix("date=")[:7].replace("-", "_") for d in dirs})
        res["victoria_metrics"] = {**vm.settle(months), "rows": vm.rows(), **vm.sizes()}
    finally:
        vm.stop()
    v = res["victoria_metrics"]
    if v["rows"] != samples:
        raise RuntimeError(f"VictoriaMetrics holds {v['rows']:,.0f} samples, the lake {samples:,}")

    tsdb = work / "prometheus-blocks"
    info = ensure_tsdb(data, tsdb, work / "om", day_names=[d.name for d in dirs])
    res["prometheus_block_bytes"] = sum(f.stat().st_size for f in (tsdb / "data").rglob("*") if f.is_file())
    res["prometheus_build_seconds"] = info.get("build_seconds")
    shutil.rmtree(tsdb)

    n = samples
    res["bytes_per_sample"] = {
        "lake": res["lake_bytes"] / n, "lake_generated": res["lake_generated_bytes"] / n,
        "victoria_metrics": v["total_bytes"] / n, "victoria_metrics_data": v["data_bytes"] / n,
        "victoria_metrics_indexdb": v["indexdb_bytes"] / n, "prometheus": res["prometheus_block_bytes"] / n,
    }
    b = res["bytes_per_sample"]
    log(f"  lake {b['lake']:.3f} B/sample (as generated {b['lake_generated']:.3f}); VictoriaMetrics "
        f"{b['victoria_metrics']:.3f} (data {b['victoria_metrics_data']:.3f} + indexdb "
        f"{b['victoria_metrics_indexdb']:.3f}); Prometheus {b['prometheus']:.3f}")
    res["whatif"] = whatif(bin_dir, work, dirs[:1], "generated")
    return res
