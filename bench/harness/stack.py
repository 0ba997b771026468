"""Starting the programs under test and their peers, each on a free loopback port with
its own directory: `lake serve`, `lake-collector`, node_exporter, Prometheus,
VictoriaMetrics, and the
load writers (a Caddy access log at a fixed rate, a live journal)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from caddylog import CaddyLog
from util import Proc, du_bytes, free_port, http_get, http_post, lake_sql, log, wait_http


def token(node: str) -> str:
    return f"bench-token-{node}-0123456789abcdef"


class Lake:
    """A `lake serve` on a free port, with archive and scheduled compaction off (the
    harness compacts when it measures) and one token per node. Its data directory is
    `<work>/<name>/data`, or `data` (an existing lake, e.g. a generated one)."""

    def __init__(self, bin_dir: Path, work: Path, name: str, nodes: list[str], extra: str = "",
                 data: Path | None = None):
        self.bin = bin_dir / "lake"
        self.dir = work / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = data or (self.dir / "data")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = self.dir / "lake.toml"
        text = (f'version = 1\ndata_dir = "{self.data}"\nlisten = "127.0.0.1:{self.port}"\n'
                '[ingest]\nflush_interval = "30s"\n'
                '[compaction]\ninterval = "0s"\nsettle = "0s"\nmin_files = 2\n'
                '[archive]\nenabled = false\n' + extra)
        for n in nodes:
            text += f'[[nodes]]\nname = "{n}"\ntoken = "{token(n)}"\n'
        self.config.write_text(text)
        self.proc: Proc | None = None
        self.name = name

    def start(self) -> "Lake":
        self.proc = Proc(self.name, [str(self.bin), "serve", "--config", str(self.config)], self.dir,
                         env={"LOG_FILTER": "warn"})
        wait_http(f"{self.url}/health", self.name, proc=self.proc)
        return self

    def sql(self, q: str):
        return lake_sql(self.url, q)

    def stop(self) -> None:
        """SIGTERM: the lake flushes its buffers to Parquet before it exits."""
        if self.proc:
            rc = self.proc.stop(timeout=120)
            if rc not in (0, None):
                log(f"{self.name} exited with {rc}:\n{self.proc.tail()}")
            self.proc = None

    def compact(self, table: str | None = None) -> dict:
        """`lake compact` on the stopped lake (in-process, holding the data-dir lock)."""
        argv = [str(self.bin), "compact", "--config", str(self.config), "--format", "json"]
        if table:
            argv += ["--table", table]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(f"lake compact failed ({out.returncode}): {out.stderr[-2000:]}")
        try:
            report = json.loads(out.stdout)
        except json.JSONDecodeError:
            return {"stdout": out.stdout[-2000:]}
        if report.get("failures"):
            # A failed merge keeps the flushed files: a storage figure would not be the compacted one.
            raise RuntimeError(f"lake compact: {report['failures']} merge(s) failed: {out.stderr[-2000:]}")
        return report

    def table_files(self, table: str) -> list[Path]:
        return sorted((self.data / "tables" / table).rglob("*.parquet"))


class Collector:
    def __init__(self, bin_dir: Path, work: Path, name: str, lake: Lake, body: str):
        self.dir = work / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "collector.toml"
        self.config.write_text(
            f'version = 1\nnode = "{name}"\ndata_dir = "{self.dir / "state"}"\n'
            f'[lake]\nurl = "{lake.url}"\ntoken = "{token(name)}"\n' + body)
        self.argv = [str(bin_dir / "lake-collector"), "--config", str(self.config)]
        self.name = name
        self.proc: Proc | None = None

    def start(self) -> "Collector":
        self.proc = Proc(self.name, self.argv, self.dir, env={"LOG_FILTER": "warn"})
        time.sleep(0.5)
        if not self.proc.alive():
            raise RuntimeError(f"{self.name} exited at once:\n{self.proc.tail()}")
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(timeout=30)
            self.proc = None


class NodeExporter:
    def __init__(self, work: Path, name: str = "node_exporter"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.dir = work
        self.name = name
        self.proc: Proc | None = None

    def start(self) -> "NodeExporter":
        # Debian's default collectors, as `apt install prometheus-node-exporter` runs it.
        self.proc = Proc(self.name, ["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{self.port}"], self.dir)
        wait_http(self.url, self.name, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
            self.proc = None


class Collectd:
    """Debian's collectd in the foreground (`collectd -f -C <conf>`) with its own config in
    its own directory: the host plugins equivalent to the collector's host metrics (cpu,
    load, memory, swap, df, disk, interface, processes) every `interval`, optionally the
    `tail` plugin on a Caddy access log (lines, status classes and response bytes counted
    by regex), and `csv` as its sink: every value is appended to a file under the
    directory each interval — the values leave the process, as the collector's leave
    through its spool, without a second process to receive them (`network` would need a
    server, `write_prometheus` a scraper and an HTTP server in collectd). Default
    read/write threads (5 + 5), as Debian's collectd.conf leaves them."""

    BIN = "/usr/sbin/collectd"
    TYPES_DB = "/usr/share/collectd/types.db"
    HOST_PLUGINS = ("cpu", "load", "memory", "swap", "df", "disk", "interface", "processes")

    def __init__(self, work: Path, name: str, interval: float, tail: Path | None = None):
        self.dir = work / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.config = self.dir / "collectd.conf"
        text = (f'Hostname "{name}"\nFQDNLookup false\nBaseDir "{self.dir}"\nPIDFile "{self.dir / "collectd.pid"}"\n'
                f'TypesDB "{self.TYPES_DB}"\nInterval {interval:g}\nAutoLoadPlugin false\n')
        text += "".join(f"LoadPlugin {p}\n" for p in self.HOST_PLUGINS + (("tail",) if tail else ()) + ("csv",))
        text += f'<Plugin csv>\n  DataDir "{self.dir / "csv"}"\n  StoreRates false\n</Plugin>\n'
        if tail:
            # POSIX extended regexes over each raw JSON line (collectd has no JSON parser in tail).
            matches = [("lines", ".", "DeriveInc")] + [
                (f"status-{c}xx", f'"status":{c}[0-9][0-9][,}}]', "DeriveInc") for c in "2345"]
            text += f'<Plugin tail>\n  <File "{tail}">\n    Instance "caddy"\n'
            for inst, rx, ds in matches:
                text += (f'    <Match>\n      Regex "{rx.replace(chr(34), chr(92) + chr(34))}"\n      DSType "{ds}"\n'
                         f'      Type "http_requests"\n      Instance "{inst}"\n    </Match>\n')
            text += ('    <Match>\n      Regex "\\"size\\":([0-9]+)"\n      DSType "DeriveAdd"\n'
                     '      Type "total_bytes"\n      Instance "sent"\n    </Match>\n')
            text += "  </File>\n</Plugin>\n"
        self.config.write_text(text)
        self.proc: Proc | None = None

    def start(self) -> "Collectd":
        self.proc = Proc(self.name, [self.BIN, "-f", "-C", str(self.config)], self.dir)
        deadline = time.time() + 30
        while "entering read-loop" not in self.proc.tail(50):
            if not self.proc.alive() or time.time() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.proc.tail()}")
            time.sleep(0.2)
        return self

    def tail_lines(self) -> int | None:
        """The tail plugin's line counter as last written to its CSV (None without tail)."""
        last = None
        for f in sorted((self.dir / "csv").glob(f"{self.name}/tail-caddy/http_requests-lines-*")):
            rows = [r for r in f.read_text().splitlines() if r and r[0].isdigit()]
            if rows:
                last = int(float(rows[-1].split(",")[1]))
        return last

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(timeout=30)
            self.proc = None


