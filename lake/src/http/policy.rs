//! What a node may write: its own rows, into tables the lake does not write itself, within
//! the days a batch may span (DESIGN.md, "Trust").
//!
//! - **Hosts.** A row's `host` is the node whose token sent it. A gateway or an
//!   OpenTelemetry relay forwarding for other machines lists them in its `lake.toml` entry
//!   (`[[nodes]] name = "gateway"`, `hosts = ["web-1", "web-2"]`); the list belongs to the
//!   node, so every token of that node has it, whether the token is in `lake.toml` or in
//!   the tokens file (`lake token add --role ingest --node gateway`). Any other `host` is
//!   refused (400 naming the row and the host) and nothing of the batch is stored: node A
//!   cannot write rows as node B, which would keep B's `node_silent` alert quiet or put
//!   words in its logs. Rows without a host (custom rows without a `host` field, OTLP
//!   resources without `host.name`) get the sender's node.
//! - **Lake-only tables.** Tables the lake writes itself
//!   ([`lake_format::Table::written_by_lake`]: `alerts`) take no ingest on any path (403),
//!   and no custom table can take their names.
//! - **Days.** `ingest.max_days_per_batch` and each table's retention: see
//!   [`super::bounds`].
//!
//! - **Hosts named by labels.** Prometheus' `instance` and Loki's `host` label name a host
//!   with whatever the sender's configuration put there; [`host_named`] reads the host out
//!   of it, or falls back to the sender's node.
//!
//! The host check costs one string comparison per row, against the last host accepted
//! (a batch nearly always holds one host), without allocating.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::RecordBatch;

use lake_format::custom::TableRef;
use lake_format::wire::validate_node_name;

use super::bounds::{Days, Violation};
use crate::maintenance::retention::RetentionConfig;

/// The host a label names (remote_write `instance`, Loki `host`): its host part (`web-1:9100`
/// → `web-1`; brackets and port stripped from `[::1]:9100`), or `node` — the sender's — when
/// there is no label, when it names a loopback address (`localhost:9100`: the sender runs
/// on the node) or when its host part is not a node name (a URL, an IPv6 address).
pub(crate) fn host_named<'a>(label: Option<&'a str>, node: &'a str) -> &'a str {
    let Some(label) = label else { return node };
    let host = match label.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => match label.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.bytes().all(|c| c.is_ascii_digit()) => h,
            _ => label,
        },
    };
    let loopback = host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback || validate_node_name(host).is_err() {
        node
    } else {
        host
    }
}

/// The row checks of the ingest endpoints that depend on the sender and the table.
#[derive(Debug, Clone)]
pub struct IngestPolicy {
    /// `[[nodes]] hosts`: the hosts other than itself each node may send rows for.
    pub hosts: HashMap<String, Arc<[String]>>,
    /// `ingest.max_days_per_batch` (default 31).
    pub max_days_per_batch: u32,
    /// `[retention]`: where each table's rows must start.
    pub retention: RetentionConfig,
}

impl IngestPolicy {
    /// The policy of a lake configured by `config`.
    pub fn of(config: &crate::config::Config) -> IngestPolicy {
        let hosts = config.hosts.iter().map(|(n, h)| (n.clone(), Arc::from(h.as_slice()))).collect();
        IngestPolicy { hosts, max_days_per_batch: config.max_days_per_batch, retention: config.retention.clone() }
    }

    /// No limits beyond a node's own rows: unit tests.
    pub fn open() -> IngestPolicy {
        IngestPolicy { hosts: HashMap::new(), max_days_per_batch: u32::MAX, retention: RetentionConfig::default() }
    }

    /// The sender of a request whose token belongs to `node`.
    pub fn sender(&self, node: String) -> Sender {
        let hosts = self.hosts.get(&node).cloned().unwrap_or_else(|| Arc::from(Vec::new()));
        Sender { node, hosts }
    }

    /// The dates a batch of `table` may hold when the lake's clock reads `now` (µs).
    pub fn days(&self, table: &TableRef, now: i64) -> Days {
        Days::at(now, self.max_days_per_batch, self.retention.policy(table).keep_archive_days)
    }
}

