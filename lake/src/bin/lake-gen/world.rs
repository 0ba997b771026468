//! The generated world: hosts and their hardware, vhosts and their paths, client and
//! scanner address pools, incidents, and the random streams everything draws from.
//!
//! Everything here is derived from the seed alone and shared read-only by the generator
//! threads; every (table, host, day) then draws from its own [`Rng`] stream, so jobs
//! can run in any order on any thread and still write the same bytes.

use lake_format::Table;

use super::MICROS_PER_DAY;

/// splitmix64: small, fast, and the same on every platform and version (a generator's
/// output must not change under a dependency update).
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

/// Mixes words into one well-spread seed.
pub(super) fn mix(parts: &[u64]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64;
    for &p in parts {
        h = splitmix(h ^ p.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
    h
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A stream for the given coordinates (seed, table, host, day, …).
    pub(super) fn new(parts: &[u64]) -> Rng {
        Rng(mix(parts))
    }

    pub(super) fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(super) fn f64(&mut self) -> f64 {
        (self.u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.u64()) * u128::from(n)) >> 64) as u64
    }

    pub(super) fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Standard normal (Box–Muller, one of the pair).
    pub(super) fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-300);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given median and shape.
    pub(super) fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }
}

/// Items drawn with given weights (binary search over the cumulative weights).
#[derive(Debug)]
pub(super) struct Weighted<T> {
    items: Vec<T>,
    cumulative: Vec<f64>,
}

impl<T> Weighted<T> {
    pub(super) fn new(pairs: impl IntoIterator<Item = (T, f64)>) -> Weighted<T> {
        let mut items = Vec::new();
        let mut cumulative = Vec::new();
        let mut sum = 0.0;
        for (item, w) in pairs {
            sum += w.max(0.0);
            items.push(item);
            cumulative.push(sum);
        }
        assert!(sum > 0.0, "weights sum to zero");
        Weighted { items, cumulative }
    }

    /// Zipf's law over `items` (rank 1 first): weight 1 / rank^s.
    pub(super) fn zipf(items: Vec<T>, s: f64) -> Weighted<T> {
        Weighted::new(items.into_iter().enumerate().map(|(i, t)| (t, 1.0 / ((i + 1) as f64).powf(s))))
    }

    pub(super) fn pick(&self, rng: &mut Rng) -> &T {
        let total = *self.cumulative.last().expect("non-empty");
        let x = rng.f64() * total;
        let i = self.cumulative.partition_point(|&c| c <= x).min(self.items.len() - 1);
        &self.items[i]
    }
}

/// A mounted filesystem of a host.
#[derive(Debug)]
pub(super) struct Mount {
    pub(super) mount: &'static str,
    pub(super) device: &'static str,
    pub(super) fstype: &'static str,
    pub(super) total: f64,
    /// Share used at the start of the range, and its growth per day.
    pub(super) used_at_start: f64,
    pub(super) growth_per_day: f64,
}

/// One node.
#[derive(Debug)]
pub(super) struct Host {
    pub(super) name: String,
    pub(super) cpus: usize,
    pub(super) memory: f64,
    pub(super) mounts: Vec<Mount>,
    pub(super) disks: Vec<&'static str>,
    pub(super) ifaces: Vec<&'static str>,
    /// Typical CPU use in percent at the daily peak.
    pub(super) cpu_base: f64,
    pub(super) public_ip: String,
    pub(super) tailnet_ip: String,
    /// Boot time, µs.
    pub(super) boot: i64,
    /// Share of the firewall and log traffic.
    pub(super) exposure: f64,
    /// Containers of its compose project ([`super::containers::project`]).
    pub(super) containers: usize,
}

/// What kind of resource a path is: decides status, latency and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathKind {
    Static,
    Page,
    Api,
    /// A path only scanners ask for (wp-login.php, .env, …).
    Probe,
}

#[derive(Debug)]
pub(super) struct PathEntry {
    pub(super) path: String,
    pub(super) kind: PathKind,
}

