//! Checking that a request comes from the provider: HMAC-SHA256 signatures (GitHub's
//! `X-Hub-Signature-256`, Stripe's `Stripe-Signature`), HTTP basic auth, a secret in the
//! URL. Every comparison takes constant time (`ring::hmac::verify`, `subtle`); secrets are
//! compared through their SHA-256, so not even their length shows.
//!
//! A refusal says why in words safe to answer and to log: never the secret, never the
//! signature that was expected.

use axum::http::HeaderMap;
use ring::hmac;
use subtle::ConstantTimeEq;

use super::config::HookAuth;

/// The header of GitHub's (and many others') body signature.
pub const HUB_SIGNATURE: &str = "x-hub-signature-256";
/// Stripe's signature header.
pub const STRIPE_SIGNATURE: &str = "stripe-signature";
/// Most `v1` signatures one `Stripe-Signature` may carry (Stripe sends one per active
/// secret: two while a secret is rolled).
const MAX_STRIPE_SIGNATURES: usize = 8;

/// Checks a request against its hook's auth. `url_secret` is the URL's last segment, if
/// any; `now` is the lake's clock in unix seconds.
pub fn check(
    auth: &HookAuth,
    headers: &HeaderMap,
    url_secret: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), String> {
    if url_secret.is_some() && !matches!(auth, HookAuth::UrlSecret(_)) {
        return Err("this hook takes no secret in its URL".into());
    }
    match auth {
        HookAuth::Hmac(secret) => {
            let value = header(headers, HUB_SIGNATURE)?;
            let hex = value
                .strip_prefix("sha256=")
                .ok_or_else(|| "X-Hub-Signature-256 is not \"sha256=<hex>\"".to_string())?;
            let sig = unhex(hex).ok_or_else(|| "X-Hub-Signature-256 is not \"sha256=<hex>\"".to_string())?;
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
            hmac::verify(&key, body, &sig).map_err(|_| "X-Hub-Signature-256 does not match the body".to_string())
        }
        HookAuth::Stripe { secret, tolerance } => {
            let value = header(headers, STRIPE_SIGNATURE)?;
            let (t, sigs) = stripe_header(value)?;
            let skew = now.abs_diff(t);
            if skew > tolerance.as_secs() {
                return Err(format!(
                    "Stripe-Signature timestamp {t} is {skew}s from the lake's clock (tolerance {}s)",
                    tolerance.as_secs()
                ));
            }
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
            let mut signed = Vec::with_capacity(body.len() + 21);
            signed.extend_from_slice(t.to_string().as_bytes());
            signed.push(b'.');
            signed.extend_from_slice(body);
            // Every v1 is checked, so the time taken does not tell which one matched.
            let matched = sigs.iter().fold(false, |ok, sig| hmac::verify(&key, &signed, sig).is_ok() | ok);
            if matched {
                Ok(())
            } else {
                Err("no v1 signature of Stripe-Signature matches the body".into())
            }
        }
        HookAuth::Basic { user, password } => {
            let (u, p) = crate::auth::basic_credentials(headers)
                .ok_or_else(|| "no HTTP basic auth (Authorization: Basic …)".to_string())?;
            // Both compared, always: which one was wrong does not show in the time taken.
            let ok = same(&u, user) & same(&p, password.expose());
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "wrong user or password for basic auth (user {:?})",
                    u.chars().take(64).collect::<String>()
                ))
            }
        }
        HookAuth::UrlSecret(secret) => match url_secret {
            None => Err("no secret in the URL (/v1/hooks/<name>/<secret>)".into()),
            Some(given) if same(given, secret.expose()) => Ok(()),
            Some(_) => Err("wrong secret in the URL".into()),
        },
    }
}

/// Equal in constant time (through the SHA-256 of each, so lengths do not show).
fn same(a: &str, b: &str) -> bool {
    let da = ring::digest::digest(&ring::digest::SHA256, a.as_bytes());
    let db = ring::digest::digest(&ring::digest::SHA256, b.as_bytes());
    bool::from(da.as_ref().ct_eq(db.as_ref()))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, String> {
    let v = headers.get(name).ok_or_else(|| format!("no {} header", display_name(name)))?;
    v.to_str().map(str::trim).map_err(|_| format!("{} is not text", display_name(name)))
}

fn display_name(name: &str) -> &'static str {
    if name == STRIPE_SIGNATURE {
        "Stripe-Signature"
    } else {
        "X-Hub-Signature-256"
    }
}

/// `t=<unix seconds>,v1=<hex>,v1=<hex>,v0=…`: the timestamp and every `v1` signature
/// (other schemes are ignored, as Stripe's libraries do).
pub fn stripe_header(value: &str) -> Result<(i64, Vec<Vec<u8>>), String> {
    let malformed = || "Stripe-Signature is not \"t=<unix time>,v1=<hex>\"".to_string();
    let mut t = None;
    let mut sigs = Vec::new();
    for part in value.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or_else(malformed)?;
        match k {
            "t" => t = Some(v.parse::<i64>().map_err(|_| malformed())?),
            "v1" => {
                if sigs.len() == MAX_STRIPE_SIGNATURES {
                    return Err(format!("Stripe-Signature carries more than {MAX_STRIPE_SIGNATURES} v1 signatures"));
                }
                sigs.push(unhex(v).ok_or_else(malformed)?);
            }
            _ => {}
        }
    }
    let t = t.ok_or_else(|| "Stripe-Signature has no timestamp (t=)".to_string())?;
    if sigs.is_empty() {
        return Err("Stripe-Signature has no v1 signature".into());
    }
    Ok((t, sigs))
}

/// Hex to bytes (either case); `None` for anything else or an odd length.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 256 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}
