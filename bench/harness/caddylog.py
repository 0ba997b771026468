"""Realistic Caddy (2.7+) JSON access log lines, as `log { format json }` writes them.

The traffic model mirrors `lake-gen` (lake/src/bin/lake-gen/world.rs and http.rs): the same
vhosts and shares, Zipf-popular paths per site (pages, static assets, API routes), Zipf
client addresses (60,000 humans, 400 crawlers, 8,000 scanners; some IPv6), the same
client mix and user agents, status codes by kind of path with a little 5xx, log-normal
latencies and sizes, and a daily traffic curve. On top of what the lake's columns keep,
each line carries what Caddy really logs and the lake keeps in `attrs`: every request
header a real client sends (a Chrome navigation carries ~15, a bot 2-4; Cookie and
Authorization appear as Caddy redacts them), the remote port, TLS resumption/cipher/ALPN,
`user_id`, `level`/`logger`/`msg`, and the response headers. The shape follows the
fixtures in `fixtures/caddy/access.log`.

Where real traffic is less random than independent draws per line, so is this log (it
used to draw each of these per line, which overstated what a real log costs to store):
- a response's `size` is a property of what was served: a static file has one size (per
  content encoding), a page of a static site too (a dynamic site's varies a little), an
  error page one per (vhost, status); only API responses and partial content vary per
  request; HEAD responses have no body (`size` 0);
- TLS version and cipher suite are what the client negotiates, so one per client;
- `remote_port` is per connection: a client reuses its connection (keep-alive, HTTP/2
  and 3) while it is busy, and ports come from the client OS's ephemeral range;
And where real Caddy is more random, so is this log: Caddy writes `headers` and
`resp_headers` by ranging over Go maps, whose iteration order is randomised, so the
order of the header names changes from line to line (`fixtures/caddy/access.log`: lines
1 and 3), as [`go_map_order`] reproduces.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import zlib

VHOSTS = [  # name, share of requests, behind a CDN
    ("example.org", 0.34, False),
    ("blog.example.org", 0.18, False),
    ("api.example.org", 0.22, False),
    ("shop.example.net", 0.12, True),
    ("grafana.example.org", 0.04, False),
    ("status.example.net", 0.06, False),
    ("docs.example.org", 0.04, False),
]
WORDS = ["rust", "duckdb", "parquet", "backup", "caddy", "grafana", "tailscale", "linux", "homelab",
         "notes", "release", "guide", "debian", "zfs", "metrics", "ssh"]
PROBE_PATHS = [
    "/wp-login.php", "/.env", "/xmlrpc.php", "/wp-admin/", "/.git/config", "/phpmyadmin/", "/admin",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", "/cgi-bin/luci", "/boaform/admin/formLogin",
    "/actuator/health", "/server-status", "/.aws/credentials", "/config.json", "/login.action", "/HNAP1",
    "/wp-content/plugins/", "/owa/auth/logon.aspx", "/solr/admin/info/system", "/.DS_Store",
]
CLIENT_MIX = [("human", 0.74), ("search", 0.08), ("ai", 0.06), ("bot", 0.06), ("scanner", 0.06)]
AGENTS = {
    "human": [
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36", "chrome", 0.38),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15", "safari", 0.16),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", "safari", 0.18),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0", "firefox", 0.12),
        ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36", "chrome-mobile", 0.16),
    ],
    "search": [
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "crawler", 0.6),
        ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "crawler", 0.3),
        ("DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", "crawler", 0.1),
    ],
    "ai": [
        ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)", "crawler", 0.45),
        ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)", "crawler", 0.3),
        ("Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com)", "crawler", 0.25),
    ],
    "bot": [
        ("curl/8.5.0", "curl", 0.3),
        ("python-requests/2.32.3", "python", 0.25),
        ("Go-http-client/2.0", "go", 0.25),
        ("Uptime-Kuma/1.23.13", "monitor", 0.2),
    ],
    "scanner": [
        ("Mozilla/5.0 zgrab/0.x", "go", 0.4),
        ("Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)", "go", 0.2),
        ("masscan/1.3 (https://github.com/robertdavidgraham/masscan)", "bare", 0.1),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/90.0.4430.85 Safari/537.36", "go", 0.3),
    ],
}
LANGS = ["en-US,en;q=0.9", "en-GB,en;q=0.9", "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7",
         "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", "nl-NL,nl;q=0.9,en;q=0.8", "en-US,en;q=0.5"]
CIPHERS_13 = [4865, 4866, 4867]  # TLS_AES_128_GCM_SHA256, _256_GCM_SHA384, CHACHA20
CIPHERS_12 = [49199, 49195, 52393]


def go_map_order(items: list, rng: random.Random) -> list:
    """`items` (in insertion order) as Go's `range` over a map visits them (Go 1.21-1.23
    maps, which Caddy 2.7/2.8 use): each map has its own hash seed, so the entries fall
    into 2^B buckets of 8 slots (B grows past 6.5 entries per bucket), filled in
    insertion order; iteration starts at a random bucket and a random slot offset."""
    n = len(items)
    nb = 1
    while n > 8 and n > 6.5 * nb:
        nb *= 2
    buckets: list[list] = [[] for _ in range(nb)]
    for it in items:
        b = rng.randrange(nb)
        if len(buckets[b]) == 8:  # a full bucket overflows into another
            b = next(i for i in range(nb) if len(buckets[i]) < 8)
        buckets[b].append(it)
    start, off = rng.randrange(nb), rng.randrange(8)
    out = []
    for i in range(nb):
        bucket = buckets[(start + i) % nb]
        out += [bucket[(off + j) % 8] for j in range(8) if (off + j) % 8 < len(bucket)]
    return out


def _stable(*parts) -> random.Random:
    """A generator seeded by `parts`: the same file, page or client draws the same."""
    return random.Random(zlib.crc32("\x1f".join(map(str, parts)).encode()))


def _j(s: str) -> str:
    return json.dumps(s, ensure_ascii=True)


class Weighted:
    def __init__(self, items, weights):
        self.items = list(items)
        total, acc = 0.0, []
        for w in weights:
            total += w
            acc.append(total)
        self.acc, self.total = acc, total

    @classmethod
    def zipf(cls, items, s):
        items = list(items)
        return cls(items, [1.0 / (i + 1) ** s for i in range(len(items))])

    def pick(self, rng: random.Random):
        return self.items[min(bisect.bisect_left(self.acc, rng.random() * self.total), len(self.items) - 1)]


def _ip_pool(rng: random.Random, n: int, v6_share: float) -> list[str]:
    firsts = [45, 62, 77, 81, 89, 91, 103, 109, 141, 146, 156, 167, 176, 178, 185, 193, 194, 195, 203, 212, 213]
    out = []
    for _ in range(n):
        if rng.random() < v6_share:
            out.append(f"2001:db8:{rng.randrange(0xffff):x}:{rng.randrange(0xffff):x}::{1 + rng.randrange(0xfffe):x}")
        else:
            out.append(f"{rng.choice(firsts)}.{rng.randrange(256)}.{rng.randrange(256)}.{1 + rng.randrange(254)}")
    return out


def _site_paths(rng: random.Random, name: str) -> Weighted:
    paths = [("/", "page"), ("/favicon.ico", "static"), ("/robots.txt", "static"),
             (f"/static/app.{rng.randrange(2**32):08x}.js", "static"),
             (f"/static/style.{rng.randrange(2**32):08x}.css", "static")]
    api = name.startswith("api.") or name.startswith("grafana.")
    for i in range(1200):
        w1, w2 = rng.choice(WORDS), rng.choice(WORDS)
        r = rng.randrange(10)
        if api and r <= 6:
            p = [f"/api/v1/items/{1000 + i}", f"/api/v1/users/{100 + i}/orders", f"/api/v2/{w1}/{i}",
                 f"/api/v1/search/{w1}"][rng.randrange(4)]
            paths.append((p, "api"))
        elif r <= 2:
            paths.append((f"/static/img/{w1}-{i}.webp", "static"))
        else:
            p = [f"/blog/{2019 + rng.randrange(8)}/{w1}-{w2}-{i}", f"/docs/{w1}/{w2}", f"/{w1}/{i}"][rng.randrange(3)]
            paths.append((p, "page"))
    return Weighted.zipf(paths, 1.1)


def diurnal(ts: float) -> float:
    hours = (ts % 86400) / 3600
    weekday = (int(ts // 86400) + 4) % 7
    return (1 + 0.6 * math.sin(2 * math.pi * (hours - 8) / 24)) * (0.8 if weekday >= 5 else 1.0)


class CaddyLog:
    """A deterministic stream of access log lines of one Caddy serving several vhosts."""

    def __init__(self, seed: int = 1):
        self.rng = rng = random.Random(seed)
        self.vhosts = [(n, s, cdn, _site_paths(rng, n)) for n, s, cdn in VHOSTS]
        self.pick_vhost = Weighted(range(len(VHOSTS)), [v[1] for v in VHOSTS])
        self.clients = Weighted.zipf(_ip_pool(rng, 60_000, 0.15), 0.9)
        self.crawlers = Weighted.zipf(_ip_pool(rng, 400, 0.0), 0.8)
        self.scanners = Weighted.zipf(_ip_pool(rng, 8_000, 0.03), 1.1)
        self.cdn = [f"104.16.{i // 8}.{10 + i % 8 * 3}" for i in range(64)]
        self.mix = Weighted([k for k, _ in CLIENT_MIX], [w for _, w in CLIENT_MIX])
        self.agents = {k: Weighted([(ua, fam) for ua, fam, _ in v], [w for *_, w in v]) for k, v in AGENTS.items()}
        self.probes = Weighted.zipf([(p, "probe") for p in PROBE_PATHS], 1.0)
        # Incidents: a vhost has a bad half hour now and then (5xx, slow).
        self.incident_until = {}
        self.sizes: dict = {}  # (vhost, path) -> body bytes as served
        self.conns: dict = {}  # client -> (port, last request ts)

    def _status(self, kind: str, method: str) -> int:
        x = self.rng.random()
        if kind == "static":
            return 200 if x < 0.83 else 304 if x < 0.97 else 404 if x < 0.995 else 206
        if kind == "page":
            return (200 if x < 0.86 else 304 if x < 0.90 else 301 if x < 0.93 else 302 if x < 0.95
                    else 404 if x < 0.985 else 403)
        if kind == "api":
            if method == "POST" and x < 0.3:
                return 201
            return 200 if x < 0.90 else 400 if x < 0.93 else 401 if x < 0.96 else 404 if x < 0.98 else 429
        return 404 if x < 0.88 else 403 if x < 0.96 else 301 if x < 0.99 else 200

    def _port(self, remote: str, ts: float, family: str, proto: str, kind: str) -> int:
        """The client's source port: a new connection from its OS's ephemeral range, or
        the open one if it made a request less than a minute ago over HTTP/2 or 3 or
        keep-alive (not scanners, nor CDN edges, which spread over many connections)."""
        port, last = self.conns.get(remote, (0, -1e9))
        reuse = (ts - last < 60 and kind not in ("scanner", "bot") and not remote.startswith("104.16.")
                 and (proto != "HTTP/1.1" or self.rng.random() < 0.7))
        if not reuse:
            lo, hi = (49152, 65535) if family in ("chrome", "safari") else (32768, 60999)
            port = lo + self.rng.randrange(hi - lo + 1)
        self.conns[remote] = (port, ts)
        return port

    def _size(self, vhost: str, path: str, kind: str) -> int:
        """The body of a file or page as served (before content encoding)."""
        key = (vhost, path)
        if key not in self.sizes:
            base, sg = {"static": (25_000, 1.2), "page": (14_000, 0.6), "probe": (600, 0.5)}[kind]
            self.sizes[key] = int(base * math.exp(sg * _stable(vhost, path).gauss(0, 1)))
        return self.sizes[key]

    def _headers(self, family: str, ua: str, vhost: str, kind: str, referer: str | None, lang: str,
                 method: str, read: int, logged_in: bool) -> str:
        h = []
        if family in ("chrome", "chrome-mobile"):
            mobile = "?1" if family == "chrome-mobile" else "?0"
            platform = '"Android"' if family == "chrome-mobile" else '"Windows"'
            h += [("Sec-Ch-Ua", '"Not/A)Brand";v="8", "Chromium";v="126", "Google Chrome";v="126"'),
                  ("Sec-Ch-Ua-Mobile", mobile), ("Sec-Ch-Ua-Platform", platform)]
            if kind == "page":
                h += [("Upgrade-Insecure-Requests", "1")]
            h += [("User-Agent", ua)]
            h += [("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
                   if kind == "page" else "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8" if kind == "static" else "application/json")]
            h += [("Sec-Fetch-Site", "same-origin" if referer else "none"),
                  ("Sec-Fetch-Mode", "navigate" if kind == "page" else "no-cors" if kind == "static" else "cors"),
                  ("Sec-Fetch-Dest", "document" if kind == "page" else "image" if kind == "static" else "empty")]
            if kind == "page":
                h += [("Sec-Fetch-User", "?1")]
            h += [("Accept-Encoding", "gzip, deflate, br, zstd"), ("Accept-Language", lang), ("Priority", "u=0, i" if kind == "page" else "i")]
        elif family == "firefox":
            h += [("User-Agent", ua),
                  ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8" if kind == "page" else "image/avif,image/webp,*/*"),
                  ("Accept-Language", lang), ("Accept-Encoding", "gzip, deflate, br, zstd"),
                  ("Sec-Fetch-Dest", "document" if kind == "page" else "image"),
                  ("Sec-Fetch-Mode", "navigate" if kind == "page" else "no-cors"),
                  ("Sec-Fetch-Site", "same-origin" if referer else "none"), ("Te", "trailers")]
            if kind == "page":
                h += [("Upgrade-Insecure-Requests", "1"), ("Sec-Fetch-User", "?1")]
        elif family == "safari":
            h += [("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8" if kind == "page" else "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"),
                  ("Sec-Fetch-Site", "same-origin" if referer else "none"), ("Accept-Encoding", "gzip, deflate, br"),
                  ("Sec-Fetch-Mode", "navigate" if kind == "page" else "no-cors"), ("User-Agent", ua),
                  ("Accept-Language", lang), ("Sec-Fetch-Dest", "document" if kind == "page" else "image"), ("Priority", "u=0, i")]
        elif family == "crawler":
            h += [("User-Agent", ua), ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                  ("Accept-Encoding", "gzip, deflate, br"), ("From", "bot@example.invalid")]
        elif family == "curl":
            h += [("User-Agent", ua), ("Accept", "*/*")]
        elif family == "python":
            h += [("User-Agent", ua), ("Accept-Encoding", "gzip, deflate"), ("Accept", "*/*"), ("Connection", "keep-alive")]
        elif family == "monitor":
            h += [("User-Agent", ua), ("Accept", "*/*"), ("Accept-Encoding", "gzip, compress, deflate, br"), ("Connection", "close")]
        elif family == "go":
            h += [("User-Agent", ua), ("Accept-Encoding", "gzip")]
        else:
            h += [("User-Agent", ua)]
        if referer:
            h.append(("Referer", referer))
        if logged_in:
            h.append(("Cookie", "REDACTED"))
        if read:
            h += [("Content-Length", str(read)), ("Content-Type", "application/json")]
            if vhost.startswith("api."):
                h.append(("Authorization", "REDACTED"))
        return "{" + ",".join(f"{_j(k)}:[{_j(v)}]" for k, v in go_map_order(h, self.rng)) + "}"

    def line(self, ts: float) -> str:
        rng = self.rng
        vi = self.pick_vhost.pick(rng)
        vname, _share, cdn, paths = self.vhosts[vi]
        if rng.random() < 1 / 200_000:
            self.incident_until[vi] = ts + 1800
        incident = self.incident_until.get(vi, 0) > ts
        kind = self.mix.pick(rng)
        client = (self.clients if kind in ("human", "bot") else self.crawlers if kind in ("search", "ai")
                  else self.scanners).pick(rng)
        ua, family = self.agents[kind].pick(rng)
        path, pkind = self.probes.pick(rng) if kind == "scanner" and rng.random() < 0.85 else paths.pick(rng)
        if pkind == "api":
            method = ["GET"] * 6 + ["POST", "POST", "PUT", "DELETE"]
            method = method[rng.randrange(10)]
        elif pkind == "probe" and rng.random() < 0.2:
            method = "POST"
        elif rng.random() < 0.03:
            method = "HEAD"
        else:
            method = "GET"
        uri = path
        if pkind == "api" and rng.random() < 0.4:
            uri += f"?limit={rng.choice((10, 20, 50, 100))}&offset={rng.randrange(50) * 10}"
        elif pkind == "page" and rng.random() < 0.12:
            uri += f"?page={2 + rng.randrange(20)}"
        status = self._status(pkind, method)
        if rng.random() < (0.32 if incident else 0.004):
            status = rng.choice((500, 502, 502, 503, 504))
        med, sigma = {"static": (1.4, 0.7), "page": (28.0, 0.8), "api": (45.0, 0.9), "probe": (2.5, 0.6)}[pkind]
        dur_ms = med * math.exp(sigma * rng.gauss(0, 1)) * (5 if incident else 1)
        if status == 504:
            dur_ms = 30_000 + rng.random() * 500
        if status in (304, 204, 301, 302) or method == "HEAD":
            size = 0
        elif status >= 400:
            size = 100 + _stable(vname, status).randrange(400)  # the vhost's error page
        elif pkind == "api" or status == 206:
            size = int({"api": 1_800, "static": 25_000}[pkind] * math.exp(rng.gauss(0, 1)))
        else:
            size = self._size(vname, path, pkind)
            if pkind == "page" and "?" in uri:
                size = int(size * (0.8 + 0.4 * _stable(uri).random()))  # another page of a list
            if pkind == "page" and vname in ("shop.example.net", "grafana.example.org"):
                size += int(size * 0.03 * rng.gauss(0, 1))  # dynamic pages differ a little
        read = int(700 * math.exp(0.9 * rng.gauss(0, 1))) if method in ("POST", "PUT") else 0
        r = rng.randrange(20)
        if kind == "human":
            proto = "HTTP/2.0" if r <= 13 else "HTTP/3.0" if r <= 15 else "HTTP/1.1"
        elif kind in ("search", "ai"):
            proto = "HTTP/2.0" if r <= 9 else "HTTP/1.1"
        else:
            proto = "HTTP/1.1"
        referer = None
        if kind == "human" and rng.random() < 0.45:
            referer = ["https://www.google.com/", "https://duckduckgo.com/", "https://news.ycombinator.com/",
                       f"https://{vname}/"][rng.randrange(4)]
        lang = LANGS[zlib.crc32(client.encode()) % len(LANGS)]
        logged_in = kind == "human" and vname in ("grafana.example.org", "shop.example.net") and rng.random() < 0.6
        headers = self._headers(family, ua, vname, pkind, referer, lang, method, read, logged_in)
        remote = self.cdn[rng.randrange(len(self.cdn))] if cdn else client
        port = self._port(remote, ts, family, proto, kind)
        cl = _stable(client, ua)  # what this client negotiates
        tls13 = proto == "HTTP/3.0" or cl.random() < 0.92
        alpn = {"HTTP/2.0": "h2", "HTTP/3.0": "h3", "HTTP/1.1": "http/1.1"}[proto]
        tls = (f'"tls":{{"resumed":{"true" if rng.random() < 0.3 else "false"},"version":{772 if tls13 else 771},'
               f'"cipher_suite":{cl.choice(CIPHERS_13 if tls13 else CIPHERS_12)},"proto":"{alpn}","server_name":"{vname}"}}')
        if status >= 500:
            level = "error"
        else:
            level = "info"
        ctype = {"static": "image/webp" if path.endswith(".webp") else "application/javascript" if path.endswith(".js")
                 else "text/css" if path.endswith(".css") else "image/x-icon" if path.endswith(".ico") else "text/plain; charset=utf-8",
                 "page": "text/html; charset=utf-8", "api": "application/json", "probe": "text/html; charset=utf-8"}[pkind]
        encoded = size and (pkind != "static" or path.endswith((".js", ".css")))
        encoding = "zstd" if "zstd" in headers else "gzip"
        if encoded and pkind != "api" and status != 206:
            size = int(size * (0.26 if encoding == "zstd" else 0.28))  # the same body, compressed
        resp = ['"Server":["Caddy"]', f'"Alt-Svc":["h3=\\":443\\"; ma=2592000"]']
        if status in (301, 302):
            resp.append(f'"Location":["https://{vname}{path}/"]')
        elif size:
            resp.append(f'"Content-Type":["{ctype}"]')
            if encoded:
                resp += [f'"Content-Encoding":["{encoding}"]', '"Vary":["Accept-Encoding"]']
            if pkind == "static":
                resp.append('"Cache-Control":["public, max-age=31536000, immutable"]')
                resp.append(f'"Etag":["\\"{zlib.crc32(path.encode()):x}{len(path):x}\\""]')
        elif pkind == "api":
            resp.append('"Cache-Control":["no-store"]')
        resp = go_map_order(resp, rng)
        user_id = ""
        return (f'{{"level":"{level}","ts":{ts:.7f},"logger":"http.log.access.log0","msg":"handled request",'
                f'"request":{{"remote_ip":"{remote}","remote_port":"{port}","client_ip":"{client}",'
                f'"proto":"{proto}","method":"{method}","host":"{vname}","uri":{_j(uri)},"headers":{headers},{tls}}},'
                f'"bytes_read":{read},"user_id":"{user_id}","duration":{dur_ms / 1000:.9f},"size":{size},"status":{status},'
                f'"resp_headers":{{{",".join(resp)}}}}}')

    def timestamps(self, start: float, n: int, mean_rate: float):
        """`n` increasing timestamps from `start`, Poisson arrivals at `mean_rate`/s shaped by the daily curve."""
        t = start
        for _ in range(n):
            t += self.rng.expovariate(mean_rate * diurnal(t))
            yield t


def write_log(path, n: int, seed: int, start: float, rate: float = 100.0) -> int:
    """Writes `n` lines to `path`; returns the byte count."""
    log = CaddyLog(seed)
    written = 0
    with open(path, "w", buffering=1 << 20) as f:
        for ts in log.timestamps(start, n, rate):
            line = log.line(ts) + "\n"
            f.write(line)
            written += len(line)
    return written
