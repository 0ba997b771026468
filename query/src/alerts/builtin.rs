//! The rules every lake runs unless told otherwise, written against the catalog.
//!
//! | name | watches | value | fires when |
//! |---|---|---|---|
//! | `node_silent` | `metrics` rows per `[[nodes]]` node (the collector ships its own metrics every tick, whatever its sources) | seconds since the node's last row, counted from the lake's start at most | `> 120` |
//! | `filesystem_full` | the host source's `filesystem_used_ratio` per (host, mount) | latest ratio | `> 0.9` for 5m |
//! | `tls_expiring` | `probes.cert_days_left` per target (tls checks and https checks) | days left | `< 14` |
//! | `uptime_down` | latest `probes` result per (kind, target, vantage point) of http/tcp/tls/icmp/dns checks not marked `outside`, last 10 min | vantage points seeing it down | every one that probes it (or `vantage_points = N`) for 1m |
//! | `site_offline` | per host with checks marked `outside = true` (last 7 days): its last row (`metrics` or `probes`), and the latest result of each outside target (last 15 min) | seconds the site has been silent (power or uplink), else seconds since any outside target last answered when at least two are configured and every one fails (uplink only) | `> 180` |
//! | `http_5xx_ratio` | `http` per vhost, last 5 min, at least 20 requests | share of 5xx | `> 0.05` for 2m |
//! | `fail2ban_burst` | `bans` with action `ban` per host, last 10 min | bans | `>= 20` |
//! | `unit_failed` | latest `units` row per (host, unit), last 7 days | 1 | its `active_state` is `failed` |
//! | `public_listener_opened` | latest `listeners` row per (host, proto, addr, port), last day, on an address that is not loopback, link-local, RFC 1918 or Tailscale's | 1 | the socket was `opened` (not present at the first inventory) |
//! | `tailscale_relayed` | `probes` of kind `tailscale` per (host, peer) whose latest path is `DERP(…)` and that had a direct path in the last day | seconds since the last direct path | `> 600` |
//! | `container_restarting` | `containers` `start` events that follow a `die` of the same (host, container), last 10 min | restarts | `> 3` |
//! | `container_oom` | `containers` `oom` events per (host, container), last 10 min | OOM kills | `>= 1` |
//! | `container_unhealthy` | the latest `start`/`die`/`destroy`/`health_status` event per (host, container), last 7 days (Docker sends `health_status` only when the health changes) | seconds since it turned `unhealthy` | `> 120` |
//! | `compose_container_gone` | per (host, compose project, container) with an event in the last day: its latest lifecycle event (`start`, `restart`, `unpause`, `die`, `stop`, `kill`, `oom`, `destroy`), and whether the docker source sampled its stats (only running containers have some) in the last 5 min | seconds since its last event | `> 300` while the latest is not `start`/`restart`/`unpause` and no stats came |
//! | `cpu_saturated` | the host source's `cpu_usage_percent{cpu="total"}` per host, last 10 min (8 of them covered) | average busy % | `> 90` |
//! | `memory_saturated` | `memory_available_bytes` / `memory_total_bytes` per host, last 10 min (8 of them covered) | average share used | `> 0.95` |
//! | `swap_growing` | `swap_used_bytes` per host, last 30 min (25 of them covered), in use now | MiB it grew by | `> 256` |
//! | `oom_kill` | the kernel's `Out of memory: Killed process …` lines in `logs` (ident `kernel`) per host, last 10 min | kills | `>= 1` |
//! | `error_log_burst` | `logs` of priority err or worse per (host, unit), last 10 min, against the unit's usual 10 minutes over the day before | lines | `>= 50` and at least 5 times the usual |
//! | `reboot_required` | the inventory's `hosts.reboot_required` per host, last 30 days | days it has asked since it last did not | `> 7` |
//! | `tailscale_peer_unreachable` | `probes` of kind `tailscale` per (host, peer), last day, whose latest ping failed | seconds since its last good ping (or its first failed one) | `> 300` |
//! | `ups_on_battery` | the `[[ups]]` source's latest `nut_ups_status{flag="OB"}` per (host, ups), last 10 min | 1 on battery | `>= 1` for 30s |
//! | `ups_low_battery` | the same for `LB` (low battery: the UPS will shut down soon) | 1 low | `>= 1` |
//! | `job_late` | the latest `jobs` row per `[[jobs]]` job, last 40 days (the lake writes `late` when a due run's grace passed with no start or end) | seconds since the run was due | `>= 0` while the latest is `late` |
//! | `job_failed` | the latest end (`success`/`fail`) per (host, job), last 40 days | 1 | it is `fail` |
//! | `job_slow` | per (host, job): its latest end in the last day, or its latest start still running | seconds it took (or has run) | more than `max_duration`, else more than 3 times the median of its earlier successful runs (5 at least) |
//! | `alert_rule_failing` | the evaluations of every other rule (no SQL: the lake's evaluator reports them, so it works when the engine does not) | failed evaluations of the rule in a row | `>= 2` |
//!
//! Each is overridden field by field with a `[[rules]]` entry of the same name, or
//! switched off with `enabled = false`. `$__lake_started` in any rule's SQL is replaced
//! by the lake process's start time (a `TIMESTAMPTZ`): a node that has not reported since
//! the lake started counts as silent from then, not from the epoch.

use std::time::Duration;

use super::eval::Observation;
use super::rules::{RuleKind, Severity};
use super::Labels;

/// `node_silent`.
pub const NODE_SILENT: &str = "node_silent";
/// `filesystem_full`.
pub const FILESYSTEM_FULL: &str = "filesystem_full";
/// `tls_expiring`.
pub const TLS_EXPIRING: &str = "tls_expiring";
/// `uptime_down`.
pub const UPTIME_DOWN: &str = "uptime_down";
/// `http_5xx_ratio`.
pub const HTTP_5XX_RATIO: &str = "http_5xx_ratio";
/// `fail2ban_burst`.
pub const FAIL2BAN_BURST: &str = "fail2ban_burst";
/// `tailscale_relayed`.
pub const TAILSCALE_RELAYED: &str = "tailscale_relayed";
/// `unit_failed`.
pub const UNIT_FAILED: &str = "unit_failed";
/// `public_listener_opened`.
pub const PUBLIC_LISTENER_OPENED: &str = "public_listener_opened";
/// `container_restarting`.
pub const CONTAINER_RESTARTING: &str = "container_restarting";
/// `container_oom`.
pub const CONTAINER_OOM: &str = "container_oom";
/// `container_unhealthy`.
pub const CONTAINER_UNHEALTHY: &str = "container_unhealthy";
/// `compose_container_gone`.
pub const COMPOSE_CONTAINER_GONE: &str = "compose_container_gone";
/// `cpu_saturated`.
pub const CPU_SATURATED: &str = "cpu_saturated";
/// `memory_saturated`.
pub const MEMORY_SATURATED: &str = "memory_saturated";
/// `swap_growing`.
pub const SWAP_GROWING: &str = "swap_growing";
/// `oom_kill`.
pub const OOM_KILL: &str = "oom_kill";
/// `error_log_burst`.
pub const ERROR_LOG_BURST: &str = "error_log_burst";
/// `reboot_required`.
pub const REBOOT_REQUIRED: &str = "reboot_required";
/// `tailscale_peer_unreachable`.
pub const TAILSCALE_PEER_UNREACHABLE: &str = "tailscale_peer_unreachable";
/// `ups_on_battery`.
pub const UPS_ON_BATTERY: &str = "ups_on_battery";
/// `ups_low_battery`.
pub const UPS_LOW_BATTERY: &str = "ups_low_battery";
/// `job_late`.
pub const JOB_LATE: &str = "job_late";
/// `job_failed`.
pub const JOB_FAILED: &str = "job_failed";
/// `job_slow`.
pub const JOB_SLOW: &str = "job_slow";
/// `alert_rule_failing`.
pub const ALERT_RULE_FAILING: &str = "alert_rule_failing";
/// `site_offline`.
pub const SITE_OFFLINE: &str = "site_offline";

/// Names of the built-in rules.
pub const BUILTIN_NAMES: [&str; 27] = [
    NODE_SILENT,
    FILESYSTEM_FULL,
    TLS_EXPIRING,
    UPTIME_DOWN,
    HTTP_5XX_RATIO,
    FAIL2BAN_BURST,
    TAILSCALE_RELAYED,
    UNIT_FAILED,
    PUBLIC_LISTENER_OPENED,
    CONTAINER_RESTARTING,
    CONTAINER_OOM,
    CONTAINER_UNHEALTHY,
    COMPOSE_CONTAINER_GONE,
    CPU_SATURATED,
    MEMORY_SATURATED,
    SWAP_GROWING,
    OOM_KILL,
    ERROR_LOG_BURST,
    REBOOT_REQUIRED,
    TAILSCALE_PEER_UNREACHABLE,
    UPS_ON_BATTERY,
    UPS_LOW_BATTERY,
    JOB_LATE,
    JOB_FAILED,
    JOB_SLOW,
    ALERT_RULE_FAILING,
    SITE_OFFLINE,
];

/// The placeholder replaced by the lake's start time.
pub const LAKE_STARTED: &str = "$__lake_started";

