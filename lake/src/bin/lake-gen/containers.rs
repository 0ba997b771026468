//! Generated Docker: a compose project on every host, as the collector's Docker source
//! reports it (the shared contract of issue 20): `containers` rows, one per Docker event,
//! and the `container_*` samples of `metrics` every tick (and, in [`super::events`], some
//! `logs` lines with `source = 'docker'`), so the Containers panel, `lake logs --unit
//! <service>` and the container questions have something to show.
//!
//! Each host runs the project of its role (its index modulo 5, as in [`super::world`]),
//! a few services each with a behaviour ([`Behaviour`]): steady; a crash loop (dies with
//! exit code 1 and is started again by its restart policy every few minutes); killed by the
//! kernel's OOM killer a few times a day (`oom`, `die` 137, `start`); a health check that
//! turns unhealthy for a while a few times a day. Events and samples are functions of the
//! absolute time and the seed, so a container's restart count and its events agree across
//! day files.

use lake_format::rows::{MetricsBuilder, TableBuilder};

use super::world::{diurnal, mix, Rng, World};
use super::MICROS_PER_DAY;

/// How a container behaves over the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Behaviour {
    Steady,
    /// Exits with 1 every [`CRASH_PERIOD`] and is restarted 10 s later.
    CrashLoop,
    /// Killed for memory a few times a day, then restarted.
    Oom,
    /// Its health check fails for a while a few times a day.
    Flaky,
}

/// One compose service (container `<project>-<service>-1`).
#[derive(Debug)]
pub(super) struct Service {
    pub(super) name: &'static str,
    pub(super) image: &'static str,
    pub(super) behaviour: Behaviour,
    /// Has a health check.
    pub(super) health: bool,
    /// CPU at the daily peak, percent of one core.
    cpu: f64,
    /// Typical resident memory and the limit (0: none, the host's memory), MiB.
    mem_mib: f64,
    limit_mib: f64,
}

const fn svc(
    name: &'static str,
    image: &'static str,
    behaviour: Behaviour,
    health: bool,
    cpu: f64,
    mem_mib: f64,
    limit_mib: f64,
) -> Service {
    Service { name, image, behaviour, health, cpu, mem_mib, limit_mib }
}

use Behaviour::{CrashLoop, Flaky, Oom, Steady};

/// The compose project of each host role.
pub(super) const PROJECTS: [(&str, &[Service]); 5] = [
    (
        "librechat",
        &[
            svc("api", "ghcr.io/danny-avila/librechat:v0.7.5", Flaky, true, 12.0, 420.0, 0.0),
            svc("mongodb", "mongo:7.0", Steady, false, 6.0, 610.0, 0.0),
            svc("meilisearch", "getmeili/meilisearch:v1.7.3", Steady, false, 2.0, 180.0, 0.0),
            svc("rag_api", "ghcr.io/danny-avila/librechat-rag-api-dev-lite:latest", CrashLoop, false, 1.0, 90.0, 0.0),
        ],
    ),
    (
        "db",
        &[
            svc("postgres", "postgres:16", Steady, true, 18.0, 2100.0, 0.0),
            svc("pgbouncer", "edoburu/pgbouncer:1.22.1", Steady, false, 1.5, 25.0, 128.0),
        ],
    ),
    (
        "ollama",
        &[
            svc("ollama", "ollama/ollama:0.4.1", Oom, false, 140.0, 1800.0, 3072.0),
            svc("open-webui", "ghcr.io/open-webui/open-webui:main", Flaky, true, 4.0, 700.0, 0.0),
        ],
    ),
    (
        "wordpress",
        &[
            svc("wordpress", "wordpress:6.6-php8.2-apache", Steady, true, 7.0, 260.0, 0.0),
            svc("db", "mariadb:11", Steady, false, 4.0, 320.0, 0.0),
        ],
    ),
    (
        "litellm",
        &[
            svc("litellm", "ghcr.io/berriai/litellm:main-v1.52.0", Flaky, true, 9.0, 380.0, 1024.0),
            svc("redis", "redis:7-alpine", Steady, false, 1.0, 40.0, 256.0),
        ],
    ),
];

/// How often a crash-looping container dies, µs.
const CRASH_PERIOD: i64 = 4 * 60_000_000;
/// Samples per container per tick.
pub(super) const SAMPLES_PER_CONTAINER: usize = 8;

/// The project of host `i`.
pub(super) fn project(i: usize) -> (&'static str, &'static [Service]) {
    PROJECTS[i % PROJECTS.len()]
}

/// One Docker event.
struct Event {
    ts: i64,
    service: usize,
    action: &'static str,
    exit_code: Option<i64>,
    health: Option<&'static str>,
}

/// Hours (since the epoch) in which `service` of `host` is OOM-killed, or turns unhealthy.
fn incident_hour(world: &World, host: usize, service: usize, hour: i64, p: f64) -> Option<i64> {
    let mut rng = Rng::new(&[world.seed, 0xD0C4, host as u64, service as u64, hour as u64]);
    rng.chance(p).then(|| rng.below(3_000_000_000) as i64)
}

