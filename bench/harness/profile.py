"""Profile the collector with every source on, under the footprint phase's load.

    python3 bench/harness/profile.py [--secs 60] [--tool perf|callgrind]

Starts the same stack as the footprint phase (lake, Caddy writer at 100 lines/s, live
journal, all-sources collector), waits 15 s, then samples the collector:
- perf: `perf record -e cpu-clock -g -p <pid>` (software clock: this VM has no hardware
  counters), then `perf report --no-children --sort symbol` (top 40) to a text file;
- strace: `strace -c -f -p <pid>` for the same time: system calls by count and time;
- callgrind: the collector is started under `valgrind --tool=callgrind` instead
  (instruction counts, independent of the machine's load; ~50× slower, so the rates are
  what they are under valgrind), and `callgrind_annotate` writes the top functions.
Prints where the report is.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from footprint import collector_all_body  # noqa: E402
from main import target_dir  # noqa: E402
from stack import CaddyWriter, Collector, JournalWriter, Lake  # noqa: E402
from util import log  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=float, default=60)
    ap.add_argument("--tool", choices=["perf", "callgrind", "strace"], default="perf")
    ap.add_argument("--work", default=f"/var/tmp/lake-bench/profile-{time.strftime('%Y%m%dT%H%M%S')}")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = target_dir() / "release"
    lake = Lake(bin_dir, work, "lake", ["all-sources"]).start()
    caddy = CaddyWriter(work / "caddy" / "access.log", 100).start()
    journal = JournalWriter(work / "journal", 10, work).start()
    time.sleep(1)
    coll = Collector(bin_dir, work, "all-sources", lake,
                     collector_all_body(work, lake, 10, work / "caddy" / "access.log", work / "journal"))
    if a.tool == "callgrind":
        coll.argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.out"] + coll.argv
    coll.start()
    try:
        time.sleep(15)
        if a.tool == "perf":
            data = work / "perf.data"
            subprocess.run(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-o", str(data), "-p", str(coll.proc.pid),
                            "--", "sleep", str(a.secs)], check=True, stderr=subprocess.DEVNULL)
            out = work / "perf-report.txt"
            with open(out, "w") as f:
                subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "dso,symbol", "--stdio",
                                "-g", "none", "--percent-limit", "0.5"], stdout=f, stderr=subprocess.DEVNULL)
        elif a.tool == "strace":
            out = work / "strace-counts.txt"
            subprocess.run(["timeout", "-s", "INT", str(a.secs), "strace", "-c", "-f", "-o", str(out), "-p", str(coll.proc.pid)],
                           stderr=subprocess.DEVNULL)
        else:
            time.sleep(a.secs)
    finally:
        coll.stop()
        journal.stop()
        caddy.stop()
        lake.stop()
    if a.tool == "callgrind":
        out = work / "callgrind-top.txt"
        with open(out, "w") as f:
            subprocess.run(["callgrind_annotate", "--inclusive=no", f"{work}/callgrind.out"], stdout=f)
    log(f"profile: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
