"""1. Collector footprint vs node_exporter, side by side in one window per run.

Per run, at the same time and at the same interval:
- node_exporter (Debian's defaults) scraped by a scraper loop every `interval`;
- `lake-collector` with host metrics only (`[inventory] enabled = false`; every other
  source is off by default), sampling every `interval`;
- `lake-collector` with every source on: host metrics, journald on a live journal
  (`journalctl --directory --follow`, fed ~10 entries/s incl. ufw and fail2ban lines),
  Caddy access log tailed while written at 100 lines/s, ufw and fail2ban from journald,
  uptime probes (HTTP and TCP against the lake), tailscale (no tailscale binary here:
  idle after one check), inventory (dpkg, listeners; systemctl absent);
- one `lake serve` both collectors ship to (not measured);
- Debian's collectd twice, each in the foreground with its own config (`stack.Collectd`):
  the host plugins every `interval` (cpu, load, memory, swap, df, disk, interface,
  processes) into csv, the peer of the host-only collector; and the same plus `tail` on
  the Caddy log the all-sources collector tails (lines, status classes, bytes), the peer
  of the all-sources collector (which does much more: journald, probes, inventory).

After `warmup` seconds, RSS is read from /proc/<pid>/status (VmRSS) every second and
CPU from /proc/<pid>/stat (utime+stime, plus children: journalctl, dpkg-query) at the
start and end of the `window`; CPU seconds per hour = CPU seconds / window × 3600.
"""

from __future__ import annotations

import time
from pathlib import Path

from stack import CaddyWriter, Collectd, Collector, JournalWriter, Lake, NodeExporter, Scraper
from util import CLK_TCK, cpu_ticks, log, median, rss_kib, rss_parts_kib, tree_cpu_ticks, tree_rss_kib


MEASURED = ("node_exporter", "collectd_host", "collectd_all", "collector_host", "collector_all")


def collector_all_body(work: Path, lake: Lake, interval: float, caddy_log: Path, journal_dir: Path,
                       batch_wait: str | None = None, inventory: bool = True) -> str:
    """Every source on. `batch_wait` overrides the Caddy and journald default (1s)."""
    port = lake.port
    wait = f'batch_wait = "{batch_wait}"\n' if batch_wait else ""
    return f'''
[host]
interval = "{interval:g}s"
[caddy]
enabled = true
paths = ["{caddy_log}"]
start_at = "beginning"
{wait}[journald]
enabled = true
directory = "{journal_dir}"
start_at = "beginning"
{wait}[ufw]
enabled = true
[fail2ban]
enabled = true
timezone = "UTC"
[tailscale]
enabled = true
[uptime]
interval = "30s"
timeout = "5s"
[[uptime.checks]]
name = "lake-health"
kind = "http"
target = "http://127.0.0.1:{port}/health"
[[uptime.checks]]
name = "lake-tcp"
kind = "tcp"
target = "127.0.0.1:{port}"
[inventory]
enabled = {"true" if inventory else "false"}
'''