const OOM_CHANCE: f64 = 0.12;
const UNHEALTHY_CHANCE: f64 = 0.1;

/// When the container was (re)started for the first time: a minute into the range.
fn created(world: &World, service: usize) -> i64 {
    world.start + 60_000_000 + service as i64 * 2_000_000
}

/// The events of `host`'s containers in `[from, to)`, in time order.
fn events(world: &World, host: usize, from: i64, to: i64) -> Vec<Event> {
    let (_, services) = project(host);
    let mut out = Vec::new();
    let mut push = |ts: i64, service, action, exit_code, health| {
        if ts >= from && ts < to && ts >= world.start {
            out.push(Event { ts, service, action, exit_code, health });
        }
    };
    for (i, s) in services.iter().enumerate() {
        let c = created(world, i);
        push(c, i, "create", None, None);
        push(c + 500_000, i, "start", None, None);
        if s.health {
            push(c + 30_000_000, i, "health_status", None, Some("healthy"));
        }
        match s.behaviour {
            Steady => {}
            CrashLoop => {
                let first = c + CRASH_PERIOD;
                let mut t =
                    if from > first { first + (from - first).div_euclid(CRASH_PERIOD) * CRASH_PERIOD } else { first };
                // From the death at or before `from`: its restart may fall into the range.
                while t < to {
                    push(t, i, "die", Some(1), None);
                    push(t + 10_000_000, i, "start", None, None);
                    t += CRASH_PERIOD;
                }
            }
            Oom | Flaky => {
                for hour in from.div_euclid(3_600_000_000) - 1..=to.div_euclid(3_600_000_000) {
                    let base = hour * 3_600_000_000;
                    if s.behaviour == Oom {
                        if let Some(off) = incident_hour(world, host, i, hour, OOM_CHANCE) {
                            let t = base + off;
                            if t > c + 60_000_000 {
                                push(t, i, "oom", None, None);
                                push(t + 200_000, i, "die", Some(137), None);
                                push(t + 5_000_000, i, "start", None, None);
                            }
                        }
                    } else if let Some(off) = incident_hour(world, host, i, hour, UNHEALTHY_CHANCE) {
                        let t = base + off;
                        if t > c + 60_000_000 {
                            push(t, i, "health_status", None, Some("unhealthy"));
                            push(t + 8 * 60_000_000, i, "health_status", None, Some("healthy"));
                        }
                    }
                }
            }
        }
    }
    out.sort_by_key(|e| (e.ts, e.service));
    out.dedup_by_key(|e| (e.ts, e.service, e.action));
    out
}

/// When `host`'s OOM-killed `service` was restarted, from the start of the world up to `to`.
fn oom_restarts(world: &World, host: usize, service: usize, to: i64) -> Vec<i64> {
    let c = created(world, service);
    (world.start.div_euclid(3_600_000_000)..=to.div_euclid(3_600_000_000))
        .filter_map(|h| incident_hour(world, host, service, h, OOM_CHANCE).map(|off| h * 3_600_000_000 + off))
        .filter(|&at| at > c + 60_000_000)
        .map(|at| at + 5_000_000)
        .collect()
}

/// `64` hex digits, the same for a container across days.
pub(super) fn container_id(world: &World, host: usize, service: usize) -> String {
    (0..4).map(|k| format!("{:016x}", mix(&[world.seed, 0xC1D, host as u64, service as u64, k]))).collect()
}

/// Appends `host`'s `containers` rows of `[from, to)`.
pub(super) fn generate(world: &World, host: usize, from: i64, to: i64, b: &mut TableBuilder) {
    let (project, services) = project(host);
    let col = |n: &str| b.column(n).unwrap_or_else(|| panic!("containers has no column {n}"));
    let (ts, hc, container, id, image, cp, cs, action, exit, health, attrs) = (
        col("ts"),
        col("host"),
        col("container"),
        col("container_id"),
        col("image"),
        col("compose_project"),
        col("compose_service"),
        col("action"),
        col("exit_code"),
        col("health"),
        col("attrs"),
    );
    let name = &world.hosts[host].name;
    for e in events(world, host, from, to) {
        let s = &services[e.service];
        b.ts(ts, e.ts);
        b.text(hc, Some(name));
        b.text(container, Some(&format!("{project}-{}-1", s.name)));
        b.text(id, Some(&container_id(world, host, e.service)));
        b.text(image, Some(s.image));
        b.text(cp, Some(project));
        b.text(cs, Some(s.name));
        b.text(action, Some(e.action));
        b.int(exit, e.exit_code);
        b.text(health, e.health);
        let signal = (e.exit_code == Some(137)).then_some("9");
        b.map(
            attrs,
            [("com.docker.compose.version", "2.29.7"), ("com.docker.compose.oneoff", "False")]
                .into_iter()
                .chain(signal.map(|s| ("signal", s))),
        );
        b.end_row();
    }
}