/// The node a request comes from and the hosts it may write rows for.
#[derive(Debug, Clone)]
pub struct Sender {
    /// The token's node: the `host` of rows that carry none.
    pub node: String,
    hosts: Arc<[String]>,
}

impl Sender {
    /// Whether a row may carry `host`.
    pub fn allows(&self, host: &str) -> bool {
        host == self.node || self.hosts.iter().any(|h| h == host)
    }

    /// Why a row may not carry `host`.
    pub fn refusal(&self, host: &str) -> String {
        let host: String = host.chars().take(80).collect();
        let node = &self.node;
        if self.hosts.is_empty() {
            format!(
                "host {host:?} is not {node:?}, the node of this token: a node writes only its own rows \
                 (a gateway or relay lists the hosts it sends for in lake.toml: [[nodes]] name = {node:?}, hosts = [{host:?}])"
            )
        } else {
            format!(
                "host {host:?} is neither {node:?}, the node of this token, nor one of its hosts ({}) in lake.toml",
                self.hosts.join(", ")
            )
        }
    }

    /// Every row check of an ingest endpoint, in order: the time window
    /// ([`super::bounds::check`]), the hosts this sender may write ([`Sender::check`]), the
    /// days a batch may span ([`super::bounds::check_days`]).
    pub fn check_rows(&self, batches: &[RecordBatch], now: i64, days: Days) -> Result<(), Violation> {
        super::bounds::check(batches, super::bounds::Window::at(now))?;
        self.check(batches)?;
        super::bounds::check_days(batches, days)
    }

    /// Checks the `host` column of `batches`: the first row whose host this sender may not
    /// write is the error (rows counted from 0 across the batches).
    pub fn check(&self, batches: &[RecordBatch]) -> Result<(), Violation> {
        let mut base = 0;
        // The last host accepted: rows of one batch nearly always share it.
        let mut last: &str = &self.node;
        for batch in batches {
            // `host` is a required Utf8 column of every table ([`lake_format::wire::conform`]
            // and the custom tables' builder make sure of it).
            if let Some(hosts) = batch.column_by_name("host").and_then(|c| c.as_string_opt::<i32>()) {
                for (i, h) in hosts.iter().enumerate() {
                    let Some(h) = h else { continue };
                    if h == last {
                        continue;
                    }
                    if !self.allows(h) {
                        return Err(Violation {
                            row: base + i,
                            column: "host".into(),
                            message: self.refusal(h),
                            skew: None,
                        });
                    }
                    last = h;
                }
            }
            base += batch.num_rows();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lake_format::rows::MetricsBuilder;

    fn batch(hosts: &[&str]) -> RecordBatch {
        let mut b = MetricsBuilder::new();
        for h in hosts {
            b.push(1_795_374_070_000_000, h, "m", 1.0, &[]);
        }
        b.finish()
    }

    #[test]
    fn a_node_writes_its_own_rows_and_its_listed_hosts() {
        let mut policy = IngestPolicy::open();
        let a = policy.sender("node-a".into());
        assert!(a.check(&[batch(&["node-a", "node-a"]), batch(&["node-a"])]).is_ok());
        let v = a.check(&[batch(&["node-a"]), batch(&["node-a", "node-b"])]).unwrap_err();
        assert_eq!((v.row, v.column.as_str()), (2, "host"));
        assert!(
            v.to_string().contains("row 2 (counting from 0), column \"host\": host \"node-b\" is not \"node-a\""),
            "{v}"
        );
        assert!(v.message.contains("hosts = [\"node-b\"]"), "the message says how to allow it: {v}");

        policy.hosts.insert("gateway".into(), Arc::from(vec!["web-1".to_string(), "web-2".to_string()]));
        let g = policy.sender("gateway".into());
        assert!(g.check(&[batch(&["web-1", "gateway", "web-2", "web-1"])]).is_ok());
        let v = g.check(&[batch(&["web-1", "web-3"])]).unwrap_err();
        assert_eq!(v.row, 1);
        assert!(v.message.contains("nor one of its hosts (web-1, web-2)"), "{v}");
        // The hosts are the gateway's alone.
        assert!(policy.sender("node-a".into()).check(&[batch(&["web-1"])]).is_err());
    }
}
