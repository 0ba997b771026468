"""Process, /proc, HTTP and statistics helpers shared by every phase of the harness.

Everything here is standard library only: the harness must run on a fresh machine
where only python3 is known to exist.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# ---------------------------------------------------------------- processes


class Proc:
    """A child process with its output in a log file, stopped politely then firmly."""

    def __init__(self, name: str, argv: list[str], logdir: Path, env: dict | None = None,
                 stdin=subprocess.DEVNULL, cwd: str | None = None):
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.p = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=stdin,
                                  env=full_env, cwd=cwd, start_new_session=True)
        self.pid = self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, timeout: float = 30.0, sig=signal.SIGTERM) -> int | None:
        """SIGTERM (to this process only; it stops its own children), then SIGKILL of its group."""
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop in {timeout:.0f}s: killing its process group")
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(10)
        self._log.close()
        return self.p.returncode

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kw)


# ---------------------------------------------------------------- /proc


def status_kib(pid: int, field: str) -> int | None:
    """A `kB` field of `/proc/<pid>/status` (VmRSS, VmHWM: the peak RSS since the process
    started, …) in KiB, or None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def rss_kib(pid: int) -> int | None:
    """VmRSS of `pid` in KiB, or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def rss_parts_kib(pid: int) -> dict[str, int]:
    """RssAnon (private heap/stack) and RssFile (mapped files: mostly the program's own code) in KiB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return out


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces.
    return text[text.rindex(")") + 2:].split()


def cpu_ticks(pid: int, with_children: bool = True) -> int:
    """utime+stime (+cutime+cstime: children it has reaped) of `pid`, in clock ticks."""
    f = _stat_fields(pid)
    if f is None:
        return 0
    # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    t = int(f[11]) + int(f[12])
    if with_children:
        t += int(f[13]) + int(f[14])
    return t


def descendants(pid: int) -> list[int]:
    """Live descendants of `pid` (from /proc/*/stat ppid)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        f = _stat_fields(int(d))
        if f is None:
            continue
        children.setdefault(int(f[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def tree_cpu_ticks(pid: int) -> int:
    """CPU of a process and its live descendants, reaped children included, in ticks.

    Between two readings, a child that exits moves from "live descendant" to its parent's
    cutime, so differences stay consistent."""
    return cpu_ticks(pid) + sum(cpu_ticks(c) for c in descendants(pid))


def tree_rss_kib(pid: int) -> int | None:
    own = rss_kib(pid)
    if own is None:
        return None
    return own + sum(rss_kib(c) or 0 for c in descendants(pid))


def du_bytes(path: Path, suffix: str | None = None) -> int:
    """Apparent size of the files under `path` (optionally only those ending in `suffix`)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            if suffix and not f.endswith(suffix):
                continue
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def disk_bytes(path: Path) -> int:
    """Allocated size on disk (st_blocks) of everything under `path`."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


# ---------------------------------------------------------------- HTTP


def http_get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def http_post(url: str, body: bytes | str, timeout: float = 60.0,
              content_type: str = "application/json") -> bytes:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def wait_http(url: str, what: str, timeout: float = 60.0, proc: Proc | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what} exited before it was ready:\n{proc.tail()}")
        try:
            http_get(url, timeout=2)
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"{what} not ready at {url} after {timeout:.0f}s" + (f":\n{proc.tail()}" if proc else ""))


def lake_sql(base: str, sql: str, timeout: float = 120.0) -> list[list]:
    """Rows of `sql` from a running lake's SQL API."""
    out = json.loads(http_post(f"{base}/v1/sql", json.dumps({"sql": sql, "format": "json"}), timeout=timeout))
    if "error" in out:
        raise RuntimeError(f"lake SQL error: {out['error']}")
    return out["rows"]


class KeepAlive:
    """One persistent HTTP/1.1 connection (as Grafana or a keep-alive client would use)."""

    def __init__(self, host: str, port: int, timeout: float = 300.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, bytes]:
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                if attempt:
                    raise
        raise AssertionError("unreachable")
