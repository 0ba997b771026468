use std::time::Duration;

use axum::http::HeaderMap;
use ring::hmac;
use serde_json::{json, Value};

use super::auth::{check, stripe_header};
use super::config::{validate, HookAuth, Pointers, WebhookFile};
use super::presets::{map, Preset, Request};
use super::seen::{key, Begin, Seen};
use super::{readable_time, row};
use lake_format::Secret;

const NOW: i64 = 1_795_374_070; // 2026-11-22, unix seconds

fn sign(secret: &str, data: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), data);
    lake_format::logs::hex(tag.as_ref())
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    h
}

#[test]
fn hub_signatures_are_checked_over_the_raw_body() {
    let auth = HookAuth::Hmac(Secret::new("It's a Secret to Everybody"));
    // GitHub's documented test vector (docs: "Validating webhook deliveries").
    let body = b"Hello, World!";
    let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(sign("It's a Secret to Everybody", body), good.trim_start_matches("sha256="));
    assert!(check(&auth, &headers(&[("X-Hub-Signature-256", good)]), None, body, NOW).is_ok());
    let e = check(&auth, &headers(&[("X-Hub-Signature-256", good)]), None, b"Hello, World?", NOW).unwrap_err();
    assert_eq!(e, "X-Hub-Signature-256 does not match the body");
    assert_eq!(check(&auth, &HeaderMap::new(), None, body, NOW).unwrap_err(), "no X-Hub-Signature-256 header");
    for bad in ["757107ea", "sha1=757107ea", "sha256=zz", "sha256=abc"] {
        let e = check(&auth, &headers(&[("X-Hub-Signature-256", bad)]), None, body, NOW).unwrap_err();
        assert!(e.contains("is not \"sha256=<hex>\"") || e.contains("does not match"), "{bad}: {e}");
    }
    let e = check(&auth, &headers(&[("X-Hub-Signature-256", good)]), Some("x"), body, NOW).unwrap_err();
    assert_eq!(e, "this hook takes no secret in its URL");
}

#[test]
fn stripe_signatures_need_a_fresh_timestamp_and_one_matching_v1() {
    let secret = "whsec_test_secret";
    let auth = HookAuth::Stripe { secret: Secret::new(secret), tolerance: Duration::from_secs(300) };
    let body = br#"{"id":"evt_1","object":"event"}"#;
    let sig = |t: i64| sign(secret, format!("{t}.{}", std::str::from_utf8(body).unwrap()).as_bytes());
    let h = |v: String| headers(&[("Stripe-Signature", &v)]);
    assert!(check(&auth, &h(format!("t={NOW},v1={}", sig(NOW))), None, body, NOW).is_ok());
    // Several v1 (a secret being rolled) and a v0: any v1 may match.
    let rolled = format!("t={NOW},v1={},v1={},v0=deadbeef", sign("whsec_old", b"x"), sig(NOW));
    assert!(check(&auth, &h(rolled), None, body, NOW).is_ok());
    // Stale or future timestamps, even correctly signed.
    let t = NOW - 301;
    let e = check(&auth, &h(format!("t={t},v1={}", sig(t))), None, body, NOW).unwrap_err();
    assert_eq!(e, format!("Stripe-Signature timestamp {t} is 301s from the lake's clock (tolerance 300s)"));
    let t = NOW + 400;
    assert!(check(&auth, &h(format!("t={t},v1={}", sig(t))), None, body, NOW).is_err());
    // The timestamp is part of what is signed.
    let e = check(&auth, &h(format!("t={},v1={}", NOW - 1, sig(NOW))), None, body, NOW).unwrap_err();
    assert_eq!(e, "no v1 signature of Stripe-Signature matches the body");
    assert_eq!(stripe_header("v1=00").unwrap_err(), "Stripe-Signature has no timestamp (t=)");
    assert_eq!(stripe_header("t=1").unwrap_err(), "Stripe-Signature has no v1 signature");
    assert!(stripe_header("t=x,v1=00").is_err() && stripe_header("garbage").is_err());
    let many = format!("t=1{}", ",v1=00".repeat(9));
    assert!(stripe_header(&many).unwrap_err().contains("more than 8"));
}

