//! The client side of NUT's network protocol (upsd, TCP port 3493) that the UPS source
//! needs: `LIST VAR <ups>` on one long-lived connection.
//!
//! The protocol is line-based text. A request is one line; `LIST VAR home` is answered
//! `BEGIN LIST VAR home`, one `VAR home <name> "<value>"` line per variable, then
//! `END LIST VAR home` — or a single `ERR <CODE>` line (`UNKNOWN-UPS`, `DATA-STALE`,
//! `DRIVER-NOT-CONNECTED`, `ACCESS-DENIED`, …). Values are double-quoted with `\"` and
//! `\\` escaped. Listing variables needs no login.
//!
//! A server is not trusted to be well-behaved: a line is at most [`MAX_LINE`] bytes, a
//! list at most [`MAX_VARS`] variables, and the caller bounds the whole exchange in time.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest line accepted from the server.
pub const MAX_LINE: usize = 8 << 10;
/// Most variables accepted in one list (a real UPS has a few dozen to a hundred).
pub const MAX_VARS: usize = 2000;

/// Why a poll failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NutError {
    /// No connection, or it broke.
    #[error("{0}")]
    Io(String),
    /// The server answered `ERR <code>`.
    #[error("upsd answered ERR {0}")]
    Server(String),
    /// The server's answer is not the protocol.
    #[error("unexpected answer from upsd: {0}")]
    Protocol(String),
    /// No complete answer within the timeout.
    #[error("no answer from upsd within {0:?}")]
    Timeout(Duration),
}

impl NutError {
    /// Whether the connection can be used again after this error: only after a clean
    /// `ERR` line, which ends the answer.
    pub fn keeps_connection(&self) -> bool {
        matches!(self, NutError::Server(_))
    }
}

/// One connection to upsd.
#[derive(Debug)]
pub struct Connection {
    stream: BufReader<TcpStream>,
    line: Vec<u8>,
}

impl Connection {
    /// Connects to `server` (`host:port`).
    pub async fn connect(server: &str) -> Result<Connection, NutError> {
        let stream = TcpStream::connect(server).await.map_err(|e| NutError::Io(format!("connect {server}: {e}")))?;
        // A poll is a few lines each way: send them at once.
        let _ = stream.set_nodelay(true);
        Ok(Connection { stream: BufReader::new(stream), line: Vec::new() })
    }

    /// The variables of `ups`, in the server's order.
    pub async fn list_vars(&mut self, ups: &str) -> Result<Vec<(String, String)>, NutError> {
        let request = format!("LIST VAR {ups}\n");
        self.stream.get_mut().write_all(request.as_bytes()).await.map_err(|e| NutError::Io(format!("send: {e}")))?;
        let first = self.read_line().await?;
        if let Some(code) = first.strip_prefix("ERR ") {
            return Err(NutError::Server(code.trim().to_string()));
        }
        if first != format!("BEGIN LIST VAR {ups}") {
            return Err(NutError::Protocol(cut(&first)));
        }
        let mut vars = Vec::new();
        let end = format!("END LIST VAR {ups}");
        loop {
            let line = self.read_line().await?;
            if line == end {
                return Ok(vars);
            }
            if vars.len() == MAX_VARS {
                return Err(NutError::Protocol(format!("more than {MAX_VARS} variables")));
            }
            vars.push(parse_var(ups, &line).ok_or_else(|| NutError::Protocol(cut(&line)))?);
        }
    }

    /// One line, without its newline; lossy UTF-8.
    async fn read_line(&mut self) -> Result<String, NutError> {
        self.line.clear();
        let n = (&mut self.stream)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut self.line)
            .await
            .map_err(|e| NutError::Io(format!("receive: {e}")))?;
        if n == 0 {
            return Err(NutError::Io("upsd closed the connection".into()));
        }
        if self.line.last() != Some(&b'\n') {
            return Err(if n > MAX_LINE {
                NutError::Protocol(format!("a line longer than {MAX_LINE} bytes"))
            } else {
                NutError::Io("upsd closed the connection mid-line".into())
            });
        }
        let text = String::from_utf8_lossy(&self.line);
        Ok(text.trim_end_matches(['\n', '\r']).to_string())
    }
}

/// `VAR <ups> <name> "<value>"` → (name, value), unescaped; `None` when the line is not one.
pub fn parse_var(ups: &str, line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("VAR ")?.strip_prefix(ups)?.strip_prefix(' ')?;
    let (name, quoted) = rest.split_once(' ')?;
    if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-') {
        return None;
    }
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut value = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?),
            // An unescaped quote inside the value: not the protocol.
            '"' => return None,
            c => value.push(c),
        }
    }
    Some((name.to_string(), value))
}

fn cut(line: &str) -> String {
    if line.chars().count() > 120 {
        line.chars().take(120).chain("…".chars()).collect()
    } else {
        line.to_string()
    }
}