/// A virtual host served by one host.
#[derive(Debug)]
pub(super) struct Vhost {
    pub(super) name: &'static str,
    pub(super) home: usize,
    /// Share of all requests.
    pub(super) share: f64,
    pub(super) paths: Weighted<PathEntry>,
    /// Requests reach it through a CDN: `remote_ip` is the CDN's, `client_ip` the client's.
    pub(super) behind_cdn: bool,
}

/// Who sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientKind {
    Human,
    Search,
    Ai,
    Bot,
    Scanner,
}

/// A user agent with the class and name the collector's classifier
/// (`collector/src/sources/caddy/classify.rs`) gives it from the User-Agent alone.
#[derive(Debug)]
pub(super) struct Agent {
    pub(super) ua: &'static str,
    /// `human`, `search_bot`, `ai_crawler`, `monitor`, `scanner` or `other_bot`.
    pub(super) class: &'static str,
    pub(super) name: Option<&'static str>,
}

impl Agent {
    /// The class of a request: as the classifier does, a `human` or `other_bot` asking
    /// for a path only scanners ask for is a `scanner`.
    pub(super) fn class_for(&self, kind: PathKind) -> &'static str {
        match (self.class, kind) {
            ("human" | "other_bot", PathKind::Probe) => "scanner",
            (class, _) => class,
        }
    }
}

/// Everything shared by the generator threads.
#[derive(Debug)]
pub(super) struct World {
    pub(super) seed: u64,
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) hosts: Vec<Host>,
    pub(super) vhosts: Vec<Vhost>,
    /// Residential and office addresses of people, Zipf by activity.
    pub(super) clients: Weighted<String>,
    /// Addresses of scanners: they hit the firewall, fail2ban and the probe paths.
    pub(super) scanners: Weighted<String>,
    pub(super) crawlers: Weighted<String>,
    pub(super) cdn: Vec<String>,
    pub(super) agents: Vec<(ClientKind, Weighted<Agent>)>,
    pub(super) client_mix: Weighted<ClientKind>,
    pub(super) probe_paths: Weighted<PathEntry>,
    /// Rows per µs of the range, for the whole fleet.
    pub(super) http_rate: f64,
    pub(super) firewall_rate: f64,
    pub(super) log_rate: f64,
    /// Metrics cadence, µs.
    pub(super) metric_interval: i64,
    /// Incidents asked for with `--incident` ([`World::inject`]).
    pub(super) injected: Vec<Injected>,
}

/// How long an injected incident lasts: one hour, the grain of `lake anomalies`.
pub(super) const INJECTED_SPAN: i64 = 3_600_000_000;

/// An incident asked for on the command line: an hour unlike the same hour of other weeks,
/// for `lake anomalies` (and its tests) to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Injected {
    /// `5xx:<vhost>@<time>`: nine requests in ten of the vhost fail with a 5xx.
    Http5xx { vhost: usize, start: i64 },
    /// `log-errors:<host>/<unit>@<time>`: the unit logs ten error lines a minute.
    LogErrors { host: usize, unit: String, start: i64 },
}

/// Error lines a minute of an injected [`Injected::LogErrors`].
pub(super) const INJECTED_ERRORS_PER_MINUTE: i64 = 10;

const HOST_NAMES: [&str; 12] = [
    "amber-web",
    "birch-db",
    "cedar-edge",
    "dune-mail",
    "elm-build",
    "fir-media",
    "gale-vpn",
    "hazel-ci",
    "iris-dns",
    "juniper-backup",
    "kelp-mon",
    "larch-lab",
];

const VHOSTS: [(&str, f64, bool); 7] = [
    ("example.org", 0.34, false),
    ("blog.example.org", 0.18, false),
    ("api.example.org", 0.22, false),
    ("shop.example.net", 0.12, true),
    ("grafana.example.org", 0.04, false),
    ("status.example.net", 0.06, false),
    ("docs.example.org", 0.04, false),
];

