//! The table catalog: one Arrow schema per built-in table.
//!
//! Every table starts with `ts` (UTC, microseconds) and `host` (node name). Columns are
//! declared once, in the constant tables below, together with the documentation that
//! travels with the schema as field metadata (key [`DOC_KEY`]), so `lake` can describe a
//! table without a second source of truth. Anything a source carries beyond the typed
//! columns goes in an `attrs` (or `labels`) map column: never silently dropped.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Field metadata key under which each column's documentation is stored.
pub const DOC_KEY: &str = "doc";

/// The time zone every `ts` column carries.
pub const TS_TZ: &str = "UTC";

/// A built-in table of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Numeric samples in long format: host metrics, OTLP metrics, collector self-telemetry.
    Metrics,
    /// Log lines: journald, OTLP logs, unparsed lines of other sources.
    Logs,
    /// HTTP requests from Caddy's JSON access log.
    Http,
    /// Packets logged by ufw (netfilter LOG lines); Cloudflare security events (`[[pull]]`).
    Firewall,
    /// fail2ban events.
    Bans,
    /// Tailscale pings and HTTP/TCP/TLS/ICMP/DNS uptime checks.
    Probes,
    /// Alert state transitions and notifications.
    Alerts,
    /// Installed packages (changes only).
    Packages,
    /// Listening sockets (changes only).
    Listeners,
    /// systemd units (changes only).
    Units,
    /// One row per node describing the machine (changes only).
    Hosts,
    /// Docker container events: start, die, oom, restart, health changes, ...
    Containers,
    /// OpenTelemetry trace spans (OTLP `/v1/traces`).
    Spans,
    /// Runs of the jobs declared by `[[jobs]]` (cron monitoring): start, success, fail, late.
    Jobs,
}

