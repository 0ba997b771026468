//! Rules and alerting settings of `lake.toml`: the serde layer (`[alerts]`, `[[rules]]`,
//! `[notify]`) and its validation into [`AlertsConfig`].
//!
//! ```toml
//! [[rules]]
//! name = "api_5xx"                      # [a-z0-9_]+, unique; a built-in's name overrides it
//! sql = "SELECT vhost, count(*) FILTER (WHERE status >= 500) / count(*) AS value FROM http WHERE ts > now() - INTERVAL 5 MINUTE GROUP BY vhost"
//! condition = "> 0.05"                  # >, >=, <, <=, ==, != and a number
//! for = "5m"                            # how long the condition must hold (default 0s)
//! every = "1m"                          # evaluation interval (default 1m)
//! severity = "critical"                 # info, warning (default), critical
//! message = "{{ labels.vhost }}: {{ value | percent }} 5xx"
//! channels = ["mail", "phone"]          # default: [alerts].default_channels, else all
//!
//! [[rules]]
//! name = "http_anomaly"
//! kind = "anomaly"                      # the SQL of `lake anomalies` (lake_query::anomaly)
//! table = "http"                        # count rows per hour of a table (built-in or custom) …
//! by = ["vhost"]                        # … per value of these columns; or metric = "<name>";
//!                                       # neither: every default series
//! threshold = 4                         # |robust z| at least this (default 4)
//! window = "1h"                         # the last whole hours compared (default 1h, at most 7d)
//! weeks = 4                             # earlier weeks compared with (default 4)
//! direction = "up"                      # up, down or both (default)
//! ```
//!
//! An anomaly rule is an SQL rule whose SQL is built from those fields: one instance per
//! series (labels `source` and `series`) whose strongest hour in the window reaches the
//! threshold, its value that |z|, details `hour`, `observed`, `expected`, `z`, `direction`.
//!
//! Every error names the rule (index and name) and the field.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use lake_format::units::Dur;
use serde::{Deserialize, Serialize};

use super::builtin::{self, BUILTIN_NAMES};
use super::notify::{Channel, NotifyFile, RetryPolicy, SenderChecks};
use super::template::Template;

/// A configuration mistake, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct ConfigError {
    /// Path of the offending field, e.g. `rules[2] (api_5xx).condition`.
    pub at: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigError {
    /// An error at `at`.
    pub fn new(at: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { at: at.into(), message: message.into() }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// `value <op> threshold`, parsed from e.g. `"> 0.05"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    /// The comparison.
    pub op: Op,
    /// The number compared with.
    pub threshold: f64,
}

impl Condition {
    /// Whether `value` meets the condition (NaN never does).
    pub fn holds(&self, value: f64) -> bool {
        let t = self.threshold;
        match self.op {
            Op::Gt => value > t,
            Op::Ge => value >= t,
            Op::Lt => value < t,
            Op::Le => value <= t,
            Op::Eq => value == t,
            Op::Ne => !value.is_nan() && value != t,
        }
    }
}

impl FromStr for Condition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (op, rest) = [(">=", Op::Ge), ("<=", Op::Le), ("==", Op::Eq), ("!=", Op::Ne), (">", Op::Gt), ("<", Op::Lt)]
            .into_iter()
            .find_map(|(p, op)| t.strip_prefix(p).map(|r| (op, r)))
            .ok_or_else(|| format!("{s:?} must start with >, >=, <, <=, == or != (e.g. \"> 0.05\")"))?;
        let threshold: f64 =
            rest.trim().parse().map_err(|_| format!("{s:?}: {:?} is not a number (e.g. \"> 0.05\")", rest.trim()))?;
        if !threshold.is_finite() {
            return Err(format!("{s:?}: the threshold must be a finite number"));
        }
        Ok(Condition { op, threshold })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        };
        write!(f, "{op} {}", super::format_value(self.threshold))
    }
}

