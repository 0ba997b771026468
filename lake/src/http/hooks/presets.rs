//! What each preset makes of a payload: the flat columns an operator queries, the event's
//! own time, and the id its retries carry. Every row also keeps the whole payload as JSON
//! text in `payload`, so a field no preset maps is still one `json_extract` away.
//!
//! Each column has one type whatever the payload holds (a string column takes a number as
//! its text, an integer column a non-number as NULL): a provider changing a field's type
//! must not make the table refuse its next event (custom-table columns never change type).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::Pointers;

/// Columns every hook row has, besides the table's time column and `host`.
pub const RESERVED: &[&str] = &["event", "event_id", "payload", "host", "_extra"];

/// Which provider's payloads a hook takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Postmark's Delivery, Bounce, SpamComplaint, Open and Click webhooks.
    Postmark,
    /// Stripe events (payments, charges, subscriptions, invoices, refunds).
    Stripe,
    /// listmonk's bounce webhook payload (`POST /webhooks/bounce`) and bounce records.
    Listmonk,
    /// GitHub's deployment, deployment_status and workflow_run events.
    Github,
    /// Any JSON object, mapped by JSON pointers or flattened.
    Generic,
}

impl Preset {
    /// Its name in `lake.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Postmark => "postmark",
            Preset::Stripe => "stripe",
            Preset::Listmonk => "listmonk",
            Preset::Github => "github",
            Preset::Generic => "generic",
        }
    }

    /// The table its rows go to unless `table` says otherwise.
    pub fn default_table(self, hook: &str) -> String {
        match self {
            Preset::Postmark => "postmark".into(),
            Preset::Stripe => "stripe".into(),
            Preset::Listmonk => "listmonk_bounces".into(),
            Preset::Github => "github".into(),
            Preset::Generic => hook.replace('-', "_"),
        }
    }

    /// How its provider authenticates, unless `auth` says otherwise.
    pub fn default_auth(self) -> Option<super::config::AuthKind> {
        use super::config::AuthKind;
        match self {
            Preset::Postmark | Preset::Listmonk => Some(AuthKind::Basic),
            Preset::Stripe => Some(AuthKind::Stripe),
            Preset::Github => Some(AuthKind::Hmac),
            Preset::Generic => None,
        }
    }
}

/// What a payload maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The event's kind (`payment_intent.succeeded`, `Bounce`, `workflow_run`).
    pub event: Option<String>,
    /// The id retries carry: stored once.
    pub event_id: Option<String>,
    /// The event's own time, as the payload gives it (RFC 3339 text or an epoch number).
    pub ts: Option<Value>,
    /// The flat columns, in order.
    pub columns: Vec<(String, Value)>,
}

/// The request as the preset sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The parsed body (a JSON object).
    pub payload: &'a Map<String, Value>,
    /// The raw body (listmonk's retries are told apart by it).
    pub raw: &'a [u8],
    /// `X-GitHub-Event`.
    pub github_event: Option<&'a str>,
    /// `X-GitHub-Delivery`.
    pub github_delivery: Option<&'a str>,
}

/// Maps a payload.
pub fn map(preset: Preset, pointers: &Pointers, r: Request<'_>) -> Mapped {
    match preset {
        Preset::Postmark => postmark(r.payload),
        Preset::Stripe => stripe(r.payload),
        Preset::Listmonk => listmonk(r.payload, r.raw),
        Preset::Github => github(r),
        Preset::Generic => generic(pointers, r.payload),
    }
}

fn at<'a>(v: &'a Map<String, Value>, pointer: &str) -> Option<&'a Value> {
    let mut parts = pointer.strip_prefix('/')?.splitn(2, '/');
    let first = parts.next()?.replace("~1", "/").replace("~0", "~");
    let v = v.get(&first)?;
    match parts.next() {
        Some(rest) => v.pointer(&format!("/{rest}")),
        None => Some(v),
    }
}

/// A text column: strings as they are, numbers and booleans as their text, objects and
/// arrays as JSON text, null and absent as NULL.
fn text(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(other) => Value::String(other.to_string()),
    }
}

/// An integer column: integers, and strings holding one; anything else NULL.
fn int(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Number(n)) if n.is_i64() => Value::Number(n.clone()),
        Some(Value::String(s)) => s.trim().parse::<i64>().map_or(Value::Null, Value::from),
        _ => Value::Null,
    }
}

/// A boolean column: booleans only.
fn boolean(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Bool(b)) => Value::Bool(*b),
        _ => Value::Null,
    }
}

fn s(v: Option<&Value>) -> Option<String> {
    match text(v) {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn first<'a>(p: &'a Map<String, Value>, pointers: &[&str]) -> Option<&'a Value> {
    pointers.iter().filter_map(|ptr| at(p, ptr)).find(|v| !v.is_null())
}