#[test]
fn basic_auth_and_url_secrets() {
    use base64::Engine as _;
    let auth = HookAuth::Basic { user: "postmark".into(), password: Secret::new("s3cret-pass") };
    let basic = |u: &str, p: &str| {
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        headers(&[("Authorization", &format!("Basic {v}"))])
    };
    assert!(check(&auth, &basic("postmark", "s3cret-pass"), None, b"", NOW).is_ok());
    let e = check(&auth, &basic("postmark", "wrong"), None, b"", NOW).unwrap_err();
    assert_eq!(e, "wrong user or password for basic auth (user \"postmark\")");
    assert!(!e.contains("s3cret"), "{e}");
    assert!(check(&auth, &basic("other", "s3cret-pass"), None, b"", NOW).is_err());
    assert_eq!(
        check(&auth, &HeaderMap::new(), None, b"", NOW).unwrap_err(),
        "no HTTP basic auth (Authorization: Basic …)"
    );

    let auth = HookAuth::UrlSecret(Secret::new("0123456789abcdef0123"));
    assert!(check(&auth, &HeaderMap::new(), Some("0123456789abcdef0123"), b"", NOW).is_ok());
    assert_eq!(
        check(&auth, &HeaderMap::new(), Some("0123456789abcdef012"), b"", NOW).unwrap_err(),
        "wrong secret in the URL"
    );
    assert!(check(&auth, &HeaderMap::new(), None, b"", NOW).unwrap_err().starts_with("no secret in the URL"));
}

fn parse(toml_text: &str) -> anyhow::Result<Vec<super::HookConfig>> {
    #[derive(serde::Deserialize)]
    struct F {
        webhooks: Vec<WebhookFile>,
    }
    let f: F = toml::from_str(toml_text)?;
    let env = |k: &str| (k == "WHSEC").then(|| "whsec_from_env".to_string());
    validate(f.webhooks, &env, &mut Vec::new())
}

#[test]
fn config_is_validated_naming_the_key() {
    let ok = parse(
        "[[webhooks]]\nname = \"stripe\"\npreset = \"stripe\"\nsecret_env = \"WHSEC\"\n\
         [[webhooks]]\nname = \"pm\"\npreset = \"postmark\"\nuser = \"u\"\npassword = \"p\"\nhost = \"mail\"\n\
         [[webhooks]]\nname = \"any-thing\"\npreset = \"generic\"\nauth = \"url_secret\"\nsecret = \"0123456789abcdef\"\n\
         ts_pointer = \"/at\"\n[webhooks.columns]\nstatus = \"/data/status\"\n",
    )
    .unwrap();
    assert_eq!(ok[0].table, "stripe");
    assert!(
        matches!(&ok[0].auth, HookAuth::Stripe { secret, tolerance } if secret.expose() == "whsec_from_env" && tolerance.as_secs() == 300)
    );
    assert_eq!((ok[1].table.as_str(), ok[1].host.as_str(), ok[1].auth.kind()), ("postmark", "mail", "basic"));
    assert_eq!((ok[2].table.as_str(), ok[2].host.as_str()), ("any_thing", "lake"));
    assert_eq!(ok[2].pointers.columns["status"], "/data/status");

    let err = |text: &str| parse(text).unwrap_err().to_string();
    assert!(err("[[webhooks]]\nname = \"Bad Name\"\npreset = \"stripe\"\nsecret = \"x\"\n")
        .contains("webhooks[0].name \"Bad Name\""));
    assert!(err("[[webhooks]]\nname = \"s\"\npreset = \"stripe\"\n")
        .contains("webhooks[0] (s): auth = \"stripe\" needs secret"));
    assert!(err("[[webhooks]]\nname = \"s\"\npreset = \"stripe\"\nsecret_env = \"NOPE\"\n").contains("NOPE is not set"));
    assert!(err("[[webhooks]]\nname = \"g\"\npreset = \"generic\"\n").contains("generic preset has no default"));
    assert!(err("[[webhooks]]\nname = \"g\"\npreset = \"generic\"\nauth = \"url_secret\"\nsecret = \"short\"\n")
        .contains("at least 16"));
    assert!(err("[[webhooks]]\nname = \"p\"\npreset = \"postmark\"\npassword = \"p\"\n").contains("needs a user name"));
    assert!(err("[[webhooks]]\nname = \"s\"\npreset = \"stripe\"\nsecret = \"x\"\ntable = \"logs\"\n")
        .contains("webhooks[0] (s).table"));
    assert!(err("[[webhooks]]\nname = \"s\"\npreset = \"stripe\"\nsecret = \"x\"\nts_pointer = \"/a\"\n")
        .contains("for preset = \"generic\""));
    assert!(err("[[webhooks]]\nname = \"s\"\npreset = \"stripe\"\nsecret = \"x\"\nmax_body = \"1GiB\"\n")
        .contains("max_body"));
    assert!(err("[[webhooks]]\nname = \"s\"\npreset = \"stripe\"\nsecret = \"x\"\n[[webhooks]]\nname = \"s\"\npreset = \"github\"\nsecret = \"y\"\n")
        .contains("another [[webhooks]] entry has this name"));
    assert!(err("[[webhooks]]\nname = \"g\"\npreset = \"generic\"\nauth = \"hmac\"\nsecret = \"x\"\n[webhooks.columns]\npayload = \"/a\"\n")
        .contains("taken by a column every hook row has"));
    assert!(err("[[webhooks]]\nname = \"g\"\npreset = \"generic\"\nauth = \"hmac\"\nsecret = \"x\"\n[webhooks.columns]\na = \"b\"\n")
        .contains("JSON pointer"));
    assert!(err("[[webhooks]]\nname = \"s\"\npreset = \"nope\"\nsecret = \"x\"\n").contains("unknown variant"));
}