/// How urgent a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention soon (the default).
    #[default]
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleKind {
    /// Its SQL, on the query engine.
    #[default]
    Sql,
    /// The other rules' evaluations, as the lake's evaluator saw them
    /// ([`builtin::ALERT_RULE_FAILING`]): no SQL, so it still works when the engine does not.
    RuleFailures,
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `[a-z0-9_]+`, unique.
    pub name: String,
    /// One line on what it watches.
    pub description: String,
    /// Returns one row per instance: label columns, `_detail` columns and a numeric `value`.
    /// Empty for a rule of another [`RuleKind`].
    pub sql: String,
    /// What it evaluates.
    pub kind: RuleKind,
    /// When an instance is active.
    pub condition: Condition,
    /// How long an instance must stay active before it fires.
    pub for_: Duration,
    /// Evaluation interval.
    pub every: Duration,
    /// Severity.
    pub severity: Severity,
    /// Message template.
    pub message: Template,
    /// Channel names notified.
    pub channels: Vec<String>,
    /// Reminder interval while firing.
    pub repeat: Duration,
    /// Link in notifications (default: the lake's external URL).
    pub dashboard: Option<String>,
    /// Whether it is one of the shipped rules (possibly overridden).
    pub builtin: bool,
}

/// Flap guard: an instance that changed between firing and resolved more than
/// `max_changes` times within `window` is flapping; its notifications wait until it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapPolicy {
    /// Window in which changes are counted.
    pub window: Duration,
    /// Changes tolerated in the window.
    pub max_changes: u32,
}

/// The validated alerting configuration.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Whether rules run at all (`[alerts].enabled`).
    pub enabled: bool,
    /// Enabled rules, built-ins first.
    pub rules: Vec<Rule>,
    /// Names of rules switched off (`enabled = false`), for `lake check-config`.
    pub disabled: Vec<String>,
    /// Notification channels.
    pub channels: Vec<Channel>,
    /// Retries of each delivery.
    pub retry: RetryPolicy,
    /// Base URL of the lake in notifications (links).
    pub external_url: String,
    /// Flap guard.
    pub flap: FlapPolicy,
    /// Resolved instances remembered for `lake alerts`.
    pub keep_resolved: usize,
}

impl AlertsConfig {
    /// The rule called `name`.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The channel called `name`.
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name() == name)
    }
}

const fn default_true() -> bool {
    true
}
const fn default_repeat() -> Dur {
    Dur(Duration::from_secs(4 * 3600))
}
const fn default_flap_window() -> Dur {
    Dur(Duration::from_secs(3600))
}
const fn default_flap_max() -> u32 {
    4
}
const fn default_keep_resolved() -> usize {
    50
}

/// `[alerts]`: settings shared by every rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsFile {
    /// Run rules at all. Default true.
    #[serde(default = "default_true")]
    enabled: bool,
    /// Run the built-in rules (each can still be switched off or tuned by name). Default true.
    #[serde(default = "default_true")]
    builtins: bool,
    /// Base URL for links in notifications. Default `http://<listen>`.
    #[serde(default)]
    external_url: Option<String>,
    /// Channels of rules that name none. Default: every channel.
    #[serde(default)]
    default_channels: Option<Vec<String>>,
    /// Reminder interval while an alert keeps firing. Default 4h.
    #[serde(default = "default_repeat")]
    repeat: Dur,
    /// Flap guard window. Default 1h.
    #[serde(default = "default_flap_window")]
    flap_window: Dur,
    /// Firing/resolved changes tolerated within the window. Default 4.
    #[serde(default = "default_flap_max")]
    flap_max_changes: u32,
    /// Resolved alerts listed by `lake alerts`. Default 50.
    #[serde(default = "default_keep_resolved")]
    keep_resolved: usize,
}

impl Default for AlertsFile {
    fn default() -> Self {
        AlertsFile {
            enabled: true,
            builtins: true,
            external_url: None,
            default_channels: None,
            repeat: default_repeat(),
            flap_window: default_flap_window(),
            flap_max_changes: default_flap_max(),
            keep_resolved: default_keep_resolved(),
        }
    }
}