/// A shipped rule before overrides.
#[derive(Debug, Clone)]
pub struct BuiltinRule {
    /// Name.
    pub name: &'static str,
    /// What it watches.
    pub description: &'static str,
    /// Query (empty for a rule that is not SQL).
    pub sql: String,
    /// What it evaluates.
    pub kind: RuleKind,
    /// Condition text.
    pub condition: &'static str,
    /// `for`.
    pub for_: Duration,
    /// `every`.
    pub every: Duration,
    /// Severity.
    pub severity: Severity,
    /// Message template.
    pub message: &'static str,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The built-in rules for a lake whose `[[nodes]]` are `nodes`; `vantage_points` is
/// `uptime_down`'s threshold (0 = every vantage point that probes the target).
pub fn defaults(nodes: &[String], vantage_points: u32) -> Vec<BuiltinRule> {
    vec![
        BuiltinRule {
            name: NODE_SILENT,
            description: "a configured node's collector has sent no rows for 2 minutes (dead-man's switch)",
            sql: node_silent_sql(nodes),
            kind: RuleKind::Sql,
            condition: "> 120",
            for_: secs(0),
            every: secs(30),
            severity: Severity::Critical,
            message: "{{ labels.host }} has sent nothing for {{ value | duration }} (last row: {{ details.last_seen }})",
        },
        BuiltinRule {
            name: FILESYSTEM_FULL,
            description: "a filesystem is more than 90% full",
            sql: r#"
SELECT host, labels['mount'] AS mount, arg_max(value, ts) AS value, arg_max(labels['device'], ts) AS _device
FROM metrics
WHERE name = 'filesystem_used_ratio' AND ts > now() - INTERVAL 15 MINUTE
GROUP BY 1, 2"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: "> 0.9",
            for_: secs(300),
            every: secs(60),
            severity: Severity::Warning,
            message: "{{ labels.host }}: {{ labels.mount }} is {{ value | percent }} full",
        },
        BuiltinRule {
            name: TLS_EXPIRING,
            description: "a TLS certificate seen by an uptime check expires within 14 days",
            sql: r#"
SELECT target, arg_max(cert_days_left, ts) AS value, arg_max(attrs['cert_not_after'], ts) AS _not_after
FROM probes
WHERE cert_days_left IS NOT NULL AND ts > now() - INTERVAL 1 DAY
GROUP BY target"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: "< 14",
            for_: secs(0),
            every: secs(300),
            severity: Severity::Warning,
            message: "the certificate of {{ labels.target }} expires in {{ value | days }} ({{ details.not_after }})",
        },
        BuiltinRule {
            name: UPTIME_DOWN,
            description: "an uptime target is down from enough vantage points (default: all that probe it)",
            sql: uptime_down_sql(vantage_points),
            kind: RuleKind::Sql,
            condition: ">= 1",
            for_: secs(60),
            every: secs(30),
            severity: Severity::Critical,
            message: "{{ labels.target }} is down from {{ value }} of {{ details.vantage_points }} vantage point(s) ({{ details.down_from }}): {{ details.error }}",
        },
        BuiltinRule {
            name: HTTP_5XX_RATIO,
            description: "more than 5% of a vhost's responses are 5xx (last 5 minutes, at least 20 requests)",
            sql: r#"
SELECT vhost,
       count(*) FILTER (WHERE status >= 500) / count(*) AS value,
       count(*) AS _requests,
       count(*) FILTER (WHERE status >= 500) AS _errors
FROM http
WHERE ts > now() - INTERVAL 5 MINUTE AND vhost IS NOT NULL
GROUP BY vhost
HAVING count(*) >= 20"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: "> 0.05",
            for_: secs(120),
            every: secs(60),
            severity: Severity::Warning,
            message: "{{ labels.vhost }}: {{ value | percent }} of {{ details.requests }} requests answered 5xx in the last 5 minutes",
        },
        BuiltinRule {
            name: FAIL2BAN_BURST,
            description: "a burst of fail2ban bans on a host (20 in 10 minutes)",
            sql: r#"
SELECT host, count(*) AS value, string_agg(DISTINCT jail, ', ') AS _jails
FROM bans
WHERE action = 'ban' AND ts > now() - INTERVAL 10 MINUTE
GROUP BY host"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: ">= 20",
            for_: secs(0),
            every: secs(60),
            severity: Severity::Info,
            message: "{{ labels.host }}: {{ value }} fail2ban bans in 10 minutes (jails: {{ details.jails }})",
        },
        BuiltinRule {
            name: TAILSCALE_RELAYED,
            description: "a Tailscale peer has been relayed through DERP for 10 minutes after being direct",
            sql: r#"
WITH p AS (
    SELECT host, target, ts, path, starts_with(path, 'DERP(') AS relayed
    FROM probes
    WHERE kind = 'tailscale' AND ok AND path IS NOT NULL AND ts > now() - INTERVAL 1 DAY
), s AS (
    SELECT host, target,
           max(ts) FILTER (WHERE NOT relayed) AS last_direct,
           arg_max(relayed, ts) AS relayed_now,
           arg_max(path, ts) AS path,
           max(ts) AS last
    FROM p
    GROUP BY host, target
)
SELECT host, target, epoch(now()) - epoch(last_direct) AS value, path AS _path
FROM s
WHERE relayed_now AND last_direct IS NOT NULL AND last > now() - INTERVAL 10 MINUTE"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: "> 600",
            for_: secs(0),
            every: secs(60),
            severity: Severity::Warning,
            message: "{{ labels.host }} reaches {{ labels.target }} through {{ details.path }} for {{ value | duration }}; it was direct before",
        },
        BuiltinRule {
            name: UNIT_FAILED,
            description: "a systemd unit entered the failed state",
            sql: r#"
SELECT host, unit, 1 AS value, arg_max(sub_state, ts) AS _sub_state, arg_max(description, ts) AS _description
FROM units
WHERE ts > now() - INTERVAL 7 DAY
GROUP BY host, unit
HAVING arg_max(active_state, ts) = 'failed'"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: ">= 1",
            for_: secs(0),
            every: secs(30),
            severity: Severity::Warning,
            message: "{{ labels.host }}: {{ labels.unit }} failed ({{ details.sub_state }}: {{ details.description }})",
        },
        BuiltinRule {
            name: PUBLIC_LISTENER_OPENED,
            description: "a new listening socket appeared on an address reachable from outside (not loopback, link-local, RFC 1918 or Tailscale)",
            sql: r#"
WITH l AS (
    SELECT host, proto, addr, port,
           arg_max(change, ts) AS last_change, arg_max(process, ts) AS process, max(ts) AS since
    FROM listeners
    WHERE ts > now() - INTERVAL 1 DAY
    GROUP BY host, proto, addr, port
)
SELECT host, proto, addr, port::VARCHAR AS port, 1 AS value, coalesce(process, '?') AS _process, since AS _since
FROM l
WHERE last_change = 'opened'
  AND NOT (addr LIKE '127.%' OR addr = '::1' OR addr LIKE '10.%' OR addr LIKE '192.168.%'
           OR regexp_matches(addr, '^172[.](1[6-9]|2[0-9]|3[01])[.]')
           OR regexp_matches(addr, '^100[.](6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])[.]')
           OR lower(addr) LIKE 'fe80:%' OR lower(addr) LIKE 'fd7a:115c:a1e0:%' OR lower(addr) LIKE '::ffff:127.%')"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: ">= 1",
            for_: secs(0),
            every: secs(60),
            severity: Severity::Warning,
            message: "{{ labels.host }}: {{ details.process }} listens on {{ labels.proto }} {{ labels.addr }}:{{ labels.port }} (opened {{ details.since }})",
        },
        BuiltinRule {
            name: CONTAINER_RESTARTING,
            description: "a container restarted more than 3 times in 10 minutes (a crash loop)",
            sql: r#"
WITH e AS (
    SELECT host, container, ts, action, image, compose_project,
           lag(action) OVER (PARTITION BY host, container ORDER BY ts) AS before
    FROM containers
    WHERE action IN ('start', 'die') AND ts > now() - INTERVAL 1 HOUR
)
SELECT host, container, count(*) AS value,
       coalesce(arg_max(image, ts), '?') AS _image, coalesce(arg_max(compose_project, ts), '-') AS _compose_project
FROM e
WHERE action = 'start' AND before = 'die' AND ts > now() - INTERVAL 10 MINUTE
GROUP BY host, container"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: "> 3",
            for_: secs(0),
            every: secs(30),
            severity: Severity::Warning,
            message: "{{ labels.host }}: container {{ labels.container }} ({{ details.image }}) restarted {{ value }} times in 10 minutes",
        },
        BuiltinRule {
            name: CONTAINER_OOM,
            description: "a container was killed for running out of memory (last 10 minutes)",
            sql: r#"
SELECT host, container, count(*) AS value, max(ts) AS _last, coalesce(arg_max(image, ts), '?') AS _image
FROM containers
WHERE action = 'oom' AND ts > now() - INTERVAL 10 MINUTE
GROUP BY host, container"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: ">= 1",
            for_: secs(0),
            every: secs(30),
            severity: Severity::Warning,
            message: "{{ labels.host }}: container {{ labels.container }} ({{ details.image }}) was OOM-killed {{ value }} time(s) in 10 minutes (last {{ details.last }})",
        },
        BuiltinRule {
            name: CONTAINER_UNHEALTHY,
            description: "a container's health check has said unhealthy for 2 minutes",
            sql: r#"
WITH l AS (
    SELECT host, container, arg_max(action, ts) AS action, arg_max(health, ts) AS health, max(ts) AS since
    FROM containers
    WHERE action IN ('health_status', 'start', 'die', 'destroy') AND ts > now() - INTERVAL 7 DAY
    GROUP BY host, container
)
SELECT host, container, epoch(now()) - epoch(since) AS value, since AS _since
FROM l
WHERE action = 'health_status' AND health = 'unhealthy'"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: "> 120",
            for_: secs(0),
            every: secs(30),
            severity: Severity::Warning,
            message: "{{ labels.host }}: container {{ labels.container }} has been unhealthy for {{ value | duration }} (since {{ details.since }})",
        },
        BuiltinRule {
            name: COMPOSE_CONTAINER_GONE,
            description: "a container of a compose project that ran in the last day is not running (its last event is a stop, and no stats for 5 minutes)",
            sql: r#"
WITH l AS (
    SELECT host, compose_project, container,
           arg_max(action, ts) AS action, max(ts) AS last, arg_max(compose_service, ts) AS service
    FROM containers
    WHERE compose_project IS NOT NULL AND ts > now() - INTERVAL 1 DAY
      AND action IN ('start', 'restart', 'unpause', 'die', 'stop', 'kill', 'oom', 'destroy')
    GROUP BY host, compose_project, container
), running AS (
    SELECT DISTINCT host, labels['container'] AS container
    FROM metrics
    WHERE name = 'container_restart_count' AND ts > now() - INTERVAL 5 MINUTE
)
SELECT l.host, l.compose_project, l.container, epoch(now()) - epoch(l.last) AS value,
       coalesce(l.service, '?') AS _service, l.action AS _last_action
FROM l LEFT JOIN running r ON r.host = l.host AND r.container = l.container
WHERE l.action NOT IN ('start', 'restart', 'unpause') AND r.container IS NULL"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: "> 300",
            for_: secs(0),
            every: secs(60),
            severity: Severity::Warning,
            message: "{{ labels.host }}: {{ labels.container }} (service {{ details.service }} of compose project {{ labels.compose_project }}) is gone for {{ value | duration }} (last event: {{ details.last_action }})",
        },
        BuiltinRule {
            name: CPU_SATURATED,
            description: "a host's CPUs have been more than 90% busy on average for 10 minutes",
            sql: r#"
SELECT host, avg(value) AS value
FROM metrics
WHERE name = 'cpu_usage_percent' AND labels['cpu'] = 'total' AND ts > now() - INTERVAL 10 MINUTE
GROUP BY host
HAVING min(ts) < now() - INTERVAL 8 MINUTE"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: "> 90",
            for_: secs(0),
            every: secs(60),
            severity: Severity::Warning,
            message: "{{ labels.host }}: CPU {{ value | round }}% busy on average for 10 minutes",
        },
        BuiltinRule {
            name: MEMORY_SATURATED,
            description: "a host has had less than 5% of its memory available on average for 10 minutes",
            sql: r#"
WITH m AS (
    SELECT host, ts,
           max(value) FILTER (WHERE name = 'memory_available_bytes') AS available,
           max(value) FILTER (WHERE name = 'memory_total_bytes') AS total
    FROM metrics
    WHERE name IN ('memory_available_bytes', 'memory_total_bytes') AND ts > now() - INTERVAL 10 MINUTE
    GROUP BY host, ts
)
SELECT host, 1 - avg(available / total) AS value
FROM m
WHERE total > 0 AND available IS NOT NULL
GROUP BY host
HAVING min(ts) < now() - INTERVAL 8 MINUTE"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: "> 0.95",
            for_: secs(0),
            every: secs(60),
            severity: Severity::Warning,
            message: "{{ labels.host }}: {{ value | percent }} of memory in use on average for 10 minutes",
        },
        BuiltinRule {
            name: SWAP_GROWING,
            description: "a host's swap is in use and grew by more than 256 MiB in 30 minutes (memory pressure building)",
            sql: r#"
SELECT host, (arg_max(value, ts) - arg_min(value, ts)) / 1048576 AS value,
       CAST(round(arg_max(value, ts) / 1048576) AS BIGINT) AS _used_mib
FROM metrics
WHERE name = 'swap_used_bytes' AND ts > now() - INTERVAL 30 MINUTE
GROUP BY host
HAVING min(ts) < now() - INTERVAL 25 MINUTE AND arg_max(value, ts) > 0"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: "> 256",
            for_: secs(0),
            every: secs(60),
            severity: Severity::Warning,
            message: "{{ labels.host }}: swap grew by {{ value | round }} MiB in 30 minutes ({{ details.used_mib }} MiB in use)",
        },
        BuiltinRule {
            name: OOM_KILL,
            description: "the kernel killed a process for lack of memory (its journal's OOM lines, last 10 minutes)",
            sql: r#"
SELECT host, count(*) AS value, max(ts) AS _last,
       coalesce(nullif(arg_max(regexp_extract(message, 'Killed process [0-9]+ \(([^)]*)\)', 1), ts), ''), '?') AS _process
FROM logs
WHERE ident = 'kernel' AND ts > now() - INTERVAL 10 MINUTE
  AND regexp_matches(message, '^(Memory cgroup )?[Oo]ut of memory: Kill(ed)? process')
GROUP BY host"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: ">= 1",
            for_: secs(0),
            every: secs(30),
            severity: Severity::Warning,
            message: "{{ labels.host }}: the kernel OOM-killed {{ value }} process(es) in 10 minutes (last: {{ details.process }} at {{ details.last }})",
        },
        BuiltinRule {
            name: ERROR_LOG_BURST,
            description: "a unit logged at least 50 errors in 10 minutes, five times its usual rate over the day before",
            sql: r#"
WITH recent AS (
    SELECT host, coalesce(unit, ident, source) AS unit, count(*) AS n
    FROM logs
    WHERE priority <= 3 AND ts > now() - INTERVAL 10 MINUTE
    GROUP BY 1, 2
), usual AS (
    SELECT host, coalesce(unit, ident, source) AS unit, count(*) / 143.0 AS per_10min
    FROM logs
    WHERE priority <= 3 AND ts > now() - INTERVAL 1 DAY AND ts <= now() - INTERVAL 10 MINUTE
    GROUP BY 1, 2
)
SELECT r.host, r.unit, r.n AS value, round(coalesce(u.per_10min, 0), 1) AS _usual
FROM recent r LEFT JOIN usual u ON u.host = r.host AND u.unit = r.unit
WHERE r.n >= 5 * coalesce(u.per_10min, 0)"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: ">= 50",
            for_: secs(0),
            every: secs(60),
            severity: Severity::Warning,
            message: "{{ labels.host }}: {{ labels.unit }} logged {{ value }} errors in 10 minutes (usually {{ details.usual }})",
        },
        BuiltinRule {
            name: REBOOT_REQUIRED,
            description: "a host has asked for a reboot (/var/run/reboot-required) for more than 7 days",
            sql: r#"
WITH h AS (
    SELECT host, ts, reboot_required, attrs['reboot_required_pkgs'] AS pkgs
    FROM hosts
    WHERE ts > now() - INTERVAL 30 DAY
), s AS (
    SELECT host, arg_max(reboot_required, ts) AS required_now, max(ts) FILTER (WHERE NOT reboot_required) AS last_not,
           arg_max(pkgs, ts) AS pkgs
    FROM h
    GROUP BY host
)
SELECT h.host, (epoch(now()) - epoch(min(h.ts))) / 86400 AS value, coalesce(any_value(s.pkgs), '?') AS _packages
FROM h JOIN s ON s.host = h.host
WHERE s.required_now AND h.reboot_required AND (s.last_not IS NULL OR h.ts > s.last_not)
GROUP BY h.host"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: "> 7",
            for_: secs(0),
            every: secs(3600),
            severity: Severity::Info,
            message: "{{ labels.host }} has asked for a reboot for {{ value | days }} (packages: {{ details.packages }})",
        },
        BuiltinRule {
            name: TAILSCALE_PEER_UNREACHABLE,
            description: "a Tailscale peer has not answered a ping for 5 minutes",
            sql: r#"
WITH p AS (
    SELECT host, target, ts, ok, error
    FROM probes
    WHERE kind = 'tailscale' AND ts > now() - INTERVAL 1 DAY
), s AS (
    SELECT host, target, arg_max(ok, ts) AS ok_now, max(ts) FILTER (WHERE ok) AS last_ok,
           min(ts) FILTER (WHERE NOT ok) AS first_failed, max(ts) AS last, arg_max(error, ts) AS error
    FROM p
    GROUP BY host, target
)
SELECT host, target, epoch(now()) - epoch(coalesce(last_ok, first_failed)) AS value, coalesce(error, '?') AS _error
FROM s
WHERE NOT ok_now AND last > now() - INTERVAL 10 MINUTE"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: "> 300",
            for_: secs(0),
            every: secs(60),
            severity: Severity::Warning,
            message: "{{ labels.host }} cannot reach Tailscale peer {{ labels.target }} for {{ value | duration }} ({{ details.error }})",
        },
        BuiltinRule {
            name: UPS_ON_BATTERY,
            description: "a UPS (the [[ups]] source) has been on battery for 30 seconds: the mains are down",
            sql: ups_flag_sql("OB"),
            kind: RuleKind::Sql,
            condition: ">= 1",
            for_: secs(30),
            every: secs(15),
            severity: Severity::Warning,
            message: "{{ labels.host }}: UPS {{ labels.ups }} is on battery ({{ details.charge }}% charge, {{ details.runtime }} s of runtime left)",
        },
        BuiltinRule {
            name: UPS_LOW_BATTERY,
            description: "a UPS (the [[ups]] source) reports low battery: what it powers shuts down soon",
            sql: ups_flag_sql("LB"),
            kind: RuleKind::Sql,
            condition: ">= 1",
            for_: secs(0),
            every: secs(15),
            severity: Severity::Critical,
            message: "{{ labels.host }}: UPS {{ labels.ups }} has a low battery ({{ details.charge }}% charge, {{ details.runtime }} s of runtime left)",
        },
        BuiltinRule {
            name: JOB_LATE,
            description: "a job of [[jobs]] did not start (nor end) within its grace after a due time",
            sql: r#"
WITH latest AS (
    SELECT job, host, event, scheduled
    FROM jobs
    WHERE ts > now() - INTERVAL 40 DAY
    QUALIFY row_number() OVER (PARTITION BY job ORDER BY ts DESC) = 1
)
SELECT job, epoch(now()) - epoch(scheduled) AS value,
       strftime(scheduled, '%Y-%m-%d %H:%M:%S UTC') AS _due, host AS _host
FROM latest
WHERE event = 'late' AND scheduled IS NOT NULL"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: ">= 0",
            for_: secs(0),
            every: secs(30),
            severity: Severity::Warning,
            message: "job {{ labels.job }} is late: the run due {{ details.due }} has not reported, {{ value | duration }} after its due time (host {{ details.host }})",
        },
        BuiltinRule {
            name: JOB_FAILED,
            description: "the latest run of a job of [[jobs]] failed",
            sql: r#"
WITH latest AS (
    SELECT host, job, event, exit_code, output, ts
    FROM jobs
    WHERE event IN ('success', 'fail') AND ts > now() - INTERVAL 40 DAY
    QUALIFY row_number() OVER (PARTITION BY host, job ORDER BY ts DESC) = 1
)
SELECT host, job, 1 AS value, coalesce(exit_code::VARCHAR, '?') AS _exit_code,
       strftime(ts, '%Y-%m-%d %H:%M:%S UTC') AS _at,
       coalesce(nullif(regexp_extract(rtrim(coalesce(output, ''), chr(10)), '[^\n]*$'), ''), '(no output)') AS _last_line
FROM latest
WHERE event = 'fail'"#
                .trim()
                .to_string(),
            kind: RuleKind::Sql,
            condition: ">= 1",
            for_: secs(0),
            every: secs(30),
            severity: Severity::Warning,
            message: "{{ labels.host }}: job {{ labels.job }} failed at {{ details.at }} (exit code {{ details.exit_code }}): {{ details.last_line }}",
        },
        BuiltinRule {
            name: JOB_SLOW,
            description: "a run of a job of [[jobs]] took far longer than usual: past its max_duration, else 3 times its median run",
            sql: JOB_SLOW_SQL.trim().to_string(),
            kind: RuleKind::Sql,
            condition: "> 0",
            for_: secs(0),
            every: secs(60),
            severity: Severity::Warning,
            message: "{{ labels.host }}: job {{ labels.job }} {{ details.state }} {{ value | duration }}, more than {{ details.limit }}",
        },
        BuiltinRule {
            name: ALERT_RULE_FAILING,
            description: "an alert rule failed to evaluate twice in a row (SQL error, time-out, engine down): what it watches is unwatched",
            sql: String::new(),
            kind: RuleKind::RuleFailures,
            condition: ">= 2",
            for_: secs(0),
            every: secs(30),
            severity: Severity::Critical,
            message: "rule {{ labels.failing_rule }} failed {{ value }} evaluations in a row (since {{ details.since }}): {{ details.error }}",
        },
        BuiltinRule {
            name: SITE_OFFLINE,
            description: "a site whose collector probes outside targets (`outside = true`) is offline: silent (power or uplink) or running with every outside target unreachable (uplink only)",
            sql: SITE_OFFLINE_SQL.trim().to_string(),
            kind: RuleKind::Sql,
            condition: "> 180",
            for_: secs(0),
            every: secs(30),
            severity: Severity::Critical,
            message: "{{ labels.host }} offline for {{ value | duration }}: {{ details.cause }} ({{ details.detail }})",
        },
    ]
}

/// `site_offline`: a site is a host whose checks include outside targets. Silent first
/// (no row for 2 minutes, counted as `node_silent` does: from its last row or the lake's
/// start), then "uplink": at least two outside targets, the latest result of each a
/// failure, valued from the last time any of them answered (the rows say when, whenever
/// the lake started). With one outside target a
/// failure may be that target's; two different ones failing together is the uplink.
///
/// The lake hears a collector whose uplink is down only through another path (the lake
/// at the site, a second uplink); otherwise the site is silent until the uplink returns,
/// and the spooled rows then show the outage as probes failing while the collector ran
/// (the `site` Grafana/`lake query` view of it), where a power cut leaves a gap.
const SITE_OFFLINE_SQL: &str = r#"
WITH outside AS (
    SELECT host, target, ts, ok, error
    FROM probes
    WHERE attrs['outside'] = 'true' AND ts > now() - INTERVAL 7 DAY
),
sites AS (
    SELECT host, max(ts) AS last_probe, max(ts) FILTER (WHERE ok) AS last_ok, min(ts) AS first_seen
    FROM outside
    GROUP BY host
),
heartbeat AS (
    SELECT host, max(ts) AS last
    FROM metrics
    WHERE ts > now() - INTERVAL 7 DAY AND host IN (SELECT host FROM sites)
    GROUP BY host
),
latest AS (
    SELECT host, target, arg_max(ok, ts) AS ok, arg_max(error, ts) AS error
    FROM outside
    WHERE ts > now() - INTERVAL 15 MINUTE
    GROUP BY host, target
),
targets AS (
    SELECT host, count(*) AS n, count(*) FILTER (WHERE NOT ok) AS failing,
           string_agg(target || ': ' || coalesce(error, 'failed'), '; ' ORDER BY target) AS errors
    FROM latest
    GROUP BY host
),
state AS (
    SELECT sites.host,
           greatest(sites.last_probe, coalesce(heartbeat.last, sites.last_probe)) AS last_row,
           sites.last_ok, sites.first_seen, targets.n, targets.failing, targets.errors
    FROM sites LEFT JOIN heartbeat USING (host) LEFT JOIN targets USING (host)
)
SELECT host,
       CASE
           WHEN epoch(now()) - epoch(last_row) > 120
               THEN epoch(now()) - epoch(greatest(last_row, $__lake_started))
           WHEN n >= 2 AND failing = n
               THEN epoch(now()) - epoch(coalesce(last_ok, first_seen))
           ELSE 0
       END AS value,
       CASE
           WHEN epoch(now()) - epoch(last_row) > 120 THEN 'silent: no rows from its collector, power or uplink down'
           WHEN n >= 2 AND failing = n THEN 'uplink down: its collector runs, every outside target is unreachable'
           ELSE 'online'
       END AS _cause,
       CASE
           WHEN epoch(now()) - epoch(last_row) > 120 THEN 'last row ' || strftime(last_row, '%Y-%m-%d %H:%M:%S UTC')
           ELSE coalesce(errors, 'no outside probe in 15 minutes')
       END AS _detail
FROM state"#;

/// A rule whose latest evaluations failed, as the lake's evaluator saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingRule {
    /// The rule's name.
    pub rule: String,
    /// Evaluations that failed in a row (the latest included).
    pub failures: u32,
    /// When the first of them failed (µs).
    pub since: i64,
    /// The latest error.
    pub error: String,
}