fn mapped(preset: Preset, payload: Value) -> super::presets::Mapped {
    let obj = payload.as_object().unwrap().clone();
    map(preset, &Pointers::default(), Request { payload: &obj, raw: b"{}", github_event: None, github_delivery: None })
}

#[test]
fn presets_map_ids_times_and_typed_columns() {
    let m = mapped(
        Preset::Postmark,
        json!({"RecordType": "Open", "MessageID": "m1", "Recipient": "a@b", "ReceivedAt": "2019-11-05T16:33:54Z",
               "FirstOpen": true, "Client": {"Name": "Chrome"}, "ServerID": "23"}),
    );
    assert_eq!(m.event.as_deref(), Some("Open"));
    assert_eq!(m.event_id.as_deref(), Some("Open:m1:a@b:2019-11-05T16:33:54Z:"));
    assert_eq!(m.ts, Some(json!("2019-11-05T16:33:54Z")));
    let col = |m: &super::presets::Mapped, n: &str| m.columns.iter().find(|(c, _)| c == n).unwrap().1.clone();
    assert_eq!(col(&m, "client"), json!("Chrome"));
    assert_eq!(col(&m, "server_id"), json!(23), "a number as text still fills the integer column");
    assert_eq!(col(&m, "first_open"), json!(true));

    let m = mapped(
        Preset::Stripe,
        json!({"id": "evt_1", "type": "invoice.paid", "created": 1700000000,
               "data": {"object": {"object": "invoice", "id": "in_1", "amount_paid": 0, "amount_due": 500, "customer": 7}}}),
    );
    assert_eq!(
        (m.event.as_deref(), m.event_id.as_deref(), m.ts.clone()),
        (Some("invoice.paid"), Some("evt_1"), Some(json!(1700000000)))
    );
    assert_eq!(col(&m, "amount"), json!(500));
    assert_eq!(col(&m, "customer"), json!("7"), "a number in a text column is kept as its text");

    // listmonk: no id in the webhook payload; its bytes tell a retry.
    let obj = json!({"email": "a@b", "type": "hard", "source": "api"});
    let obj = obj.as_object().unwrap();
    let r = |raw: &'static [u8]| {
        map(
            Preset::Listmonk,
            &Pointers::default(),
            Request { payload: obj, raw, github_event: None, github_delivery: None },
        )
    };
    assert_eq!(r(b"x").event_id, r(b"x").event_id);
    assert_ne!(r(b"x").event_id, r(b"y").event_id);

    // Generic: pointers, or the top level flattened.
    let p = Pointers {
        columns: [("st".to_string(), "/a/b".to_string())].into(),
        ts: Some("/t".into()),
        id: Some("/id".into()),
    };
    let obj = json!({"a": {"b": 5}, "t": "2026-01-01T00:00:00Z", "id": 9});
    let m = map(
        Preset::Generic,
        &p,
        Request { payload: obj.as_object().unwrap(), raw: b"", github_event: None, github_delivery: None },
    );
    assert_eq!((m.columns.clone(), m.event_id.as_deref()), (vec![("st".to_string(), json!(5))], Some("9")));
    let m = mapped(Preset::Generic, json!({"event": "x", "n": 1}));
    assert_eq!(m.columns, vec![("body_event".to_string(), json!("x")), ("n".to_string(), json!(1))]);
}