impl World {
    pub(super) fn new(seed: u64, hosts: usize, start: i64, end: i64, http_rows: u64, metric_samples: u64) -> World {
        let hosts: Vec<Host> = (0..hosts).map(|i| host(seed, i, start)).collect();
        let n = hosts.len();
        let vhosts: Vec<Vhost> = VHOSTS
            .iter()
            .enumerate()
            .map(|(i, &(name, share, behind_cdn))| Vhost {
                name,
                // Web traffic lives on the first hosts; the database host (index 1)
                // serves none when there are others to take it.
                home: if n <= 2 { i % n } else { [0, 0, 2, 3, 0, 2, 3][i] % n },
                share,
                paths: site_paths(seed, i, name),
                behind_cdn,
            })
            .collect();
        let span = (end - start).max(1) as f64;
        let mut world = World {
            seed,
            start,
            end,
            clients: Weighted::zipf(ip_pool(seed, 1, 60_000, false), 0.9),
            scanners: Weighted::zipf(ip_pool(seed, 2, 8_000, true), 1.1),
            crawlers: Weighted::zipf(ip_pool(seed, 3, 400, false), 0.8),
            cdn: (0..64).map(|i| format!("104.16.{}.{}", i / 8, 10 + i % 8 * 3)).collect(),
            agents: agents(),
            client_mix: Weighted::new([
                (ClientKind::Human, 0.74),
                (ClientKind::Search, 0.08),
                (ClientKind::Ai, 0.06),
                (ClientKind::Bot, 0.06),
                (ClientKind::Scanner, 0.06),
            ]),
            probe_paths: Weighted::zipf(probe_paths(), 1.0),
            http_rate: http_rows as f64 / span,
            firewall_rate: (http_rows / 10) as f64 / span,
            log_rate: (http_rows / 20) as f64 / span,
            metric_interval: 10_000_000,
            injected: Vec::new(),
            hosts,
            vhosts,
        };
        let per_tick: usize = world.hosts.iter().map(metrics_per_tick).sum();
        if metric_samples > 0 {
            let interval = span * per_tick as f64 / metric_samples as f64;
            // Whole milliseconds, and not slower than one sample an hour.
            world.metric_interval = ((interval / 1000.0).round() * 1000.0).clamp(1000.0, 3.6e9) as i64;
        } else {
            world.metric_interval = 0;
        }
        world
    }

    /// Rows a job of `table` over `[from, to)` writes, roughly (for scheduling and for
    /// skipping tables with nothing to write).
    pub(super) fn expected_rows(&self, table: Table, from: i64, to: i64) -> u64 {
        let span = (to - from).max(0) as f64;
        let n = self.hosts.len() as f64;
        let rows = match table {
            Table::Http => self.http_rate * span,
            Table::Metrics if self.metric_interval > 0 => {
                span / self.metric_interval as f64 * self.hosts.iter().map(metrics_per_tick).sum::<usize>() as f64
            }
            Table::Metrics => 0.0,
            Table::Spans => {
                (0..self.hosts.len()).map(super::spans::rows_per_day).sum::<f64>() * span / MICROS_PER_DAY as f64
            }
            Table::Firewall => self.firewall_rate * span,
            Table::Logs => self.log_rate * span,
            Table::Probes => span / 60e6 * n * (n - 1.0 + super::events::UPTIME_TARGETS.len() as f64),
            Table::Bans => self.firewall_rate * span / 40.0,
            Table::Alerts => span / MICROS_PER_DAY as f64 * 20.0,
            // Written by the lake for the jobs of a lake.toml; the generator has none.
            Table::Jobs => 0.0,
            Table::Containers => {
                (0..self.hosts.len()).map(super::containers::rows_per_day).sum::<f64>() * span / MICROS_PER_DAY as f64
            }
            Table::Packages | Table::Listeners | Table::Units | Table::Hosts => {
                // Inventory: what each host reports when it first starts, then changes.
                if from == self.start {
                    n * 50.0
                } else {
                    n
                }
            }
        };
        rows.ceil() as u64
    }

