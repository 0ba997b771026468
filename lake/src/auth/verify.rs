//! Bearer tokens: who may ingest, read and administer, checked the same way everywhere.
//!
//! In: the keys the lake knows ([`Key`]: a role, for ingest the node, and the SHA-256 of
//! the token — never the token itself), installed as one [`KeySet`] in a [`Verifier`] and
//! replaced whole when the tokens file changes. Out: for a request's
//! `Authorization: Bearer <token>`, whether it holds a valid key of the wanted role and,
//! for ingest, the node the key belongs to.
//!
//! The presented token is hashed once; its hash is compared with every stored hash of the
//! role in constant time (`subtle`), with no early exit, so the time taken says nothing
//! about which key came close. Several keys may hold the same role (and node) at once:
//! that is how a token is rotated without downtime — add the new one, move the clients,
//! revoke the old one.
//!
//! A role without keys: the read APIs are open (a lake on loopback), the admin API
//! answers loopback clients only, ingest refuses everyone. Silences (adding and removing
//! them mutes notifications) need an alerts or admin token, and are open only on a lake
//! with no read, alerts or admin key at all. Once a set with read (or
//! admin) keys has been installed, that role stays closed for the life of the
//! [`Verifier`], even if a later set has none of its keys left: revoking the last read
//! token locks the SQL API rather than opening it.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Sending batches as one node (`/v1/ingest/…`, OTLP).
    Ingest,
    /// The read APIs: `/v1/sql`, `/v1/tables`, Grafana, alerts, the web UI.
    Read,
    /// The admin API (`/v1/admin/…`).
    Admin,
    /// Listing alerts and silences, and adding and removing silences (`lake silence`).
    Alerts,
}