#[test]
fn rows_keep_the_payload_and_take_receipt_time_for_an_odd_one() {
    let now = NOW * 1_000_000;
    let m = super::presets::Mapped {
        event: Some("e".into()),
        event_id: None,
        ts: Some(json!("yesterday")),
        columns: vec![
            ("ts".into(), json!(1)),
            ("n".into(), json!(2)),
            ("N".into(), json!(3)),
            ("gone".into(), Value::Null),
        ],
    };
    let line: Value = serde_json::from_slice(&row(&m, json!({"k": 1}), "ts", now)).unwrap();
    assert_eq!(
        line,
        json!({"ts": null, "event": "e", "event_id": null, "body_ts": 1, "n": 2, "body_N": 3, "payload": {"k": 1}})
    );
    assert!(readable_time(&json!("2019-11-05T16:33:54.9070259Z"), now));
    assert!(readable_time(&json!(1_519_000_000), now));
    assert!(!readable_time(&json!("2999-01-01T00:00:00Z"), now), "far future");
    assert!(!readable_time(&json!(true), now));
}

#[test]
fn seen_ids_survive_a_restart_and_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = vec![("h".to_string(), 3)];
    let s = Seen::open(dir.path(), &hooks).unwrap();
    let k = |i: u32| key(&format!("evt_{i}"));
    assert_eq!(s.begin("h", k(1)), Begin::New);
    assert_eq!(s.begin("h", k(1)), Begin::InFlight);
    s.failed("h", k(1));
    assert_eq!(s.begin("h", k(1)), Begin::New);
    s.stored("h", k(1)).unwrap();
    assert_eq!(s.begin("h", k(1)), Begin::Duplicate);
    drop(s);
    let s = Seen::open(dir.path(), &hooks).unwrap();
    assert_eq!(s.begin("h", k(1)), Begin::Duplicate, "after a restart");
    for i in 2..=40 {
        assert_eq!(s.begin("h", k(i)), Begin::New);
        s.stored("h", k(i)).unwrap();
    }
    assert_eq!(s.begin("h", k(1)), Begin::New, "the oldest are forgotten past `remember`");
    s.failed("h", k(1));
    let file = dir.path().join("state/hooks/h.ids");
    let lines = std::fs::read_to_string(&file).unwrap().lines().count();
    assert!(lines <= 16 + 1, "the file is rewritten: {lines} lines");
    // A torn last line is skipped.
    std::fs::write(&file, format!("{}\n0123", lake_format::logs::hex(&k(40)))).unwrap();
    let s = Seen::open(dir.path(), &hooks).unwrap();
    assert_eq!(s.begin("h", k(40)), Begin::Duplicate);
}