    /// The incident of a vhost on a day (days since the epoch), if it has one: 5xx and
    /// latency rise, its uptime probes fail, alerts fire. `[start, end)` in µs.
    pub(super) fn incident(&self, vhost: usize, day: i64) -> Option<(i64, i64)> {
        let mut rng = Rng::new(&[self.seed, 0x1C1D, vhost as u64, day as u64]);
        if !rng.chance(0.55) {
            return None;
        }
        let start = day * MICROS_PER_DAY + rng.below(23 * 60) as i64 * 60_000_000;
        let minutes = 8 + rng.below(35) as i64;
        Some((start, start + minutes * 60_000_000))
    }

    /// Adds the incident `spec` (`5xx:<vhost>@<RFC 3339>` or `log-errors:<host>/<unit>@<RFC
    /// 3339>`), an hour from that time, which must be inside the generated range.
    pub(super) fn inject(&mut self, spec: &str) -> Result<(), String> {
        let usage = "write 5xx:<vhost>@<time> or log-errors:<host>/<unit>@<time>, e.g. 5xx:shop.example.net@2026-11-21T14:00:00Z";
        let (what, at) = spec.rsplit_once('@').ok_or_else(|| format!("--incident {spec:?}: {usage}"))?;
        let start = super::parse_end(at).map_err(|e| format!("--incident {spec:?}: {e}"))?;
        if start < self.start || start + INJECTED_SPAN > self.end {
            return Err(format!("--incident {spec:?}: the hour from {at} is not inside the generated days"));
        }
        let incident = match what.split_once(':') {
            Some(("5xx", vhost)) => {
                let v = self.vhosts.iter().position(|v| v.name == vhost).ok_or_else(|| {
                    let names: Vec<&str> = self.vhosts.iter().map(|v| v.name).collect();
                    format!("--incident {spec:?}: no vhost {vhost:?} (there are: {})", names.join(", "))
                })?;
                Injected::Http5xx { vhost: v, start }
            }
            Some(("log-errors", target)) => {
                let (host, unit) = target.split_once('/').ok_or_else(|| format!("--incident {spec:?}: {usage}"))?;
                let h = self.hosts.iter().position(|h| h.name == host).ok_or_else(|| {
                    let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
                    format!("--incident {spec:?}: no host {host:?} (there are: {})", names.join(", "))
                })?;
                if unit.is_empty() {
                    return Err(format!("--incident {spec:?}: {usage}"));
                }
                Injected::LogErrors { host: h, unit: unit.to_string(), start }
            }
            _ => return Err(format!("--incident {spec:?}: {usage}")),
        };
        self.injected.push(incident);
        Ok(())
    }

    /// Whether `ts` falls in an injected 5xx storm of `vhost`.
    pub(super) fn in_injected_5xx(&self, vhost: usize, ts: i64) -> bool {
        self.injected.iter().any(|i| matches!(i, Injected::Http5xx { vhost: v, start } if *v == vhost && ts >= *start && ts < start + INJECTED_SPAN))
    }

    /// Whether `ts` falls in an incident of `vhost`.
    pub(super) fn in_incident(&self, vhost: usize, ts: i64) -> bool {
        self.incident(vhost, ts.div_euclid(MICROS_PER_DAY)).is_some_and(|(a, b)| ts >= a && ts < b)
    }
}

/// Relative traffic at `ts`: a daily curve peaking mid-afternoon UTC, quieter weekends.
pub(super) fn diurnal(ts: i64) -> f64 {
    let hours = ts.rem_euclid(MICROS_PER_DAY) as f64 / 3.6e9;
    let weekday = (ts.div_euclid(MICROS_PER_DAY) + 4).rem_euclid(7); // 1970-01-01 was a Thursday
    let weekend = if weekday >= 5 { 0.8 } else { 1.0 };
    (1.0 + 0.6 * (std::f64::consts::TAU * (hours - 8.0) / 24.0).sin()) * weekend
}