/// The instances `alert_rule_failing` sees: one per failing rule, labelled
/// `failing_rule`, valued by its failures in a row, with `error` and `since` as details
/// (an error text that changes, e.g. naming a row count or a file, must not make a new
/// alert; the message shows it). A rule that evaluates again is not observed, so its
/// instance resolves.
pub fn rule_failures(failing: &[FailingRule]) -> Vec<Observation> {
    failing
        .iter()
        .filter(|f| f.failures > 0)
        .map(|f| Observation {
            labels: Labels::from([("failing_rule".to_string(), f.rule.clone())]),
            details: Labels::from([
                ("error".to_string(), f.error.clone()),
                ("since".to_string(), super::format_time(f.since)),
            ]),
            value: f64::from(f.failures),
        })
        .collect()
}

/// `job_slow`: the latest end of each (host, job) in the last day against its
/// `max_duration_ms` (carried by the row) or, without one, 3 times the median of the
/// successful runs before it (at least 5 of them); and its latest start, when still open,
/// against `max_duration_ms` (a run that hangs). One instance per (host, job): the larger.
const JOB_SLOW_SQL: &str = r#"
WITH ends AS (
    SELECT host, job, ts, event, duration_ms, max_duration_ms
    FROM jobs
    WHERE event IN ('success', 'fail') AND duration_ms IS NOT NULL AND ts > now() - INTERVAL 40 DAY
), latest AS (
    SELECT * FROM ends QUALIFY row_number() OVER (PARTITION BY host, job ORDER BY ts DESC) = 1
), usual AS (
    SELECT e.host, e.job, median(e.duration_ms) AS median_ms, count(*) AS runs
    FROM ends e JOIN latest l ON e.host = l.host AND e.job = l.job
    WHERE e.event = 'success' AND e.ts < l.ts
    GROUP BY e.host, e.job
), finished AS (
    SELECT l.host, l.job, l.duration_ms / 1000 AS value, 'took' AS state,
           CASE WHEN l.max_duration_ms IS NOT NULL
                THEN 'its max_duration (' || round(l.max_duration_ms / 1000, 1) || ' s)'
                ELSE '3 times its median run (' || round(u.median_ms / 1000, 1) || ' s over ' || u.runs || ' runs)' END AS lim
    FROM latest l LEFT JOIN usual u ON u.host = l.host AND u.job = l.job
    WHERE l.ts > now() - INTERVAL 1 DAY
      AND CASE WHEN l.max_duration_ms IS NOT NULL THEN l.duration_ms > l.max_duration_ms
               ELSE coalesce(u.runs, 0) >= 5 AND l.duration_ms > 3 * u.median_ms END
), starts AS (
    SELECT host, job, ts, run_id, max_duration_ms
    FROM jobs
    WHERE event = 'start' AND ts > now() - INTERVAL 2 DAY
    QUALIFY row_number() OVER (PARTITION BY host, job ORDER BY ts DESC) = 1
), running AS (
    SELECT s.host, s.job, (epoch_us(now()) - epoch_us(s.ts)) / 1e6 AS value, 'has been running for' AS state,
           'its max_duration (' || round(s.max_duration_ms / 1000, 1) || ' s)' AS lim
    FROM starts s
    WHERE s.max_duration_ms IS NOT NULL AND epoch_us(now()) - epoch_us(s.ts) > s.max_duration_ms * 1000
      AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.event IN ('success', 'fail') AND e.host = s.host
                      AND e.job = s.job AND e.run_id = s.run_id)
)
SELECT host, job, max(value) AS value, arg_max(state, value) AS _state, arg_max(lim, value) AS _limit
FROM (SELECT * FROM finished UNION ALL SELECT * FROM running)
GROUP BY host, job"#;

