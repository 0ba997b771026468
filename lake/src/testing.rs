//! Realistic `http` rows, one generator for the ingest benchmark (`benches/ingest.rs`),
//! the flush microbenchmark and compaction tests (unit tests of [`crate::ingest::writer`]
//! and [`crate::maintenance::compact`]) and `tests/custom.rs`, so they all measure and
//! check the same data.
//!
//! Part of the library (hidden from its docs, like `fuzzing`) because unit tests,
//! integration tests and benchmarks can all reach it there without a `#[path]` into another
//! folder; it is a few dozen lines and nothing in the server calls it.

use arrow_array::RecordBatch;
use lake_format::rows::TableBuilder;
use lake_format::Table;

const PATHS: [&str; 8] =
    ["/", "/index.html", "/api/v1/items", "/login", "/static/app.js", "/wp-login.php", "/feed", "/robots.txt"];
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
    "Mozilla/5.0 (compatible; GPTBot/1.0; +https://openai.com/gptbot)",
];

/// `rows` rows from `node`, timestamps from `base_ts` (µs) up, values drawn from a
/// xorshift seeded by `salt`; `marker` replaces every URI when given.
pub fn http_rows(node: &str, rows: usize, salt: u64, base_ts: i64, marker: Option<&str>) -> RecordBatch {
    let mut b = TableBuilder::new(Table::Http);
    let col = |n: &str| b.column(n).expect("http column");
    let (ts, host, vhost, method, uri, path, proto, status, size, dur, rip, ua) = (
        col("ts"),
        col("host"),
        col("vhost"),
        col("method"),
        col("uri"),
        col("path"),
        col("proto"),
        col("status"),
        col("size"),
        col("duration_ms"),
        col("remote_ip"),
        col("user_agent"),
    );
    let mut x = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = PATHS[(x % 8) as usize];
        let q = format!("{p}?id={}", x % 1000);
        b.ts(ts, base_ts + i as i64);
        b.text(host, Some(node));
        b.text(vhost, Some(if x.is_multiple_of(3) { "blog.example.org" } else { "example.org" }));
        b.text(method, Some(if x.is_multiple_of(10) { "POST" } else { "GET" }));
        b.text(uri, Some(marker.unwrap_or(&q)));
        b.text(path, Some(p));
        b.text(proto, Some("HTTP/2.0"));
        b.int(status, Some([200, 200, 200, 304, 404, 500, 301, 200][(x >> 8) as usize % 8]));
        b.int(size, Some((x % 50_000) as i64));
        b.float(dur, Some((x % 2000) as f64 / 10.0));
        b.text(rip, Some(&format!("203.0.113.{}", x % 250)));
        b.text(ua, Some(AGENTS[(x >> 16) as usize % 4]));
        b.end_row();
    }
    b.finish().expect("http batch")
}