impl Role {
    /// The lowercase name used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
            Role::Alerts => "alerts",
        }
    }

    /// The letter in a generated token's prefix (`lake_i_…`, `lake_r_…`, `lake_a_…`,
    /// `lake_l_…` for alerts).
    pub fn letter(self) -> char {
        match self {
            Role::Ingest => 'i',
            Role::Read => 'r',
            Role::Admin => 'a',
            Role::Alerts => 'l',
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown role {0:?} (use ingest, read, alerts or admin)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        match s {
            "ingest" => Ok(Role::Ingest),
            "read" => Ok(Role::Read),
            "admin" => Ok(Role::Admin),
            "alerts" => Ok(Role::Alerts),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

/// The SHA-256 of a token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

/// A stored hash that is not 64 hex digits.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not a SHA-256 digest: expected 64 hex digits, got {len} characters{}", if *.hex_ok { "" } else { " (not all hex)" })]
pub struct BadHash {
    len: usize,
    hex_ok: bool,
}

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> TokenHash {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        TokenHash(out)
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<TokenHash, BadHash> {
        let hex_ok = s.bytes().all(|b| b.is_ascii_hexdigit());
        if s.len() != 64 || !hex_ok {
            return Err(BadHash { len: s.chars().count(), hex_ok });
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).unwrap_or(0);
            let lo = (pair[1] as char).to_digit(16).unwrap_or(0);
            out[i] = u8::try_from(hi * 16 + lo).unwrap_or(0);
        }
        Ok(TokenHash(out))
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        use fmt::Write as _;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to tell two apart in a log, not the whole digest.
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

/// One accepted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Where it comes from, for messages: `tokens.toml id 3fa9c2d1`, `lake.toml nodes[0]`.
    pub source: String,
    /// What it allows.
    pub role: Role,
    /// The node an ingest key sends as; `None` for the other roles.
    pub node: Option<String>,
    /// SHA-256 of the token.
    pub hash: TokenHash,
    /// Unix seconds after which the key is no longer accepted.
    pub expires: Option<i64>,
}

impl Key {
    /// A key of `role` for the plaintext `token` (hashed here).
    pub fn plain(source: impl Into<String>, role: Role, node: Option<String>, token: &str) -> Key {
        Key { source: source.into(), role, node, hash: TokenHash::of(token), expires: None }
    }

    fn live(&self, now: i64) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// Two keys with the same token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{second}: the same token as {first}; every token must be different (one per node and role)")]
pub struct DuplicateToken {
    /// The earlier key's source.
    pub first: String,
    /// The later key's source.
    pub second: String,
}

/// The keys in force at one time; replaced whole, never edited.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// A set of `keys`; the same token twice (whatever the roles) is an error.
    pub fn new(keys: Vec<Key>) -> Result<KeySet, DuplicateToken> {
        for (i, k) in keys.iter().enumerate() {
            if let Some(first) = keys[..i].iter().find(|o| o.hash == k.hash) {
                return Err(DuplicateToken { first: first.source.clone(), second: k.source.clone() });
            }
        }
        Ok(KeySet { keys })
    }

    /// Every key.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Whether any key (expired or not) holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.keys.iter().any(|k| k.role == role)
    }

    /// The nodes with ingest keys, sorted, without repeats.
    pub fn nodes(&self) -> Vec<&str> {
        let mut n: Vec<&str> = self.keys.iter().filter_map(|k| k.node.as_deref()).collect();
        n.sort_unstable();
        n.dedup();
        n
    }

    /// The live key of `role` whose hash is `hash`, comparing against every candidate.
    pub fn find(&self, role: Role, hash: &TokenHash, now: i64) -> Option<&Key> {
        let candidates: Vec<&Key> = self.keys.iter().filter(|k| k.role == role && k.live(now)).collect();
        let digests: Vec<&[u8; 32]> = candidates.iter().map(|k| &k.hash.0).collect();
        find_constant_time(&digests, &hash.0).map(|i| candidates[i])
    }
}

/// The index of `wanted` in `candidates`. Every candidate is compared in full, in
/// constant time, and the result is selected without branching on a comparison.
pub fn find_constant_time(candidates: &[&[u8; 32]], wanted: &[u8; 32]) -> Option<usize> {
    let mut found = subtle::Choice::from(0u8);
    let mut index = 0u32;
    for (i, c) in candidates.iter().enumerate() {
        let eq = c[..].ct_eq(&wanted[..]);
        index.conditional_assign(&u32::try_from(i).unwrap_or(u32::MAX), eq);
        found |= eq;
    }
    bool::from(found).then_some(index as usize)
}

/// Why a request's token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is no valid key of the role.
    Invalid,
}

/// The admin API's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAccess {
    /// No admin key was ever configured: loopback clients only.
    LoopbackOnly,
    /// A valid admin token.
    Granted,
    /// Admin keys exist and the request holds none of them.
    Denied,
}

/// Why a request may not add or remove silences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceDenied {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is no valid key of any role that may.
    Invalid,
    /// A valid read token: it lists alerts and silences but does not change them.
    ReadOnly,
}

/// The keys in force, shared by every endpoint and swapped when the tokens file changes.
#[derive(Debug, Default)]
pub struct Verifier {
    set: RwLock<Arc<KeySet>>,
    read_closed: AtomicBool,
    admin_closed: AtomicBool,
    alerts_closed: AtomicBool,
}

impl Verifier {
    /// A verifier over `set`.
    pub fn new(set: KeySet) -> Verifier {
        let v = Verifier::default();
        v.install(set);
        v
    }

    /// A verifier accepting the plaintext read tokens `tokens` (none: open reads); for
    /// tests, benches and tools that configure tokens in code.
    pub fn with_read_tokens(tokens: &[String]) -> Verifier {
        // The same token given twice is one key.
        let mut uniq: Vec<&String> = tokens.iter().collect();
        uniq.sort();
        uniq.dedup();
        let keys =
            uniq.iter().enumerate().map(|(i, t)| Key::plain(format!("read token {i}"), Role::Read, None, t)).collect();
        Verifier::new(KeySet { keys })
    }

