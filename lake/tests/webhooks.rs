//! Webhooks in, end to end: a real `lake serve` configured with one `[[webhooks]]` entry per
//! preset takes the payloads the vendors print in their documentation
//! (`fixtures/webhooks/<vendor>/`, sources in its README), authenticated as each vendor
//! does it — GitHub's `X-Hub-Signature-256` and Stripe's `Stripe-Signature` computed here
//! with HMAC-SHA256 (ring) over the exact bytes sent, Postmark's and listmonk's basic
//! auth, a secret in the URL — and the rows are read back with SQL, exactly. A Stripe
//! retry is stored once, also after a `kill -9`; a bad signature, a stale Stripe timestamp,
//! a missing header, a wrong password or URL secret are refused 401 and store nothing; a
//! body past the hook's limit is 413; an unknown hook 404; too wide or too deep a body 400;
//! a sender holding a hook's bodies open gets 503 past 8 while other hooks and ingest go on.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::*;
use ring::hmac;
use serde_json::{json, Value};

const STRIPE_SECRET: &str = "whsec_lake_test_0123456789abcdef";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const URL_SECRET: &str = "u7Kq2-url-secret-0123456789";

fn fixture(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/webhooks").join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn hex_hmac(secret: &str, data: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), data);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Stripe's scheme: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
fn stripe_signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    format!("t={t},v1={}", hex_hmac(secret, &signed))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn config(dir: &Path, port: u16) -> PathBuf {
    lake_toml(dir, port)
        .flush("1h")
        .section(&format!(
            r#"[[webhooks]]
name = "stripe"
preset = "stripe"
secret = "{STRIPE_SECRET}"
host = "billing"

[[webhooks]]
name = "github"
preset = "github"
secret = "{GITHUB_SECRET}"

[[webhooks]]
name = "postmark"
preset = "postmark"
user = "postmark"
password = "pm-password-1"

[[webhooks]]
name = "listmonk"
preset = "listmonk"
user = "listmonk"
password = "lm-password-1"

[[webhooks]]
name = "uptime"
preset = "generic"
auth = "url_secret"
secret = "{URL_SECRET}"
ts_pointer = "/checked_at"
id_pointer = "/check/id"
[webhooks.columns]
site = "/check/site"
up = "/check/up"

[[webhooks]]
name = "flat"
preset = "generic"
auth = "url_secret"
secret = "{URL_SECRET}"

[[webhooks]]
name = "tiny"
preset = "generic"
auth = "hmac"
secret = "tiny-secret"
max_body = "1KiB"
"#
        ))
        .write()
}

struct Client {
    c: reqwest::Client,
    url: String,
}

impl Client {
    async fn post(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Value) {
        let mut r = self.c.post(format!("{}{path}", self.url)).header("content-type", "application/json");
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        let r = r.body(body.to_vec()).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn stripe(&self, body: &[u8], signature: String) -> (u16, Value) {
        self.post("/v1/hooks/stripe", &[("Stripe-Signature", signature)], body).await
    }

    async fn sql(&self, q: &str) -> Value {
        sql(&self.c, &self.url, q).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_payloads_are_stored_once_and_forgeries_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), port);
    // `lake check-config` names every hook's URL, preset, auth and table.
    let out = std::process::Command::new(lake_bin()).args(["check-config", "--config"]).arg(&cfg).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "  webhook         POST /v1/hooks/stripe (stripe preset, stripe auth, up to 1024 KiB) → table stripe, host billing",
        "  webhook         POST /v1/hooks/uptime/<secret> (generic preset, url_secret auth, up to 1024 KiB) → table uptime, host lake",
        "  webhook         POST /v1/hooks/tiny (generic preset, hmac auth, up to 1 KiB) → table tiny, host lake",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    let mut lake = Lake::start(&cfg, port);
    let c = Client { c: reqwest::Client::new(), url: lake.url.clone() };

    // Stripe: the documented Event object, signed now; its retry (a new timestamp and
    // signature, the same event) is answered 200 and not stored again.
    let event = fixture("stripe/event.json");
    let (s, a) = c.stripe(&event, stripe_signature(STRIPE_SECRET, now_unix(), &event)).await;
    assert_eq!((s, &a["rows"]), (200, &json!(1)), "{a}");
    let (s, a) = c.stripe(&event, stripe_signature(STRIPE_SECRET, now_unix() + 1, &event)).await;
    assert_eq!((s, &a["duplicate"]), (200, &json!(true)), "{a}");
    let stripe_row = json!([[
        1_686_089_970_000_000i64,
        "billing",
        "setup_intent.created",
        "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        false,
        "setup_intent",
        "seti_1NG8Du2eZvKYlo2C9XMqbR0x",
        "requires_confirmation",
        "requires_confirmation"
    ]]);
    let stripe_sql = "select epoch_us(ts), host, event, event_id, livemode, object, object_id, status, \
                      json_extract_string(payload, '$.data.object.status') from stripe";
    assert_eq!(c.sql(stripe_sql).await, stripe_row);

    // Forged, stale, unsigned: 401, nothing stored (a new event id each, so a refusal
    // cannot hide behind the duplicate check).
    let other = String::from_utf8(event.clone()).unwrap().replace("evt_1NG8Du2eZvKYlo2CUI79vXWy", "evt_forged");
    let other = other.as_bytes();
    let refusals = [
        (stripe_signature("whsec_someone_else", now_unix(), other), "no v1 signature of Stripe-Signature matches"),
        (stripe_signature(STRIPE_SECRET, now_unix() - 400, other), "s from the lake's clock (tolerance 300s)"),
        (stripe_signature(STRIPE_SECRET, now_unix(), &event), "no v1 signature"),
        ("t=1,v1=zz".to_string(), "Stripe-Signature is not"),
    ];
    for (sig, why) in refusals {
        let (s, a) = c.stripe(other, sig).await;
        assert_eq!(s, 401, "{a}");
        assert!(a["error"].as_str().unwrap_or_default().contains(why), "{why}: {a}");
    }
    let (s, a) = c.post("/v1/hooks/stripe", &[], other).await;
    assert_eq!(s, 401, "{a}");
    assert!(a["error"].as_str().unwrap().contains("no Stripe-Signature header"), "{a}");
    assert_eq!(c.sql("select count(*) from stripe").await, json!([[1]]));

    // GitHub: deployment and workflow_run, signed as GitHub signs (X-Hub-Signature-256).
    for (file, event, delivery) in [
        ("github/deployment.json", "deployment", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("github/workflow_run.json", "workflow_run", "a1b2c3d4-cc78-11e3-81ab-4c9367dc0958"),
    ] {
        let body = fixture(file);
        let headers = [
            ("X-GitHub-Event", event.to_string()),
            ("X-GitHub-Delivery", delivery.to_string()),
            ("X-Hub-Signature-256", format!("sha256={}", hex_hmac(GITHUB_SECRET, &body))),
        ];
        let (s, a) = c.post("/v1/hooks/github", &headers, &body).await;
        assert_eq!(s, 200, "{file}: {a}");
    }
    let wrong = [
        ("X-GitHub-Event", "deployment".to_string()),
        ("X-Hub-Signature-256", format!("sha256={}", hex_hmac("wrong", b"x"))),
    ];
    assert_eq!(c.post("/v1/hooks/github", &wrong, &fixture("github/deployment.json")).await.0, 401);
    assert_eq!(c.post("/v1/hooks/github", &[], &fixture("github/deployment.json")).await.0, 401, "unsigned");
    // GitHub's form content type is refused with the fix named.
    let form = b"payload=%7B%7D";
    let headers = [
        ("X-GitHub-Event", "ping".to_string()),
        ("X-Hub-Signature-256", format!("sha256={}", hex_hmac(GITHUB_SECRET, form))),
        ("Content-Type", "application/x-www-form-urlencoded".to_string()),
    ];
    let r =
        c.c.post(format!("{}/v1/hooks/github", c.url))
            .headers(headers.iter().map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap())).collect())
            .body(form.to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("set its content type to application/json"));
    assert_eq!(
        c.sql(
            "select epoch_us(ts), host, event, event_id, action, repository, sender, environment, deployment_id, \
             workflow, run_id, run_number, status, conclusion, trigger, ref, sha from github order by ts"
        )
        .await,
        json!([
            [
                1_557_933_653_000_000i64,
                "lake",
                "deployment",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                "created",
                "Codertocat/Hello-World",
                "Codertocat",
                "production",
                145988746,
                null,
                null,
                null,
                null,
                null,
                null,
                "master",
                "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
            ],
            [
                1_601_915_629_000_000i64,
                "lake",
                "workflow_run",
                "a1b2c3d4-cc78-11e3-81ab-4c9367dc0958",
                "completed",
                "octo-org/octo-repo",
                "Codertocat",
                null,
                null,
                "",
                289782451,
                163,
                "completed",
                "success",
                "repository_dispatch",
                "master",
                "3484a3fb816e0859fd6e1cea078d76385ff50625"
            ],
        ])
    );

    // Postmark: the five documented record types with basic auth; a wrong password first.
    let auth = [("Authorization", basic("postmark", "pm-password-1"))];
    let (s, _) = c
        .post("/v1/hooks/postmark", &[("Authorization", basic("postmark", "nope"))], &fixture("postmark/delivery.json"))
        .await;
    assert_eq!(s, 401);
    for f in ["delivery", "bounce", "spam-complaint", "open", "click"] {
        let (s, a) = c.post("/v1/hooks/postmark", &auth, &fixture(&format!("postmark/{f}.json"))).await;
        assert_eq!(s, 200, "{f}: {a}");
    }
    // Postmark retries a delivery it got no 200 for: the same record is stored once.
    let (s, a) = c.post("/v1/hooks/postmark", &auth, &fixture("postmark/delivery.json")).await;
    assert_eq!((s, &a["duplicate"]), (200, &json!(true)), "{a}");
    assert_eq!(
        c.sql(
            "select epoch_us(ts), event, message_id, recipient, tag, server_id, bounce_type, type_code, inactive, \
             first_open, platform, client, os, country, click_location, original_link from postmark order by event"
        )
        .await,
        json!([
            [
                1_572_971_634_907_025i64,
                "Bounce",
                "883953f4-6105-42a2-a16a-77a8eac79483",
                "john@example.com",
                "Test",
                23,
                "HardBounce",
                1,
                true,
                null,
                null,
                null,
                null,
                null,
                null,
                null
            ],
            [
                1_508_944_871_000_000i64,
                "Click",
                "00000000-0000-0000-0000-000000000000",
                "john@example.com",
                "welcome-email",
                null,
                null,
                null,
                null,
                null,
                "Desktop",
                "Chrome 35.0.1916.153",
                "OS X 10.7 Lion",
                "Serbia",
                "HTML",
                "https://example.com"
            ],
            [
                1_572_971_634_907_025i64,
                "Delivery",
                "883953f4-6105-42a2-a16a-77a8eac79483",
                "john@example.com",
                "welcome-email",
                23,
                null,
                null,
                null,
                null,
                null,
                null,
                null,
                null,
                null,
                null
            ],
            [
                1_572_971_634_907_025i64,
                "Open",
                "00000000-0000-0000-0000-000000000000",
                "john@example.com",
                "welcome-email",
                null,
                null,
                null,
                null,
                true,
                "WebMail",
                "Chrome 35.0.1916.153",
                "OS X 10.7 Lion",
                "Serbia",
                null,
                null
            ],
            [
                1_572_971_634_907_025i64,
                "SpamComplaint",
                "00000000-0000-0000-0000-000000000000",
                "john@example.com",
                "Test",
                1234,
                "SpamComplaint",
                512,
                true,
                null,
                null,
                null,
                null,
                null,
                null,
                null
            ],
        ])
    );

    // listmonk: its documented bounce body with basic auth; the same request again is a retry.
    let lm = [("Authorization", basic("listmonk", "lm-password-1"))];
    let bounce = fixture("listmonk/bounce.json");
    assert_eq!(c.post("/v1/hooks/listmonk", &lm, &bounce).await.0, 200);
    assert_eq!(c.post("/v1/hooks/listmonk", &lm, &bounce).await.1["duplicate"], json!(true));
    assert_eq!(c.post("/v1/hooks/listmonk", &[], &bounce).await.0, 401, "no basic auth");
    assert_eq!(
        c.sql("select event, email, campaign_uuid, source, bounce_type, meta from listmonk_bounces").await,
        json!([[
            "bounce",
            "user1@mail.com",
            "9f86b50d-5711-41c8-ab03-bc91c43d711b",
            "api",
            "hard",
            "{\"additional\": \"info\"}"
        ]])
    );

    // Generic with a URL secret: the configured pointers; a wrong secret is refused.
    let check = br#"{"checked_at": "2026-01-02T03:04:05Z", "check": {"id": "c-1", "site": "shop", "up": false}}"#;
    assert_eq!(c.post(&format!("/v1/hooks/uptime/{URL_SECRET}x"), &[], check).await.0, 401);
    assert_eq!(c.post("/v1/hooks/uptime", &[], check).await.0, 401);
    let (s, a) = c.post(&format!("/v1/hooks/uptime/{URL_SECRET}"), &[], check).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        c.sql("select epoch_us(ts), event_id, site, up from uptime").await,
        json!([[1_767_323_045_000_000i64, "c-1", "shop", false]])
    );

    // Bounds: 413 past the hook's max_body, 400 for a body that is no JSON object, 404
    // for a hook that is not configured; none stores anything.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(2000));
    let sig = [("X-Hub-Signature-256", format!("sha256={}", hex_hmac("tiny-secret", big.as_bytes())))];
    let (s, a) = c.post("/v1/hooks/tiny", &sig, big.as_bytes()).await;
    assert_eq!(s, 413, "{a}");
    let list = b"[1, 2]";
    let sig = [("X-Hub-Signature-256", format!("sha256={}", hex_hmac("tiny-secret", list)))];
    let (s, a) = c.post("/v1/hooks/tiny", &sig, list).await;
    assert_eq!(s, 400, "{a}");
    assert!(a["error"].as_str().unwrap().contains("not an object"), "{a}");
    assert_eq!(c.post("/v1/hooks/nope", &[], b"{}").await.0, 404);
    let (s, _) = try_sql(&c.c, &c.url, "select count(*) from tiny").await;
    assert_ne!(s, 200, "no row made the table");

    // Generic without columns: the top level flattened; fields named like the columns
    // every row has are kept under `body_<name>` (a payload cannot set the row's host or
    // time); too many fields, or nesting past serde_json's limit, are refused.
    let flat = format!("/v1/hooks/flat/{URL_SECRET}");
    let (s, a) = c.post(&flat, &[], br#"{"ts": "soon", "host": "someone-else", "event": "e", "n": 1}"#).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        c.sql("select host, body_host, body_ts, body_event, n from flat").await,
        json!([["lake", "someone-else", "soon", "e", 1]])
    );
    let wide: String = format!("{{{}}}", (0..300).map(|i| format!("\"f{i}\": {i}")).collect::<Vec<_>>().join(", "));
    let (s, a) = c.post(&flat, &[], wide.as_bytes()).await;
    assert_eq!(s, 400, "{a}");
    assert!(a["error"].as_str().unwrap().contains("fields; at most"), "{a}");
    let deep = format!("{{\"a\": {}1{}}}", "[".repeat(200), "]".repeat(200));
    let (s, a) = c.post(&flat, &[], deep.as_bytes()).await;
    assert_eq!(s, 400, "{a}");
    assert!(a["error"].as_str().unwrap().contains("recursion limit"), "{a}");
    assert_eq!(c.sql("select count(*) from flat").await, json!([[1]]));

    // A sender that opens requests and never sends their bodies holds at most 8 of one
    // hook's slots: the 9th is told to retry (503), while other hooks and the collectors'
    // ingest carry on.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut sock = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await.unwrap();
        let head = "POST /v1/hooks/github HTTP/1.1\r\nHost: lake\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
        tokio::io::AsyncWriteExt::write_all(&mut sock, head.as_bytes()).await.unwrap();
        slow.push(sock);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (s, a) = c.post("/v1/hooks/github", &[("X-GitHub-Event", "ping".to_string())], b"{}").await;
    assert_eq!(s, 503, "{a}");
    assert!(a["error"].as_str().unwrap().contains("8 requests are being read already"), "{a}");
    let (s, a) = c
        .post(
            &format!("/v1/hooks/uptime/{URL_SECRET}"),
            &[],
            br#"{"check": {"id": "c-2", "site": "blog", "up": true}}"#,
        )
        .await;
    assert_eq!(s, 200, "another hook is served meanwhile: {a}");
    let (s, a) = send_custom(&c.c, &c.url, "json", "signups", &format!("{NODE}/1/1"), r#"{"plan": "pro"}"#).await;
    assert_eq!(s, 200, "ingest is served meanwhile: {a}");
    // What each preset stored, for the log of a run (the rows themselves are asserted above).
    for table in ["stripe", "postmark", "github", "listmonk_bounces"] {
        let rows = c.sql(&format!("select event, count(*) from {table} group by event order by event")).await;
        println!("{table}: {rows}");
    }
    for table in ["uptime", "flat"] {
        println!("{table} (generic): {}", c.sql(&format!("select count(*) from {table}")).await);
    }
    let metrics = c.c.get(format!("{}/metrics", c.url)).send().await.unwrap().text().await.unwrap();
    println!("{}", metrics.lines().filter(|l| l.starts_with("lake_hooks_")).collect::<Vec<_>>().join("\n"));
    for line in [
        "lake_hooks_stored_total 12",
        "lake_hooks_duplicates_total 3",
        "lake_hooks_unauthorized_total 11",
        "lake_hooks_rejected_total 6",
    ] {
        assert!(metrics.contains(&format!("\n{line}\n")), "{line}:\n{metrics}");
    }

    drop(slow);

    // A crash (kill -9): the rows were in the WAL and the ids on disk before each 200, so
    // the retry is still known.
    lake.kill9();
    let lake = Lake::start(&cfg, port);
    let c = Client { c: reqwest::Client::new(), url: lake.url.clone() };
    let (s, a) = c.stripe(&event, stripe_signature(STRIPE_SECRET, now_unix(), &event)).await;
    assert_eq!((s, &a["duplicate"]), (200, &json!(true)), "{a}");
    assert_eq!(c.sql(stripe_sql).await, stripe_row);
}

/// The README's Caddy site in front of the lake: a Stripe event signed for its bytes comes
/// through the proxy intact (200, stored), and nothing but `/v1/hooks/*` is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caddy_in_front_publishes_only_the_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let lake = Lake::start(&config(dir.path(), port), port);
    let caddy = lake_test_support::caddy_in(
        dir.path(),
        &format!("handle /v1/hooks/* {{\n\treverse_proxy 127.0.0.1:{port}\n}}\nrespond 404"),
    );
    let proxied = Client { c: reqwest::Client::new(), url: caddy.base_url() };
    let event = fixture("stripe/event.json");
    let (s, a) = proxied.stripe(&event, stripe_signature(STRIPE_SECRET, now_unix(), &event)).await;
    assert_eq!((s, &a["rows"]), (200, &json!(1)), "{a}");
    for path in ["/v1/sql", "/health", "/metrics", "/v1/ingest/json/signups"] {
        let r = proxied.c.post(format!("{}{path}", proxied.url)).body("{}").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path} is not published");
    }
    let direct = Client { c: reqwest::Client::new(), url: lake.url.clone() };
    assert_eq!(direct.sql("select event_id from stripe").await, json!([["evt_1NG8Du2eZvKYlo2CUI79vXWy"]]));
}