/// Per host: what the metrics of a tick need, computed once per job.
#[derive(Debug)]
pub(super) struct Stats {
    /// Per service: the container, image, compose project and service labels.
    labels: Vec<[(String, String); 4]>,
    /// Per service: when it was restarted, in time order (what `RestartCount` counts).
    restarts: Vec<Vec<i64>>,
}

impl Stats {
    /// For the ticks of `host` before `to`.
    pub(super) fn new(world: &World, host: usize, to: i64) -> Stats {
        let (project, services) = project(host);
        let labels = services
            .iter()
            .map(|s| {
                [
                    ("container".to_string(), format!("{project}-{}-1", s.name)),
                    ("image".to_string(), s.image.to_string()),
                    ("compose_project".to_string(), project.to_string()),
                    ("compose_service".to_string(), s.name.to_string()),
                ]
            })
            .collect();
        let restarts = services
            .iter()
            .enumerate()
            .map(|(i, s)| match s.behaviour {
                Oom => oom_restarts(world, host, i, to),
                _ => Vec::new(),
            })
            .collect();
        Stats { labels, restarts }
    }

    /// Restarts of container `service` of `host` from its creation up to `t`.
    fn restarts(&self, world: &World, host: usize, service: usize, t: i64) -> u64 {
        let c = created(world, service);
        match project(host).1[service].behaviour {
            CrashLoop if t >= c + CRASH_PERIOD + 10_000_000 => ((t - c - 10_000_000) / CRASH_PERIOD) as u64,
            _ => self.restarts[service].partition_point(|&at| at <= t) as u64,
        }
    }

    /// The `container_*` samples of `host`'s containers at `t` (those created by then).
    pub(super) fn push(&self, world: &World, host: usize, t: i64, rng: &mut Rng, b: &mut MetricsBuilder) {
        let h = &world.hosts[host];
        let services = project(host).1;
        let d = diurnal(t) / 1.6;
        let mib = 1_048_576.0;
        for (i, s) in services.iter().enumerate() {
            let c = created(world, i);
            if t < c {
                continue;
            }
            let labels: Vec<(&str, &str)> = self.labels[i].iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let limit = if s.limit_mib > 0.0 { s.limit_mib * mib } else { h.memory };
            let restarts = self.restarts(world, host, i, t);
            let (cpu, mem) = match s.behaviour {
                // Mostly starting up and dying.
                CrashLoop => (s.cpu * (0.5 + rng.f64()), s.mem_mib * mib * (0.4 + 0.6 * rng.f64())),
                // Memory creeps up through the hour towards the limit.
                Oom => {
                    let frac = t.rem_euclid(3_600_000_000) as f64 / 3.6e9;
                    (
                        s.cpu * (0.3 + 0.7 * d) * (0.8 + 0.4 * rng.f64()),
                        (s.mem_mib * mib + frac * (limit - s.mem_mib * mib) * 0.9).min(limit),
                    )
                }
                _ => (
                    s.cpu * (0.35 + 0.65 * d) * (0.8 + 0.4 * rng.f64()),
                    s.mem_mib * mib * (0.9 + 0.1 * d + 0.02 * rng.normal()),
                ),
            };
            let up = (t - c) as f64 / 1e6;
            let io = s.cpu.max(1.0);
            b.push(t, &h.name, "container_cpu_percent", (cpu.max(0.0) * 100.0).round() / 100.0, &labels);
            b.push(t, &h.name, "container_memory_usage_bytes", mem.max(0.0).round(), &labels);
            b.push(t, &h.name, "container_memory_limit_bytes", limit.round(), &labels);
            b.push(t, &h.name, "container_net_rx_bytes_total", (io * 3_000.0 * up).round(), &labels);
            b.push(t, &h.name, "container_net_tx_bytes_total", (io * 2_200.0 * up).round(), &labels);
            b.push(t, &h.name, "container_blkio_read_bytes_total", (io * 800.0 * up).round(), &labels);
            b.push(t, &h.name, "container_blkio_write_bytes_total", (io * 1_900.0 * up).round(), &labels);
            b.push(t, &h.name, "container_restart_count", restarts as f64, &labels);
        }
    }
}

/// Rows of `host`'s `containers` in a day, roughly (for scheduling).
pub(super) fn rows_per_day(host: usize) -> f64 {
    project(host)
        .1
        .iter()
        .map(|s| match s.behaviour {
            Steady => 0.0,
            CrashLoop => 2.0 * MICROS_PER_DAY as f64 / CRASH_PERIOD as f64,
            Oom => 3.0 * 24.0 * OOM_CHANCE,
            Flaky => 2.0 * 24.0 * UNHEALTHY_CHANCE,
        })
        .sum::<f64>()
        + 4.0
}
