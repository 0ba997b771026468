use lake_query::alerts::notify::{EmailChannel, SenderChecks, TlsMode};
use lake_query::alerts::rules::Severity;
use lake_query::alerts::state::{NotifiedAlert, Status};
use lake_query::alerts::Labels;

use super::*;

const T0: i64 = 1_795_374_070_000_000;

fn alert(target: &str, status: Status) -> NotifiedAlert {
    NotifiedAlert {
        status,
        fingerprint: format!("{:016x}", target.len()),
        labels: Labels::from([("kind".into(), "http".into()), ("target".into(), target.into())]),
        details: Labels::from([("error".into(), "connection refused".into()), ("down_from".into(), "node-a".into())]),
        value: Some(2.0),
        message: format!("{target} is down"),
        starts_at: T0,
        ends_at: (status == Status::Resolved).then_some(T0 + 300_000_000),
        reminder: false,
    }
}

fn notification(alerts: Vec<NotifiedAlert>) -> Notification {
    let status = if alerts.iter().any(|a| a.status == Status::Firing) { Status::Firing } else { Status::Resolved };
    Notification {
        rule: "uptime_down".into(),
        description: "an uptime target is down".into(),
        severity: Severity::Critical,
        status,
        alerts,
        created_at: T0 + 200_000_000,
        dashboard: "http://lake.example:7470/".into(),
        external_url: "http://lake.example:7470".into(),
    }
}

#[test]
fn the_email_is_plain_text_to_every_recipient() {
    let c = EmailChannel {
        name: "mail".into(),
        host: "127.0.0.1".into(),
        port: 25,
        tls: TlsMode::None,
        credentials: None,
        from: "lake <alerts@lake.example>".into(),
        to: vec!["me@example.com".into(), "Ops <ops@example.com>".into()],
        ca_pem: None,
        timeout: std::time::Duration::from_secs(5),
    };
    let n = notification(vec![alert("https://a.example/", Status::Firing)]);
    let raw = String::from_utf8(email::message(&c, &n).unwrap().formatted()).unwrap();
    assert!(raw.contains("Subject: [FIRING] uptime_down: https://a.example/ is down\r\n"), "{raw}");
    assert!(raw.contains("To: me@example.com, Ops <ops@example.com>\r\n"), "{raw}");
    assert!(raw.contains("Content-Type: text/plain; charset=utf-8\r\n"), "{raw}");
    // Lines past 76 characters make it quoted-printable, which every mail client reads.
    let decoded = raw.replace("=\r\n", "").replace("=3D", "=");
    assert!(decoded.contains("Where: kind=http target=https://a.example/"), "{raw}");
}

#[test]
fn addresses_are_checked_as_the_sender_reads_them() {
    assert!(Checks.mailbox("lake <alerts@lake.example>").is_ok());
    assert!(Checks.mailbox("not an address").is_err());
}