impl Table {
    /// The columns a committed file of this table is sorted by, in order. `metrics` leads
    /// with `name`: nearly every metrics query asks for one or a few names, and in files
    /// sorted by it each row group holds few names, so its `name` statistics let a reader
    /// skip the others (a day of 5 hosts: one CPU panel 5x faster than sorted by host).
    /// Then `labels` and `ts`: series-major, so a series' samples are adjacent, its
    /// timestamps step by the interval and its values change little from row to row,
    /// which the file's encodings turn into few bytes (issue 23 §1, a generated day with
    /// compaction's encodings: 1.58 B/sample series-major, 2.69 in (name, host, ts) order).
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            Table::Metrics => &["name", "host", "labels", "ts"],
            _ => &["host", "ts"],
        }
    }

    /// Rows per row group of a compacted file. `metrics` keeps row groups small enough
    /// for its `name` sort to pay off (a day of 5 hosts is ~3 M samples); the others get
    /// large ones, which compress better (dictionaries are per row group).
    pub fn row_group_rows(self) -> usize {
        match self {
            Table::Metrics => 131_072,
            _ => 1_048_576,
        }
    }

    /// Every built-in table, in catalog order.
    pub const ALL: [Table; 14] = [
        Table::Metrics,
        Table::Logs,
        Table::Http,
        Table::Firewall,
        Table::Bans,
        Table::Probes,
        Table::Alerts,
        Table::Packages,
        Table::Listeners,
        Table::Units,
        Table::Hosts,
        Table::Containers,
        Table::Spans,
        Table::Jobs,
    ];

    /// The table's name as used in SQL, URLs and paths.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Metrics => "metrics",
            Table::Logs => "logs",
            Table::Http => "http",
            Table::Firewall => "firewall",
            Table::Bans => "bans",
            Table::Probes => "probes",
            Table::Alerts => "alerts",
            Table::Packages => "packages",
            Table::Listeners => "listeners",
            Table::Units => "units",
            Table::Hosts => "hosts",
            Table::Containers => "containers",
            Table::Spans => "spans",
            Table::Jobs => "jobs",
        }
    }

    /// Whether only the lake itself writes this table (`alerts`: its alert history; `jobs`:
    /// what `/v1/jobs` accepted for a declared job and the late runs the lake found).
    /// Ingest endpoints refuse such tables, so no node can forge or bury their rows; a
    /// new table must say here who writes it.
    pub const fn written_by_lake(self) -> bool {
        match self {
            Table::Alerts | Table::Jobs => true,
            Table::Metrics
            | Table::Logs
            | Table::Http
            | Table::Firewall
            | Table::Bans
            | Table::Probes
            | Table::Packages
            | Table::Listeners
            | Table::Units
            | Table::Hosts
            | Table::Containers
            | Table::Spans => false,
        }
    }

    /// One line on what the table holds.
    pub const fn doc(self) -> &'static str {
        match self {
            Table::Metrics => "numeric samples, one row per sample (long format)",
            Table::Logs => "log lines from journald, OTLP and unparsed input of other sources",
            Table::Http => "HTTP requests from Caddy's JSON access log",
            Table::Firewall => {
                "packets logged by ufw, security events of Cloudflare ([[pull]], attrs source = cloudflare)"
            }
            Table::Bans => "fail2ban events",
            Table::Probes => "Tailscale pings and HTTP/TCP/TLS/ICMP/DNS uptime checks",
            Table::Alerts => "alert state transitions and notifications",
            Table::Packages => "installed packages, one row per change",
            Table::Listeners => "listening sockets, one row per change",
            Table::Units => "systemd units, one row per change",
            Table::Hosts => "machine description per node, one row per change",
            Table::Containers => "Docker container events: start, die, oom, restart, health changes, ...",
            Table::Spans => "OpenTelemetry trace spans, one row per span (OTLP /v1/traces)",
            Table::Jobs => {
                "runs of the jobs declared by [[jobs]]: start, success, fail, and late (a due run that did not come)"
            }
        }
    }

    fn extra_columns(self) -> &'static [Column] {
        match self {
            Table::Metrics => METRICS,
            Table::Logs => LOGS,
            Table::Http => HTTP,
            Table::Firewall => FIREWALL,
            Table::Bans => BANS,
            Table::Probes => PROBES,
            Table::Alerts => ALERTS,
            Table::Packages => PACKAGES,
            Table::Listeners => LISTENERS,
            Table::Units => UNITS,
            Table::Hosts => HOSTS,
            Table::Containers => CONTAINERS,
            Table::Spans => SPANS,
            Table::Jobs => JOBS,
        }
    }

    /// Every column of the table, `ts` and `host` first.
    pub fn columns(self) -> impl Iterator<Item = &'static Column> {
        COMMON.iter().chain(self.extra_columns())
    }

    /// The table's Arrow schema. Built on each call; cheap, but cache it on hot paths.
    pub fn schema(self) -> SchemaRef {
        let fields: Vec<Field> = self.columns().map(Column::field).collect();
        let meta = HashMap::from([
            ("table".to_string(), self.name().to_string()),
            (DOC_KEY.to_string(), self.doc().to_string()),
        ]);
        Arc::new(Schema::new_with_metadata(fields, meta))
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not one of the built-in tables.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown table {0:?} (known: metrics, logs, http, firewall, bans, probes, alerts, packages, listeners, units, hosts, containers, spans, jobs)")]
pub struct UnknownTable(pub String);

impl FromStr for Table {
    type Err = UnknownTable;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Table::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| UnknownTable(s.to_string()))
    }
}

/// The logical type of a column. Kept small on purpose: every type here maps one to one
/// onto a Parquet and a DuckDB type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// UTC timestamp, microsecond precision.
    Timestamp,
    /// UTF-8 text.
    Text,
    /// 64-bit float.
    Float,
    /// 64-bit signed integer.
    Int,
    /// Boolean.
    Bool,
    /// Map of text to text (`labels`, `attrs`).
    TextMap,
    /// List of text.
    TextList,
}

impl ColumnType {
    /// The Arrow type this column is stored as.
    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(TS_TZ.into())),
            ColumnType::Text => DataType::Utf8,
            ColumnType::Float => DataType::Float64,
            ColumnType::Int => DataType::Int64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::TextMap => text_map_type(),
            ColumnType::TextList => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        }
    }
}

/// The Arrow type of `labels` and `attrs`: `Map<Utf8, Utf8>` with the field names Arrow's
/// `MapBuilder` produces, so built arrays match the schema exactly.
pub fn text_map_type() -> DataType {
    let entries =
        Fields::from(vec![Field::new("keys", DataType::Utf8, false), Field::new("values", DataType::Utf8, true)]);
    DataType::Map(Arc::new(Field::new("entries", DataType::Struct(entries), false)), false)
}

