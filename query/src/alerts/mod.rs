//! Alert rules over the lake, their per-instance state, and notifications.
//!
//! Everything here is testable without a server: time comes in as an argument (µs since
//! the epoch) or through a [`Clock`], SQL results come in as Arrow batches, and the
//! senders (SMTP, HTTP) are the lake's (`lake::alerts::notify`). The lake (`lake::alerts`) schedules rules, runs
//! their SQL through [`crate::Engine`], persists [`state::AlertState`], writes the
//! `alerts` rows and runs the delivery queue.
//!
//! Stages, data in → out:
//! - [`rules`]: `[[rules]]`, `[alerts]` and `[notify]` of `lake.toml` (serde `*File`) →
//!   validated [`rules::AlertsConfig`]; the shipped rules are in [`builtin`].
//! - [`template`]: a rule's `message` (`{{ labels.host }} at {{ value | percent }}`),
//!   parsed at load, rendered per instance.
//! - [`eval`]: a rule's query result → one [`eval::Observation`] per row (label columns,
//!   detail columns, numeric `value`).
//! - [`state`]: observations + time → transitions (`pending`, `firing`, `resolved`, `ok`),
//!   one row each for the `alerts` table, and grouped notifications; silences, repeat
//!   interval and flap guard live here.
//! - [`notify`]: channel configs ([`notify::email`], [`notify::webhook`]), the delivery
//!   queue's retry policy, the message text and the webhook bodies (generic JSON,
//!   Alertmanager, ntfy, Slack, Discord). The senders are the lake's (`lake::alerts::notify`).

pub mod builtin;
pub mod eval;
pub mod notify;
pub mod rules;
pub mod state;
pub mod template;

use std::time::{SystemTime, UNIX_EPOCH};

/// Labels of an alert instance (sorted, so equal sets compare and hash alike).
pub type Labels = std::collections::BTreeMap<String, String>;

/// Where "now" comes from; tests pass a manual clock.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Microseconds since the Unix epoch.
    fn now_micros(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock showing `micros`.
    pub fn new(micros: i64) -> Self {
        ManualClock(std::sync::atomic::AtomicI64::new(micros))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.0.fetch_add(by.as_micros() as i64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `2026-11-26 10:15:02 UTC` for a timestamp in µs.
pub fn format_time(micros: i64) -> String {
    match jiff::Timestamp::from_microsecond(micros) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => format!("{micros}µs"),
    }
}

/// RFC 3339 (`2026-11-26T10:15:02.123Z`) for a timestamp in µs.
pub fn rfc3339(micros: i64) -> String {
    match jiff::Timestamp::from_microsecond(micros) {
        Ok(t) => t.to_string(),
        Err(_) => "0001-01-01T00:00:00Z".to_string(),
    }
}

/// A short human duration: `45s`, `3m 20s`, `2h 5m`, `3d 4h`.
pub fn format_duration_secs(secs: f64) -> String {
    if !secs.is_finite() {
        return "?".into();
    }
    let neg = secs < 0.0;
    let s = secs.abs().round() as u64;
    let text = match s {
        0..=59 => format!("{s}s"),
        60..=3599 => two(s / 60, "m", s % 60, "s"),
        3600..=86_399 => two(s / 3600, "h", (s % 3600) / 60, "m"),
        _ => two(s / 86_400, "d", (s % 86_400) / 3600, "h"),
    };
    if neg {
        format!("-{text}")
    } else {
        text
    }
}

fn two(a: u64, ua: &str, b: u64, ub: &str) -> String {
    if b == 0 {
        format!("{a}{ua}")
    } else {
        format!("{a}{ua} {b}{ub}")
    }
}

/// A value for people: integers without decimals, others with at most 3.
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A stable 64-bit FNV-1a hash (for fingerprints that must not change between builds).
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(format_value(2.0), "2");
        assert_eq!(format_value(0.061234), "0.061");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_duration_secs(200.0), "3m 20s");
        assert_eq!(format_duration_secs(7200.0), "2h");
        assert_eq!(format_duration_secs(90_000.0), "1d 1h");
        assert_eq!(format_time(1_795_374_070_000_000), "2026-11-22 19:01:10 UTC");
        assert_eq!(rfc3339(1_795_374_070_000_000), "2026-11-22T19:01:10Z");
        assert_ne!(fnv1a(&["a", "bc"]), fnv1a(&["ab", "c"]));
    }
}
