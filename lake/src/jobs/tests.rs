use super::config::{check_name, JobsConfig};
use super::*;

fn parse(toml_text: &str) -> anyhow::Result<JobsConfig> {
    #[derive(serde::Deserialize)]
    struct F {
        jobs: Vec<config::JobFile>,
    }
    let f: F = toml::from_str(toml_text)?;
    JobsConfig::from_files(f.jobs)
}

fn us(rfc3339: &str) -> i64 {
    rfc3339.parse::<jiff::Timestamp>().unwrap().as_microsecond()
}

#[test]
fn jobs_parse_with_defaults_and_errors_name_the_job_and_the_key() {
    let c = parse(
        "[[jobs]]\nname = \"pg_dump\"\nschedule = \"0 30 3 * * *\"\n\
         [[jobs]]\nname = \"b\"\nschedule = \"*/5 * * * * *\"\ngrace = \"2s\"\nhost = \"db-1\"\nmax_duration = \"1m\"\n",
    )
    .unwrap();
    let j = c.get("pg_dump").unwrap();
    assert_eq!((j.grace, j.host.as_deref(), j.max_duration), (config::DEFAULT_GRACE, None, None));
    let b = c.get("b").unwrap();
    assert_eq!((b.grace.as_secs(), b.host.as_deref()), (2, Some("db-1")));
    assert!(c.get("nope").is_none());

    for (text, want) in [
        ("[[jobs]]\nname = \"x\"\nschedule = \"0 3 * * *\"", "jobs[0] (x).schedule"),
        ("[[jobs]]\nname = \"x\"\nschedule = \"nightly\"", "invalid cron expression"),
        ("[[jobs]]\nname = \"x y\"\nschedule = \"0 0 3 * * *\"", "jobs[0].name = \"x y\": ' ' is not allowed"),
        ("[[jobs]]\nname = \"x\"\nschedule = \"0 0 3 * * *\"\ngrace = \"soon\"", "invalid duration"),
        (
            "[[jobs]]\nname = \"x\"\nschedule = \"0 0 3 * * *\"\ntimezone = \"Mars/Olympus\"",
            "jobs[0] (x).timezone = \"Mars/Olympus\"",
        ),
        ("[[jobs]]\nname = \"x\"\nschedule = \"0 0 3 * * *\"\nhost = \"a b\"", "jobs[0] (x).host"),
        ("[[jobs]]\nname = \"x\"\nschedule = \"0 0 3 * * *\"\nschedul = \"1\"", "unknown field `schedul`"),
        (
            "[[jobs]]\nname = \"x\"\nschedule = \"0 0 3 * * *\"\n[[jobs]]\nname = \"x\"\nschedule = \"0 0 4 * * *\"",
            "jobs[1] (x): another [[jobs]] entry",
        ),
        ("[[jobs]]\nname = \"x\"\nschedule = \"0 0 0 1 1 * 2001\"", "never fires"),
    ] {
        let e = format!("{:#}", parse(text).unwrap_err());
        assert!(e.contains(want), "{text}: {e}");
    }
}

#[test]
fn names_are_checked() {
    assert!(check_name("pg_dump-daily.1").is_ok());
    for bad in ["", "a/b", "a b", "é", &"x".repeat(65)] {
        assert!(check_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn schedules_step_in_utc_and_in_a_time_zone_across_dst() {
    let c = parse(
        "[[jobs]]\nname = \"utc\"\nschedule = \"0 30 3 * * *\"\n\
         [[jobs]]\nname = \"paris\"\nschedule = \"0 30 2 * * *\"\ntimezone = \"Europe/Paris\"\n",
    )
    .unwrap();
    let utc = &c.get("utc").unwrap().schedule;
    assert_eq!(utc.next_after(us("2026-03-28T04:00:00Z")), Some(us("2026-03-29T03:30:00Z")));
    let paris = &c.get("paris").unwrap().schedule;
    // Winter: 02:30 in Paris is 01:30 UTC.
    assert_eq!(paris.next_after(us("2026-03-27T12:00:00Z")), Some(us("2026-03-28T01:30:00Z")));
    // 29 March 2026: 02:00 → 03:00 in Paris, 02:30 does not exist: it fires just after
    // the gap (03:30 summer time = 01:30 UTC).
    assert_eq!(paris.next_after(us("2026-03-28T12:00:00Z")), Some(us("2026-03-29T01:30:00Z")));
    // Summer: 02:30 in Paris is 00:30 UTC.
    assert_eq!(paris.next_after(us("2026-03-29T12:00:00Z")), Some(us("2026-03-30T00:30:00Z")));
    assert!(paris.to_string().contains("Europe/Paris"));
}

#[test]
fn output_keeps_its_tail_on_a_character_boundary() {
    assert_eq!(tail("hello", 10), "hello");
    assert_eq!(tail("hello", 3), "llo");
    // "é" is two bytes: a cut in its middle moves past it.
    assert_eq!(tail("aéb", 2), "b");
    assert_eq!(tail("aéb", 3), "éb");
    assert_eq!(new_run_id().len(), 16);
    assert_eq!(Event::parse("success"), Some(Event::Success));
    assert_eq!(Event::parse("finish"), None);
}

#[test]
fn the_watch_judges_the_latest_due_time_whose_grace_passed_once() {
    let c = parse("[[jobs]]\nname = \"x\"\nschedule = \"0 * * * * *\"\ngrace = \"10s\"\n").unwrap();
    let job = c.get("x").unwrap();
    let t0 = us("2026-12-07T10:00:00Z");
    let m = 60_000_000;
    // Woken at 10:03:15 with 10:00 next: 10:03's grace has passed, so 10:03 is judged,
    // 10:02 is the one before it, 10:04 comes next.
    let due = watch::Due { next: Some(t0), prev: None };
    assert_eq!(
        watch::latest_passed(job, due, t0 + 3 * m + 15_000_000),
        (t0 + 3 * m, Some(t0 + 2 * m), Some(t0 + 4 * m))
    );
    // Woken right at 10:00:10: 10:00 itself.
    assert_eq!(watch::latest_passed(job, due, t0 + 10_000_000), (t0, None, Some(t0 + m)));
}