class Scraper:
    """A small scraper loop: GET /metrics every `interval`, reading the whole body, as a
    Prometheus server would (its own cost is not counted; node_exporter's is)."""

    def __init__(self, url: str, interval: float):
        self.url, self.interval = url, interval
        self.stop_ev = threading.Event()
        self.scrapes = self.errors = 0
        self.bytes = 0
        self.t = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Scraper":
        self.t.start()
        return self

    def _run(self) -> None:
        nxt = time.monotonic()
        while not self.stop_ev.is_set():
            try:
                self.bytes += len(http_get(self.url, timeout=self.interval))
                self.scrapes += 1
            except Exception:  # noqa: BLE001 - counted, the loop goes on
                self.errors += 1
            nxt += self.interval
            self.stop_ev.wait(max(0.0, nxt - time.monotonic()))

    def stop(self) -> None:
        self.stop_ev.set()
        self.t.join(5)


class Prometheus:
    def __init__(self, work: Path, name: str, scrape_targets: list[str] | None, interval: float,
                 data: Path | None = None, extra_args: list[str] | None = None):
        self.dir = work / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = data or (self.dir / "data")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cfg = self.dir / "prometheus.yml"
        text = f"global:\n  scrape_interval: {interval:g}s\n  scrape_timeout: {min(interval, 10):g}s\n  evaluation_interval: 1h\n"
        if scrape_targets:
            text += ("scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ["
                     + ", ".join(f'"{t}"' for t in scrape_targets) + "]\n")
        else:
            text += "scrape_configs: []\n"
        cfg.write_text(text)
        self.argv = ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.data}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-admin-api"] + (extra_args or [])
        self.name = name
        self.proc: Proc | None = None

    def start(self, timeout: float = 300) -> "Prometheus":
        self.proc = Proc(self.name, self.argv, self.dir)
        wait_http(f"{self.base}/-/ready", self.name, timeout=timeout, proc=self.proc)
        return self

    def query(self, q: str, at: float | None = None) -> list:
        from urllib.parse import urlencode
        params = {"query": q}
        if at is not None:
            params["time"] = f"{at:.3f}"
        out = json.loads(http_get(f"{self.base}/api/v1/query?{urlencode(params)}", timeout=60))
        return out["data"]["result"]

    def own_metrics(self) -> dict[str, float]:
        """Prometheus' own /metrics as {'name{labels}': value}."""
        out = {}
        for line in http_get(f"{self.base}/metrics").decode().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
        return out

    def snapshot(self) -> Path:
        out = json.loads(http_post(f"{self.base}/api/v1/admin/tsdb/snapshot", b""))
        return self.data / "snapshots" / out["data"]["name"]

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(timeout=60)
            self.proc = None


