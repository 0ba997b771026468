//! The NUT line parser, the rows of a poll, status changes, and the config checks.

use super::nut::parse_var;
use super::*;

fn config(toml: &str) -> anyhow::Result<Vec<UpsConfig>> {
    #[derive(Deserialize)]
    struct F {
        ups: Vec<UpsFile>,
    }
    let f: F = toml::from_str(toml)?;
    validate_all(f.ups)
}

fn home() -> UpsConfig {
    config("[[ups]]\nname = \"home\"\n").unwrap().remove(0)
}

fn vars(pairs: &[(&str, &str)]) -> Result<Vec<(String, String)>, NutError> {
    Ok(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// (name, labels as `k=v,…`, value) of a metrics row.
type MetricRow = (String, String, f64);
/// (priority, message, attrs as JSON) of a logs row.
type LogsRow = (i64, String, String);

/// Every metrics row and every logs row of a poll.
fn rows(r: &PollRows) -> (Vec<MetricRow>, Vec<LogsRow>) {
    let (mut metrics, mut logs) = (Vec::new(), Vec::new());
    for e in &r.records {
        let (_, batches) = lake_format::wire::decode(&e.body).unwrap();
        for b in &batches {
            for row in lake_test_support::table_rows(e.table.as_str(), b) {
                if e.table.as_str() == "metrics" {
                    let labels = row["labels"].as_object().unwrap();
                    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap())).collect();
                    metrics.push((row["name"].as_str().unwrap().into(), l.join(","), row["value"].as_f64().unwrap()));
                } else {
                    logs.push((
                        row["priority"].as_i64().unwrap(),
                        row["message"].as_str().unwrap().into(),
                        row["attrs"].to_string(),
                    ));
                }
            }
        }
    }
    (metrics, logs)
}

