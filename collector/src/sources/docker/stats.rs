//! One `/containers/{id}/stats?stream=false` answer → `metrics` samples (pure).
//!
//! - `container_cpu_percent`: `(Δ cpu_stats.cpu_usage.total_usage / Δ system_cpu_usage) ×
//!   online_cpus × 100` between `precpu_stats` and `cpu_stats` (100 = one core; what
//!   `docker stats` shows). `stream=false` without `one-shot` makes the daemon wait for
//!   the second sample, so both are filled; without a usable delta there is no sample.
//! - `container_memory_usage_bytes`: `memory_stats.usage` less the page cache that can be
//!   reclaimed — `stats.inactive_file` on cgroup v2, `stats.total_inactive_file` on
//!   cgroup v1 — as `docker stats` counts it. `container_memory_limit_bytes`:
//!   `memory_stats.limit`.
//! - `container_net_{rx,tx}_bytes_total`: summed over `networks` (absent with
//!   `--network none`: no sample).
//! - `container_blkio_{read,write}_bytes_total`: `blkio_stats.io_service_bytes_recursive`
//!   summed by `op` (`Read`/`Write` on v1, `read`/`write` on v2).

use std::collections::BTreeMap;

use serde::Deserialize;

/// The fields read from a stats answer.
#[derive(Debug, Default, Deserialize)]
pub struct StatsJson {
    #[serde(default)]
    cpu_stats: Cpu,
    #[serde(default)]
    precpu_stats: Cpu,
    #[serde(default)]
    memory_stats: Memory,
    #[serde(default)]
    networks: Option<BTreeMap<String, Net>>,
    #[serde(default)]
    blkio_stats: Blkio,
}

#[derive(Debug, Default, Deserialize)]
struct Cpu {
    #[serde(default)]
    cpu_usage: CpuUsage,
    system_cpu_usage: Option<u64>,
    online_cpus: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
struct CpuUsage {
    #[serde(default)]
    total_usage: u64,
    #[serde(default)]
    percpu_usage: Option<Vec<u64>>,
}

#[derive(Debug, Default, Deserialize)]
struct Memory {
    usage: Option<u64>,
    limit: Option<u64>,
    #[serde(default)]
    stats: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Deserialize)]
struct Net {
    #[serde(default)]
    rx_bytes: u64,
    #[serde(default)]
    tx_bytes: u64,
}

#[derive(Debug, Default, Deserialize)]
struct Blkio {
    #[serde(default)]
    io_service_bytes_recursive: Option<Vec<BlkioEntry>>,
}

#[derive(Debug, Default, Deserialize)]
struct BlkioEntry {
    #[serde(default)]
    op: String,
    #[serde(default)]
    value: u64,
}

