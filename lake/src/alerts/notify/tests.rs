use lake_query::alerts::notify::{EmailChannel, SenderChecks, TlsMode};
use lake_query::alerts::state::Status;

use super::*;
use lake_query::test_support::{notified_alert as alert, uptime_notification as notification};

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