    /// Replaces the keys in force. A set with read or admin keys closes that role for good.
    pub fn install(&self, set: KeySet) {
        if set.has(Role::Read) {
            self.read_closed.store(true, Ordering::SeqCst);
        }
        if set.has(Role::Admin) {
            self.admin_closed.store(true, Ordering::SeqCst);
        }
        if set.has(Role::Alerts) {
            self.alerts_closed.store(true, Ordering::SeqCst);
        }
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
    }

    /// The keys in force now.
    pub fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.set.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The live key of `role` matching `token`.
    pub fn check(&self, role: Role, token: &str) -> Option<Key> {
        let hash = TokenHash::of(token);
        self.current().find(role, &hash, now_unix()).cloned()
    }

    /// The node an ingest request sends as, if its token is a live ingest key.
    pub fn ingest_node(&self, headers: &HeaderMap) -> Option<String> {
        let token = bearer_token(headers)?;
        self.check(Role::Ingest, token).and_then(|k| k.node)
    }

    /// Whether the read APIs need a token.
    pub fn read_required(&self) -> bool {
        self.read_closed.load(Ordering::SeqCst)
    }

    /// Whether a request may use the read APIs.
    pub fn read(&self, headers: &HeaderMap) -> Result<(), Denied> {
        if !self.read_required() {
            return Ok(());
        }
        let token = bearer_token(headers).ok_or(Denied::Missing)?;
        self.check(Role::Read, token).map(|_| ()).ok_or(Denied::Invalid)
    }

    /// Whether a request may list alerts and silences: a read or an alerts token (no
    /// token while the read APIs are open).
    pub fn alerts_read(&self, headers: &HeaderMap) -> Result<(), Denied> {
        if !self.read_required() {
            return Ok(());
        }
        let token = bearer_token(headers).ok_or(Denied::Missing)?;
        let hash = TokenHash::of(token);
        let set = self.current();
        let now = now_unix();
        // Both roles are searched in full whatever the first finds: no early exit.
        let read = set.find(Role::Read, &hash, now).is_some();
        let alerts = set.find(Role::Alerts, &hash, now).is_some();
        if read | alerts {
            Ok(())
        } else {
            Err(Denied::Invalid)
        }
    }

    /// Whether a request may add or remove silences: an alerts or an admin token. Open
    /// only while no read, alerts or admin key was ever installed (a lake on loopback).
    pub fn change_silences(&self, headers: &HeaderMap) -> Result<(), SilenceDenied> {
        let closed =
            [&self.read_closed, &self.admin_closed, &self.alerts_closed].iter().any(|c| c.load(Ordering::SeqCst));
        if !closed {
            return Ok(());
        }
        let token = bearer_token(headers).ok_or(SilenceDenied::Missing)?;
        let hash = TokenHash::of(token);
        let set = self.current();
        let now = now_unix();
        let alerts = set.find(Role::Alerts, &hash, now).is_some();
        let admin = set.find(Role::Admin, &hash, now).is_some();
        let read = set.find(Role::Read, &hash, now).is_some();
        if alerts | admin {
            Ok(())
        } else if read {
            Err(SilenceDenied::ReadOnly)
        } else {
            Err(SilenceDenied::Invalid)
        }
    }

