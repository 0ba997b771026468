//! Generated `http` rows: Caddy access log entries of the vhosts a host serves.

use std::fmt::Write as _;

use arrow_array::RecordBatch;
use lake_format::rows::TableBuilder;
use lake_format::Table;

use super::world::{diurnal_times, ClientKind, PathKind, Rng, Weighted, World};
use super::MICROS_PER_DAY;

/// Rows per batch handed to the Parquet writer.
pub(super) const CHUNK: usize = 128 * 1024;

/// Status codes by kind of path, before 5xx are mixed in.
fn status(rng: &mut Rng, kind: PathKind, method: &str) -> i64 {
    let x = rng.f64();
    match kind {
        PathKind::Static => {
            if x < 0.83 {
                200
            } else if x < 0.97 {
                304
            } else if x < 0.995 {
                404
            } else {
                206
            }
        }
        PathKind::Page => {
            if x < 0.86 {
                200
            } else if x < 0.90 {
                304
            } else if x < 0.93 {
                301
            } else if x < 0.95 {
                302
            } else if x < 0.985 {
                404
            } else {
                403
            }
        }
        PathKind::Api => {
            if method == "POST" && x < 0.3 {
                201
            } else if x < 0.90 {
                200
            } else if x < 0.93 {
                400
            } else if x < 0.96 {
                401
            } else if x < 0.98 {
                404
            } else {
                429
            }
        }
        PathKind::Probe => {
            if x < 0.88 {
                404
            } else if x < 0.96 {
                403
            } else if x < 0.99 {
                301
            } else {
                200
            }
        }
    }
}