/// `n` timestamps in `[from, to)`, sorted, spread by the daily curve: stratified samples
/// of the curve's inverse distribution, so they come out in order without a sort.
pub(super) fn diurnal_times(rng: &mut Rng, from: i64, to: i64, n: usize) -> Vec<i64> {
    if n == 0 || to <= from {
        return Vec::new();
    }
    const BUCKET: i64 = 60_000_000;
    let buckets = ((to - from + BUCKET - 1) / BUCKET) as usize;
    let mut cumulative = Vec::with_capacity(buckets + 1);
    cumulative.push(0.0);
    let mut sum = 0.0;
    for k in 0..buckets {
        let a = from + k as i64 * BUCKET;
        let len = (to.min(a + BUCKET) - a) as f64 / BUCKET as f64;
        sum += diurnal(a + BUCKET / 2) * len;
        cumulative.push(sum);
    }
    let mut out = Vec::with_capacity(n);
    let mut k = 0;
    for i in 0..n {
        let q = (i as f64 + rng.f64()) / n as f64 * sum;
        while k + 1 < buckets && cumulative[k + 1] <= q {
            k += 1;
        }
        let width = cumulative[k + 1] - cumulative[k];
        let frac = if width > 0.0 { (q - cumulative[k]) / width } else { 0.0 };
        let a = from + k as i64 * BUCKET;
        let len = to.min(a + BUCKET) - a;
        let ts = (a + (frac * len as f64) as i64).clamp(from, to - 1);
        out.push(ts.max(out.last().copied().unwrap_or(ts)));
    }
    out
}

/// Samples each tick of the host source (and the collector's own health) gives.
pub(super) fn metrics_per_tick(h: &Host) -> usize {
    (h.cpus + 1)
        + 3
        + 5
        + 3 * h.mounts.len()
        + 4 * h.disks.len()
        + 8 * h.ifaces.len()
        + 2
        + 3
        + super::containers::SAMPLES_PER_CONTAINER * h.containers
}

fn host(seed: u64, i: usize, start: i64) -> Host {
    let mut rng = Rng::new(&[seed, 0x4057, i as u64]);
    let name = HOST_NAMES.get(i).map_or_else(|| format!("node-{i:03}"), |n| (*n).to_string());
    let gib = 1_073_741_824.0;
    let role = i % 5;
    let mut mounts = vec![
        Mount {
            mount: "/",
            device: "/dev/vda1",
            fstype: "ext4",
            total: [80.0, 160.0, 40.0, 40.0, 120.0][role] * gib,
            used_at_start: 0.35 + 0.2 * rng.f64(),
            growth_per_day: 0.002,
        },
        Mount {
            mount: "/boot/efi",
            device: "/dev/vda15",
            fstype: "vfat",
            total: 0.1 * gib,
            used_at_start: 0.06,
            growth_per_day: 0.0,
        },
    ];
    if role == 1 {
        // The database volume fills up over the month: disk-full alerts and a panel that moves.
        mounts.push(Mount {
            mount: "/var/lib/postgresql",
            device: "/dev/vdb1",
            fstype: "ext4",
            total: 200.0 * gib,
            used_at_start: 0.62,
            growth_per_day: 0.009,
        });
    }
    if role == 4 {
        mounts.push(Mount {
            mount: "/srv/build",
            device: "/dev/vdb1",
            fstype: "xfs",
            total: 250.0 * gib,
            used_at_start: 0.4,
            growth_per_day: 0.004,
        });
    }
    let disks = if mounts.len() > 2 { vec!["vda", "vdb"] } else { vec!["vda"] };
    let ifaces =
        if role == 0 || role == 4 { vec!["eth0", "tailscale0", "docker0"] } else { vec!["eth0", "tailscale0"] };
    Host {
        name,
        cpus: [4, 8, 2, 2, 8][role],
        memory: [8.0, 32.0, 4.0, 4.0, 16.0][role] * gib,
        mounts,
        disks,
        ifaces,
        cpu_base: [25.0, 35.0, 15.0, 10.0, 45.0][role],
        public_ip: format!("198.51.100.{}", 10 + i),
        tailnet_ip: format!("100.{}.{}.{}", 64 + i % 60, rng.below(256), 1 + rng.below(254)),
        boot: start - (5 + rng.below(40) as i64) * MICROS_PER_DAY,
        exposure: [1.0, 0.5, 1.4, 0.8, 0.4][role],
        containers: super::containers::project(i).1.len(),
    }
}

