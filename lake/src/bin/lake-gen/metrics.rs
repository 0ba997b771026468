//! Generated `metrics` samples: what the collector's host source sends every tick (names
//! and labels of `collector/src/sources/host.rs`), plus the collector's own health and the
//! Docker source's `container_*` samples ([`super::containers`]).
//!
//! Values are smooth functions of the absolute time (daily curve, slow filesystem growth,
//! counters since boot) plus per-sample noise and occasional hour-long CPU spikes, so a
//! series continues across day files and looks like a machine's.

use arrow_array::RecordBatch;
use lake_format::rows::MetricsBuilder;

use super::http::CHUNK;
use super::world::{diurnal, mix, Rng, World};
use super::MICROS_PER_DAY;

/// Appends `host`'s samples of `[from, to)` to `sink`, in time order.
pub(super) fn generate(
    world: &World,
    host: usize,
    from: i64,
    to: i64,
    sink: &mut dyn FnMut(RecordBatch) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let interval = world.metric_interval;
    if interval <= 0 {
        return Ok(());
    }
    let h = &world.hosts[host];
    let name = h.name.as_str();
    let day = from.div_euclid(MICROS_PER_DAY);
    let mut rng = Rng::new(&[world.seed, 0x3E75, host as u64, day as u64]);
    // Hosts tick on a common grid, each a few hundred ms off it.
    let offset = (mix(&[world.seed, host as u64]) % 997) as i64 * 1000 % interval;
    let mut t = (from - offset).div_euclid(interval) * interval + offset;
    if t < from {
        t += interval;
    }
    let cpu_labels: Vec<String> = (0..h.cpus).map(|i| i.to_string()).collect();
    let gib = 1_073_741_824.0;
    let mut b = MetricsBuilder::new();
    let docker = super::containers::Stats::new(world, host, to);
    while t < to {
        let d = diurnal(t) / 1.6;
        let hour = t.div_euclid(3_600_000_000);
        let spike = if Rng::new(&[world.seed, 0x5B1E, host as u64, hour as u64]).chance(0.04) { 35.0 } else { 0.0 };
        let base = h.cpu_base * (0.35 + 0.65 * d) + spike;
        let mut sum = 0.0;
        let mut cores = [0.0f64; 64];
        for core in cores.iter_mut().take(h.cpus) {
            *core = (base * (0.6 + 0.8 * rng.f64()) + 3.0 * rng.normal()).clamp(0.0, 100.0);
            sum += *core;
        }
        let total = sum / h.cpus as f64;
        b.push(t, name, "cpu_usage_percent", round2(total), &[("cpu", "total")]);
        for (i, label) in cpu_labels.iter().enumerate() {
            b.push(t, name, "cpu_usage_percent", round2(cores[i]), &[("cpu", label)]);
        }
        let cpus = h.cpus as f64;
        b.push(t, name, "load1", round2(cpus * total / 100.0 * (0.85 + 0.3 * rng.f64())), &[]);
        b.push(t, name, "load5", round2(cpus * total / 100.0 * 0.95), &[]);
        b.push(t, name, "load15", round2(cpus * (base - spike) / 100.0 * 0.9), &[]);

        let used = h.memory * (0.38 + 0.12 * d + 0.015 * rng.normal()).clamp(0.05, 0.95);
        let cache = h.memory * 0.12;
        b.push(t, name, "memory_total_bytes", h.memory, &[]);
        b.push(t, name, "memory_used_bytes", used.round(), &[]);
        b.push(t, name, "memory_available_bytes", (h.memory - used - cache).max(0.0).round(), &[]);
        b.push(t, name, "swap_total_bytes", 2.0 * gib, &[]);
        b.push(t, name, "swap_used_bytes", (2.0 * gib * (0.04 + 0.01 * rng.normal()).max(0.0)).round(), &[]);

        let days = (t - world.start) as f64 / MICROS_PER_DAY as f64;
        for m in &h.mounts {
            let labels = [("mount", m.mount), ("device", m.device), ("fstype", m.fstype)];
            // Logs grow through the day and are rotated at midnight.
            let daily = 0.006 * (t.rem_euclid(MICROS_PER_DAY) as f64 / MICROS_PER_DAY as f64);
            let ratio = (m.used_at_start + m.growth_per_day * days + if m.growth_per_day > 0.0 { daily } else { 0.0 })
                .clamp(0.0, 0.995);
            b.push(t, name, "filesystem_total_bytes", m.total, &labels);
            b.push(t, name, "filesystem_used_bytes", (m.total * ratio).round(), &labels);
            b.push(t, name, "filesystem_used_ratio", (ratio * 1e4).round() / 1e4, &labels);
        }

        let since_boot = (t - h.boot) as f64 / 1e6;
        for (i, dev) in h.disks.iter().enumerate() {
            let labels = [("device", *dev)];
            let (r, w) = ([400_000.0, 1_500_000.0][i % 2], [900_000.0, 3_000_000.0][i % 2]);
            b.push(t, name, "disk_read_bytes_total", (r * 0.7 * since_boot).round(), &labels);
            b.push(t, name, "disk_written_bytes_total", (w * 0.7 * since_boot).round(), &labels);
            b.push(t, name, "disk_read_bytes_per_second", (r * d * rng.lognormal(1.0, 0.6)).round(), &labels);
            b.push(t, name, "disk_written_bytes_per_second", (w * d * rng.lognormal(1.0, 0.5)).round(), &labels);
        }
        for iface in &h.ifaces {
            let labels = [("iface", *iface)];
            let (rx, tx) = match *iface {
                "eth0" => (1_800_000.0 * h.exposure, 2_600_000.0 * h.exposure),
                "tailscale0" => (150_000.0, 120_000.0),
                _ => (400_000.0, 380_000.0),
            };
            let (rx_now, tx_now) = (rx * d * rng.lognormal(1.0, 0.3), tx * d * rng.lognormal(1.0, 0.3));
            b.push(t, name, "net_rx_bytes_total", (rx * 0.7 * since_boot).round(), &labels);
            b.push(t, name, "net_tx_bytes_total", (tx * 0.7 * since_boot).round(), &labels);
            b.push(t, name, "net_rx_packets_total", (rx * 0.7 * since_boot / 900.0).round(), &labels);
            b.push(t, name, "net_tx_packets_total", (tx * 0.7 * since_boot / 1100.0).round(), &labels);
            b.push(t, name, "net_rx_bytes_per_second", rx_now.round(), &labels);
            b.push(t, name, "net_tx_bytes_per_second", tx_now.round(), &labels);
            b.push(t, name, "net_rx_packets_per_second", (rx_now / 900.0).round(), &labels);
            b.push(t, name, "net_tx_packets_per_second", (tx_now / 1100.0).round(), &labels);
        }
        b.push(t, name, "process_count", (140.0 + 12.0 * cpus + 5.0 * rng.normal()).round(), &[]);
        b.push(t, name, "uptime_seconds", since_boot.round(), &[]);
        b.push(t, name, "lake_collector_rss_bytes", (11.5e6 + 3e5 * rng.normal()).round(), &[]);
        b.push(t, name, "lake_collector_spool_bytes", (rng.f64() * 180_000.0).round(), &[]);
        b.push(t, name, "lake_collector_dropped_batches_total", 0.0, &[]);
        docker.push(world, host, t, &mut rng, &mut b);
        if b.len() >= CHUNK {
            sink(b.finish())?;
        }
        t += interval;
    }
    if !b.is_empty() {
        sink(b.finish())?;
    }
    Ok(())
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
