//! A local HTTP/1.1 server that replays canned answers — a vendor's documented responses
//! for the collector's `[[pull]]` tests, where the vendor itself cannot be reached
//! offline — and the hostile ones a real API may give: an error status, garbage, a body
//! far over any bound (streamed, without `Content-Length`), an answer that never comes.
//!
//! Plain threads and `std::net`, one per connection, `Connection: close`: a test server
//! needs no runtime. Every request is recorded (method, target, headers, body) so a test
//! can assert what the client sent.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One canned answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with this body and content type.
    Ok(Vec<u8>, &'static str),
    /// This status with this body.
    Status(u16, String),
    /// 200 and `bytes` bytes of `x`, streamed without `Content-Length` until the client
    /// hangs up or all are sent.
    Huge(u64),
    /// Nothing for this long, then 200 with the body.
    Slow(Duration, Vec<u8>),
}

/// A request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names lower-cased, with their values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Received {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// Per path (no query): answers given in turn; the last one repeats.
    routes: HashMap<String, VecDeque<Answer>>,
    received: Vec<Received>,
}

/// The server; it stops accepting when dropped (the listener thread ends at the next
/// connection attempt or with the process).
#[derive(Debug, Clone)]
pub struct Replay {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

impl Replay {
    /// Starts a server on a free loopback port.
    pub fn start() -> Replay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
            }
        });
        Replay { url, shared }
    }

    /// Answers requests for `path` with `answers` in turn, the last one from then on.
    pub fn route(&self, path: &str, answers: Vec<Answer>) {
        self.shared.lock().expect("lock").routes.insert(path.to_string(), answers.into());
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().expect("lock").received.clone()
    }
}

fn serve(conn: TcpStream, shared: &Mutex<Shared>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let path = target.split('?').next().unwrap_or_default().to_string();
    let answer = {
        let mut s = shared.lock().expect("lock");
        s.received.push(Received { method, target, headers, body: String::from_utf8_lossy(&body).into_owned() });
        match s.routes.get_mut(&path) {
            Some(q) if q.len() > 1 => q.pop_front(),
            Some(q) => q.front().cloned(),
            None => None,
        }
    };
    let mut w = conn;
    match answer.unwrap_or(Answer::Status(404, "no such route".into())) {
        Answer::Ok(b, ct) => respond(&mut w, 200, ct, &b),
        Answer::Status(code, b) => respond(&mut w, code, "text/plain", b.as_bytes()),
        Answer::Slow(d, b) => {
            std::thread::sleep(d);
            respond(&mut w, 200, "application/json", &b)
        }
        Answer::Huge(n) => {
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")?;
            let chunk = vec![b'x'; 64 << 10];
            let mut sent = 0u64;
            while sent < n {
                let k = chunk.len().min((n - sent) as usize);
                w.write_all(&chunk[..k])?;
                sent += k as u64;
            }
            Ok(())
        }
    }
}

fn respond(w: &mut TcpStream, code: u16, ct: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes())?;
    w.write_all(body)
}
