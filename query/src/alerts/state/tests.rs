use std::time::Duration;

use super::*;
use crate::alerts::rules::{Condition, FlapPolicy, Rule, Severity};
use crate::alerts::template::Template;
use crate::alerts::{Clock, ManualClock};

const MIN: Duration = Duration::from_secs(60);
const T0: i64 = 1_795_374_070_000_000;

fn rule(for_: Duration) -> Rule {
    Rule {
        name: "disk".into(),
        description: "disk nearly full".into(),
        sql: "select".into(),
        kind: crate::alerts::rules::RuleKind::Sql,
        condition: "> 0.9".parse::<Condition>().unwrap(),
        for_,
        every: MIN,
        severity: Severity::Warning,
        message: Template::parse("{{ labels.host }} at {{ value | percent }}").unwrap(),
        channels: vec!["mail".into()],
        repeat: 4 * 60 * MIN,
        dashboard: None,
        builtin: false,
    }
}

fn policy() -> Policy {
    Policy {
        flap: FlapPolicy { window: 60 * MIN, max_changes: 4 },
        keep_resolved: 10,
        external_url: "http://lake:7470".into(),
    }
}

fn obs(host: &str, value: f64) -> Observation {
    Observation { labels: Labels::from([("host".to_string(), host.to_string())]), details: Labels::new(), value }
}

/// Evaluates at the clock's time and moves the clock on by `step`.
fn step(s: &mut AlertState, r: &Rule, clock: &ManualClock, seen: &[Observation], by: Duration) -> Cycle {
    let c = s.evaluate(r, seen, clock.now_micros(), &policy());
    clock.advance(by);
    c
}

fn states(c: &Cycle) -> Vec<&str> {
    c.rows.iter().map(|r| r.state.as_str()).collect()
}

fn statuses(c: &Cycle) -> Vec<(Status, bool)> {
    c.notification.iter().flat_map(|n| n.alerts.iter().map(|a| (a.status, a.reminder))).collect()
}

#[test]
fn pending_for_the_for_duration_then_firing_then_resolved() {
    let r = rule(5 * MIN);
    let clock = ManualClock::new(T0);
    let mut s = AlertState::default();

    let c = step(&mut s, &r, &clock, &[obs("a", 0.95), obs("b", 0.5)], 4 * MIN);
    assert_eq!(states(&c), ["pending"]);
    assert!(c.notification.is_none());
    assert_eq!(c.rows[0].message, "a at 95%");
    assert_eq!(c.rows[0].host, "a");
    let c = step(&mut s, &r, &clock, &[obs("a", 0.96)], MIN);
    assert!(c.rows.is_empty() && c.notification.is_none(), "4 minutes is not 5: {c:?}");
    let c = step(&mut s, &r, &clock, &[obs("a", 0.97)], MIN);
    assert_eq!(states(&c), ["firing"]);
    assert_eq!(c.rows[0].channels, ["mail"]);
    let n = c.notification.unwrap();
    assert_eq!((n.status, n.alerts.len()), (Status::Firing, 1));
    assert_eq!(n.alerts[0].starts_at, T0, "since when the condition held");
    assert_eq!(n.alerts[0].message, "a at 97%");
    assert_eq!(n.dashboard, "http://lake:7470/");
    assert_eq!(s.active().count(), 1);

    let c = step(&mut s, &r, &clock, &[obs("a", 0.97)], MIN);
    assert!(c.rows.is_empty() && c.notification.is_none());
    // The row disappearing from the result resolves it, like a value below the threshold.
    let c = step(&mut s, &r, &clock, &[], MIN);
    assert_eq!(states(&c), ["resolved"]);
    assert_eq!(statuses(&c), [(Status::Resolved, false)]);
    assert_eq!(c.notification.as_ref().unwrap().alerts[0].value, Some(0.97), "last known value");
    assert_eq!(s.active().count(), 0);
    assert_eq!(s.recent.len(), 1);
    assert_eq!(s.recent[0].phase, Phase::Ok);
}

