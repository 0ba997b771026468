//! SMTP email with lettre over rustls: STARTTLS (default, port 587), implicit TLS
//! (port 465) or plain (port 25, loopback relays only when credentials are given), with
//! optional AUTH, and an extra trusted CA for relays with a private certificate. The
//! channel's settings are validated in `lake_query::alerts::notify::email`.
//!
//! The message is plain text (`lake_query::alerts::notify::text`): subject
//! `[FIRING] rule: message`, then what, where, since, value, details and the dashboard link.

use std::time::Duration;

use lake_format::units::Dur;
use lake_query::alerts::notify::{subject, text, EmailChannel, TlsMode};
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Notification, SendError};

/// The email of a notification.
pub fn message(c: &EmailChannel, n: &Notification) -> Result<Message, SendError> {
    let from: Mailbox = c.from.parse().map_err(|e| SendError::permanent(format!("from {:?}: {e}", c.from)))?;
    let mut b = Message::builder().from(from).subject(subject(n)).header(ContentType::TEXT_PLAIN);
    for t in &c.to {
        b = b.to(t.parse().map_err(|e| SendError::permanent(format!("to {t:?}: {e}")))?);
    }
    // lettre picks 7bit for short ASCII lines, else quoted-printable (or base64).
    b.body(text(n)).map_err(|e| SendError::permanent(format!("building the email: {e}")))
}

fn transport(c: &EmailChannel) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host).port(c.port).timeout(Some(c.timeout));
    if c.tls != TlsMode::None {
        let mut params = TlsParameters::builder(c.host.clone());
        if let Some(pem) = &c.ca_pem {
            let cert = Certificate::from_pem(pem).map_err(|e| SendError::permanent(format!("ca_file: {e}")))?;
            params = params.add_root_certificate(cert);
        }
        let params = params.build_rustls().map_err(|e| SendError::permanent(format!("tls settings: {e}")))?;
        b = b.tls(match c.tls {
            TlsMode::Starttls => Tls::Required(params),
            _ => Tls::Wrapper(params),
        });
    }
    if let Some((user, pass)) = &c.credentials {
        b = b.credentials(Credentials::new(user.clone(), pass.expose().to_string()));
    }
    Ok(b.build())
}

/// One attempt to send `n`.
pub(super) async fn send(c: &EmailChannel, n: &Notification) -> Result<(), SendError> {
    let msg = message(c, n)?;
    let t = transport(c)?;
    // lettre's timeout bounds each read and write; this bounds the whole conversation.
    match tokio::time::timeout(c.timeout + Duration::from_secs(5), t.send(msg)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.is_permanent() => Err(SendError::permanent(format!("smtp {}:{}: {e}", c.host, c.port))),
        Ok(Err(e)) => {
            Err(SendError::retryable(format!("smtp {}:{}: {}", c.host, c.port, lake_format::error::error_chain(&e))))
        }
        Err(_) => Err(SendError::retryable(format!("smtp {}:{}: timed out after {}", c.host, c.port, Dur(c.timeout)))),
    }
}