/// One `[[rules]]` entry. For a built-in rule's name every field is optional and
/// overrides the shipped value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    name: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    sql: Option<String>,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default, rename = "for")]
    for_: Option<Dur>,
    #[serde(default)]
    every: Option<Dur>,
    #[serde(default)]
    severity: Option<Severity>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    repeat: Option<Dur>,
    #[serde(default)]
    dashboard: Option<String>,
    /// `uptime_down` only: vantage points that must see a target down (0 = all that probe it).
    #[serde(default)]
    vantage_points: Option<u32>,
    /// `"anomaly"` for an anomaly rule; absent: an SQL rule.
    #[serde(default)]
    kind: Option<String>,
    /// Anomaly rules: count rows of this table …
    #[serde(default)]
    table: Option<String>,
    /// … per value of these columns.
    #[serde(default)]
    by: Option<Vec<String>>,
    /// Anomaly rules: the series of this metric name.
    #[serde(default)]
    metric: Option<String>,
    /// Anomaly rules: the |z| an instance needs.
    #[serde(default)]
    threshold: Option<f64>,
    /// Anomaly rules: the last whole hours compared.
    #[serde(default)]
    window: Option<Dur>,
    /// Anomaly rules: earlier weeks compared with.
    #[serde(default)]
    weeks: Option<u32>,
    /// Anomaly rules: deviations that count.
    #[serde(default)]
    direction: Option<crate::anomaly::Direction>,
}

/// An anomaly rule's default |z| threshold: stricter than `lake anomalies`' listing, since
/// it wakes someone.
pub const ANOMALY_THRESHOLD: f64 = 4.0;
/// An anomaly rule's default window.
const ANOMALY_WINDOW: Duration = Duration::from_secs(3600);

impl RuleFile {
    /// The anomaly fields given, by name (they need `kind = "anomaly"`).
    fn anomaly_fields(&self) -> Vec<&'static str> {
        let given = [
            ("table", self.table.is_some()),
            ("by", self.by.is_some()),
            ("metric", self.metric.is_some()),
            ("threshold", self.threshold.is_some()),
            ("window", self.window.is_some()),
            ("weeks", self.weeks.is_some()),
            ("direction", self.direction.is_some()),
        ];
        given.into_iter().filter(|(_, g)| *g).map(|(n, _)| n).collect()
    }

    /// An anomaly rule's SQL, condition and default description, checked field by field.
    fn anomaly(&self, at: &str) -> Result<(String, Condition, String), ConfigError> {
        use crate::anomaly::{self, Params, Series};
        use crate::correlate::TableColumns;
        for (field, given) in [("sql", self.sql.is_some()), ("condition", self.condition.is_some())] {
            if given {
                return Err(ConfigError::new(
                    format!("{at}.{field}"),
                    "an anomaly rule builds its query from table/by/metric and its condition from threshold: leave it out",
                ));
            }
        }
        let series = match (&self.table, &self.metric, &self.by) {
            (Some(_), Some(_), _) => {
                return Err(ConfigError::new(format!("{at}.metric"), "give table (with by) or metric, not both"))
            }
            (None, _, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{at}.by"),
                    "needs table: the columns whose values name the series",
                ))
            }
            (Some(t), None, by) => {
                let table = TableColumns::parse(t).map_err(|e| ConfigError::new(format!("{at}.table"), e.0))?;
                Series::counts(&table, by.as_deref().unwrap_or(&[]))
                    .map_err(|e| ConfigError::new(format!("{at}.by"), e.0))?
            }
            (None, Some(m), None) => Series::metric(m).map_err(|e| ConfigError::new(format!("{at}.metric"), e.0))?,
            (None, None, None) => Series::Default,
        };
        let threshold = self.threshold.unwrap_or(ANOMALY_THRESHOLD);
        if !threshold.is_finite() || threshold <= 0.0 {
            return Err(ConfigError::new(
                format!("{at}.threshold"),
                format!("{threshold} must be a number above 0 (a |z|, e.g. 4)"),
            ));
        }
        let window = self.window.map_or(ANOMALY_WINDOW, |d| d.0);
        if !window.as_secs().is_multiple_of(3600) || window.subsec_nanos() != 0 {
            return Err(ConfigError::new(
                format!("{at}.window"),
                format!("{} must be whole hours (the series are hourly)", Dur(window)),
            ));
        }
        let (from, to) =
            anomaly::last_hours(window.as_secs() / 3600).map_err(|e| ConfigError::new(format!("{at}.window"), e.0))?;
        let params = Params {
            series,
            weeks: self.weeks.unwrap_or(anomaly::DEFAULT_WEEKS),
            min_z: threshold,
            direction: self.direction.unwrap_or_default(),
            limit: ANOMALY_INSTANCES,
        };
        params.check().map_err(|e| ConfigError::new(format!("{at}.weeks"), e.0))?;
        let sql = format!(
            "SELECT source, series, hour AS _hour, observed AS _observed, expected AS _expected, z AS _z,\n       direction AS _direction, abs(z) AS value\n  FROM ({}\n)",
            anomaly::anomalies_sql(&params, &from, &to)
        );
        let condition = Condition { op: Op::Ge, threshold };
        let description = format!(
            "anomalies of {} over the last {}, against the same hours of {} earlier weeks",
            params.series,
            Dur(window),
            params.weeks
        );
        Ok((sql, condition, description))
    }
}