#[test]
fn pending_that_clears_notifies_nobody() {
    let r = rule(5 * MIN);
    let clock = ManualClock::new(T0);
    let mut s = AlertState::default();
    assert_eq!(states(&step(&mut s, &r, &clock, &[obs("a", 0.95)], MIN)), ["pending"]);
    let c = step(&mut s, &r, &clock, &[obs("a", 0.5)], MIN);
    assert_eq!(states(&c), ["ok"]);
    assert!(c.notification.is_none());
    assert!(s.instances.is_empty() && s.recent.is_empty());
}

#[test]
fn reminders_follow_the_repeat_interval() {
    let r = rule(Duration::ZERO);
    let clock = ManualClock::new(T0);
    let mut s = AlertState::default();
    let c = step(&mut s, &r, &clock, &[obs("a", 1.0)], 60 * MIN);
    assert_eq!(statuses(&c), [(Status::Firing, false)]);
    for _ in 0..3 {
        let c = step(&mut s, &r, &clock, &[obs("a", 1.0)], 60 * MIN);
        assert!(c.notification.is_none());
    }
    // 4h after the first notification.
    let c = step(&mut s, &r, &clock, &[obs("a", 1.0)], MIN);
    assert_eq!(statuses(&c), [(Status::Firing, true)]);
    assert!(c.rows.is_empty(), "a reminder is not a transition");
    let c = step(&mut s, &r, &clock, &[obs("a", 1.0)], MIN);
    assert!(c.notification.is_none());
}

#[test]
fn flapping_holds_notifications_until_it_settles() {
    let r = rule(Duration::ZERO);
    let clock = ManualClock::new(T0);
    let mut s = AlertState::default();
    let mut sent = Vec::new();
    let mut held_rows = 0;
    // Up and down every minute: changes 1..=4 notify, the 5th exceeds max_changes = 4.
    for i in 0..8 {
        let v = if i % 2 == 0 { 1.0 } else { 0.0 };
        let c = step(&mut s, &r, &clock, &[obs("a", v)], MIN);
        held_rows += c.rows.iter().filter(|r| r.state == "flapping").count();
        sent.extend(statuses(&c));
    }
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(held_rows, 1, "one row when the hold starts");
    let i = s.instances.values().next().unwrap();
    assert_eq!(i.held, Some(Hold::Flapping));
    assert_eq!(i.notified, Some(Status::Resolved));
    // It ends firing and stays so; once the changes leave the 1h window it is told.
    let mut after = Vec::new();
    for _ in 0..70 {
        after.extend(statuses(&step(&mut s, &r, &clock, &[obs("a", 1.0)], MIN)));
    }
    assert_eq!(after, [(Status::Firing, false)]);
}

#[test]
fn silences_hold_notifications_and_release_them() {
    let r = rule(Duration::ZERO);
    let clock = ManualClock::new(T0);
    let mut s = AlertState::default();
    let id = s
        .add_silence(
            Some("disk".into()),
            Labels::from([("host".into(), "a".into())]),
            T0,
            T0 + 7_200_000_000,
            "maintenance".into(),
        )
        .id;
    let c = step(&mut s, &r, &clock, &[obs("a", 1.0), obs("b", 1.0)], MIN);
    let rows = |host: &str| -> Vec<(String, Vec<String>)> {
        c.rows.iter().filter(|r| r.host == host).map(|r| (r.state.clone(), r.channels.clone())).collect()
    };
    assert_eq!(rows("a"), [("firing".to_string(), vec![]), ("silenced".to_string(), vec![])]);
    assert_eq!(rows("b"), [("firing".to_string(), vec!["mail".to_string()])]);
    assert_eq!(c.notification.as_ref().unwrap().alerts.len(), 1, "only b is told");
    assert_eq!(c.notification.as_ref().unwrap().alerts[0].labels["host"], "b");
    let c = step(&mut s, &r, &clock, &[obs("a", 1.0), obs("b", 1.0)], MIN);
    assert!(c.rows.is_empty() && c.notification.is_none(), "the silenced row is written once");
    assert!(s.remove_silence(id));
    let c = step(&mut s, &r, &clock, &[obs("a", 1.0), obs("b", 1.0)], MIN);
    assert_eq!(statuses(&c), [(Status::Firing, false)]);
    assert_eq!(c.notification.unwrap().alerts[0].labels["host"], "a");

    // A silence of another rule or other labels does not match; an ended one neither.
    let other = Silence {
        id: 9,
        rule: Some("x".into()),
        matchers: Labels::new(),
        starts_at: 0,
        ends_at: i64::MAX,
        comment: String::new(),
    };
    assert!(!other.matches("disk", &Labels::new(), T0));
    let ended = Silence { rule: None, ends_at: T0, ..other };
    assert!(!ended.matches("disk", &Labels::new(), T0));
    assert!(Silence { ends_at: T0 + 1, ..ended.clone() }.matches("disk", &Labels::new(), T0));
    s.silences.push(ended);
    assert!(s.expire_silences(T0 + 1));
}