/// One column of a catalog table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: &'static str,
    /// Logical type.
    pub ty: ColumnType,
    /// Whether the column may hold nulls.
    pub nullable: bool,
    /// What the column means, with its unit.
    pub doc: &'static str,
}

impl Column {
    /// The Arrow field for this column, documentation attached as metadata.
    pub fn field(&self) -> Field {
        Field::new(self.name, self.ty.data_type(), self.nullable)
            .with_metadata(HashMap::from([(DOC_KEY.to_string(), self.doc.to_string())]))
    }
}

const fn col(name: &'static str, ty: ColumnType, doc: &'static str) -> Column {
    Column { name, ty, nullable: true, doc }
}

const fn req(name: &'static str, ty: ColumnType, doc: &'static str) -> Column {
    Column { name, ty, nullable: false, doc }
}

use ColumnType::{Bool, Float, Int, Text, TextList, TextMap, Timestamp};

const COMMON: &[Column] = &[
    req("ts", Timestamp, "when it happened, UTC, microseconds"),
    req("host", Text, "node name of the collector (or sender) that observed it"),
];

const METRICS: &[Column] = &[
    req("name", Text, "metric name, e.g. cpu_usage_percent, net_rx_bytes_per_second"),
    req("value", Float, "sample value in the unit the name states"),
    col("labels", TextMap, "dimensions of the sample, e.g. {cpu: 0}, {mount: /}, {iface: eth0}"),
];

const LOGS: &[Column] = &[
    req("source", Text, "where the line came from: journald, otlp, caddy-unparsed, ..."),
    col("unit", Text, "systemd unit (_SYSTEMD_UNIT) or OTLP service.name"),
    col("ident", Text, "syslog identifier (SYSLOG_IDENTIFIER)"),
    col("pid", Int, "process id"),
    col("priority", Int, "syslog priority 0 (emerg) .. 7 (debug)"),
    col("message", Text, "the message; invalid UTF-8 replaced here and kept exact in attrs"),
    col("boot_id", Text, "journald boot id"),
    col("attrs", TextMap, "every other field of the entry"),
];

const HTTP: &[Column] = &[
    col("vhost", Text, "virtual host: request.host without port"),
    col("method", Text, "HTTP method"),
    col("uri", Text, "request URI: path and query"),
    col("path", Text, "path part of the URI"),
    col("proto", Text, "protocol, e.g. HTTP/2.0"),
    col("status", Int, "response status code"),
    col("size", Int, "response body bytes sent"),
    col("bytes_read", Int, "request body bytes read (Caddy 2.7+)"),
    col("duration_ms", Float, "time to handle the request, milliseconds"),
    col("remote_ip", Text, "peer address of the connection"),
    col("client_ip", Text, "client address after trusted proxies (Caddy 2.7+), else remote_ip"),
    col("user_agent", Text, "User-Agent header"),
    col("referer", Text, "Referer header"),
    col("tls_version", Text, "TLS version, e.g. 1.3; null for plain HTTP"),
    col("server_name", Text, "TLS SNI server name"),
    col(
        "client_class",
        Text,
        "who is behind the request: human, search_bot, ai_crawler, monitor, scanner or other_bot (from the user agent and the path)",
    ),
    col("client_name", Text, "the crawler, monitor or tool named by the user agent, e.g. GPTBot, Googlebot, Uptime-Kuma; null for browsers"),
    col("attrs", TextMap, "every other field of the log entry"),
];

const FIREWALL: &[Column] = &[
    req("action", Text, "BLOCK, ALLOW, AUDIT or LIMIT (ufw); BLOCK, ALLOW, AUDIT or CHALLENGE (Cloudflare)"),
    col(
        "source",
        Text,
        "who saw the packet: ufw (the node's own firewall, its kernel lines) or cloudflare (the edge's firewall \
         events, a [[pull]] with preset cloudflare); null in rows stored before the column existed",
    ),
    col("in_if", Text, "inbound interface (IN=)"),
    col("out_if", Text, "outbound interface (OUT=)"),
    col("src", Text, "source address"),
    col("dst", Text, "destination address"),
    col("proto", Text, "protocol: TCP, UDP, ICMP, ICMPv6 or a number"),
    col("src_port", Int, "source port (SPT=)"),
    col("dst_port", Int, "destination port (DPT=)"),
    col("len", Int, "packet length in bytes (LEN=)"),
    col("ttl", Int, "TTL or hop limit"),
    col("attrs", TextMap, "every other key and flag of the line"),
];