    /// Whether a request may use the admin API.
    pub fn admin(&self, headers: &HeaderMap) -> AdminAccess {
        if !self.admin_closed.load(Ordering::SeqCst) {
            return AdminAccess::LoopbackOnly;
        }
        match bearer_token(headers).and_then(|t| self.check(Role::Admin, t)) {
            Some(_) => AdminAccess::Granted,
            None => AdminAccess::Denied,
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The password of an `Authorization: Basic <base64(user:password)>` header: how shippers
/// that only know basic auth (Loki's Promtail and Docker driver, Fluent Bit) carry a token.
pub fn basic_password(headers: &HeaderMap) -> Option<String> {
    basic_credentials(headers).map(|(_, password)| password).filter(|p| !p.is_empty())
}

/// The user and password of an `Authorization: Basic <base64(user:password)>` header
/// (webhooks from Postmark and listmonk scripts authenticate so).
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let encoded = headers.get(AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        }
        h
    }

    #[test]
    fn the_basic_auth_password_is_the_token() {
        let basic = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, v.parse().unwrap());
            basic_password(&h)
        };
        // base64("node:tok:en"), ("node:"), ("nocolon"); the user name is free.
        assert_eq!(basic("Basic bm9kZTp0b2s6ZW4=").as_deref(), Some("tok:en"));
        assert_eq!(basic("Basic  bm9kZTp0b2s6ZW4= ").as_deref(), Some("tok:en"));
        assert_eq!(basic("Basic bm9kZTo="), None, "an empty password");
        assert_eq!(basic("Basic bm9jb2xvbg=="), None, "no colon");
        assert_eq!(basic("Basic !!!"), None, "not base64");
        assert_eq!(basic("Bearer bm9kZTp0b2s6ZW4="), None);
        assert_eq!(basic_password(&headers(None)), None);
    }

    #[test]
    fn hashes_round_trip_and_bad_ones_say_why() {
        let h = TokenHash::of("abc");
        // sha256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(h.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(TokenHash::from_hex(&h.to_hex().to_uppercase()).unwrap(), h);
        let e = TokenHash::from_hex("abc").unwrap_err().to_string();
        assert!(e.contains("64 hex digits") && e.contains("got 3"), "{e}");
        let e = TokenHash::from_hex(&"g".repeat(64)).unwrap_err().to_string();
        assert!(e.contains("not all hex"), "{e}");
        assert!(!format!("{h:?}").contains(&h.to_hex()));
    }

    #[test]
    fn the_constant_time_search_finds_exactly_the_match_wherever_it_is() {
        let digests: Vec<[u8; 32]> = (0..5u8).map(|i| [i; 32]).collect();
        let refs: Vec<&[u8; 32]> = digests.iter().collect();
        for (i, d) in digests.iter().enumerate() {
            assert_eq!(find_constant_time(&refs, d), Some(i));
        }
        // One bit off in the last byte, or in the first: no match.
        let mut near = digests[4];
        near[31] ^= 1;
        assert_eq!(find_constant_time(&refs, &near), None);
        let mut near = digests[0];
        near[0] ^= 0x80;
        assert_eq!(find_constant_time(&refs, &near), None);
        assert_eq!(find_constant_time(&[], &digests[0]), None);
    }

    #[test]
    fn keys_are_checked_by_role_and_node() {
        let set = KeySet::new(vec![
            Key::plain("a", Role::Ingest, Some("node-a".into()), "tok-a-0123456789"),
            Key::plain("a2", Role::Ingest, Some("node-a".into()), "tok-a2-0123456789"),
            Key::plain("b", Role::Ingest, Some("node-b".into()), "tok-b-0123456789"),
            Key::plain("r", Role::Read, None, "tok-r-0123456789"),
        ])
        .unwrap();
        let v = Verifier::new(set);
        // Two keys for one node during a changeover: both valid.
        assert_eq!(v.ingest_node(&headers(Some("tok-a-0123456789"))).as_deref(), Some("node-a"));
        assert_eq!(v.ingest_node(&headers(Some("tok-a2-0123456789"))).as_deref(), Some("node-a"));
        assert_eq!(v.ingest_node(&headers(Some("tok-b-0123456789"))).as_deref(), Some("node-b"));
        // A read token cannot ingest; an ingest token cannot read.
        assert_eq!(v.ingest_node(&headers(Some("tok-r-0123456789"))), None);
        assert_eq!(v.read(&headers(Some("tok-a-0123456789"))), Err(Denied::Invalid));
        assert_eq!(v.read(&headers(Some("tok-r-0123456789"))), Ok(()));
        assert_eq!(v.read(&headers(None)), Err(Denied::Missing));
        assert_eq!(v.read(&headers(Some("tok-r-012345678"))), Err(Denied::Invalid));
        assert_eq!(v.admin(&headers(Some("tok-r-0123456789"))), AdminAccess::LoopbackOnly);
        assert_eq!(v.current().nodes(), vec!["node-a", "node-b"]);
    }

    #[test]
    fn the_same_token_twice_is_refused_naming_both() {
        let e = KeySet::new(vec![
            Key::plain("lake.toml nodes[0]", Role::Ingest, Some("a".into()), "same-token-0123456789"),
            Key::plain("tokens.toml id 1234abcd", Role::Read, None, "same-token-0123456789"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("lake.toml nodes[0]") && e.contains("tokens.toml id 1234abcd"), "{e}");
    }

    #[test]
    fn expired_keys_are_refused() {
        let mut k = Key::plain("old", Role::Read, None, "old-token-0123456789");
        k.expires = Some(now_unix() - 1);
        let mut fresh = Key::plain("new", Role::Read, None, "new-token-0123456789");
        fresh.expires = Some(now_unix() + 3600);
        let v = Verifier::new(KeySet::new(vec![k, fresh]).unwrap());
        assert_eq!(v.read(&headers(Some("old-token-0123456789"))), Err(Denied::Invalid));
        assert_eq!(v.read(&headers(Some("new-token-0123456789"))), Ok(()));
    }

    #[test]
    fn silences_need_an_alerts_or_admin_token_once_any_token_exists() {
        let v = Verifier::new(KeySet::default());
        assert_eq!(v.change_silences(&headers(None)), Ok(()), "no tokens at all: open, like reads");
        let v = Verifier::new(
            KeySet::new(vec![
                Key::plain("r", Role::Read, None, "tok-r-0123456789"),
                Key::plain("l", Role::Alerts, None, "tok-l-0123456789"),
                Key::plain("a", Role::Admin, None, "tok-a-0123456789"),
            ])
            .unwrap(),
        );
        assert_eq!(v.change_silences(&headers(Some("tok-l-0123456789"))), Ok(()));
        assert_eq!(v.change_silences(&headers(Some("tok-a-0123456789"))), Ok(()));
        assert_eq!(v.change_silences(&headers(Some("tok-r-0123456789"))), Err(SilenceDenied::ReadOnly));
        assert_eq!(v.change_silences(&headers(Some("tok-x-0123456789"))), Err(SilenceDenied::Invalid));
        assert_eq!(v.change_silences(&headers(None)), Err(SilenceDenied::Missing));
        // Listing: read or alerts; alerts tokens read nothing else, admin tokens do not list.
        assert_eq!(v.alerts_read(&headers(Some("tok-r-0123456789"))), Ok(()));
        assert_eq!(v.alerts_read(&headers(Some("tok-l-0123456789"))), Ok(()));
        assert_eq!(v.alerts_read(&headers(Some("tok-a-0123456789"))), Err(Denied::Invalid));
        assert_eq!(v.read(&headers(Some("tok-l-0123456789"))), Err(Denied::Invalid));
        // Read tokens alone close silences too: a read token never mutes anything.
        let v = Verifier::new(KeySet::new(vec![Key::plain("r", Role::Read, None, "tok-r-0123456789")]).unwrap());
        assert_eq!(v.change_silences(&headers(Some("tok-r-0123456789"))), Err(SilenceDenied::ReadOnly));
        assert_eq!("alerts".parse::<Role>().unwrap(), Role::Alerts);
        assert!("alert".parse::<Role>().unwrap_err().to_string().contains("ingest, read, alerts or admin"));
    }

    #[test]
    fn a_role_once_closed_stays_closed() {
        let v = Verifier::new(KeySet::default());
        assert_eq!(v.read(&headers(None)), Ok(()), "no read keys: open");
        v.install(KeySet::new(vec![Key::plain("r", Role::Read, None, "tok-r-0123456789")]).unwrap());
        assert_eq!(v.read(&headers(None)), Err(Denied::Missing));
        // The last read key revoked: closed to everyone, not open.
        v.install(KeySet::default());
        assert_eq!(v.read(&headers(Some("tok-r-0123456789"))), Err(Denied::Invalid));
        assert!(v.read_required());
    }
}
