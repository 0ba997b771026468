use super::*;
use crate::alerts::builtin::BUILTIN_NAMES;
use crate::alerts::notify::{Channel, WebhookFormat};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    alerts: AlertsFile,
    #[serde(default)]
    rules: Vec<RuleFile>,
    #[serde(default)]
    notify: NotifyFile,
}

/// The senders' checks, roughly: the lake's real ones (lettre's parsers) are tested with
/// the senders; here only where their complaints land matters.
struct Checks;

impl SenderChecks for Checks {
    fn mailbox(&self, address: &str) -> Result<(), String> {
        address.contains('@').then_some(()).ok_or_else(|| "not an address".to_string())
    }

    fn ca_pem(&self, _pem: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

pub(crate) fn parse(text: &str) -> Result<AlertsConfig, String> {
    let doc: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
    let nodes = vec!["node-a".to_string()];
    let env = |k: &str| (k == "HOOK_URL").then(|| "https://hooks.example/services/T0/B0/secret".to_string());
    let cx = BuildContext { nodes: &nodes, listen: "127.0.0.1:7470".parse().unwrap(), env: &env, checks: &Checks };
    build(doc.alerts, doc.rules, doc.notify, &cx).map_err(|e| e.to_string())
}

#[test]
fn builtins_run_by_default_with_every_channel() {
    let c = parse(
        r#"
[[notify.webhook]]
name = "hook"
url = "http://127.0.0.1:9/x"
"#,
    )
    .unwrap();
    let names: Vec<&str> = c.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, BUILTIN_NAMES);
    assert!(c.rules.iter().all(|r| r.builtin && r.channels == ["hook"]));
    assert_eq!(c.external_url, "http://127.0.0.1:7470");
    assert_eq!(c.retry.attempts, 5);
    let silent = c.rule("node_silent").unwrap();
    assert!(silent.sql.contains("('node-a')"), "{}", silent.sql);
    assert_eq!(silent.condition.to_string(), "> 120");
}

#[test]
fn builtins_are_overridden_field_by_field_or_switched_off() {
    let c = parse(
        r#"
[alerts]
external_url = "https://lake.example/"
repeat = "1h"

[[rules]]
name = "filesystem_full"
condition = "> 0.95"
every = "5m"

[[rules]]
name = "fail2ban_burst"
enabled = false

[[rules]]
name = "uptime_down"
vantage_points = 2
"#,
    )
    .unwrap();
    let fs = c.rule("filesystem_full").unwrap();
    assert_eq!(
        (fs.condition.to_string().as_str(), fs.every, fs.for_),
        ("> 0.95", Duration::from_secs(300), Duration::from_secs(300))
    );
    assert_eq!(fs.repeat, Duration::from_secs(3600));
    assert!(c.rule("fail2ban_burst").is_none());
    assert_eq!(c.disabled, ["fail2ban_burst"]);
    assert!(c.rule("uptime_down").unwrap().sql.contains("least(2, count(*))"));
    assert_eq!(c.external_url, "https://lake.example");
    assert!(c.rules.iter().all(|r| r.channels.is_empty()));

    let none = parse("[alerts]\nbuiltins = false").unwrap();
    assert!(none.rules.is_empty());
}

#[test]
fn a_custom_rule_with_every_field() {
    let c = parse(
        r#"
[[notify.webhook]]
name = "slack"
format = "slack"
url_env = "HOOK_URL"

[[notify.webhook]]
name = "other"
url = "http://127.0.0.1:9/x"

[[rules]]
name = "api_5xx"
description = "the API fails"
sql = "SELECT 'a' AS vhost, 0.1 AS value"
condition = ">= 0.05"
for = "5m"
every = "30s"
severity = "critical"
message = "{{ labels.vhost }}: {{ value | percent }}"
channels = ["slack"]
repeat = "2h"
dashboard = "https://grafana.example/d/api"
"#,
    )
    .unwrap();
    let r = c.rule("api_5xx").unwrap();
    assert_eq!(r.condition, Condition { op: Op::Ge, threshold: 0.05 });
    assert_eq!(
        (r.for_, r.every, r.repeat),
        (Duration::from_secs(300), Duration::from_secs(30), Duration::from_secs(7200))
    );
    assert_eq!(r.severity, Severity::Critical);
    assert_eq!(r.channels, ["slack"]);
    assert!(!r.builtin);
    let Some(Channel::Webhook(w)) = c.channel("slack") else { panic!() };
    assert_eq!(w.format, WebhookFormat::Slack);
    // The secret URL shows neither in Debug nor in descriptions.
    assert!(!format!("{c:?}").contains("secret"));
    assert!(!c.channel("slack").unwrap().describe().contains("secret"));
}

#[test]
fn errors_name_the_rule_and_the_field() {
    let cases = [
        ("[[rules]]\nname = \"x\"\ncondition = \"> 1\"", "rules[0] (x).sql: is required"),
        ("[[rules]]\nname = \"x\"\nsql = \"select 1 as value\"", "rules[0] (x).condition: is required"),
        ("[[rules]]\nname = \"x\"\nsql = \"s\"\ncondition = \"~ 1\"", "rules[0] (x).condition: \"~ 1\" must start with"),
        ("[[rules]]\nname = \"x\"\nsql = \"s\"\ncondition = \"> abc\"", "\"abc\" is not a number"),
        ("[[rules]]\nname = \"x\"\nsql = \"s\"\ncondition = \"> 1\"\nchannels = [\"nope\"]", "rules[0] (x).channels: unknown channel \"nope\" (none are configured)"),
        ("[[rules]]\nname = \"x\"\nsql = \"s\"\ncondition = \"> 1\"\nmessage = \"{{ valu }}\"", "rules[0] (x).message: unknown variable \"valu\""),
        ("[[rules]]\nname = \"X y\"\nsql = \"s\"\ncondition = \"> 1\"", "rules[0].name: \"X y\""),
        ("[[rules]]\nname = \"x\"\nsql = \"s\"\ncondition = \"> 1\"\n[[rules]]\nname = \"x\"\nsql = \"s\"\ncondition = \"> 1\"", "rules[1] (x): a rule of this name is defined twice"),
        ("[[rules]]\nname = \"x\"\nsql = \"s\"\ncondition = \"> 1\"\nevery = \"0s\"", "rules[0] (x).every: 0s must be between 1s and 1d"),
        ("[[rules]]\nname = \"x\"\nsql = \"s\"\ncondition = \"> 1\"\nfor = \"30d\"", "rules[0] (x).for"),
        ("[[rules]]\nname = \"x\"\nsql = \"s\"\ncondition = \"> 1\"\nvantage_points = 2", "rules[0] (x).vantage_points: only the built-in uptime_down"),
        ("[[rules]]\nname = \"x\"\nsql = \"s\"\ncondition = \"> 1\"\nseverity = \"page\"", "page"),
        ("[[rules]]\nname = \"x\"\nsqll = \"s\"", "sqll"),
        ("[[rules]]\nname = \"tls_expiring\"\ncondition = \"< x\"", "rules[0] (tls_expiring).condition"),
        ("[[rules]]\nname = \"uptime_down\"\nmessage = \"{{ labels.target | pct }}\"", "rules[0] (uptime_down).message: unknown filter \"pct\""),
        ("[alerts]\nbuiltins = false\n[[rules]]\nname = \"node_silent\"\nenabled = false", "overrides a built-in rule but [alerts] builtins = false"),
        ("[alerts]\nexternal_url = \"lake.example\"", "alerts.external_url"),
        ("[alerts]\ndefault_channels = [\"a\"]", "alerts.default_channels: unknown channel \"a\""),
        ("[[notify.webhook]]\nname = \"h\"", "notify.webhook[0] (h).url: give url"),
        ("[[notify.webhook]]\nname = \"h\"\nurl = \"ftp://x\"", "notify.webhook[0] (h).url: must be an http"),
        ("[[notify.webhook]]\nname = \"h\"\nurl_env = \"NOPE\"", "notify.webhook[0] (h).url_env: the environment variable NOPE is not set or empty"),
        ("[[notify.webhook]]\nname = \"h\"\nurl = \"http://a\"\nformat = \"teams\"", "teams"),
        ("[[notify.webhook]]\nname = \"h\"\nurl = \"http://a\"\n[[notify.webhook]]\nname = \"h\"\nurl = \"http://b\"", "notify channel \"h\": two channels have this name"),
        ("[[notify.email]]\nname = \"m\"\nhost = \"smtp.example\"\nfrom = \"not an address\"\nto = [\"a@b.c\"]", "notify.email[0] (m).from"),
        ("[[notify.email]]\nname = \"m\"\nhost = \"smtp.example\"\nfrom = \"a@b.c\"\nto = []", "notify.email[0] (m).to: give at least one"),
        ("[[notify.email]]\nname = \"m\"\nhost = \"smtp.example\"\nfrom = \"a@b.c\"\nto = [\"x@y.z\"]\nusername = \"u\"", "username given without password"),
        ("[[notify.email]]\nname = \"m\"\nhost = \"smtp.example\"\nfrom = \"a@b.c\"\nto = [\"x@y.z\"]\nusername = \"u\"\npassword = \"p\"\ntls = \"none\"", "notify.email[0] (m).tls: \"none\" would send the password in clear text"),
        ("[[notify.email]]\nname = \"m\"\nhost = \"smtp.example\"\nfrom = \"a@b.c\"\nto = [\"x@y.z\"]\nca_file = \"/nonexistent/ca.pem\"", "notify.email[0] (m).ca_file: /nonexistent/ca.pem"),
        ("[notify]\nretry_initial = \"1m\"\nretry_max = \"1s\"", "notify.retry_initial"),
    ];
    for (text, says) in cases {
        let e = parse(text).unwrap_err();
        assert!(e.contains(says), "{text}\n  gave: {e}\n  want: {says}");
    }
}

#[test]
fn conditions() {
    for (text, v, holds) in [
        ("> 0.05", 0.06, true),
        ("> 0.05", 0.05, false),
        (">= 1", 1.0, true),
        ("== 0", 0.0, true),
        ("< 10", 10.0, false),
        ("<= 10", 10.0, true),
        ("!= 0", 3.0, true),
        ("!= 0", f64::NAN, false),
        (">0", f64::NAN, false),
    ] {
        let c: Condition = text.parse().unwrap();
        assert_eq!(c.holds(v), holds, "{text} {v}");
    }
    assert_eq!("  >=  2.50 ".parse::<Condition>().unwrap().to_string(), ">= 2.5");
    assert!("> inf".parse::<Condition>().is_err());
}

#[test]
fn retry_policy_doubles_up_to_the_max() {
    let c = parse("[notify]\nretries = 3\nretry_initial = \"1s\"\nretry_max = \"3s\"").unwrap();
    let d: Vec<u64> = (1..=4).map(|n| c.retry.delay(n).as_secs()).collect();
    assert_eq!(d, [1, 2, 3, 3]);
    assert_eq!(c.retry.attempts, 4);
}

#[test]
fn alert_rule_failing_is_on_by_default_tunable_and_takes_no_sql() {
    let c = parse("").unwrap();
    let r = c.rule("alert_rule_failing").unwrap();
    assert_eq!((r.kind, r.sql.as_str(), r.condition.to_string().as_str()), (RuleKind::RuleFailures, "", ">= 2"));
    assert_eq!((r.severity, r.every), (Severity::Critical, Duration::from_secs(30)));

    let c =
        parse("[[rules]]\nname = \"alert_rule_failing\"\ncondition = \">= 1\"\nfor = \"5m\"\nseverity = \"warning\"\n")
            .unwrap();
    let r = c.rule("alert_rule_failing").unwrap();
    assert_eq!(
        (r.condition.to_string().as_str(), r.for_, r.severity),
        (">= 1", Duration::from_secs(300), Severity::Warning)
    );

    let c = parse("[[rules]]\nname = \"alert_rule_failing\"\nenabled = false\n").unwrap();
    assert!(c.rule("alert_rule_failing").is_none());
    assert_eq!(c.disabled, ["alert_rule_failing"]);

    let e = parse("[[rules]]\nname = \"alert_rule_failing\"\nsql = \"select 1 as value\"\n").unwrap_err();
    assert!(e.contains("rules[0] (alert_rule_failing).sql: this rule has no SQL"), "{e}");
}

#[test]
fn anomaly_rules_build_their_query_from_table_by_metric() {
    let c = parse(
        r#"
[alerts]
builtins = false

[[rules]]
name = "http_anomaly"
kind = "anomaly"
table = "http"
by = ["vhost"]
threshold = 5
window = "2h"
direction = "up"

[[rules]]
name = "cpu_anomaly"
kind = "anomaly"
metric = "cpu_usage_percent"

[[rules]]
name = "everything"
kind = "anomaly"
weeks = 2

[[rules]]
name = "signups"
kind = "anomaly"
table = "stripe_events"
by = ["type"]
"#,
    )
    .unwrap();
    let http = c.rule("http_anomaly").unwrap();
    assert_eq!(http.kind, RuleKind::Sql);
    assert_eq!(http.condition.to_string(), ">= 5");
    assert!(http.sql.contains("abs(z) AS value") && http.sql.contains("INTERVAL '2 hours'"), "{}", http.sql);
    assert!(http.sql.contains("'vhost=' || coalesce(\"vhost\"::VARCHAR, '-')") && http.sql.contains(" AND z > 0"));
    assert_eq!(
        http.description,
        "anomalies of http rows by vhost over the last 2h, against the same hours of 4 earlier weeks"
    );
    assert!(c.rule("cpu_anomaly").unwrap().sql.contains("name = 'cpu_usage_percent'"));
    assert_eq!(c.rule("cpu_anomaly").unwrap().condition.to_string(), ">= 4");
    assert!(
        c.rule("everything").unwrap().sql.contains("FROM http")
            && c.rule("everything").unwrap().sql.contains("FROM logs")
    );
    assert!(c.rule("signups").unwrap().sql.contains("FROM \"stripe_events\""));
}

#[test]
fn anomaly_rule_mistakes_are_named() {
    let bad = |body: &str| parse(&format!("[alerts]\nbuiltins = false\n[[rules]]\nname = \"a\"\n{body}")).unwrap_err();
    let cases = [
        ("kind = \"anomaly\"\nsql = \"select 1 as value\"", "rules[0] (a).sql: an anomaly rule builds"),
        ("kind = \"anomaly\"\ncondition = \"> 1\"", "rules[0] (a).condition: an anomaly rule builds"),
        ("kind = \"anomaly\"\ntable = \"http\"\nmetric = \"x\"", "rules[0] (a).metric: give table (with by) or metric"),
        ("kind = \"anomaly\"\nby = [\"vhost\"]", "rules[0] (a).by: needs table"),
        ("kind = \"anomaly\"\ntable = \"http\"\nby = [\"nope\"]", "rules[0] (a).by: table http has no column \"nope\""),
        ("kind = \"anomaly\"\ntable = \"http\"\nby = [\"attrs\"]", "cannot be grouped by"),
        ("kind = \"anomaly\"\ntable = \"Bad Name\"", "rules[0] (a).table: table name \"Bad Name\""),
        ("kind = \"anomaly\"\nmetric = \"x' or 1=1\"", "rules[0] (a).metric: metric name"),
        ("kind = \"anomaly\"\nthreshold = 0", "rules[0] (a).threshold: 0 must be a number above 0"),
        ("kind = \"anomaly\"\nthreshold = nan", "rules[0] (a).threshold"),
        ("kind = \"anomaly\"\nwindow = \"90m\"", "rules[0] (a).window: 1h 30m must be whole hours"),
        ("kind = \"anomaly\"\nwindow = \"8d\"", "rules[0] (a).window: the window must be 1h to 7d"),
        ("kind = \"anomaly\"\nweeks = 13", "rules[0] (a).weeks: weeks 13 must be between 1 and 12"),
        ("kind = \"anomaly\"\ndirection = \"sideways\"", "unknown variant"),
        ("kind = \"anomalous\"", "rules[0] (a).kind: \"anomalous\": use \"anomaly\""),
        (
            "sql = \"select 1 as value\"\ncondition = \"> 0\"\ntable = \"http\"",
            "rules[0] (a).table: only rules of kind = \"anomaly\" take it",
        ),
        (
            "sql = \"select 1 as value\"\ncondition = \"> 0\"\nthreshold = 3",
            "rules[0] (a).threshold: only rules of kind",
        ),
    ];
    for (body, want) in cases {
        let e = bad(body);
        assert!(e.contains(want), "{body}: {e}");
    }
    let e = parse("[[rules]]\nname = \"http_5xx_ratio\"\nkind = \"anomaly\"").unwrap_err();
    assert!(e.contains("rules[0] (http_5xx_ratio).kind: a built-in rule keeps its own query"), "{e}");
    let e = parse("[[rules]]\nname = \"http_5xx_ratio\"\nthreshold = 3").unwrap_err();
    assert!(e.contains("(http_5xx_ratio).threshold"), "{e}");
}