/// Postmark: `RecordType` names the event. Its time is `DeliveredAt` (Delivery),
/// `BouncedAt` (Bounce, SpamComplaint) or `ReceivedAt` (Open, Click). The id is
/// `RecordType:MessageID:recipient` — one message has one event of a kind per recipient —
/// plus, for Open and Click (a message is opened or clicked more than once), the event's
/// time and link, which Postmark's retries repeat.
fn postmark(p: &Map<String, Value>) -> Mapped {
    let record = s(p.get("RecordType")).or_else(|| {
        // The bounce webhook predates RecordType: its `Type` says what it is.
        p.get("TypeCode").map(|_| {
            if s(p.get("Type")).as_deref() == Some("SpamComplaint") { "SpamComplaint" } else { "Bounce" }.to_string()
        })
    });
    let recipient = first(p, &["/Recipient", "/Email"]);
    let ts = first(p, &["/DeliveredAt", "/BouncedAt", "/ReceivedAt", "/ChangedAt"]).cloned();
    let message = s(p.get("MessageID"));
    let event_id = message.as_ref().map(|m| {
        let mut id = format!("{}:{m}:{}", record.as_deref().unwrap_or(""), s(recipient).unwrap_or_default());
        if matches!(record.as_deref(), Some("Open" | "Click")) {
            id.push_str(&format!(
                ":{}:{}",
                s(p.get("ReceivedAt")).unwrap_or_default(),
                s(p.get("OriginalLink")).unwrap_or_default()
            ));
        }
        id
    });
    let columns = vec![
        ("message_id".to_string(), text(p.get("MessageID"))),
        ("message_stream".into(), text(p.get("MessageStream"))),
        ("recipient".into(), text(recipient)),
        ("tag".into(), text(p.get("Tag"))),
        ("server_id".into(), int(first(p, &["/ServerID", "/ServerId"]))),
        // Bounce and SpamComplaint.
        ("bounce_id".into(), int(p.get("ID"))),
        ("bounce_type".into(), text(p.get("Type"))),
        ("type_code".into(), int(p.get("TypeCode"))),
        ("description".into(), text(p.get("Description"))),
        ("details".into(), text(p.get("Details"))),
        ("inactive".into(), boolean(p.get("Inactive"))),
        ("from_email".into(), text(p.get("From"))),
        ("subject".into(), text(p.get("Subject"))),
        // Open and Click.
        ("first_open".into(), boolean(p.get("FirstOpen"))),
        ("click_location".into(), text(p.get("ClickLocation"))),
        ("original_link".into(), text(p.get("OriginalLink"))),
        ("platform".into(), text(p.get("Platform"))),
        ("client".into(), text(at(p, "/Client/Name"))),
        ("os".into(), text(at(p, "/OS/Name"))),
        ("country".into(), text(at(p, "/Geo/Country"))),
        ("user_agent".into(), text(p.get("UserAgent"))),
    ];
    Mapped { event: record, event_id, ts, columns }
}

/// Stripe: an Event object. `type` is the event, `id` its id (Stripe's retries resend the
/// same event), `created` its time (epoch seconds). The columns are read from
/// `data.object`, whichever object it is: a PaymentIntent, Charge, Subscription, Invoice
/// or Refund.
fn stripe(p: &Map<String, Value>) -> Mapped {
    let o = |ptr: &str| at(p, &format!("/data/object{ptr}"));
    let object = s(o("/object"));
    // An invoice's amount is what was paid (or is due); the others' is `amount`.
    let amount = match object.as_deref() {
        Some("invoice") => int(o("/amount_paid").filter(|v| v.as_i64() != Some(0)).or(o("/amount_due"))),
        Some("subscription") => int(o("/items/data/0/price/unit_amount").or(o("/plan/amount"))),
        _ => int(o("/amount")),
    };
    let failure = o("/failure_message").or(o("/last_payment_error/message")).filter(|v| !v.is_null());
    let failure_code = o("/failure_code").or(o("/last_payment_error/code")).filter(|v| !v.is_null());
    let columns = vec![
        ("livemode".to_string(), boolean(p.get("livemode"))),
        ("object".into(), text(o("/object"))),
        ("object_id".into(), text(o("/id"))),
        ("status".into(), text(o("/status"))),
        ("amount".into(), amount),
        ("amount_refunded".into(), int(o("/amount_refunded"))),
        ("currency".into(), text(o("/currency"))),
        ("customer".into(), text(o("/customer").and_then(|c| c.get("id").or(Some(c))))),
        ("subscription".into(), text(o("/subscription"))),
        ("invoice".into(), text(o("/invoice"))),
        ("charge".into(), text(o("/charge"))),
        ("payment_intent".into(), text(o("/payment_intent"))),
        ("price".into(), text(o("/items/data/0/price/id").or(o("/plan/id")))),
        ("reason".into(), text(o("/reason").or(o("/cancellation_details/reason")))),
        ("failure_code".into(), text(failure_code)),
        ("failure_message".into(), text(failure)),
    ];
    Mapped { event: s(p.get("type")), event_id: s(p.get("id")), ts: p.get("created").cloned(), columns }
}