class VictoriaMetrics:
    """Debian's `victoria-metrics` (single node) on a free port with its own storage
    directory and a 100-year retention (the generated lake's samples are weeks old);
    with `scrape_targets`, it scrapes them itself (its built-in promscrape) every
    `interval` seconds as job `node`, like the Prometheus beside it."""

    BIN = "victoria-metrics"

    def __init__(self, work: Path, name: str, scrape_targets: list[str] | None = None, interval: float = 10.0):
        self.dir = work / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = self.dir / "storage"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.argv = [self.BIN, f"-storageDataPath={self.data}", "-retentionPeriod=100y",
                     f"-httpListenAddr=127.0.0.1:{self.port}", "-loggerLevel=WARN"]
        if scrape_targets:
            cfg = self.dir / "scrape.yml"
            cfg.write_text(f"global:\n  scrape_interval: {interval:g}s\n  scrape_timeout: {min(interval, 10):g}s\n"
                           "scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ["
                           + ", ".join(f'"{t}"' for t in scrape_targets) + "]\n")
            self.argv.append(f"-promscrape.config={cfg}")
        self.name = name
        self.proc: Proc | None = None

    def start(self, timeout: float = 120) -> "VictoriaMetrics":
        self.proc = Proc(self.name, self.argv, self.dir)
        wait_http(f"{self.base}/health", self.name, timeout=timeout, proc=self.proc)
        return self

    def own_metrics(self) -> dict[str, float]:
        """Its own /metrics as {'name{labels}': value}."""
        out = {}
        for line in http_get(f"{self.base}/metrics", timeout=30).decode().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
        return out

    def import_prometheus(self, path: Path) -> None:
        """POSTs a Prometheus text file (millisecond timestamps) to /api/v1/import/prometheus, streamed."""
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)
        with open(path, "rb") as f:
            conn.request("POST", "/api/v1/import/prometheus", body=f,
                         headers={"Content-Length": str(path.stat().st_size), "Content-Type": "text/plain"})
            r = conn.getresponse()
            body = r.read()
        conn.close()
        if r.status // 100 != 2:
            raise RuntimeError(f"VictoriaMetrics import of {path.name}: {r.status} {body[:500]!r}")

    def rows(self) -> float:
        """Samples held in its storage parts (`vm_rows{type="storage/…"}`), after `settle`."""
        return sum(v for k, v in self.own_metrics().items() if k.startswith('vm_rows{type="storage/'))

    def settle(self, partitions: list[str], timeout: float = 1800) -> dict:
        """Everything on disk and merged as far as it goes: /internal/force_flush (the
        in-memory buffers become parts), /internal/force_merge of each monthly partition
        (`YYYY_MM`, as a finished partition ends up), then waits until no merge runs and
        the storage directory's size has not changed for 3 s."""
        t0 = time.monotonic()
        http_get(f"{self.base}/internal/force_flush", timeout=300)
        for p in sorted(set(partitions)):
            http_get(f"{self.base}/internal/force_merge?partition_prefix={p}", timeout=300)
        last, stable_since = -1, time.monotonic()
        while time.monotonic() - t0 < timeout:
            m = self.own_metrics()
            busy = sum(v for k, v in m.items() if k.startswith(("vm_active_merges", "vm_active_force_merges")))
            size = du_bytes(self.data)
            if busy or size != last:
                last, stable_since = size, time.monotonic()
            elif time.monotonic() - stable_since >= 3:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"{self.name}: merges still running after {timeout:.0f}s")
        return {"settle_seconds": time.monotonic() - t0}

    def sizes(self) -> dict:
        """Bytes on disk of its data parts (`data/`), its index (`indexdb/`) and the whole directory."""
        return {"data_bytes": du_bytes(self.data / "data"), "indexdb_bytes": du_bytes(self.data / "indexdb"),
                "total_bytes": du_bytes(self.data)}

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(timeout=60)
            self.proc = None