/// Instances an anomaly rule reports at most per evaluation, strongest first.
const ANOMALY_INSTANCES: u32 = 100;

/// The default message of an anomaly rule.
const ANOMALY_MESSAGE: &str = "{{ labels.source }} {{ labels.series }}: {{ details.observed }} in the hour of {{ details.hour }}, {{ details.expected }} is usual (z {{ details.z }}, {{ details.direction }})";

/// What the rules are built against.
pub struct BuildContext<'a> {
    /// Nodes of `[[nodes]]` (the dead-man's switch watches them).
    pub nodes: &'a [String],
    /// The lake's listen address (default external URL).
    pub listen: std::net::SocketAddr,
    /// Resolves `*_env` keys.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Checks channel settings with the senders' parsers (the lake's).
    pub checks: &'a dyn SenderChecks,
}

impl fmt::Debug for BuildContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildContext").field("nodes", &self.nodes).field("listen", &self.listen).finish_non_exhaustive()
    }
}

const MIN_EVERY: Duration = Duration::from_secs(1);
const MAX_EVERY: Duration = Duration::from_secs(86_400);

/// Validates the three sections into an [`AlertsConfig`].
pub fn build(
    alerts: AlertsFile,
    rules: Vec<RuleFile>,
    notify: NotifyFile,
    cx: &BuildContext<'_>,
) -> Result<AlertsConfig, ConfigError> {
    let (channels, retry) = super::notify::build(notify, cx.env, cx.checks)?;
    let names: Vec<&str> = channels.iter().map(Channel::name).collect();
    let default_channels = match &alerts.default_channels {
        Some(list) => {
            check_channels(list, &names, "alerts.default_channels")?;
            list.clone()
        }
        None => names.iter().map(|s| s.to_string()).collect(),
    };
    let external_url = match alerts.external_url {
        Some(u) => {
            check_url(&u, "alerts.external_url")?;
            u.trim_end_matches('/').to_string()
        }
        None => format!("http://{}", cx.listen),
    };
    if alerts.flap_max_changes == 0 {
        return Err(ConfigError::new("alerts.flap_max_changes", "must be at least 1"));
    }
    if alerts.repeat.0 < MIN_EVERY {
        return Err(ConfigError::new("alerts.repeat", "must be at least 1s"));
    }

    let mut seen: Vec<&str> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        crate::named::validate_name(&r.name).map_err(|_| {
            ConfigError::new(
                format!("rules[{i}].name"),
                format!("{:?} must be non-empty and use only a-z, 0-9 and _", r.name),
            )
        })?;
        if seen.contains(&r.name.as_str()) {
            return Err(ConfigError::new(format!("rules[{i}] ({})", r.name), "a rule of this name is defined twice"));
        }
        seen.push(&r.name);
    }

    let vantage = rules.iter().find(|r| r.name == builtin::UPTIME_DOWN).and_then(|r| r.vantage_points).unwrap_or(0);
    let mut out = Vec::new();
    let mut disabled = Vec::new();
    let shipped = if alerts.builtins { builtin::defaults(cx.nodes, vantage) } else { Vec::new() };
    for b in &shipped {
        let over = rules.iter().enumerate().find(|(_, r)| r.name == b.name);
        let (at, file) = match over {
            Some((i, r)) => (format!("rules[{i}] ({})", r.name), Some(r)),
            None => (format!("built-in rule {}", b.name), None),
        };
        let f = file.map(|r| r as &RuleFile);
        if let Some(r) = f {
            if let Some(field) = r.kind.as_ref().map(|_| "kind").or_else(|| r.anomaly_fields().first().copied()) {
                return Err(ConfigError::new(
                    format!("{at}.{field}"),
                    "a built-in rule keeps its own query; give an anomaly rule a name of its own",
                ));
            }
        }
        if f.and_then(|r| r.enabled) == Some(false) {
            disabled.push(b.name.to_string());
            continue;
        }
        if b.kind == RuleKind::RuleFailures && f.is_some_and(|r| r.sql.is_some()) {
            return Err(ConfigError::new(
                format!("{at}.sql"),
                "this rule has no SQL: the lake reports the other rules' failed evaluations to it (it must work when the engine does not)",
            ));
        }
        let rule = Rule {
            name: b.name.to_string(),
            description: pick(f.and_then(|r| r.description.clone()), b.description.to_string()),
            sql: pick(f.and_then(|r| r.sql.clone()), b.sql.clone()),
            kind: b.kind,
            condition: match f.and_then(|r| r.condition.as_deref()) {
                Some(c) => c.parse().map_err(|e| ConfigError::new(format!("{at}.condition"), e))?,
                None => b.condition.parse().expect("built-in conditions parse"),
            },
            for_: f.and_then(|r| r.for_).map_or(b.for_, |d| d.0),
            every: f.and_then(|r| r.every).map_or(b.every, |d| d.0),
            severity: f.and_then(|r| r.severity).unwrap_or(b.severity),
            message: match f.and_then(|r| r.message.as_deref()) {
                Some(m) => Template::parse(m).map_err(|e| ConfigError::new(format!("{at}.message"), e.to_string()))?,
                None => Template::parse(b.message).expect("built-in templates parse"),
            },
            channels: f.and_then(|r| r.channels.clone()).unwrap_or_else(|| default_channels.clone()),
            repeat: f.and_then(|r| r.repeat).map_or(alerts.repeat.0, |d| d.0),
            dashboard: f.and_then(|r| r.dashboard.clone()),
            builtin: true,
        };
        check_rule(&rule, &at, &names)?;
        out.push(rule);
    }
    for (i, r) in rules.iter().enumerate() {
        let at = format!("rules[{i}] ({})", r.name);
        if BUILTIN_NAMES.contains(&r.name.as_str()) {
            if !alerts.builtins {
                return Err(ConfigError::new(at, "overrides a built-in rule but [alerts] builtins = false"));
            }
            continue;
        }
        if r.vantage_points.is_some() {
            return Err(ConfigError::new(
                format!("{at}.vantage_points"),
                format!("only the built-in {} rule takes it", builtin::UPTIME_DOWN),
            ));
        }
        let anomaly = match r.kind.as_deref() {
            None | Some("sql") => {
                if let Some(field) = r.anomaly_fields().first() {
                    return Err(ConfigError::new(format!("{at}.{field}"), "only rules of kind = \"anomaly\" take it"));
                }
                None
            }
            Some("anomaly") => Some(r.anomaly(&at)?),
            Some(other) => {
                return Err(ConfigError::new(
                    format!("{at}.kind"),
                    format!("{other:?}: use \"anomaly\" (or leave kind out for an SQL rule)"),
                ))
            }
        };
        if r.enabled == Some(false) {
            disabled.push(r.name.clone());
            continue;
        }
        let (sql, condition, description, message) = match anomaly {
            Some((sql, condition, description)) => (sql, condition, description, ANOMALY_MESSAGE),
            None => {
                let sql = r.sql.clone().ok_or_else(|| {
                    ConfigError::new(
                        format!("{at}.sql"),
                        format!(
                            "is required for a rule that is not built in (built-in rules: {}) unless kind = \"anomaly\"",
                            BUILTIN_NAMES.join(", ")
                        ),
                    )
                })?;
                let condition = r
                    .condition
                    .as_deref()
                    .ok_or_else(|| {
                        ConfigError::new(format!("{at}.condition"), "is required, e.g. condition = \"> 0\"")
                    })?
                    .parse()
                    .map_err(|e| ConfigError::new(format!("{at}.condition"), e))?;
                (sql, condition, String::new(), "{{ rule }}: value {{ value }}")
            }
        };
        let message = Template::parse(r.message.as_deref().unwrap_or(message))
            .map_err(|e| ConfigError::new(format!("{at}.message"), e.to_string()))?;
        let rule = Rule {
            name: r.name.clone(),
            description: r.description.clone().unwrap_or(description),
            sql,
            kind: RuleKind::Sql,
            condition,
            for_: r.for_.map_or(Duration::ZERO, |d| d.0),
            every: r.every.map_or(Duration::from_secs(60), |d| d.0),
            severity: r.severity.unwrap_or_default(),
            message,
            channels: r.channels.clone().unwrap_or_else(|| default_channels.clone()),
            repeat: r.repeat.map_or(alerts.repeat.0, |d| d.0),
            dashboard: r.dashboard.clone(),
            builtin: false,
        };
        check_rule(&rule, &at, &names)?;
        out.push(rule);
    }
    Ok(AlertsConfig {
        enabled: alerts.enabled,
        rules: out,
        disabled,
        channels,
        retry,
        external_url,
        flap: FlapPolicy { window: alerts.flap_window.0, max_changes: alerts.flap_max_changes },
        keep_resolved: alerts.keep_resolved,
    })
}