/// The samples of one answer, by metric name.
pub fn samples(s: &StatsJson) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    let cpu_delta = s.cpu_stats.cpu_usage.total_usage.checked_sub(s.precpu_stats.cpu_usage.total_usage);
    let sys_delta = match (s.cpu_stats.system_cpu_usage, s.precpu_stats.system_cpu_usage) {
        (Some(now), Some(before)) => now.checked_sub(before).filter(|d| *d > 0),
        _ => None,
    };
    let cpus = s
        .cpu_stats
        .online_cpus
        .filter(|n| *n > 0)
        .or_else(|| s.cpu_stats.cpu_usage.percpu_usage.as_ref().map(|p| p.len() as u32))
        .filter(|n| *n > 0);
    if let (Some(c), Some(d), Some(n)) = (cpu_delta, sys_delta, cpus) {
        out.push(("container_cpu_percent", c as f64 / d as f64 * f64::from(n) * 100.0));
    }
    if let Some(usage) = s.memory_stats.usage {
        let stats = &s.memory_stats.stats;
        // v1 has both names (`inactive_file` of the cgroup alone); v2 only `inactive_file`.
        let cache = stats.get("total_inactive_file").or_else(|| stats.get("inactive_file")).copied().unwrap_or(0);
        out.push(("container_memory_usage_bytes", usage.saturating_sub(cache) as f64));
    }
    if let Some(limit) = s.memory_stats.limit {
        out.push(("container_memory_limit_bytes", limit as f64));
    }
    if let Some(nets) = s.networks.as_ref().filter(|n| !n.is_empty()) {
        out.push(("container_net_rx_bytes_total", nets.values().fold(0.0, |a, n| a + n.rx_bytes as f64)));
        out.push(("container_net_tx_bytes_total", nets.values().fold(0.0, |a, n| a + n.tx_bytes as f64)));
    }
    if let Some(io) = &s.blkio_stats.io_service_bytes_recursive {
        // fold from +0.0: an empty f64 sum is -0.0.
        let sum = |op: &str| io.iter().filter(|e| e.op.eq_ignore_ascii_case(op)).fold(0.0, |a, e| a + e.value as f64);
        out.push(("container_blkio_read_bytes_total", sum("read")));
        out.push(("container_blkio_write_bytes_total", sum("write")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(s: &[(&str, f64)], name: &str) -> Option<f64> {
        s.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    #[test]
    fn cgroup_v1_answer_of_docker_20_10() {
        let j = r#"{"cpu_stats":{"cpu_usage":{"total_usage":27307800,"percpu_usage":[1601430,25706370]},"system_cpu_usage":47665960000000,"online_cpus":2},
            "precpu_stats":{"cpu_usage":{"total_usage":26336686},"system_cpu_usage":47663960000000,"online_cpus":2},
            "memory_stats":{"usage":864256,"limit":16777216,"stats":{"total_inactive_file":4096,"inactive_file":0}},
            "blkio_stats":{"io_service_bytes_recursive":[{"major":8,"minor":0,"op":"Read","value":100},{"major":8,"minor":0,"op":"Write","value":7},{"major":8,"minor":16,"op":"Read","value":1}]}}"#;
        let s = samples(&serde_json::from_str(j).unwrap());
        let cpu = get(&s, "container_cpu_percent").unwrap();
        assert!((cpu - 0.0971114).abs() < 1e-6, "{cpu}");
        // v1 reports inactive_file (the cgroup alone) beside total_inactive_file: the total counts.
        assert_eq!(get(&s, "container_memory_usage_bytes"), Some(860160.0));
        assert_eq!(get(&s, "container_memory_limit_bytes"), Some(16777216.0));
        assert_eq!(get(&s, "container_blkio_read_bytes_total"), Some(101.0));
        assert_eq!(get(&s, "container_blkio_write_bytes_total"), Some(7.0));
        assert_eq!(get(&s, "container_net_rx_bytes_total"), None, "--network none");
    }

    #[test]
    fn cgroup_v2_answer_and_a_first_sample_without_precpu() {
        let j = r#"{"cpu_stats":{"cpu_usage":{"total_usage":5000},"system_cpu_usage":2000000,"online_cpus":4},
            "precpu_stats":{"cpu_usage":{"total_usage":0}},
            "memory_stats":{"usage":10000,"limit":20000,"stats":{"inactive_file":3000}},
            "networks":{"eth0":{"rx_bytes":10,"tx_bytes":20},"eth1":{"rx_bytes":1,"tx_bytes":2}},
            "blkio_stats":{"io_service_bytes_recursive":[{"op":"read","value":5},{"op":"write","value":6}]}}"#;
        let s = samples(&serde_json::from_str(j).unwrap());
        assert_eq!(get(&s, "container_cpu_percent"), None, "no precpu system usage: no delta");
        assert_eq!(get(&s, "container_memory_usage_bytes"), Some(7000.0));
        assert_eq!(get(&s, "container_net_rx_bytes_total"), Some(11.0));
        assert_eq!(get(&s, "container_net_tx_bytes_total"), Some(22.0));
        assert_eq!(get(&s, "container_blkio_write_bytes_total"), Some(6.0));
        assert!(samples(&serde_json::from_str("{}").unwrap()).is_empty());
    }
}
