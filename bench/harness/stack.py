"""Starting the programs under test and their peers, each on a free loopback port with
its own directory: `lake serve`, `lake-collector`, node_exporter, Prometheus, and the
load writers (a Caddy access log at a fixed rate, a live journal)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from caddylog import CaddyLog
from util import Proc, free_port, http_get, http_post, lake_sql, log, wait_http


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