fn node_silent_sql(nodes: &[String]) -> String {
    if nodes.is_empty() {
        // No [[nodes]]: nothing may ingest, so no node can go silent.
        return "SELECT NULL::VARCHAR AS host, NULL::DOUBLE AS value WHERE false".to_string();
    }
    let values: Vec<String> = nodes.iter().map(|n| format!("('{}')", n.replace('\'', "''"))).collect();
    format!(
        r#"WITH nodes(host) AS (VALUES {}),
seen AS (
    SELECT host, max(ts) AS last FROM metrics WHERE ts > now() - INTERVAL 7 DAY GROUP BY host
)
SELECT nodes.host,
       epoch(now()) - epoch(greatest(coalesce(seen.last, {LAKE_STARTED}), {LAKE_STARTED})) AS value,
       coalesce(strftime(seen.last, '%Y-%m-%d %H:%M:%S UTC'), 'none in 7 days') AS _last_seen
FROM nodes LEFT JOIN seen USING (host)"#,
        values.join(", ")
    )
}

fn uptime_down_sql(vantage_points: u32) -> String {
    let need = if vantage_points == 0 { "count(*)".to_string() } else { format!("least({vantage_points}, count(*))") };
    format!(
        r#"WITH latest AS (
    SELECT kind, target, host, arg_max(ok, ts) AS ok, arg_max(error, ts) AS error
    FROM probes
    WHERE kind IN ('http', 'tcp', 'tls', 'icmp', 'dns') AND ts > now() - INTERVAL 10 MINUTE
      -- Outside targets stand for the site's uplink: site_offline reads them together.
      AND coalesce(attrs['outside'], '') <> 'true'
    GROUP BY kind, target, host
)
SELECT kind, target,
       count(*) FILTER (WHERE NOT ok) AS value,
       count(*) AS _vantage_points,
       string_agg(host, ', ' ORDER BY host) FILTER (WHERE NOT ok) AS _down_from,
       coalesce(min(error) FILTER (WHERE NOT ok), 'no error given') AS _error
FROM latest
GROUP BY kind, target
HAVING count(*) FILTER (WHERE NOT ok) >= {need}"#
    )
}

