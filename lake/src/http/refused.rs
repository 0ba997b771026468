//! One log line per refused token, for fail2ban.
//!
//! Every answer 401 or 403, on any endpoint (ingest, OTLP, the read APIs, the admin API,
//! the web UI), is logged by the server loop at warn level under the fixed target
//! [`TARGET`] in one fixed format:
//!
//! ```text
//! lake auth: refused token from <peer ip> on <path> (<reason>)
//! ```
//!
//! `<reason>` is `no token` (no `Authorization: Bearer` header), `bad token` (401: a token
//! that is no live key of the endpoint's role) or `forbidden` (403: a valid token used
//! beyond its rights — a batch id of another node, a table the lake writes itself — or
//! the admin API asked from another machine while it has no admin tokens). The path is
//! cut to [`MAX_PATH`] characters; hyper has already refused control characters and
//! spaces in it, so the line cannot be split or forged. Nothing is rate-limited: fail2ban
//! must see every attempt (`deploy/fail2ban/filter.d/lake-auth.conf` matches the line in
//! the text and the JSON log formats). The line is logged whatever `LOG_FILTER` says
//! unless the filter names the target itself (`lake_auth=off` silences it).

use std::net::IpAddr;

use axum::http::StatusCode;

/// The `tracing` target of the line.
pub const TARGET: &str = "lake_auth";

/// Characters of the request path kept in the line.
pub const MAX_PATH: usize = 100;

/// Why a token was refused, from the answer's status and whether the request had one.
pub fn reason(status: StatusCode, had_token: bool) -> Option<&'static str> {
    match status {
        StatusCode::UNAUTHORIZED if had_token => Some("bad token"),
        StatusCode::UNAUTHORIZED => Some("no token"),
        StatusCode::FORBIDDEN => Some("forbidden"),
        _ => None,
    }
}

/// The line's text.
pub fn line(peer: IpAddr, path: &str, reason: &str) -> String {
    let path: String = path.chars().take(MAX_PATH).collect();
    format!("lake auth: refused token from {} on {path} ({reason})", peer.to_canonical())
}

/// Logs a refused token, if `status` says one was.
pub fn log(peer: IpAddr, path: &str, had_token: bool, status: StatusCode) {
    if let Some(reason) = reason(status, had_token) {
        tracing::warn!(target: "lake_auth", "{}", line(peer, path, reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_fixed_and_short() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(line(v4, "/v1/sql", "bad token"), "lake auth: refused token from 192.0.2.7 on /v1/sql (bad token)");
        // An IPv4 client of a dual-stack socket is logged as IPv4, as fail2ban bans it.
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert!(line(mapped, "/", "no token").contains(" from 192.0.2.7 on "));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(line(v6, "/", "no token").contains(" from 2001:db8::1 on "));
        let long = format!("/v1/ingest/{}", "a".repeat(500));
        assert_eq!(
            line(v4, &long, "forbidden").len(),
            "lake auth: refused token from 192.0.2.7 on  (forbidden)".len() + MAX_PATH
        );
        assert_eq!(reason(StatusCode::UNAUTHORIZED, false), Some("no token"));
        assert_eq!(reason(StatusCode::UNAUTHORIZED, true), Some("bad token"));
        assert_eq!(reason(StatusCode::FORBIDDEN, true), Some("forbidden"));
        assert_eq!(reason(StatusCode::BAD_REQUEST, true), None);
    }
}
