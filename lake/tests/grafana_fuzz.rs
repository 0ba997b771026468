//! The inputs that once crashed a Grafana fuzz target
//! (`fixtures/fuzz-regressions/grafana_*/`), replayed through the same entry points the
//! targets use ([`lake::http::grafana::fuzzing`]), so plain `cargo test` checks them.

use lake::http::grafana::fuzzing::TARGETS;

#[test]
fn fuzz_regressions_stay_fixed() {
    let n = lake_format::fuzz_regressions::replay(TARGETS);
    eprintln!("{n} regression inputs replayed");
}

#[test]
fn typical_requests_pass_the_entry_points() {
    let (request, macros) = (TARGETS[0].1, TARGETS[1].1);
    request(br#"{"range":{"from":"2024-03-09T10:00:00Z","to":"2024-03-09T16:00:00Z"},"intervalMs":30000,"targets":[{"refId":"A","target":"SELECT $__timeGroup(ts, $__interval) AS time, count(*) FROM http WHERE $__timeFilter(ts) AND host IN ($host) GROUP BY 1","payload":{"host":["a","b"]}}],"adhocFilters":[{"key":"host","operator":"=","value":"a"}]}"#);
    request(br#"{"annotation":{"query":"bans"},"range":{"from":"2024-03-09T10:00:00Z","to":"2024-03-09T16:00:00Z"}}"#);
    request(b"");
    macros(b"SELECT '$host', ${hosts:csv}, $none, $__interval_ms FROM t -- $nope");
}