#[test]
fn instances_that_change_together_share_one_notification() {
    let r = rule(Duration::ZERO);
    let clock = ManualClock::new(T0);
    let mut s = AlertState::default();
    let c = step(&mut s, &r, &clock, &[obs("b", 1.0), obs("a", 1.0), obs("c", 0.1)], MIN);
    let n = c.notification.unwrap();
    assert_eq!(n.alerts.len(), 2);
    assert_eq!(n.alerts.iter().map(|a| a.labels["host"].as_str()).collect::<Vec<_>>(), ["a", "b"]);
    // a resolves while c fires: one message with both, firing first.
    let c = step(&mut s, &r, &clock, &[obs("b", 1.0), obs("c", 1.0)], MIN);
    let n = c.notification.unwrap();
    assert_eq!(n.status, Status::Firing);
    assert_eq!(
        n.alerts.iter().map(|a| (a.labels["host"].as_str(), a.status)).collect::<Vec<_>>(),
        [("c", Status::Firing), ("a", Status::Resolved)]
    );
}

#[test]
fn a_reloaded_state_neither_repeats_nor_forgets() {
    let r = rule(Duration::ZERO);
    let clock = ManualClock::new(T0);
    let mut s = AlertState::default();
    assert_eq!(statuses(&step(&mut s, &r, &clock, &[obs("a", 1.0)], MIN)), [(Status::Firing, false)]);
    let saved = serde_json::to_string(&s).unwrap();
    let mut back: AlertState = serde_json::from_str(&saved).unwrap();
    assert_eq!(back, s);
    let c = step(&mut back, &r, &clock, &[obs("a", 1.0)], MIN);
    assert!(c.notification.is_none() && c.rows.is_empty(), "no second firing notification");
    let c = step(&mut back, &r, &clock, &[], MIN);
    assert_eq!(statuses(&c), [(Status::Resolved, false)]);
}

#[test]
fn removed_rules_and_delivery_records() {
    let r = rule(Duration::ZERO);
    let mut s = AlertState::default();
    let c = s.evaluate(&r, &[obs("a", 1.0)], T0, &policy());
    let fp = c.notification.unwrap().alerts[0].fingerprint.clone();
    assert_eq!(fp, fingerprint("disk", &Labels::from([("host".into(), "a".into())])));
    assert_eq!(fp.len(), 16);
    let sent = DeliveryStatus { kind: Status::Firing, state: DeliveryState::Sent, attempts: 1, at: T0, error: None };
    s.record_delivery("disk", &[&fp], "mail", &sent);
    assert_eq!(s.instances.values().next().unwrap().deliveries["mail"], sent);

    let c = s.evaluate(&r, &[], T0 + 1, &policy());
    let failed = DeliveryStatus {
        kind: Status::Resolved,
        state: DeliveryState::Failed,
        attempts: 5,
        at: T0 + 2,
        error: Some("HTTP 500".into()),
    };
    s.record_delivery("disk", &[&fp], "mail", &failed);
    assert_eq!(c.notification.unwrap().status, Status::Resolved);
    assert_eq!(s.recent[0].deliveries["mail"], failed);

    let c = s.evaluate(&r, &[obs("a", 1.0)], T0 + 2, &policy());
    assert_eq!(states(&c), ["firing"]);
    let rows = s.forget_rules(&["other"], T0 + 3);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "resolved");
    assert!(s.instances.is_empty());
}