/// The latest value of one `ups.status` flag per (host, ups) in the last 10 minutes, with
/// the battery's latest charge and runtime as details.
fn ups_flag_sql(flag: &str) -> String {
    format!(
        r#"
WITH latest AS (
    SELECT host, labels['ups'] AS ups, name, arg_max(value, ts) AS v
    FROM metrics
    WHERE name IN ('nut_ups_status', 'nut_battery_charge', 'nut_battery_runtime')
      AND (name <> 'nut_ups_status' OR labels['flag'] = '{flag}')
      AND ts > now() - INTERVAL 10 MINUTE
    GROUP BY 1, 2, 3
)
SELECT host, ups,
    max(v) FILTER (WHERE name = 'nut_ups_status') AS value,
    coalesce(CAST(round(max(v) FILTER (WHERE name = 'nut_battery_charge')) AS BIGINT)::VARCHAR, '?') AS _charge,
    coalesce(CAST(round(max(v) FILTER (WHERE name = 'nut_battery_runtime')) AS BIGINT)::VARCHAR, '?') AS _runtime
FROM latest
GROUP BY host, ups
HAVING max(v) FILTER (WHERE name = 'nut_ups_status') IS NOT NULL"#
    )
    .trim()
    .to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lake_format::rows::{now_micros, MetricsBuilder, TableBuilder};
    use lake_format::Table;

    use super::*;
    use crate::alerts::eval::{expand_sql, observations};
    use crate::alerts::rules::Condition;
    use crate::test_support::{engine, MemFresh};

    const S: i64 = 1_000_000;

    fn rows(
        table: Table,
        n: usize,
        fill: impl Fn(&mut TableBuilder, &dyn Fn(&str) -> usize, usize),
    ) -> arrow_array::RecordBatch {
        let mut b = TableBuilder::new(table);
        let cols: Vec<(String, usize)> = table.columns().enumerate().map(|(i, c)| (c.name.to_string(), i)).collect();
        let col = move |name: &str| cols.iter().find(|(n, _)| n == name).map(|(_, i)| *i).expect("column");
        for i in 0..n {
            fill(&mut b, &col, i);
            b.end_row();
        }
        b.finish().unwrap()
    }

    /// (labels as `k=v` text, value) of the instances that meet the rule's condition.
    fn firing(fresh: &Arc<MemFresh>, rule: &BuiltinRule, started: i64) -> Vec<(String, f64)> {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), Arc::clone(fresh));
        let r = e.query_blocking(&expand_sql(&rule.sql, started)).unwrap_or_else(|err| panic!("{}: {err}", rule.name));
        let cond: Condition = rule.condition.parse().unwrap();
        let mut out: Vec<(String, f64)> = observations(&r)
            .unwrap()
            .rows
            .into_iter()
            .filter(|o| cond.holds(o.value))
            .map(|o| (crate::alerts::eval::fmt_labels(&o.labels), o.value))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn rule(name: &str, nodes: &[&str], vantage: u32) -> BuiltinRule {
        let nodes: Vec<String> = nodes.iter().map(|s| s.to_string()).collect();
        defaults(&nodes, vantage).into_iter().find(|r| r.name == name).unwrap()
    }

    #[test]
    fn rule_failures_label_the_failing_rule_and_resolve_when_it_works() {
        let r = rule(ALERT_RULE_FAILING, &[], 0);
        assert_eq!(r.kind, RuleKind::RuleFailures);
        let cond: Condition = r.condition.parse().unwrap();
        let failing = [
            FailingRule {
                rule: "filesystem_full".into(),
                failures: 3,
                since: 1_795_374_070_000_000,
                error: "IO Error: no magic bytes".into(),
            },
            FailingRule {
                rule: "node_silent".into(),
                failures: 1,
                since: 1_795_374_070_000_000,
                error: "timeout".into(),
            },
            FailingRule { rule: "ok_again".into(), failures: 0, since: 0, error: String::new() },
        ];
        let o = rule_failures(&failing);
        assert_eq!(o.len(), 2, "a rule that evaluates again is not observed (its alert resolves)");
        assert_eq!(o[0].labels, Labels::from([("failing_rule".to_string(), "filesystem_full".to_string())]));
        assert_eq!(o[0].details["error"], "IO Error: no magic bytes");
        assert_eq!(o[0].details["since"], "2026-11-22 19:01:10 UTC");
        // Two failures in a row fire; a single one (a passing time-out) does not.
        assert!(cond.holds(o[0].value) && !cond.holds(o[1].value));
    }

    #[test]
    fn node_silent_counts_from_the_last_row_or_the_lake_start() {
        let now = now_micros();
        let fresh = Arc::new(MemFresh::default());
        let mut m = MetricsBuilder::new();
        m.push(now - 10 * S, "a", "load1", 0.1, &[]);
        m.push(now - 300 * S, "b", "load1", 0.1, &[]);
        fresh.set(Table::Metrics, vec![m.finish()]);
        let r = rule(NODE_SILENT, &["a", "b", "c"], 0);
        let f = firing(&fresh, &r, now - 3600 * S);
        assert_eq!(f.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(), ["host=b", "host=c"]);
        assert!((f[0].1 - 300.0).abs() < 30.0 && (f[1].1 - 3600.0).abs() < 30.0, "{f:?}");
        // Started 30 s ago: nobody has been silent for 2 minutes of the lake's life.
        assert!(firing(&fresh, &r, now - 30 * S).is_empty());
    }

    #[test]
    fn cpu_memory_and_swap_rules_need_the_whole_window() {
        let now = now_micros();
        let fresh = Arc::new(MemFresh::default());
        let mut m = MetricsBuilder::new();
        let total = [("cpu", "total")];
        // busy: 95% for 10 minutes; brief: 100% for the last 3 minutes only; calm: 20%.
        for minute in 0..10 {
            let ts = now - (minute * 60 + 5) * S;
            m.push(ts, "busy", "cpu_usage_percent", 95.0, &total);
            m.push(ts, "busy", "cpu_usage_percent", 5.0, &[("cpu", "0")]);
            m.push(ts, "calm", "cpu_usage_percent", 20.0, &total);
            if minute < 3 {
                m.push(ts, "brief", "cpu_usage_percent", 100.0, &total);
            }
            // full: 2% available; fine: 50%.
            m.push(ts, "full", "memory_total_bytes", 1000.0, &[]);
            m.push(ts, "full", "memory_available_bytes", 20.0, &[]);
            m.push(ts, "fine", "memory_total_bytes", 1000.0, &[]);
            m.push(ts, "fine", "memory_available_bytes", 500.0, &[]);
        }
        // swapping: 100 MiB → 600 MiB over 29 minutes; steady: 2 GiB all along; none: 0.
        let mib = 1_048_576.0;
        for (ago, swapping, steady) in [(29 * 60, 100.0, 2048.0), (15 * 60, 300.0, 2048.0), (10, 600.0, 2048.0)] {
            m.push(now - ago * S, "swapping", "swap_used_bytes", swapping * mib, &[]);
            m.push(now - ago * S, "steady", "swap_used_bytes", steady * mib, &[]);
            m.push(now - ago * S, "none", "swap_used_bytes", 0.0, &[]);
        }
        fresh.set(Table::Metrics, vec![m.finish()]);
        assert_eq!(firing(&fresh, &rule(CPU_SATURATED, &[], 0), now), [("host=busy".to_string(), 95.0)]);
        let f = firing(&fresh, &rule(MEMORY_SATURATED, &[], 0), now);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, "host=full");
        assert!((f[0].1 - 0.98).abs() < 1e-9, "{f:?}");
        assert_eq!(firing(&fresh, &rule(SWAP_GROWING, &[], 0), now), [("host=swapping".to_string(), 500.0)]);
    }

    #[test]
    fn oom_kills_and_error_bursts_come_from_logs() {
        let now = now_micros();
        let fresh = Arc::new(MemFresh::default());
        // (seconds ago, host, unit, ident, priority, message)
        type Line = (i64, &'static str, Option<&'static str>, &'static str, i64, String);
        let mut lines: Vec<Line> = vec![
            (60, "db", None, "kernel", 3, "Out of memory: Killed process 4242 (postgres) total-vm:8GB".into()),
            (
                30,
                "db",
                None,
                "kernel",
                3,
                "Memory cgroup out of memory: Killed process 77 (python3) total-vm:1GB".into(),
            ),
            (30, "web", None, "app", 3, "Out of memory: Killed process 1 (quoted by an app, not the kernel)".into()),
            (7200, "old", None, "kernel", 3, "Out of memory: Killed process 5 (x)".into()),
        ];
        // api: 60 errors now, 1 an hour usually; noisy: 60 now, 60 every 10 minutes usually; few: 10 now.
        for i in 0..60 {
            lines.push((i + 1, "web", Some("api.service"), "api", 3, format!("error {i}")));
            lines.push((i + 1, "web", Some("noisy.service"), "noisy", 3, format!("error {i}")));
        }
        for i in 0..10 {
            lines.push((i + 1, "web", Some("few.service"), "few", 2, format!("crit {i}")));
        }
        for hour in 1..24 {
            lines.push((hour * 3600, "web", Some("api.service"), "api", 3, "usual error".into()));
            for j in 0..360 {
                lines.push((hour * 3600 - j * 10, "web", Some("noisy.service"), "noisy", 3, "usual".into()));
            }
        }
        let batch = rows(Table::Logs, lines.len(), |b, c, i| {
            let (ago, host, unit, ident, priority, message) = &lines[i];
            b.ts(c("ts"), now - ago * S);
            b.text(c("host"), Some(host));
            b.text(c("source"), Some("journald"));
            b.text(c("unit"), *unit);
            b.text(c("ident"), Some(ident));
            b.int(c("priority"), Some(*priority));
            b.text(c("message"), Some(message));
        });
        fresh.set(Table::Logs, vec![batch]);
        assert_eq!(firing(&fresh, &rule(OOM_KILL, &[], 0), now), [("host=db".to_string(), 2.0)]);
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), Arc::clone(&fresh));
        let r = e.query_blocking(&expand_sql(&rule(OOM_KILL, &[], 0).sql, now)).unwrap();
        assert_eq!(observations(&r).unwrap().rows[0].details["process"], "python3");
        assert_eq!(
            firing(&fresh, &rule(ERROR_LOG_BURST, &[], 0), now),
            [("host=web unit=api.service".to_string(), 60.0)]
        );
    }

    #[test]
    fn reboot_and_tailscale_rules_count_from_when_it_began() {
        let now = now_micros();
        let fresh = Arc::new(MemFresh::default());
        let day = 86_400;
        // (days ago, host, reboot required): long has asked for 9 days; recent for 3;
        // rebooted asked 20 days ago, then rebooted (false), asks again since 2 days.
        let hosts = [
            (9, "long", true),
            (5, "long", true),
            (0, "long", true),
            (3, "recent", true),
            (0, "recent", true),
            (20, "rebooted", true),
            (10, "rebooted", false),
            (2, "rebooted", true),
            (0, "rebooted", true),
            (12, "never", false),
        ];
        let batch = rows(Table::Hosts, hosts.len(), |b, c, i| {
            let (days, host, required) = hosts[i];
            b.ts(c("ts"), now - days * day * S - 60 * S);
            b.text(c("host"), Some(host));
            b.bool(c("reboot_required"), Some(required));
            b.map(c("attrs"), [("reboot_required_pkgs", "linux-image-6.1.0-28-amd64")]);
        });
        fresh.set(Table::Hosts, vec![batch]);
        let f = firing(&fresh, &rule(REBOOT_REQUIRED, &[], 0), now);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, "host=long");
        assert!((f[0].1 - 9.0).abs() < 0.01, "{f:?}");

        // (seconds ago, peer, ok): p failing since its last good ping 20 min ago; q failed
        // once, then answered; r never answered today, failing for 6 minutes; s for 2.
        let probes = [
            (1200, "p", true),
            (600, "p", false),
            (30, "p", false),
            (600, "q", false),
            (30, "q", true),
            (360, "r", false),
            (30, "r", false),
            (120, "s", false),
            (30, "s", false),
        ];
        let batch = rows(Table::Probes, probes.len(), |b, c, i| {
            let (ago, target, ok) = probes[i];
            b.ts(c("ts"), now - ago * S);
            b.text(c("host"), Some("n1"));
            b.text(c("kind"), Some("tailscale"));
            b.text(c("target"), Some(target));
            b.bool(c("ok"), Some(ok));
            b.text(c("error"), (!ok).then_some("no reply"));
        });
        fresh.set(Table::Probes, vec![batch]);
        let f = firing(&fresh, &rule(TAILSCALE_PEER_UNREACHABLE, &[], 0), now);
        assert_eq!(f.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(), ["host=n1 target=p", "host=n1 target=r"]);
        assert!((f[0].1 - 1200.0).abs() < 30.0 && (f[1].1 - 360.0).abs() < 30.0, "{f:?}");
    }

    #[test]
    fn ups_rules_fire_on_the_latest_flag_with_charge_and_runtime() {
        let now = now_micros();
        let fresh = Arc::new(MemFresh::default());
        let mut m = MetricsBuilder::new();
        let flag = |m: &mut MetricsBuilder, ago: i64, host: &str, ups: &str, flag: &str, v: f64| {
            m.push(now - ago * S, host, "nut_ups_status", v, &[("ups", ups), ("flag", flag)]);
        };
        // pi/home: on line, then on battery and low now; nas/rack: was on battery, back on line.
        flag(&mut m, 60, "pi", "home", "OB", 0.0);
        flag(&mut m, 5, "pi", "home", "OB", 1.0);
        flag(&mut m, 5, "pi", "home", "LB", 1.0);
        flag(&mut m, 5, "pi", "home", "OL", 0.0);
        m.push(now - 5 * S, "pi", "nut_battery_charge", 9.4, &[("ups", "home")]);
        m.push(now - 5 * S, "pi", "nut_battery_runtime", 120.0, &[("ups", "home")]);
        flag(&mut m, 60, "nas", "rack", "OB", 1.0);
        flag(&mut m, 5, "nas", "rack", "OB", 0.0);
        flag(&mut m, 5, "nas", "rack", "LB", 0.0);
        // An hour ago is not now.
        flag(&mut m, 3600, "old", "gone", "OB", 1.0);
        fresh.set(Table::Metrics, vec![m.finish()]);
        assert_eq!(firing(&fresh, &rule(UPS_ON_BATTERY, &[], 0), now), [("host=pi ups=home".to_string(), 1.0)]);
        assert_eq!(firing(&fresh, &rule(UPS_LOW_BATTERY, &[], 0), now), [("host=pi ups=home".to_string(), 1.0)]);
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), Arc::clone(&fresh));
        let r = e.query_blocking(&expand_sql(&rule(UPS_ON_BATTERY, &[], 0).sql, now)).unwrap();
        let o = observations(&r).unwrap().rows;
        let home = o.iter().find(|o| o.labels["host"] == "pi").unwrap();
        assert_eq!((home.details["charge"].as_str(), home.details["runtime"].as_str()), ("9", "120"));
        let rack = o.iter().find(|o| o.labels["host"] == "nas").unwrap();
        assert_eq!((rack.value, rack.details["charge"].as_str()), (0.0, "?"));
    }

    #[test]
    fn host_http_and_ban_rules() {
        let now = now_micros();
        let fresh = Arc::new(MemFresh::default());
        let mut m = MetricsBuilder::new();
        m.push(now - 60 * S, "h", "filesystem_used_ratio", 0.99, &[("mount", "/"), ("device", "/dev/vda")]);
        m.push(now - 5 * S, "h", "filesystem_used_ratio", 0.95, &[("mount", "/"), ("device", "/dev/vda")]);
        m.push(now - 5 * S, "h", "filesystem_used_ratio", 0.5, &[("mount", "/boot"), ("device", "/dev/vda1")]);
        m.push(now - 3600 * S, "old", "filesystem_used_ratio", 0.99, &[("mount", "/")]);
        fresh.set(Table::Metrics, vec![m.finish()]);
        let f = firing(&fresh, &rule(FILESYSTEM_FULL, &[], 0), now);
        assert_eq!(f, [("host=h mount=/".to_string(), 0.95)]);

        // vhost a: 30 requests, 3 of them 5xx (10%); b: 10 requests, all 5xx (too few to judge).
        let http = rows(Table::Http, 40, |b, c, i| {
            b.ts(c("ts"), now - 10 * S);
            b.text(c("host"), Some("h"));
            b.text(c("vhost"), Some(if i < 30 { "a" } else { "b" }));
            b.int(c("status"), Some(if !(3..30).contains(&i) { 502 } else { 200 }));
        });
        fresh.set(Table::Http, vec![http]);
        assert_eq!(firing(&fresh, &rule(HTTP_5XX_RATIO, &[], 0), now), [("vhost=a".to_string(), 0.1)]);

        let bans = rows(Table::Bans, 30, |b, c, i| {
            b.ts(c("ts"), now - 60 * S);
            b.text(c("host"), Some(if i < 25 { "h" } else { "quiet" }));
            b.text(c("jail"), Some("sshd"));
            b.text(c("action"), Some("ban"));
            b.text(c("ip"), Some(&format!("203.0.113.{i}")));
        });
        fresh.set(Table::Bans, vec![bans]);
        assert_eq!(firing(&fresh, &rule(FAIL2BAN_BURST, &[], 0), now), [("host=h".to_string(), 25.0)]);
    }

    #[test]
    fn job_rules() {
        let now = now_micros();
        let fresh = Arc::new(MemFresh::default());
        // (host, job, event, seconds ago, exit code, duration ms, max_duration ms, scheduled s ago, run id)
        type Row<'a> = (&'a str, &'a str, &'a str, i64, Option<i64>, Option<f64>, Option<i64>, Option<i64>, &'a str);
        let mut events: Vec<Row> = vec![
            // late: the latest event is late, 30 s after its due time.
            ("h", "nightly", "success", 90_000, Some(0), Some(1000.0), None, None, "n1"),
            ("lake", "nightly", "late", 20, None, None, None, Some(30), ""),
            // recovered: late, then it started.
            ("h", "weekly", "late", 100, None, None, None, Some(110), ""),
            ("h", "weekly", "start", 50, None, None, None, None, "w1"),
            // failed: the latest end is fail; fixed: a success after a fail.
            ("h", "backup", "fail", 60, Some(2), Some(500.0), None, None, "b1"),
            ("h", "fixed", "fail", 60, Some(1), Some(500.0), None, None, "f1"),
            ("h", "fixed", "success", 30, Some(0), Some(500.0), None, None, "f2"),
            // slow over its max_duration; hung: started 120 s ago, max 60 s, no end.
            ("h", "limited", "success", 30, Some(0), Some(90_000.0), Some(60_000), None, "l1"),
            ("h", "hung", "start", 120, None, None, Some(60_000), None, "g1"),
        ];
        // usual: 6 runs of ~10 s, then one of 40 s (slow); steady: the same at 20 s (not).
        for i in 0..6 {
            events.push(("h", "usual", "success", 1000 - i * 100, Some(0), Some(10_000.0 + i as f64), None, None, ""));
            events.push(("h", "steady", "success", 1000 - i * 100, Some(0), Some(10_000.0), None, None, ""));
        }
        events.push(("h", "usual", "success", 10, Some(0), Some(40_000.0), None, None, ""));
        events.push(("h", "steady", "success", 10, Some(0), Some(20_000.0), None, None, ""));
        let batch = rows(Table::Jobs, events.len(), |b, c, i| {
            let (host, job, event, ago, exit, dur, max, scheduled, run) = events[i];
            b.ts(c("ts"), now - ago * S);
            b.text(c("host"), Some(host));
            b.text(c("job"), Some(job));
            b.text(c("event"), Some(event));
            b.text(c("run_id"), (!run.is_empty()).then_some(run));
            b.int(c("exit_code"), exit);
            b.float(c("duration_ms"), dur);
            b.text(c("output"), (event == "fail").then_some("line one\npg_dump: error: refused\n"));
            b.text(c("source"), Some("http"));
            if let Some(s) = scheduled {
                b.ts(c("scheduled"), now - s * S);
            }
            b.int(c("max_duration_ms"), max);
        });
        fresh.set(Table::Jobs, vec![batch]);
        let late = firing(&fresh, &rule(JOB_LATE, &[], 0), now);
        assert_eq!(late.len(), 1, "{late:?}");
        assert_eq!(late[0].0, "job=nightly");
        assert!((late[0].1 - 30.0).abs() < 2.0, "{late:?}");
        assert_eq!(firing(&fresh, &rule(JOB_FAILED, &[], 0), now), [("host=h job=backup".to_string(), 1.0)]);
        let slow = firing(&fresh, &rule(JOB_SLOW, &[], 0), now);
        let names: Vec<&str> = slow.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(names, ["host=h job=hung", "host=h job=limited", "host=h job=usual"], "{slow:?}");

        // The failed run's last output line is in the message's details.
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), Arc::clone(&fresh));
        let r = e.query_blocking(&rule(JOB_FAILED, &[], 0).sql).unwrap();
        let o = observations(&r).unwrap().rows;
        assert_eq!(o[0].details["last_line"], "pg_dump: error: refused");
        assert_eq!(o[0].details["exit_code"], "2");
    }

    #[test]
    fn container_rules() {
        let now = now_micros();
        let fresh = Arc::new(MemFresh::default());
        // (container, compose project, action, health, seconds ago), per host h.
        type Event<'a> = (&'a str, Option<&'a str>, &'a str, Option<&'a str>, i64);
        let events: &[Event] = &[
            // loop: started, then died and started again 4 times in 10 minutes.
            ("loop", None, "start", None, 500),
            ("loop", None, "die", None, 400),
            ("loop", None, "start", None, 399),
            ("loop", None, "die", None, 300),
            ("loop", None, "start", None, 299),
            ("loop", None, "die", None, 200),
            ("loop", None, "start", None, 199),
            ("loop", None, "die", None, 100),
            ("loop", None, "start", None, 99),
            // flaky: 3 restarts, not more than 3.
            ("flaky", None, "die", None, 300),
            ("flaky", None, "start", None, 299),
            ("flaky", None, "die", None, 200),
            ("flaky", None, "start", None, 199),
            ("flaky", None, "die", None, 100),
            ("flaky", None, "start", None, 99),
            // hog: OOM-killed a minute ago; old-hog an hour ago.
            ("hog", None, "oom", None, 60),
            ("hog", None, "die", None, 60),
            ("old-hog", None, "oom", None, 3600),
            // db unhealthy for 5 minutes; cache unhealthy for 1; web unhealthy then healthy;
            // api unhealthy then died (what is dead is not unhealthy).
            ("db", None, "health_status", Some("unhealthy"), 300),
            ("cache", None, "health_status", Some("unhealthy"), 60),
            ("web", None, "health_status", Some("unhealthy"), 600),
            ("web", None, "health_status", Some("healthy"), 300),
            ("api", None, "health_status", Some("unhealthy"), 600),
            ("api", None, "die", None, 500),
            // shop: worker stopped 10 minutes ago; front's last event is a die but its stats
            // are fresh (it runs); cart died a minute ago (not yet 5 minutes); db runs; blog's
            // container died two days ago (not of the last day).
            ("shop-worker-1", Some("shop"), "start", None, 3000),
            ("shop-worker-1", Some("shop"), "die", None, 600),
            ("shop-worker-1", Some("shop"), "stop", None, 600),
            ("shop-front-1", Some("shop"), "die", None, 600),
            ("shop-cart-1", Some("shop"), "die", None, 60),
            ("shop-db-1", Some("shop"), "start", None, 600),
            ("blog-web-1", Some("blog"), "die", None, 2 * 86400),
        ];
        let batch = rows(Table::Containers, events.len(), |b, c, i| {
            let (name, project, action, health, ago) = events[i];
            b.ts(c("ts"), now - ago * S);
            b.text(c("host"), Some("h"));
            b.text(c("container"), Some(name));
            b.text(c("image"), Some("img:1"));
            b.text(c("compose_project"), project);
            b.text(c("compose_service"), project.map(|_| "svc"));
            b.text(c("action"), Some(action));
            b.text(c("health"), health);
        });
        fresh.set(Table::Containers, vec![batch]);
        let mut m = MetricsBuilder::new();
        m.push(now - 30 * S, "h", "container_restart_count", 0.0, &[("container", "shop-front-1")]);
        fresh.set(Table::Metrics, vec![m.finish()]);
        assert_eq!(
            firing(&fresh, &rule(CONTAINER_RESTARTING, &[], 0), now),
            [("container=loop host=h".to_string(), 4.0)]
        );
        assert_eq!(firing(&fresh, &rule(CONTAINER_OOM, &[], 0), now), [("container=hog host=h".to_string(), 1.0)]);
        let f = firing(&fresh, &rule(CONTAINER_UNHEALTHY, &[], 0), now);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].0 == "container=db host=h" && (f[0].1 - 300.0).abs() < 30.0, "{f:?}");
        let f = firing(&fresh, &rule(COMPOSE_CONTAINER_GONE, &[], 0), now);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].0 == "compose_project=shop container=shop-worker-1 host=h" && (f[0].1 - 600.0).abs() < 30.0,
            "{f:?}"
        );
    }

    #[test]
    fn inventory_rules() {
        let now = now_micros();
        let fresh = Arc::new(MemFresh::default());
        // nginx failed after running; cron failed then recovered.
        let units = rows(Table::Units, 4, |b, c, i| {
            let (unit, state, at) = [
                ("nginx.service", "active", 600),
                ("nginx.service", "failed", 60),
                ("cron.service", "failed", 600),
                ("cron.service", "active", 60),
            ][i];
            b.ts(c("ts"), now - at * S);
            b.text(c("host"), Some("h"));
            b.text(c("unit"), Some(unit));
            b.text(c("active_state"), Some(state));
            b.text(c("sub_state"), Some(if state == "failed" { "failed" } else { "running" }));
            b.text(c("change"), Some(if state == "failed" { "failed" } else { "started" }));
        });
        fresh.set(Table::Units, vec![units]);
        assert_eq!(firing(&fresh, &rule(UNIT_FAILED, &[], 0), now), [("host=h unit=nginx.service".to_string(), 1.0)]);

        // Opened on every address, on a private one, on loopback; one present at the first
        // inventory; one opened then closed.
        let listeners = rows(Table::Listeners, 6, |b, c, i| {
            let (addr, port, change, at) = [
                ("0.0.0.0", 8080, "opened", 60),
                ("192.168.1.5", 9000, "opened", 60),
                ("127.0.0.1", 5432, "opened", 60),
                ("::", 22, "present", 600),
                ("203.0.113.9", 3000, "opened", 600),
                ("203.0.113.9", 3000, "closed", 60),
            ][i];
            b.ts(c("ts"), now - at * S);
            b.text(c("host"), Some("h"));
            b.text(c("proto"), Some("tcp"));
            b.text(c("addr"), Some(addr));
            b.int(c("port"), Some(port));
            b.text(c("process"), Some("app"));
            b.text(c("change"), Some(change));
        });
        fresh.set(Table::Listeners, vec![listeners]);
        assert_eq!(
            firing(&fresh, &rule(PUBLIC_LISTENER_OPENED, &[], 0), now),
            [("addr=0.0.0.0 host=h port=8080 proto=tcp".to_string(), 1.0)]
        );
    }

    #[test]
    fn probe_rules() {
        let now = now_micros();
        let fresh = Arc::new(MemFresh::default());
        // (secs ago, vantage point, kind, target, ok, path, cert days)
        type P<'a> = (i64, &'a str, &'a str, &'a str, bool, Option<&'a str>, Option<f64>);
        let probes: Vec<P<'_>> = vec![
            // X is down from both vantage points; Y from one of two.
            (20, "n1", "http", "https://x.example/", false, None, Some(5.0)),
            (20, "n2", "http", "https://x.example/", false, None, None),
            (300, "n2", "http", "https://x.example/", true, None, None),
            (20, "n1", "tcp", "y.example:22", false, None, None),
            (20, "n2", "tcp", "y.example:22", true, None, None),
            (20, "n1", "tls", "z.example:443", true, None, Some(100.0)),
            // peer p was direct 30 minutes ago, relayed since; q is direct now; r was never direct.
            (1800, "n1", "tailscale", "p", true, Some("203.0.113.5:41641"), None),
            (1200, "n1", "tailscale", "p", true, Some("DERP(fra)"), None),
            (30, "n1", "tailscale", "p", true, Some("DERP(fra)"), None),
            (1200, "n1", "tailscale", "q", true, Some("DERP(fra)"), None),
            (30, "n1", "tailscale", "q", true, Some("198.51.100.9:41641"), None),
            (30, "n1", "tailscale", "r", true, Some("DERP(nyc)"), None),
        ];
        let batch = rows(Table::Probes, probes.len(), |b, c, i| {
            let (ago, host, kind, target, ok, path, days) = probes[i];
            b.ts(c("ts"), now - ago * S);
            b.text(c("host"), Some(host));
            b.text(c("kind"), Some(kind));
            b.text(c("target"), Some(target));
            b.bool(c("ok"), Some(ok));
            b.text(c("path"), path);
            b.float(c("cert_days_left"), days);
            b.text(c("error"), (!ok).then_some("connection refused"));
        });
        fresh.set(Table::Probes, vec![batch]);
        let f = firing(&fresh, &rule(UPTIME_DOWN, &[], 0), now);
        assert_eq!(f, [("kind=http target=https://x.example/".to_string(), 2.0)]);
        let f = firing(&fresh, &rule(UPTIME_DOWN, &[], 1), now);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(firing(&fresh, &rule(TLS_EXPIRING, &[], 0), now), [("target=https://x.example/".to_string(), 5.0)]);
        let f = firing(&fresh, &rule(TAILSCALE_RELAYED, &[], 0), now);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, "host=n1 target=p");
        assert!((f[0].1 - 1800.0).abs() < 30.0, "{f:?}");
    }

    #[test]
    fn site_offline_tells_power_or_uplink_from_uplink_only() {
        let now = now_micros();
        let fresh = Arc::new(MemFresh::default());
        // (secs ago, host, target, ok, outside)
        let mut p: Vec<(i64, &str, &str, bool, bool)> = Vec::new();
        let mut m = MetricsBuilder::new();
        for ago in (10..=1200).step_by(30) {
            // pi-power: everything answered, then nothing at all for the last 10 minutes.
            if ago > 600 {
                p.push((ago, "pi-power", "1.1.1.1", true, true));
                p.push((ago, "pi-power", "9.9.9.9", true, true));
                m.push(now - ago * S, "pi-power", "load1", 0.1, &[]);
            }
            // pi-uplink: runs all along; both outside targets failing for the last 400 s,
            // while the router inside the site answers.
            let up = ago > 400;
            p.push((ago, "pi-uplink", "1.1.1.1", up, true));
            p.push((ago, "pi-uplink", "9.9.9.9", up, true));
            p.push((ago, "pi-uplink", "192.168.1.1", true, false));
            m.push(now - ago * S, "pi-uplink", "load1", 0.1, &[]);
            // pi-one: its only outside target fails: that target's problem, maybe.
            p.push((ago, "pi-one", "1.1.1.1", false, true));
            m.push(now - ago * S, "pi-one", "load1", 0.1, &[]);
            // pi-half: one of two fails.
            p.push((ago, "pi-half", "1.1.1.1", false, true));
            p.push((ago, "pi-half", "9.9.9.9", true, true));
            // ... and a NAS inside its site is down.
            p.push((ago, "pi-half", "192.168.1.20", false, false));
            m.push(now - ago * S, "pi-half", "load1", 0.1, &[]);
            // pi-brief: both failing for the last 100 s only.
            p.push((ago, "pi-brief", "1.1.1.1", ago > 100, true));
            p.push((ago, "pi-brief", "9.9.9.9", ago > 100, true));
            m.push(now - ago * S, "pi-brief", "load1", 0.1, &[]);
            // vps: no outside checks, silent for 10 minutes: node_silent's, not a site.
            if ago > 600 {
                m.push(now - ago * S, "vps", "load1", 0.1, &[]);
            }
        }
        let batch = rows(Table::Probes, p.len(), |b, c, i| {
            let (ago, host, target, ok, outside) = p[i];
            b.ts(c("ts"), now - ago * S);
            b.text(c("host"), Some(host));
            b.text(c("kind"), Some("icmp"));
            b.text(c("target"), Some(target));
            b.bool(c("ok"), Some(ok));
            b.text(c("error"), (!ok).then_some("no reply from it to 3 request(s) in 2s"));
            if outside {
                b.map(c("attrs"), [("name", target), ("outside", "true")]);
            } else {
                b.map(c("attrs"), [("name", target)]);
            }
        });
        fresh.set(Table::Probes, vec![batch]);
        fresh.set(Table::Metrics, vec![m.finish()]);
        let r = rule(SITE_OFFLINE, &[], 0);
        let f = firing(&fresh, &r, now - 86_400 * S);
        assert_eq!(f.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(), ["host=pi-power", "host=pi-uplink"], "{f:?}");
        // Silent since its last row (630 s ago); the uplink since its last answer (430 s).
        assert!((f[0].1 - 630.0).abs() < 30.0 && (f[1].1 - 430.0).abs() < 30.0, "{f:?}");
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), Arc::clone(&fresh));
        let out = e.query_blocking(&expand_sql(&r.sql, now - 86_400 * S)).unwrap();
        let obs = observations(&out).unwrap().rows;
        let of = |h: &str| obs.iter().find(|o| o.labels["host"] == h).unwrap();
        assert!(of("pi-power").details["cause"].starts_with("silent: no rows from its collector, power or uplink"));
        assert!(of("pi-power").details["detail"].starts_with("last row "));
        assert!(of("pi-uplink").details["cause"].starts_with("uplink down: its collector runs"));
        assert!(of("pi-uplink").details["detail"].contains("1.1.1.1: no reply"), "{:?}", of("pi-uplink").details);
        assert_eq!((of("pi-one").value, of("pi-half").value), (0.0, 0.0));
        assert!(of("pi-brief").value < 180.0);
        assert!(obs.iter().all(|o| o.labels["host"] != "vps"), "only hosts with outside checks are sites");
        // A lake started 60 s ago counts silence from then (as node_silent does); the
        // uplink's failures are in the rows, whenever the lake started.
        let f = firing(&fresh, &r, now - 60 * S);
        assert_eq!(f.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(), ["host=pi-uplink"], "{f:?}");
        // uptime_down ignores the outside targets (site_offline reads them together) and
        // watches icmp checks: the NAS.
        assert_eq!(
            firing(&fresh, &rule(UPTIME_DOWN, &[], 0), now),
            [("kind=icmp target=192.168.1.20".to_string(), 1.0)]
        );
    }
}