const BANS: &[Column] = &[
    col("jail", Text, "fail2ban jail, e.g. sshd"),
    req("action", Text, "found, ban, unban, restore, increase, already_banned, jail_started, ..."),
    col("ip", Text, "address concerned"),
    col("ban_count", Int, "how many times banned (Increase Ban), when given"),
    col("attrs", TextMap, "every other detail of the line"),
];

const PROBES: &[Column] = &[
    req("kind", Text, "tailscale, http, tcp, tls, icmp or dns"),
    req("target", Text, "what was probed: peer name, URL, host:port, address or DNS name"),
    req("ok", Bool, "whether the check passed"),
    col("latency_ms", Float, "round trip or response time, milliseconds"),
    col("path", Text, "tailscale: direct ip:port or DERP(region)"),
    col("status", Int, "HTTP status code"),
    col("cert_days_left", Float, "days until the TLS certificate expires"),
    col("error", Text, "why the check failed"),
    col("attrs", TextMap, "other details of the check"),
];

const ALERTS: &[Column] = &[
    req("rule", Text, "alert rule name"),
    req("state", Text, "ok, pending, firing, resolved, or a notification outcome"),
    col("value", Float, "value of the instance when evaluated"),
    col("labels", TextMap, "labels identifying the alert instance"),
    col("severity", Text, "severity of the rule"),
    col("message", Text, "rendered message"),
    col("channels", TextList, "notification channels involved"),
];

const PACKAGES: &[Column] = &[
    req("name", Text, "package name"),
    col("version", Text, "installed version"),
    col("arch", Text, "architecture"),
    col("manager", Text, "dpkg, rpm, ..."),
    req("change", Text, "installed, removed, upgraded, downgraded or present (first inventory)"),
    col("previous_version", Text, "version before an upgrade or downgrade"),
];

const LISTENERS: &[Column] = &[
    req("proto", Text, "tcp, tcp6, udp, udp6"),
    req("addr", Text, "listening address"),
    req("port", Int, "listening port"),
    col("process", Text, "process name"),
    col("pid", Int, "process id"),
    req("change", Text, "opened, closed or present (first inventory)"),
];

const UNITS: &[Column] = &[
    req("unit", Text, "systemd unit name"),
    col("load_state", Text, "loaded, not-found, ..."),
    col("active_state", Text, "active, inactive, failed, ..."),
    col("sub_state", Text, "running, exited, dead, ..."),
    req("change", Text, "started, stopped, failed, changed, added, removed or present (first inventory)"),
    col("description", Text, "the unit's description"),
];

const HOSTS: &[Column] = &[
    col("os", Text, "operating system name and version"),
    col("kernel", Text, "kernel version"),
    col("arch", Text, "CPU architecture"),
    col("cpus", Int, "logical CPU count"),
    col("memory_bytes", Int, "total memory, bytes"),
    col("collector_version", Text, "version of lake-collector"),
    col("attrs", TextMap, "other facts: OS id and version, machine id, boot id, packages asking for a reboot, ..."),
    col("reboot_required", Bool, "whether the OS asks for a reboot (/var/run/reboot-required exists)"),
];

const CONTAINERS: &[Column] = &[
    req("container", Text, "container name, without the leading /"),
    col("container_id", Text, "full container id (64 hex digits)"),
    col("image", Text, "image the container runs"),
    col("compose_project", Text, "docker compose project (label com.docker.compose.project); null when absent"),
    col("compose_service", Text, "docker compose service (label com.docker.compose.service); null when absent"),
    req("action", Text, "event: create, start, die, oom, kill, stop, restart, destroy, health_status, ..."),
    col("exit_code", Int, "exit code, for die"),
    col("health", Text, "health after a health_status event: healthy, unhealthy or starting"),
    col("attrs", TextMap, "every other attribute of the event: signal, labels, ..."),
];