def one_run(bin_dir: Path, work: Path, interval: float, warmup: float, window: float, caddy_rate: float,
            journal_rate: float, batch_wait: str | None = None, inventory: bool = True) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    lake = Lake(bin_dir, work, "lake", ["host-only", "all-sources"]).start()
    caddy_log = work / "caddy" / "access.log"
    journal_dir = work / "journal"
    started = []
    try:
        ne = NodeExporter(work).start()
        started.append(ne)
        scraper = Scraper(ne.url, interval).start()
        started.append(scraper)
        host = Collector(bin_dir, work, "host-only", lake,
                         f'[host]\ninterval = "{interval:g}s"\n[inventory]\nenabled = false\n').start()
        started.append(host)
        caddy = CaddyWriter(caddy_log, caddy_rate).start()
        started.append(caddy)
        journal = JournalWriter(journal_dir, journal_rate, work).start()
        started.append(journal)
        time.sleep(1.0)  # the journal file exists before journalctl looks at the directory
        allsrc = Collector(bin_dir, work, "all-sources", lake,
                           collector_all_body(work, lake, interval, caddy_log, journal_dir, batch_wait, inventory)).start()
        started.append(allsrc)
        cd_host = Collectd(work, "collectd-host", interval).start()
        started.append(cd_host)
        cd_all = Collectd(work, "collectd-all", interval, tail=caddy_log).start()
        started.append(cd_all)

        procs = {"node_exporter": ne.proc, "collector_host": host.proc, "collector_all": allsrc.proc,
                 "collectd_host": cd_host.proc, "collectd_all": cd_all.proc}
        log(f"  warm-up {warmup:.0f}s, then a {window:.0f}s window")
        time.sleep(warmup)
        for name, p in procs.items():
            if not p.alive():
                raise RuntimeError(f"{name} died during warm-up:\n{p.tail()}")
        t0 = time.monotonic()
        cpu0 = {n: tree_cpu_ticks(p.pid) for n, p in procs.items()}
        self0 = {n: cpu_ticks(p.pid, with_children=False) for n, p in procs.items()}
        rss: dict[str, list[int]] = {n: [] for n in procs}
        tree: dict[str, list[int]] = {n: [] for n in procs}
        anon: dict[str, list[int]] = {n: [] for n in procs}
        filed: dict[str, list[int]] = {n: [] for n in procs}
        lines0, entries0, tail0 = caddy.lines, journal.entries, cd_all.tail_lines() or 0
        while time.monotonic() - t0 < window:
            for n, p in procs.items():
                r = rss_kib(p.pid)
                if r is not None:
                    rss[n].append(r)
                    tree[n].append(tree_rss_kib(p.pid) or r)
                    parts = rss_parts_kib(p.pid)
                    anon[n].append(parts.get("RssAnon"))
                    filed[n].append(parts.get("RssFile"))
            time.sleep(1.0)
        cpu1 = {n: tree_cpu_ticks(p.pid) for n, p in procs.items()}
        self1 = {n: cpu_ticks(p.pid, with_children=False) for n, p in procs.items()}
        secs = time.monotonic() - t0
        result = {}
        for n in procs:
            cpu_s = (cpu1[n] - cpu0[n]) / CLK_TCK
            result[n] = {
                "rss_median_kib": median(rss[n]),
                "rss_max_kib": max(rss[n]) if rss[n] else None,
                "rss_with_children_median_kib": median(tree[n]),
                # VmRSS = RssAnon (heap, stacks) + RssFile (mapped binary and libraries).
                "rss_anon_median_kib": median(anon[n]),
                "rss_file_median_kib": median(filed[n]),
                "cpu_seconds": cpu_s,
                "cpu_seconds_per_hour": cpu_s / secs * 3600,
                "cpu_percent_of_core": cpu_s / secs * 100,
                # The process alone, without journalctl/dpkg-query (its children).
                "cpu_self_seconds_per_hour": (self1[n] - self0[n]) / CLK_TCK / secs * 3600,
            }
        # What the all-sources collector really did in the window (from the lake).
        result["load"] = {
            "window_s": secs,
            "caddy_lines_written": caddy.lines - lines0,
            "caddy_lines_per_s": (caddy.lines - lines0) / secs,
            "journal_entries_written": journal.entries - entries0,
            # What collectd's tail counted in the window (its CSV is written every interval).
            "collectd_tail_lines": (cd_all.tail_lines() or 0) - tail0,
            "node_exporter_scrapes": scraper.scrapes,
            "node_exporter_scrape_errors": scraper.errors,
            "node_exporter_bytes_per_scrape": scraper.bytes / max(1, scraper.scrapes),
        }
        try:
            result["lake_rows"] = {f"{r[0]}/{r[1]}": r[2] for r in lake.sql(
                "select 'metrics', host, count(*) from metrics group by 2 union all "
                "select 'http', host, count(*) from http group by 2 union all "
                "select 'logs', host, count(*) from logs group by 2 union all "
                "select 'firewall', host, count(*) from firewall group by 2 union all "
                "select 'bans', host, count(*) from bans group by 2 union all "
                "select 'probes', host, count(*) from probes group by 2")}
        except Exception as e:  # noqa: BLE001 - informative only
            result["lake_rows"] = {"error": str(e)}
        for n, p in procs.items():
            if not p.alive():
                raise RuntimeError(f"{n} died during the window:\n{p.tail()}")
        return result
    finally:
        for s in reversed(started):
            s.stop()
        lake.stop()


def run(bin_dir: Path, work: Path, runs: int, interval: float, warmup: float, window: float,
        caddy_rate: float = 100.0, journal_rate: float = 10.0, batch_wait: str | None = None,
        inventory: bool = True) -> dict:
    per_run = []
    for i in range(runs):
        log(f"footprint run {i + 1}/{runs}")
        per_run.append(one_run(bin_dir, work / f"footprint-{i}", interval, warmup, window, caddy_rate, journal_rate,
                               batch_wait, inventory))
        r = per_run[-1]
        log("  " + ", ".join(f"{n}: {r[n]['rss_median_kib'] / 1024:.1f} MiB, {r[n]['cpu_seconds_per_hour']:.1f} cpu-s/h"
                             for n in MEASURED))

    def med(n, k):
        return median([r[n][k] for r in per_run])

    summary = {n: {k: med(n, k) for k in per_run[0][n]} for n in MEASURED}
    return {"runs": runs, "interval_s": interval, "warmup_s": warmup, "window_s": window,
            "caddy_rate": caddy_rate, "journal_rate": journal_rate, "batch_wait": batch_wait or "default (1s)", "inventory": inventory,
            "median": summary, "per_run": per_run}