/// listmonk's bounce webhook payload (what a bounce script posts to listmonk's
/// `/webhooks/bounce`: `email` or `subscriber_uuid`, `campaign_uuid`, `source`, `type`,
/// `meta`) or a bounce record of its API (`id`, `created_at`). The id is the record's `id`;
/// the webhook payload has none, so a retry is told by its bytes (the SHA-256 of the body).
fn listmonk(p: &Map<String, Value>, raw: &[u8]) -> Mapped {
    let event_id = s(p.get("id")).unwrap_or_else(|| {
        let digest = ring::digest::digest(&ring::digest::SHA256, raw);
        format!("sha256:{}", lake_format::logs::hex(digest.as_ref()))
    });
    let columns = vec![
        ("email".to_string(), text(first(p, &["/email", "/subscriber/email"]))),
        ("subscriber_uuid".into(), text(first(p, &["/subscriber_uuid", "/subscriber/uuid"]))),
        ("campaign_uuid".into(), text(first(p, &["/campaign_uuid", "/campaign/uuid"]))),
        ("campaign".into(), text(at(p, "/campaign/name"))),
        ("source".into(), text(p.get("source"))),
        ("bounce_type".into(), text(p.get("type"))),
        ("meta".into(), text(p.get("meta"))),
    ];
    Mapped { event: Some("bounce".into()), event_id: Some(event_id), ts: p.get("created_at").cloned(), columns }
}

/// GitHub: the event is `X-GitHub-Event`, its id `X-GitHub-Delivery` (a redelivery keeps
/// it), its time the deployment's, status's or run's `updated_at` (else `created_at`).
fn github(r: Request<'_>) -> Mapped {
    let p = r.payload;
    let event = r.github_event.map(str::to_string);
    let ts = match r.github_event {
        Some("deployment_status") => first(p, &["/deployment_status/updated_at", "/deployment_status/created_at"]),
        Some("workflow_run") => first(p, &["/workflow_run/updated_at", "/workflow_run/created_at"]),
        _ => first(p, &["/deployment/updated_at", "/deployment/created_at"]),
    };
    let run = |ptr: &str| at(p, &format!("/workflow_run{ptr}"));
    let dep = |ptr: &str| at(p, &format!("/deployment{ptr}"));
    // A finished run's duration: from its start to its last update.
    let duration = match (
        run("/run_started_at").and_then(Value::as_str).and_then(crate::custom::build::rfc3339_micros),
        run("/updated_at").and_then(Value::as_str).and_then(crate::custom::build::rfc3339_micros),
        run("/conclusion").filter(|c| !c.is_null()),
    ) {
        (Some(a), Some(b), Some(_)) if b >= a => Value::from((b - a) / 1_000_000),
        _ => Value::Null,
    };
    let columns = vec![
        ("action".to_string(), text(p.get("action"))),
        ("repository".into(), text(at(p, "/repository/full_name"))),
        ("sender".into(), text(at(p, "/sender/login"))),
        ("environment".into(), text(first(p, &["/deployment_status/environment", "/deployment/environment"]))),
        ("deployment_id".into(), int(dep("/id"))),
        ("state".into(), text(at(p, "/deployment_status/state"))),
        ("description".into(), text(first(p, &["/deployment_status/description", "/deployment/description"]))),
        ("workflow".into(), text(run("/name"))),
        ("run_id".into(), int(run("/id"))),
        ("run_number".into(), int(run("/run_number"))),
        ("run_attempt".into(), int(run("/run_attempt"))),
        ("status".into(), text(run("/status"))),
        ("conclusion".into(), text(run("/conclusion"))),
        ("trigger".into(), text(run("/event"))),
        ("duration_s".into(), duration),
        ("ref".into(), text(first(p, &["/workflow_run/head_branch", "/deployment/ref"]))),
        ("sha".into(), text(first(p, &["/workflow_run/head_sha", "/deployment/sha"]))),
        ("url".into(), text(first(p, &["/workflow_run/html_url", "/deployment_status/target_url", "/deployment/url"]))),
    ];
    Mapped { event, event_id: r.github_delivery.map(str::to_string), ts: ts.cloned(), columns }
}

/// Generic: the configured columns (JSON pointers), else every top-level field under its
/// own name (a field named like a column every row has is kept as `body_<name>`).
fn generic(pointers: &Pointers, p: &Map<String, Value>) -> Mapped {
    let pick = |ptr: &str| if ptr.is_empty() { None } else { at(p, ptr) };
    let columns = if pointers.columns.is_empty() {
        p.iter()
            .map(|(k, v)| {
                let name = if RESERVED.iter().any(|r| lake_format::custom::same_name(r, k)) {
                    format!("body_{k}")
                } else {
                    k.clone()
                };
                (name, v.clone())
            })
            .collect()
    } else {
        pointers.columns.iter().map(|(c, ptr)| (c.clone(), pick(ptr).cloned().unwrap_or(Value::Null))).collect()
    };
    Mapped {
        event: None,
        event_id: pointers.id.as_deref().and_then(|ptr| s(pick(ptr))),
        ts: pointers.ts.as_deref().and_then(pick).cloned(),
        columns,
    }
}