/// `n` distinct-looking addresses (some IPv6), in Zipf rank order.
fn ip_pool(seed: u64, salt: u64, n: usize, scanners: bool) -> Vec<String> {
    let mut rng = Rng::new(&[seed, 0x1900, salt]);
    (0..n)
        .map(|_| {
            if rng.chance(if scanners { 0.03 } else { 0.15 }) {
                format!("2001:db8:{:x}:{:x}::{:x}", rng.below(0xffff), rng.below(0xffff), 1 + rng.below(0xfffe))
            } else {
                // Documentation prefixes would all look alike; spread over the whole space
                // (no real address is meant).
                let a =
                    [45, 62, 77, 81, 89, 91, 103, 109, 141, 146, 156, 167, 176, 178, 185, 193, 194, 195, 203, 212, 213]
                        [rng.below(21) as usize];
                format!("{a}.{}.{}.{}", rng.below(256), rng.below(256), 1 + rng.below(254))
            }
        })
        .collect()
}

/// The paths of one site: static assets, pages and API routes, Zipf by popularity.
fn site_paths(seed: u64, vhost: usize, name: &str) -> Weighted<PathEntry> {
    let mut rng = Rng::new(&[seed, 0x9A75, vhost as u64]);
    let words = [
        "rust",
        "duckdb",
        "parquet",
        "backup",
        "caddy",
        "grafana",
        "tailscale",
        "linux",
        "homelab",
        "notes",
        "release",
        "guide",
        "debian",
        "zfs",
        "metrics",
        "ssh",
    ];
    let mut paths = vec![
        PathEntry { path: "/".into(), kind: PathKind::Page },
        PathEntry { path: "/favicon.ico".into(), kind: PathKind::Static },
        PathEntry { path: "/robots.txt".into(), kind: PathKind::Static },
        PathEntry { path: format!("/static/app.{:08x}.js", rng.below(u64::from(u32::MAX))), kind: PathKind::Static },
        PathEntry { path: format!("/static/style.{:08x}.css", rng.below(u64::from(u32::MAX))), kind: PathKind::Static },
    ];
    let api = name.starts_with("api.") || name.starts_with("grafana.");
    for i in 0..1200 {
        let w1 = words[rng.below(words.len() as u64) as usize];
        let w2 = words[rng.below(words.len() as u64) as usize];
        let entry = match (api, rng.below(10)) {
            (true, 0..=6) => PathEntry {
                path: match rng.below(4) {
                    0 => format!("/api/v1/items/{}", 1000 + i),
                    1 => format!("/api/v1/users/{}/orders", 100 + i),
                    2 => format!("/api/v2/{w1}/{}", i),
                    _ => format!("/api/v1/search/{w1}"),
                },
                kind: PathKind::Api,
            },
            (_, 0..=2) => PathEntry { path: format!("/static/img/{w1}-{i}.webp"), kind: PathKind::Static },
            _ => PathEntry {
                path: match rng.below(3) {
                    0 => format!("/blog/{}/{w1}-{w2}-{i}", 2019 + rng.below(8)),
                    1 => format!("/docs/{w1}/{w2}"),
                    _ => format!("/{w1}/{i}"),
                },
                kind: PathKind::Page,
            },
        };
        paths.push(entry);
    }
    Weighted::zipf(paths, 1.1)
}

fn probe_paths() -> Vec<PathEntry> {
    [
        "/wp-login.php",
        "/.env",
        "/xmlrpc.php",
        "/wp-admin/",
        "/.git/config",
        "/phpmyadmin/",
        "/admin",
        "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
        "/cgi-bin/luci",
        "/boaform/admin/formLogin",
        "/actuator/health",
        "/server-status",
        "/.aws/credentials",
        "/config.json",
        "/login.action",
        "/HNAP1",
        "/wp-content/plugins/",
        "/owa/auth/logon.aspx",
        "/solr/admin/info/system",
        "/.DS_Store",
    ]
    .into_iter()
    .map(|p| PathEntry { path: p.to_string(), kind: PathKind::Probe })
    .collect()
}