#[test]
fn var_lines_unescape_and_odd_ones_are_refused() {
    assert_eq!(parse_var("home", r#"VAR home battery.charge "100""#), Some(("battery.charge".into(), "100".into())));
    assert_eq!(
        parse_var("home", r#"VAR home ups.model "Test \"quoted\" UPS \\ 1500""#),
        Some(("ups.model".into(), r#"Test "quoted" UPS \ 1500"#.into()))
    );
    assert_eq!(parse_var("home", r#"VAR home ups.status """#), Some(("ups.status".into(), String::new())));
    for bad in [
        r#"VAR other battery.charge "100""#,
        r#"VAR home battery.charge 100"#,
        r#"VAR home battery.charge "100"#,
        r#"VAR home bad name "1""#,
        r#"VAR home x "a"b""#,
        r#"VAR home x "ends in \"#,
        "RW home x \"1\"",
        "",
    ] {
        assert_eq!(parse_var("home", bad), None, "{bad:?}");
    }
}

#[test]
fn a_poll_is_numbers_status_flags_and_up() {
    let c = home();
    let mut seen = Seen::default();
    let r = rows_of_poll(
        &c,
        "pi",
        7,
        vars(&[
            ("battery.charge", "100"),
            ("battery.runtime", "3600"),
            ("input.voltage", "231.5"),
            ("ups.load", "23"),
            ("ups.status", "OL CHRG"),
            ("ups.model", "Back-UPS 700"),
            ("driver.version", "2.8.0"),
            ("driver.parameter.pollinterval", "2"),
        ]),
        &mut seen,
    )
    .unwrap();
    let (metrics, logs) = rows(&r);
    let value =
        |name: &str, labels: &str| metrics.iter().find(|(n, l, _)| n == name && l == labels).map(|(_, _, v)| *v);
    assert_eq!(value("nut_battery_charge", "ups=home"), Some(100.0));
    assert_eq!(value("nut_battery_runtime", "ups=home"), Some(3600.0));
    assert_eq!(value("nut_input_voltage", "ups=home"), Some(231.5));
    assert_eq!(value("nut_ups_load", "ups=home"), Some(23.0));
    assert_eq!(value("nut_up", "ups=home"), Some(1.0));
    assert_eq!(value("nut_ups_status", "flag=OL,ups=home"), Some(1.0));
    assert_eq!(value("nut_ups_status", "flag=CHRG,ups=home"), Some(1.0));
    assert_eq!(value("nut_ups_status", "flag=OB,ups=home"), Some(0.0));
    assert_eq!(metrics.iter().filter(|(n, _, _)| n == "nut_ups_status").count(), FLAGS.len());
    // "2.8.0" and the model are text: no series.
    assert!(metrics.iter().all(|(n, _, _)| n != "nut_driver_version" && n != "nut_ups_model"), "{metrics:?}");
    assert!(metrics.iter().all(|(n, _, _)| !n.starts_with("nut_driver_")), "{metrics:?}");
    assert_eq!(r.vars, 8);
    // On line and charging at start: no status row.
    assert_eq!(logs, vec![]);
}

#[test]
fn status_changes_are_rows_with_their_priority() {
    let c = home();
    let mut seen = Seen::default();
    let mut step = |status: &str| {
        let r = rows_of_poll(
            &c,
            "pi",
            1,
            vars(&[("ups.status", status), ("battery.charge", "40"), ("battery.runtime", "600")]),
            &mut seen,
        )
        .unwrap();
        rows(&r).1.into_iter().map(|(p, m, _)| (p, m)).collect::<Vec<_>>()
    };
    assert_eq!(step("OB DISCHRG"), [(4, "UPS home on battery at start: OB DISCHRG".to_string())]);
    assert_eq!(step("OB  DISCHRG"), [], "the same flags, spaced differently");
    assert_eq!(step("OB DISCHRG LB"), [(2, "UPS home low battery: OB DISCHRG LB (was OB DISCHRG)".to_string())]);
    assert_eq!(step("OL CHRG"), [(5, "UPS home back on line power: OL CHRG (was OB DISCHRG LB)".to_string())]);
    assert_eq!(step("OL"), [(6, "UPS home status changed: OL (was OL CHRG)".to_string())]);
    assert_eq!(step("OL FSD"), [(2, "UPS home forced shutdown: OL FSD (was OL)".to_string())]);
    // At start, an on-line status is not news; one that needs a look is.
    let at_start = |status: &str| {
        let mut seen = Seen::default();
        let r = rows_of_poll(&c, "pi", 1, vars(&[("ups.status", status)]), &mut seen).unwrap();
        rows(&r).1.into_iter().map(|(p, m, _)| (p, m)).collect::<Vec<_>>()
    };
    assert_eq!(at_start("OL CHRG"), []);
    assert_eq!(at_start("WAIT"), [], "the driver has not read the UPS yet");
    assert_eq!(at_start("OL RB"), [(6, "UPS home status changed at start: OL RB".to_string())]);
    // The attrs of a change.
    let mut seen = Seen { status: Some("OL".into()) };
    let r = rows_of_poll(&c, "pi", 1, vars(&[("ups.status", "OB"), ("battery.charge", "97")]), &mut seen).unwrap();
    let attrs: serde_json::Value = serde_json::from_str(&rows(&r).1[0].2).unwrap();
    assert_eq!(
        attrs,
        serde_json::json!({"status": "OB", "previous_status": "OL", "battery_charge": "97", "server": "127.0.0.1:3493"})
    );
}

#[test]
fn a_failed_poll_is_up_0_with_a_note_and_keeps_the_last_status() {
    let c = home();
    let mut seen = Seen { status: Some("OB".into()) };
    let r = rows_of_poll(&c, "pi", 1, Err(NutError::Server("DATA-STALE".into())), &mut seen).unwrap();
    let (metrics, logs) = rows(&r);
    assert_eq!(metrics, [("nut_up".to_string(), "ups=home".to_string(), 0.0)]);
    assert_eq!(logs[0].0, 3);
    assert_eq!(logs[0].1, "UPS home at 127.0.0.1:3493: upsd answered ERR DATA-STALE");
    assert_eq!(r.failure.as_deref(), Some("UPS home at 127.0.0.1:3493: upsd answered ERR DATA-STALE"));
    assert_eq!(seen.status.as_deref(), Some("OB"), "the next good poll compares with the last status seen");
    assert!(NutError::Server("X".into()).keeps_connection());
    assert!(!NutError::Timeout(Duration::from_secs(1)).keeps_connection());
}

#[test]
fn config_checks_name_server_and_times() {
    let c = home();
    assert_eq!((c.source, c.server.as_str(), c.interval), ("ups/home", "127.0.0.1:3493", Duration::from_secs(10)));
    let n = config("[[ups]]\nname = \"rack-1.ups\"\nserver = \"nas.lan:3493\"\ninterval = \"30s\"\n").unwrap();
    assert_eq!(n[0].server, "nas.lan:3493");
    for bad in [
        "[[ups]]\n",
        "[[ups]]\nname = \"\"\n",
        "[[ups]]\nname = \"home\\nLIST UPS\"\n",
        "[[ups]]\nname = \"a b\"\n",
        "[[ups]]\nname = \"home\"\nserver = \"nas.lan\"\n",
        "[[ups]]\nname = \"home\"\nserver = \"nas.lan:0\"\n",
        "[[ups]]\nname = \"home\"\ntimeout = \"1m\"\n",
        "[[ups]]\nname = \"home\"\ninterval = \"0s\"\n",
        "[[ups]]\nname = \"home\"\n[[ups]]\nname = \"home\"\n",
        "[[ups]]\nname = \"home\"\nport = 3493\n",
    ] {
        assert!(config(bad).is_err(), "{bad}");
    }
}

#[test]
fn numbers_are_numbers_only() {
    for (text, want) in [("100", Some(100.0)), ("231.5", Some(231.5)), (" 12 ", Some(12.0)), ("-3", Some(-3.0))] {
        assert_eq!(number(text), want, "{text}");
    }
    for text in ["", "2.8.0", "OL", "inf", "NaN", "1e999", "0x10"] {
        assert_eq!(number(text), None, "{text}");
    }
}
