//! Docker events → `containers` rows (pure).
//!
//! In: one JSON object of the `/events` stream. Out: an [`Event`] (or `None` for an event
//! of another type than `container`) and its row. Mapping:
//! - `action`: `Action` (older daemons: `status`) cut at the first `:` — Docker appends
//!   arguments (`health_status: healthy`, `exec_start: sh -c …`); for `health_status` the
//!   argument is `health`;
//! - `container`: attribute `name`; `image`: attribute `image` (else `from`);
//!   `exit_code`: attribute `exitCode`; `compose_project`/`compose_service`: the labels
//!   `com.docker.compose.project`/`.service` (labels arrive as attributes);
//! - `attrs`: every other attribute (`signal`, other labels, …);
//! - `ts`: `timeNano` (else `time` seconds), kept in nanoseconds as the source's cursor.

use std::collections::BTreeMap;

use lake_format::rows::TableBuilder;
use lake_format::Table;
use serde::Deserialize;

/// The compose project label.
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// The compose service label.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "Type")]
    typ: Option<String>,
    #[serde(rename = "Action")]
    action: Option<String>,
    status: Option<String>,
    id: Option<String>,
    from: Option<String>,
    #[serde(rename = "Actor")]
    actor: Option<RawActor>,
    #[serde(rename = "timeNano")]
    time_nano: Option<i64>,
    time: Option<i64>,
}

#[derive(Deserialize)]
struct RawActor {
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(rename = "Attributes", default)]
    attributes: BTreeMap<String, String>,
}

/// One container event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Nanoseconds since the epoch.
    pub time_nano: i64,
    /// Full container id.
    pub id: String,
    /// Container name, without the leading `/`.
    pub name: String,
    /// Image.
    pub image: Option<String>,
    /// Action without its arguments.
    pub action: String,
    /// The arguments Docker appended to the action (`healthy` for `health_status: healthy`).
    pub arg: Option<String>,
    /// Every attribute, labels included.
    pub attrs: BTreeMap<String, String>,
}

impl Event {
    /// Identifies the event among those of the same nanosecond (the cursor's dedupe).
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.id, self.action, self.arg.as_deref().unwrap_or(""))
    }

    /// An attribute (labels are attributes).
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.get(k).map(String::as_str)
    }
}

/// Parses one object of the `/events` stream; `None` for an event that is not about a
/// container (the stream is filtered to containers, but Podman sends others too).
pub fn parse_event(line: &[u8]) -> Result<Option<Event>, String> {
    let raw: RawEvent = serde_json::from_slice(line).map_err(|e| format!("not a Docker event: {e}"))?;
    if raw.typ.as_deref().is_some_and(|t| t != "container") {
        return Ok(None);
    }
    let actor = raw.actor.unwrap_or(RawActor { id: None, attributes: BTreeMap::new() });
    let id = actor.id.or(raw.id).ok_or("event without an id")?;
    let full = raw.action.or(raw.status).ok_or("event without an action")?;
    let (action, arg) = match full.split_once(':') {
        Some((a, rest)) => (a.trim().to_string(), Some(rest.trim().to_string()).filter(|s| !s.is_empty())),
        None => (full.trim().to_string(), None),
    };
    let time_nano = match (raw.time_nano, raw.time) {
        (Some(n), _) => n,
        (None, Some(s)) => s.saturating_mul(1_000_000_000),
        (None, None) => return Err("event without a time".into()),
    };
    let attrs = actor.attributes;
    let name = attrs.get("name").map(|n| n.trim_start_matches('/').to_string()).unwrap_or_else(|| id.clone());
    let image = attrs.get("image").cloned().or(raw.from);
    Ok(Some(Event { time_nano, id, name, image, action, arg, attrs }))
}

/// Accumulates `containers` rows.
#[derive(Debug)]
pub struct ContainerRows {
    b: TableBuilder,
    cols: [usize; 11],
}

impl Default for ContainerRows {
    fn default() -> Self {
        Self::new()
    }
}

impl ContainerRows {
    /// An empty batch.
    pub fn new() -> Self {
        let b = TableBuilder::new(Table::Containers);
        let c = |n: &str| b.column(n).expect("containers column in the catalog");
        let cols = [
            c("ts"),
            c("host"),
            c("container"),
            c("container_id"),
            c("image"),
            c("compose_project"),
            c("compose_service"),
            c("action"),
            c("exit_code"),
            c("health"),
            c("attrs"),
        ];
        ContainerRows { b, cols }
    }