fn pick(over: Option<String>, default: String) -> String {
    over.unwrap_or(default)
}

fn check_rule(r: &Rule, at: &str, channels: &[&str]) -> Result<(), ConfigError> {
    if r.kind == RuleKind::Sql && r.sql.trim().is_empty() {
        return Err(ConfigError::new(format!("{at}.sql"), "is empty"));
    }
    if r.every < MIN_EVERY || r.every > MAX_EVERY {
        return Err(ConfigError::new(format!("{at}.every"), format!("{} must be between 1s and 1d", Dur(r.every))));
    }
    if r.for_ > Duration::from_secs(7 * 86_400) {
        return Err(ConfigError::new(format!("{at}.for"), format!("{} is longer than 7 days", Dur(r.for_))));
    }
    if r.repeat < MIN_EVERY {
        return Err(ConfigError::new(format!("{at}.repeat"), "must be at least 1s"));
    }
    check_channels(&r.channels, channels, &format!("{at}.channels"))?;
    if let Some(d) = &r.dashboard {
        check_url(d, &format!("{at}.dashboard"))?;
    }
    Ok(())
}

fn check_channels(list: &[String], known: &[&str], at: &str) -> Result<(), ConfigError> {
    for c in list {
        if !known.contains(&c.as_str()) {
            let known = if known.is_empty() {
                "none are configured".to_string()
            } else {
                format!("configured: {}", known.join(", "))
            };
            return Err(ConfigError::new(at, format!("unknown channel {c:?} ({known})")));
        }
    }
    Ok(())
}

fn check_url(u: &str, at: &str) -> Result<(), ConfigError> {
    if u.starts_with("http://") || u.starts_with("https://") {
        Ok(())
    } else {
        Err(ConfigError::new(at, format!("{u:?} must be an http:// or https:// URL")))
    }
}

#[cfg(test)]
mod tests;