#[test]
fn refusals_are_logged_at_most_every_ten_seconds_with_the_count() {
    let log = super::RefusalLog::default();
    let t0 = std::time::Instant::now();
    assert_eq!(log.note(t0), Some(1), "the first refusal is logged");
    for i in 1..1000 {
        assert_eq!(log.note(t0 + Duration::from_millis(i)), None, "a flood within 10s is not");
    }
    assert_eq!(log.note(t0 + Duration::from_secs(10)), Some(1000), "the next line counts them all");
    assert_eq!(log.note(t0 + Duration::from_secs(11)), None);
    assert_eq!(log.note(t0 + Duration::from_secs(25)), Some(2));
}

#[test]
fn stripe_payment_objects_fill_the_money_columns() {
    let col = |m: &super::presets::Mapped, n: &str| {
        m.columns.iter().find(|(c, _)| c == n).map(|(_, v)| v.clone()).unwrap_or(Value::Null)
    };
    let ev = |ty: &str, object: Value| json!({"id": "evt_x", "type": ty, "created": 1, "livemode": true, "data": {"object": object}});
    let m = mapped(
        Preset::Stripe,
        ev(
            "payment_intent.payment_failed",
            json!({"object": "payment_intent", "id": "pi_1", "amount": 2000, "currency": "usd",
            "status": "requires_payment_method", "customer": "cus_1", "last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}),
        ),
    );
    assert_eq!(
        (
            col(&m, "amount"),
            col(&m, "currency"),
            col(&m, "customer"),
            col(&m, "failure_code"),
            col(&m, "failure_message")
        ),
        (json!(2000), json!("usd"), json!("cus_1"), json!("card_declined"), json!("Your card was declined."))
    );
    let m = mapped(
        Preset::Stripe,
        ev(
            "charge.refunded",
            json!({"object": "charge", "id": "ch_1", "amount": 500, "amount_refunded": 500, "paid": true,
            "payment_intent": "pi_1", "failure_message": null, "customer": {"id": "cus_2", "object": "customer"}}),
        ),
    );
    assert_eq!(
        (col(&m, "amount_refunded"), col(&m, "payment_intent"), col(&m, "customer")),
        (json!(500), json!("pi_1"), json!("cus_2"))
    );
    assert_eq!(col(&m, "failure_message"), Value::Null);
    let m = mapped(
        Preset::Stripe,
        ev(
            "customer.subscription.deleted",
            json!({"object": "subscription", "id": "sub_1", "status": "canceled",
            "items": {"data": [{"price": {"id": "price_1", "unit_amount": 900}}]}, "cancellation_details": {"reason": "cancellation_requested"}}),
        ),
    );
    assert_eq!(
        (col(&m, "price"), col(&m, "amount"), col(&m, "reason")),
        (json!("price_1"), json!(900), json!("cancellation_requested"))
    );
    let m = mapped(
        Preset::Stripe,
        ev(
            "refund.created",
            json!({"object": "refund", "id": "re_1", "amount": 100, "charge": "ch_1", "reason": "duplicate"}),
        ),
    );
    assert_eq!(
        (col(&m, "charge"), col(&m, "reason"), col(&m, "livemode")),
        (json!("ch_1"), json!("duplicate"), json!(true))
    );
}

#[test]
fn github_runs_get_their_duration() {
    let obj = json!({"action": "completed", "workflow_run": {"id": 7, "conclusion": "failure", "status": "completed",
        "run_started_at": "2026-01-01T10:00:00Z", "updated_at": "2026-01-01T10:04:30Z"}});
    let r = Request {
        payload: obj.as_object().unwrap(),
        raw: b"",
        github_event: Some("workflow_run"),
        github_delivery: Some("d-1"),
    };
    let m = map(Preset::Github, &Pointers::default(), r);
    let col = |n: &str| m.columns.iter().find(|(c, _)| c == n).unwrap().1.clone();
    assert_eq!(
        (col("duration_s"), col("conclusion"), m.event_id.as_deref()),
        (json!(270), json!("failure"), Some("d-1"))
    );
    assert_eq!(m.ts, Some(json!("2026-01-01T10:04:30Z")));
}