    /// Adds the row of `e`.
    pub fn push(&mut self, host: &str, e: &Event) {
        let [ts, h, container, id, image, project, service, action, exit, health, attrs] = self.cols;
        self.b.ts(ts, e.time_nano.div_euclid(1000));
        self.b.text(h, Some(host));
        self.b.text(container, Some(&e.name));
        self.b.text(id, Some(&e.id));
        self.b.text(image, e.image.as_deref());
        self.b.text(project, e.attr(COMPOSE_PROJECT));
        self.b.text(service, e.attr(COMPOSE_SERVICE));
        self.b.text(action, Some(&e.action));
        self.b.int(exit, e.attr("exitCode").and_then(|c| c.trim().parse().ok()));
        let health_arg = (e.action == "health_status").then_some(e.arg.as_deref()).flatten();
        self.b.text(health, health_arg);
        let columns = ["name", "image", "exitCode", COMPOSE_PROJECT, COMPOSE_SERVICE];
        let mut other: Vec<(&str, &str)> = e
            .attrs
            .iter()
            .filter(|(k, _)| !columns.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // Arguments of other actions (`exec_start: sh -c …`) are kept, not dropped.
        if let (Some(a), None) = (e.arg.as_deref(), health_arg) {
            other.push(("args", a));
        }
        self.b.map(attrs, other);
        self.b.end_row();
    }
}

crate::sources::rows_deref!(ContainerRows);

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;

    use super::*;

    const DIE: &str = r#"{"status":"die","id":"500a492b33c94e5285e1523d5b2d6b9b14ef0811592856e24dbca437d8fcd2e3","from":"bb:1","Type":"container","Action":"die","Actor":{"ID":"500a492b33c94e5285e1523d5b2d6b9b14ef0811592856e24dbca437d8fcd2e3","Attributes":{"com.docker.compose.project":"proj","com.docker.compose.service":"web","exitCode":"3","image":"bb:1","name":"p1","tier":"front"}},"scope":"local","time":1796619457,"timeNano":1796619457739969621}"#;

    #[test]
    fn a_die_event_maps_every_column() {
        let e = parse_event(DIE.as_bytes()).unwrap().unwrap();
        assert_eq!((e.name.as_str(), e.action.as_str(), e.time_nano), ("p1", "die", 1796619457739969621));
        let mut rows = ContainerRows::new();
        rows.push("n1", &e);
        let b = rows.finish().unwrap();
        let got = format!("{:?}", b);
        for want in ["p1", "proj", "web", "bb:1", "die", "tier", "front", "n1"] {
            assert!(got.contains(want), "{want} in {got}");
        }
        let exit = b.column_by_name("exit_code").unwrap().as_primitive::<Int64Type>().value(0);
        assert_eq!(exit, 3);
        assert!(!got.contains("exitCode"), "exitCode is a column, not an attr: {got}");
    }

    #[test]
    fn actions_lose_their_arguments_and_health_is_a_column() {
        let h = r#"{"Type":"container","Action":"health_status: unhealthy","Actor":{"ID":"abc","Attributes":{"name":"db"}},"timeNano":5}"#;
        let e = parse_event(h.as_bytes()).unwrap().unwrap();
        assert_eq!((e.action.as_str(), e.arg.as_deref()), ("health_status", Some("unhealthy")));
        let mut rows = ContainerRows::new();
        rows.push("n", &e);
        let got = format!("{:?}", rows.finish().unwrap().column_by_name("health").unwrap());
        assert!(got.contains("unhealthy"), "{got}");
        let x = r#"{"Type":"container","Action":"exec_start: sh -c echo hi","Actor":{"ID":"abc","Attributes":{}},"time":7}"#;
        let e = parse_event(x.as_bytes()).unwrap().unwrap();
        assert_eq!(
            (e.action.as_str(), e.arg.as_deref(), e.time_nano),
            ("exec_start", Some("sh -c echo hi"), 7_000_000_000)
        );
        assert_eq!(e.name, "abc", "no name attribute: the id names it");
    }

    #[test]
    fn other_types_and_garbage() {
        let net = r#"{"Type":"network","Action":"connect","Actor":{"ID":"n","Attributes":{}},"timeNano":1}"#;
        assert_eq!(parse_event(net.as_bytes()), Ok(None));
        assert!(parse_event(b"{").is_err());
        assert!(parse_event(br#"{"Type":"container","Action":"start","timeNano":1}"#).is_err(), "no id");
        assert!(parse_event(br#"{"Type":"container","id":"x","timeNano":1}"#).is_err(), "no action");
        assert!(parse_event(br#"{"Type":"container","id":"x","Action":"start"}"#).is_err(), "no time");
    }
}