/// Events and links are lists of JSON objects rather than a list-of-struct type: every
/// column type here maps one to one onto Parquet, DuckDB and each path rows take (the WAL's
/// Arrow IPC, the query engine's fresh-row tables, compaction's stand-ins), and a JSON text
/// keeps an event's attributes, whatever their number and types, readable with DuckDB's
/// `json_extract_string(e, '$.name')` over `unnest(events)`.
const SPANS: &[Column] = &[
    req("trace_id", Text, "trace id, 32 lowercase hex digits"),
    req("span_id", Text, "span id, 16 lowercase hex digits"),
    col("parent_span_id", Text, "the parent span's id (16 hex digits); null for a trace's root span"),
    req("name", Text, "span name, e.g. GET /api/orders, chat gpt-4o, SELECT shop.orders"),
    col("kind", Text, "internal, server, client, producer or consumer; null when unspecified, the number when not one of these"),
    col("duration_ns", Int, "end time minus start time (ts), nanoseconds; null when the end is missing or before the start"),
    req("status_code", Text, "unset, ok or error (the span's status)"),
    col("status_message", Text, "the status description, usually set with error"),
    col("service", Text, "the resource's service.name"),
    col("scope_name", Text, "instrumentation scope (tracer) name"),
    col("scope_version", Text, "instrumentation scope (tracer) version"),
    col("attrs", TextMap, "the span's attributes (non-string values as JSON text), trace_state, dropped counts, and lake.node (the sender's token node)"),
    col("resource_attrs", TextMap, "every attribute of the span's resource, under its OpenTelemetry name (service.name, host.name, telemetry.sdk.*, ...)"),
    col("events", TextList, "span events, each a JSON object {\"time\": RFC 3339 UTC with µs, \"name\": ..., \"attrs\": {...}}"),
    col("links", TextList, "links to other spans, each a JSON object {\"trace_id\": ..., \"span_id\": ..., \"trace_state\": ..., \"attrs\": {...}}"),
];

/// `ts` is when the lake received the event (its own clock: a sender's clock may be off,
/// and lateness is judged against the lake's); `host` is the node that ran the job (the
/// token's node), or `lake` for the lake's own runs and for late runs of a job that has
/// neither a `host` in `[[jobs]]` nor a run yet.
const JOBS: &[Column] = &[
    req("job", Text, "job name, as declared by [[jobs]] name in lake.toml"),
    req("event", Text, "start, success, fail, or late (the lake found no start or end of a due run within its grace)"),
    col("run_id", Text, "pairs a start with its end: given by the sender (run_id) or assigned by the lake at start"),
    col("exit_code", Int, "the command's exit code, when the sender gave it (run-job does)"),
    col(
        "duration_ms",
        Float,
        "for success and fail: how long the run took, milliseconds (as sent, else since its start)",
    ),
    col("output", Text, "the end of the run's output (the last 4 KiB, invalid UTF-8 replaced)"),
    req(
        "source",
        Text,
        "who sent it: http (/v1/jobs), run-job (lake-collector run-job), lake (the lake's own runs and late facts)",
    ),
    col("scheduled", Timestamp, "for late: the scheduled time of the run that did not come"),
    col(
        "max_duration_ms",
        Int,
        "the job's max_duration in lake.toml when the event was stored, milliseconds (job_slow compares with it)",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_starts_with_ts_and_host_and_documents_every_column() {
        for t in Table::ALL {
            let s = t.schema();
            assert_eq!(s.field(0).name(), "ts");
            assert_eq!(s.field(1).name(), "host");
            for f in s.fields() {
                assert!(!f.metadata()[DOC_KEY].is_empty(), "{t}.{} undocumented", f.name());
            }
            let mut names: Vec<_> = s.fields().iter().map(|f| f.name().clone()).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), s.fields().len(), "{t} has a duplicate column");
        }
    }

    #[test]
    fn names_round_trip() {
        for t in Table::ALL {
            assert_eq!(t.name().parse::<Table>().unwrap(), t);
        }
        let err = "metric".parse::<Table>().unwrap_err();
        assert!(err.to_string().contains("\"metric\""));
    }
}