/// Appends a day's worth (`[from, to)`) of `host`'s requests to `sink`, in time order.
pub(super) fn generate(
    world: &World,
    host: usize,
    from: i64,
    to: i64,
    sink: &mut dyn FnMut(RecordBatch) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mine: Vec<usize> = (0..world.vhosts.len()).filter(|&v| world.vhosts[v].home == host).collect();
    let share: f64 = mine.iter().map(|&v| world.vhosts[v].share).sum();
    if mine.is_empty() || share <= 0.0 {
        return Ok(());
    }
    let day = from.div_euclid(MICROS_PER_DAY);
    let mut rng = Rng::new(&[world.seed, 0x4770, host as u64, day as u64]);
    let n = (world.http_rate * (to - from) as f64 * share).round() as usize;
    let times = diurnal_times(&mut rng, from, to, n);
    let pick_vhost = Weighted::new(mine.iter().map(|&v| (v, world.vhosts[v].share)));
    let incidents: Vec<Option<(i64, i64)>> = (0..world.vhosts.len()).map(|v| world.incident(v, day)).collect();
    let host_name = world.hosts[host].name.as_str();

    let mut b = TableBuilder::new(Table::Http);
    let col = |b: &TableBuilder, n: &str| b.column(n).expect("http column");
    let (c_ts, c_host, c_vhost, c_method, c_uri, c_path, c_proto) = (
        col(&b, "ts"),
        col(&b, "host"),
        col(&b, "vhost"),
        col(&b, "method"),
        col(&b, "uri"),
        col(&b, "path"),
        col(&b, "proto"),
    );
    let (c_status, c_size, c_read, c_dur, c_rip, c_cip, c_ua) = (
        col(&b, "status"),
        col(&b, "size"),
        col(&b, "bytes_read"),
        col(&b, "duration_ms"),
        col(&b, "remote_ip"),
        col(&b, "client_ip"),
        col(&b, "user_agent"),
    );
    let (c_ref, c_tls, c_sni, c_class, c_name) = (
        col(&b, "referer"),
        col(&b, "tls_version"),
        col(&b, "server_name"),
        col(&b, "client_class"),
        col(&b, "client_name"),
    );
    let mut uri = String::with_capacity(96);
    let mut referer = String::with_capacity(64);

    for ts in times {
        let v = *pick_vhost.pick(&mut rng);
        let vhost = &world.vhosts[v];
        let incident = incidents[v].is_some_and(|(a, z)| ts >= a && ts < z);
        let kind = *world.client_mix.pick(&mut rng);
        let client = match kind {
            ClientKind::Human | ClientKind::Bot => world.clients.pick(&mut rng),
            ClientKind::Search | ClientKind::Ai => world.crawlers.pick(&mut rng),
            ClientKind::Scanner => world.scanners.pick(&mut rng),
        };
        let agents = &world.agents.iter().find(|(k, _)| *k == kind).expect("agents of every kind").1;
        let agent = agents.pick(&mut rng);
        let entry = if kind == ClientKind::Scanner && rng.chance(0.85) {
            world.probe_paths.pick(&mut rng)
        } else {
            vhost.paths.pick(&mut rng)
        };
        let method = match entry.kind {
            PathKind::Api => {
                ["GET", "GET", "GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"][rng.below(10) as usize]
            }
            PathKind::Probe if rng.chance(0.2) => "POST",
            _ if rng.chance(0.03) => "HEAD",
            _ if entry.path == "/" && rng.chance(0.01) => "POST",
            _ => "GET",
        };
        uri.clear();
        uri.push_str(&entry.path);
        match entry.kind {
            PathKind::Api if rng.chance(0.4) => {
                let _ =
                    write!(uri, "?limit={}&offset={}", [10, 20, 50, 100][rng.below(4) as usize], rng.below(50) * 10);
            }
            PathKind::Page if rng.chance(0.12) => {
                let _ = write!(uri, "?page={}", 2 + rng.below(20));
            }
            _ => {}
        }

        // 5xx: rare in normal times, common during the vhost's incident.
        let mut status = status(&mut rng, entry.kind, method);
        if rng.chance(if incident { 0.32 } else { 0.004 }) {
            status = [500, 502, 502, 503, 504][rng.below(5) as usize];
        }
        // Drawn only inside an injected storm, so the rest of the stream stays the same.
        if world.in_injected_5xx(v, ts) && status < 500 && rng.chance(0.9) {
            status = 503;
        }
        let (median_ms, sigma) = match entry.kind {
            PathKind::Static => (1.4, 0.7),
            PathKind::Page => (28.0, 0.8),
            PathKind::Api => (45.0, 0.9),
            PathKind::Probe => (2.5, 0.6),
        };
        let mut duration = rng.lognormal(median_ms, sigma) * if incident { 5.0 } else { 1.0 };
        if status == 504 {
            duration = 30_000.0 + rng.f64() * 500.0;
        }
        let size = match (status, entry.kind) {
            (304 | 204, _) => 0,
            (301 | 302, _) => 0,
            (s, _) if s >= 400 => 100 + rng.below(400) as i64,
            (_, PathKind::Static) => rng.lognormal(25_000.0, 1.2) as i64,
            (_, PathKind::Page) => rng.lognormal(14_000.0, 0.6) as i64,
            (_, PathKind::Api) => rng.lognormal(1_800.0, 1.0) as i64,
            (_, PathKind::Probe) => rng.lognormal(600.0, 0.5) as i64,
        };
        let read = if matches!(method, "POST" | "PUT") { rng.lognormal(700.0, 0.9) as i64 } else { 0 };
        let proto = match (kind, rng.below(20)) {
            (ClientKind::Human, 0..=13) => "HTTP/2.0",
            (ClientKind::Human, 14..=15) => "HTTP/3.0",
            (ClientKind::Search | ClientKind::Ai, 0..=9) => "HTTP/2.0",
            _ => "HTTP/1.1",
        };
        let referer = match kind {
            ClientKind::Human if rng.chance(0.45) => {
                referer.clear();
                match rng.below(4) {
                    0 => referer.push_str("https://www.google.com/"),
                    1 => referer.push_str("https://duckduckgo.com/"),
                    2 => referer.push_str("https://news.ycombinator.com/"),
                    _ => {
                        let _ = write!(referer, "https://{}/", vhost.name);
                    }
                }
                Some(referer.as_str())
            }
            _ => None,
        };

        b.ts(c_ts, ts);
        b.text(c_host, Some(host_name));
        b.text(c_vhost, Some(vhost.name));
        b.text(c_method, Some(method));
        b.text(c_uri, Some(&uri));
        b.text(c_path, Some(&entry.path));
        b.text(c_proto, Some(proto));
        b.int(c_status, Some(status));
        b.int(c_size, Some(size));
        b.int(c_read, Some(read));
        b.float(c_dur, Some((duration * 1000.0).round() / 1000.0));
        let remote = if vhost.behind_cdn {
            world.cdn[rng.below(world.cdn.len() as u64) as usize].as_str()
        } else {
            client.as_str()
        };
        b.text(c_rip, Some(remote));
        b.text(c_cip, Some(client));
        b.text(c_ua, Some(agent.ua));
        b.text(c_ref, referer);
        b.text(c_tls, Some(if rng.chance(0.92) { "1.3" } else { "1.2" }));
        b.text(c_sni, Some(vhost.name));
        b.text(c_class, Some(agent.class_for(entry.kind)));
        b.text(c_name, agent.name);
        b.end_row();
        if b.len() >= CHUNK {
            sink(b.finish()?)?;
        }
    }
    if !b.is_empty() {
        sink(b.finish()?)?;
    }
    Ok(())
}