class CaddyWriter:
    """Appends realistic Caddy JSON lines to a file at `rate` lines/s, flushed every 100 ms
    (Caddy writes each entry as it is logged)."""

    def __init__(self, path: Path, rate: float, seed: int = 7):
        self.path, self.rate = path, rate
        self.log = CaddyLog(seed)
        self.stop_ev = threading.Event()
        self.lines = 0
        self.t = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "CaddyWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t.start()
        return self

    def _run(self) -> None:
        start = time.monotonic()
        with open(self.path, "a") as f:
            while not self.stop_ev.is_set():
                due = int((time.monotonic() - start) * self.rate)
                chunk = []
                now = time.time()
                while self.lines < due:
                    chunk.append(self.log.line(now) + "\n")
                    self.lines += 1
                if chunk:
                    f.write("".join(chunk))
                    f.flush()
                self.stop_ev.wait(0.1)

    def stop(self) -> None:
        self.stop_ev.set()
        self.t.join(5)


class JournalWriter:
    """A live journal: export-format entries piped into systemd-journal-remote, which
    writes `<dir>/live.journal` as they come (journalctl --follow sees them). Per second
    about `rate` entries: service logs (sshd, cron, systemd, nginx), kernel ufw BLOCK
    lines (firewall) and fail2ban-server lines (bans)."""

    JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"

    def __init__(self, directory: Path, rate: float, logdir: Path):
        self.dir, self.rate = directory, rate
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = Proc("journal-remote", [self.JOURNAL_REMOTE, f"--output={directory / 'live.journal'}", "-"],
                         logdir, stdin=subprocess.PIPE)
        self.stop_ev = threading.Event()
        self.entries = 0
        self.t = threading.Thread(target=self._run, daemon=True)
        import random
        self.rng = random.Random(11)

    def start(self) -> "JournalWriter":
        self.t.start()
        return self

    def _entry(self, now_us: int, seq: int) -> bytes:
        rng = self.rng
        boot = "0123456789abcdef0123456789abcdef"
        common = [("__REALTIME_TIMESTAMP", str(now_us)), ("__MONOTONIC_TIMESTAMP", str(now_us - 1_700_000_000_000_000)),
                  ("_BOOT_ID", boot), ("_MACHINE_ID", "fedcba9876543210fedcba9876543210"), ("_HOSTNAME", "bench-host")]
        x = rng.random()
        ip = f"{rng.choice((45, 62, 185, 193))}.{rng.randrange(256)}.{rng.randrange(256)}.{1 + rng.randrange(254)}"
        if x < 0.30:
            f = [("_TRANSPORT", "kernel"), ("SYSLOG_IDENTIFIER", "kernel"), ("PRIORITY", "4"), ("SYSLOG_FACILITY", "0"),
                 ("MESSAGE", f"[UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC={ip} DST=198.51.100.2 "
                             f"LEN=44 TOS=0x00 PREC=0x00 TTL={40 + rng.randrange(20)} ID={rng.randrange(65535)} PROTO=TCP "
                             f"SPT={1024 + rng.randrange(60000)} DPT={rng.choice((22, 23, 80, 443, 3389, 5432, 6379, 8080))} "
                             f"WINDOW=1024 RES=0x00 SYN URGP=0")]
        elif x < 0.36:
            ts = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now_us / 1e6)) + f",{(now_us // 1000) % 1000:03d}"
            act = "Found" if rng.random() < 0.8 else "Ban"
            f = [("_TRANSPORT", "stdout"), ("_SYSTEMD_UNIT", "fail2ban.service"), ("SYSLOG_IDENTIFIER", "fail2ban-server"),
                 ("_PID", "812"), ("_COMM", "fail2ban-server"), ("PRIORITY", "6"),
                 ("MESSAGE", f"{ts} fail2ban.{'filter' if act == 'Found' else 'actions'}         [812]: "
                             f"{'INFO   ' if act == 'Found' else 'NOTICE '} [sshd] {act} {ip}" + (f" - {ts[:19]}" if act == "Found" else ""))]
        elif x < 0.60:
            user = rng.choice(("root", "admin", "ubuntu", "test", "oracle"))
            f = [("_TRANSPORT", "syslog"), ("_SYSTEMD_UNIT", "ssh.service"), ("SYSLOG_IDENTIFIER", "sshd"),
                 ("_PID", str(20000 + rng.randrange(9000))), ("_COMM", "sshd"), ("PRIORITY", "6"), ("SYSLOG_FACILITY", "4"),
                 ("MESSAGE", rng.choice((f"Invalid user {user} from {ip} port {1024 + rng.randrange(60000)}",
                                         f"Connection closed by invalid user {user} {ip} port {1024 + rng.randrange(60000)} [preauth]",
                                         f"Received disconnect from {ip} port {1024 + rng.randrange(60000)}:11: Bye Bye [preauth]")))]
        elif x < 0.75:
            f = [("_TRANSPORT", "stdout"), ("_SYSTEMD_UNIT", "app.service"), ("SYSLOG_IDENTIFIER", "app"),
                 ("_PID", "4242"), ("_COMM", "app"), ("PRIORITY", rng.choice(("6", "6", "6", "4", "3"))),
                 ("MESSAGE", f"request id={rng.randrange(2**48):012x} route=/api/v1/items status=200 took={rng.randrange(80)}ms")]
        elif x < 0.90:
            f = [("_TRANSPORT", "syslog"), ("_SYSTEMD_UNIT", "cron.service"), ("SYSLOG_IDENTIFIER", "CRON"),
                 ("_PID", str(30000 + seq % 5000)), ("PRIORITY", "6"),
                 ("MESSAGE", "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)")]
        else:
            f = [("_TRANSPORT", "journal"), ("_SYSTEMD_UNIT", "init.scope"), ("SYSLOG_IDENTIFIER", "systemd"), ("_PID", "1"),
                 ("PRIORITY", "6"), ("CODE_FILE", "src/core/job.c"), ("CODE_LINE", "768"),
                 ("MESSAGE", rng.choice(("Started session-1234.scope - Session 1234 of User root.",
                                         "Starting apt-daily.service - Daily apt download activities...",
                                         "logrotate.service: Deactivated successfully.")))]
        return ("".join(f"{k}={v}\n" for k, v in common + f) + "\n").encode()

    def _run(self) -> None:
        start = time.monotonic()
        stdin = self.proc.p.stdin
        try:
            while not self.stop_ev.is_set():
                due = int((time.monotonic() - start) * self.rate)
                buf = b""
                while self.entries < due:
                    buf += self._entry(int(time.time() * 1e6), self.entries)
                    self.entries += 1
                if buf:
                    stdin.write(buf)
                    stdin.flush()
                self.stop_ev.wait(0.1)
        except (BrokenPipeError, OSError) as e:
            log(f"journal writer stopped: {e}")

    def stop(self) -> None:
        self.stop_ev.set()
        self.t.join(5)
        try:
            self.proc.p.stdin.close()
        except OSError:
            pass
        self.proc.stop(timeout=10)