fn agents() -> Vec<(ClientKind, Weighted<Agent>)> {
    let a = |ua: &'static str, name: Option<&'static str>| {
        let class = match name {
            None => "human",
            Some("Googlebot" | "bingbot" | "DuckDuckBot") => "search_bot",
            Some("GPTBot" | "ClaudeBot" | "Bytespider") => "ai_crawler",
            Some("Uptime-Kuma") => "monitor",
            Some("zgrab" | "CensysInspect" | "masscan") => "scanner",
            Some(_) => "other_bot",
        };
        Agent { ua, class, name }
    };
    vec![
        (
            ClientKind::Human,
            Weighted::new([
                (a("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36", None), 0.38),
                (a("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15", None), 0.16),
                (a("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", None), 0.18),
                (a("Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0", None), 0.12),
                (a("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36", None), 0.16),
            ]),
        ),
        (
            ClientKind::Search,
            Weighted::new([
                (a("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", Some("Googlebot")), 0.6),
                (a("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", Some("bingbot")), 0.3),
                (a("DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", Some("DuckDuckBot")), 0.1),
            ]),
        ),
        (
            ClientKind::Ai,
            Weighted::new([
                (a("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)", Some("GPTBot")), 0.45),
                (a("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)", Some("ClaudeBot")), 0.3),
                (a("Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com)", Some("Bytespider")), 0.25),
            ]),
        ),
        (
            ClientKind::Bot,
            Weighted::new([
                (a("curl/8.5.0", Some("curl")), 0.3),
                (a("python-requests/2.32.3", Some("python-requests")), 0.25),
                (a("Go-http-client/2.0", Some("Go-http-client")), 0.25),
                (a("Uptime-Kuma/1.23.13", Some("Uptime-Kuma")), 0.2),
            ]),
        ),
        (
            ClientKind::Scanner,
            Weighted::new([
                (a("Mozilla/5.0 zgrab/0.x", Some("zgrab")), 0.4),
                (a("Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)", Some("CensysInspect")), 0.2),
                (a("masscan/1.3 (https://github.com/robertdavidgraham/masscan)", Some("masscan")), 0.1),
                (a("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/90.0.4430.85 Safari/537.36", None), 0.3),
            ]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(&[1, 2]);
                move |_| r.u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(&[1, 2]);
                move |_| r.u64()
            })
            .collect();
        let c: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(&[1, 3]);
                move |_| r.u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn diurnal_times_are_sorted_inside_the_window_and_follow_the_curve() {
        let mut rng = Rng::new(&[7]);
        let day = 20_000 * MICROS_PER_DAY;
        let t = diurnal_times(&mut rng, day, day + MICROS_PER_DAY, 100_000);
        assert_eq!(t.len(), 100_000);
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        assert!(t[0] >= day && *t.last().unwrap() < day + MICROS_PER_DAY);
        let hour = |h: i64| t.iter().filter(|&&x| (x - day) / 3_600_000_000 == h).count();
        assert!(hour(14) > 3 * hour(2), "peak {} vs night {}", hour(14), hour(2));
    }

    #[test]
    fn zipf_favours_the_first_items() {
        let w = Weighted::zipf((0..100).collect::<Vec<_>>(), 1.1);
        let mut rng = Rng::new(&[3]);
        let firsts = (0..10_000).filter(|_| *w.pick(&mut rng) == 0).count();
        assert!(firsts > 1500 && firsts < 3500, "{firsts}");
    }

    #[test]
    fn the_cadence_gives_the_requested_samples() {
        let end = 1_795_341_600_000_000;
        let w = World::new(1, 5, end - 30 * MICROS_PER_DAY, end, 50_000_000, 100_000_000);
        let per_tick: usize = w.hosts.iter().map(metrics_per_tick).sum();
        let samples = (30 * MICROS_PER_DAY / w.metric_interval) as usize * per_tick;
        assert!((99_000_000..101_000_000).contains(&samples), "{samples} at {} µs", w.metric_interval);
    }
}
