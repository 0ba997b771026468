//! TCP checks: connect time to host:port (name resolution included, as a client sees it).

use std::time::{Duration, Instant};

use lake_format::units::Dur;
use tokio::net::TcpStream;

use super::Outcome;

pub(super) async fn probe(host: &str, port: u16, timeout: Duration) -> Outcome {
    let start = Instant::now();
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(stream)) => {
            let mut out = Outcome { ok: true, latency: Some(start.elapsed()), ..Outcome::default() };
            if let Ok(addr) = stream.peer_addr() {
                out.attrs.push(("address", addr.to_string()));
            }
            out
        }
        Ok(Err(e)) => Outcome::failed(connect_error(&e)),
        Err(_) => Outcome::failed(format!("timeout after {}", Dur(timeout))),
    }
}

/// Short, stable words for the common failures; the OS text otherwise.
pub(super) fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        _ => format!("connect: {e}"),
    }
}
