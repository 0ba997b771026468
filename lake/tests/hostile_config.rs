//! Invalid configuration files (issue 10, part 5): every mistake in `lake.toml`
//! (`lake check-config`) and `collector.toml` (`lake-collector --check`) ends the program
//! with one clear message naming the file, the key and what would be valid. Table-driven:
//! each row is a file, the words its message must contain, and the real binaries' output.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// One bad file and what its message must say (besides the file's path).
struct Case {
    what: &'static str,
    toml: String,
    says: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

fn case(what: &'static str, toml: impl Into<String>, says: &'static [&'static str]) -> Case {
    Case { what, toml: toml.into(), says, env: &[] }
}

/// Runs `cmd` on each case's file and checks the message. Returns the table for the log.
fn check(program: &Path, args: &[&str], file_name: &str, cases: &[Case]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut table = String::new();
    let mut failures = Vec::new();
    for c in cases {
        let path = dir.path().join(file_name);
        std::fs::write(&path, &c.toml).unwrap();
        let mut cmd = Command::new(program);
        cmd.args(args).arg(&path);
        // Only what the case gives: no token or credential from the environment running the test.
        for (k, _) in std::env::vars() {
            if k.starts_with("LAKE_") || k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("LOG_FILTER", "off");
        for (k, v) in c.env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let path_text = path.display().to_string();
        let missing: Vec<&str> =
            std::iter::once(path_text.as_str()).chain(c.says.iter().copied()).filter(|w| !stderr.contains(w)).collect();
        if out.status.success() || !missing.is_empty() {
            failures.push(format!("{}: exit {:?}, missing {missing:?} in:\n{stderr}\n", c.what, out.status.code()));
        }
        // The message without the temporary directory, one line per case.
        let message = stderr.replace(&format!("{}/", dir.path().display()), "");
        table.push_str(&format!(
            "| {} | `{}` | {} |\n",
            c.what,
            c.toml.trim().replace('\n', "⏎"),
            message.replace('\n', " ⏎ ")
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    table
}

#[test]
fn every_lake_toml_mistake_names_the_file_the_key_and_what_is_valid() {
    let node = |name: &str, token: &str| format!("[[nodes]]\nname = \"{name}\"\ntoken = \"{token}\"\n");
    let rule = "[[rules]]\nname = \"r\"\nsql = \"select 1.0 as value\"\ncondition = \"value > 0\"\n";
    // A port nothing listens on, for the unreachable archive.
    let closed = free_port();
    let cases = [
        case("unknown key", "listn = \"127.0.0.1:7470\"\n", &["unknown field `listn`", "expected one of", "`listen`"]),
        case("unknown key in a section", "[ingest]\nflush_intervall = \"1s\"\n", &["line 2", "unknown field `flush_intervall`", "`flush_interval`"]),
        case("unknown section", "[ingestt]\nmax_body = \"1MiB\"\n", &["unknown field `ingestt`", "`ingest`"]),
        case("bad duration", "[ingest]\nflush_interval = \"soon\"\n", &["flush_interval", "invalid duration \"soon\"", "\"10s\""]),
        case("bad duration unit", "[query]\ntimeout = \"30 parsecs\"\n", &["timeout", "30 parsecs", "\"10s\""]),
        case("bad size", "[ingest]\nmax_body = \"lots\"\n", &["max_body", "invalid size \"lots\"", "\"64MiB\""]),
        case("size out of range", "[ingest]\nmax_body = \"1GiB\"\n", &["ingest.max_body = 1GiB", "between 1KiB and 512MiB"]),
        case("bad listen address", "listen = \"nowhere\"\n", &["listen = \"nowhere\"", "\"127.0.0.1:7470\""]),
        case("wrong type", "data_dir = 5\n", &["data_dir", "invalid type: integer `5`"]),
        case("bad cron expression", "[archive]\nschedule = \"every night\"\n", &["archive.schedule", "\"every night\"", "\"0 0 2 * * *\""]),
        case("unknown archive store", "[archive]\nstore = \"gcs\"\n", &["store", "unknown variant `gcs`", "`local`, `s3`, `r2`"]),
        case(
            "invalid R2 endpoint URL",
            "[archive]\nstore = \"r2\"\nbucket = \"lake\"\nendpoint = \"not a url\"\n",
            &["archive.endpoint = \"not a url\" is not a URL", "https://<account_id>.r2.cloudflarestorage.com"],
        ),
        case("R2 endpoint with the bucket in it", "[archive]\nstore = \"r2\"\nbucket = \"lake\"\nendpoint = \"https://abc.r2.cloudflarestorage.com/lake\"\n", &["archive.endpoint", "the bucket goes in archive.bucket"]),
        Case {
            what: "unreachable R2 endpoint",
            toml: format!("[archive]\nstore = \"r2\"\nbucket = \"lake\"\nendpoint = \"http://127.0.0.1:{closed}\"\nallow_http = true\n"),
            says: &["archive.endpoint = \"http://127.0.0.1:", "check the URL", "r2.cloudflarestorage.com", "credentials"],
            env: &[("LAKE_ARCHIVE_ACCESS_KEY_ID", "id"), ("LAKE_ARCHIVE_SECRET_ACCESS_KEY", "secret")],
        },
        case("archive credentials missing", "[archive]\nstore = \"r2\"\nbucket = \"lake\"\nendpoint = \"https://abc.r2.cloudflarestorage.com\"\n", &["archive.endpoint", "LAKE_ARCHIVE_ACCESS_KEY_ID", "LAKE_ARCHIVE_SECRET_ACCESS_KEY"]),
        case("duplicate rule names", format!("{rule}{rule}"), &["rules[1] (r)", "defined twice"]),
        case("duplicate node names", format!("{}{}", node("web", "token-of-web-0123456789"), node("web", "token-of-web-9876543210")), &["nodes[1].name = \"web\"", "another [[nodes]] entry has this name", "its own name"]),
        case("node name with /", node("web/1", "token-of-web-0123456789"), &["nodes[0].name", "\"web/1\"", "only letters, digits, '.', '_' and '-'"]),
        case("node name with ../", node("../etc", "token-of-web-0123456789"), &["nodes[0].name", "\"../etc\"", "must not start with a dot"]),
        case("short token", node("web", "short"), &["nodes[0] (web)", "at least 16 characters"]),
        case("token hash not a SHA-256", "[[nodes]]\nname = \"web\"\ntoken_sha256 = \"abc\"\n", &["nodes[0] (web).token_sha256 = \"abc\"", "64 hex digits"]),
        case("token variable unset", "[[nodes]]\nname = \"web\"\ntoken_env = \"LAKE_TOKEN_WEB\"\n", &["nodes[0] (web)", "LAKE_TOKEN_WEB", "is not set"]),
        case("unsupported version", "version = 2\n", &["version = 2", "version = 1"]),
        case("body timeout beyond the request timeout", "[http]\nbody_timeout = \"5m\"\n", &["http.body_timeout (5m)", "less than http.request_timeout (2m)"]),
        case("zero header timeout", "[http]\nheader_timeout = \"0s\"\n", &["http.header_timeout = 0s", "between 1s and 1h"]),
        case("bad custom table name", "[custom.tables.Signups]\nlenient = true\n", &["custom.tables.Signups", "lower-case identifier"]),
    ];
    let table = check(&lake_bin(), &["check-config", "--config"], "lake.toml", &cases);
    println!("| lake.toml mistake | file | message |\n|---|---|---|\n{table}");
}

#[test]
fn every_collector_toml_mistake_names_the_file_the_key_and_what_is_valid() {
    let exec = "[[exec]]\nname = \"ups\"\ncommand = [\"true\"]\nformat = \"prometheus\"\n";
    let check_tcp =
        |target: &str| format!("[[uptime.checks]]\nname = \"ssh\"\nkind = \"tcp\"\ntarget = \"{target}\"\n");
    let with_token = |t: &str| format!("{t}\n[lake]\ntoken = \"t0k\"\n");
    let cases = [
        case("unknown key", with_token("[host]\nintervall = \"1s\""), &["unknown field `intervall`", "`interval`"]),
        case("unknown section", with_token("[spooll]\nmax_size = \"1GiB\""), &["unknown field `spooll`", "`spool`"]),
        case(
            "bad duration",
            with_token("[host]\ninterval = \"soon\""),
            &["interval", "invalid duration \"soon\"", "\"10s\""],
        ),
        case(
            "bad size",
            with_token("[spool]\nmax_size = \"lots\""),
            &["max_size", "invalid size \"lots\"", "\"64MiB\""],
        ),
        case(
            "sizes that do not fit",
            with_token("[spool]\nmax_size = \"8MiB\"\nsegment_size = \"8MiB\""),
            &["spool.max_size", "twice spool.segment_size"],
        ),
        case(
            "node name with /",
            with_token("node = \"web/1\""),
            &["node", "\"web/1\"", "only letters, digits, '.', '_' and '-'"],
        ),
        case(
            "node name with ../",
            with_token("node = \"../etc\""),
            &["node", "\"../etc\"", "must not start with a dot"],
        ),
        case(
            "lake URL scheme",
            "[lake]\nurl = \"ftp://lake:7470\"\ntoken = \"t0k\"\n",
            &["lake.url = \"ftp://lake:7470\"", "http:// or https://", "100.101.102.103:7470"],
        ),
        case(
            "lake URL without host",
            "[lake]\nurl = \"http://\"\ntoken = \"t0k\"\n",
            &["lake.url = \"http://\" is not a valid URL (empty host)", "100.101.102.103:7470"],
        ),
        case(
            "lake URL invalid",
            "[lake]\nurl = \"http://my lake:7470\"\ntoken = \"t0k\"\n",
            &["lake.url = \"http://my lake:7470\" is not a valid URL", "100.101.102.103:7470"],
        ),
        case("empty token", "[lake]\ntoken = \"\"\n", &["lake.token is empty", "ingest token"]),
        case("no token anywhere", "", &["lake.token", "lake.token_file", "LAKE_TOKEN"]),
        case(
            "duplicate exec names",
            with_token(&format!("{exec}{exec}")),
            &["exec[1]", "\"ups\"", "used by two [[exec]] entries"],
        ),
        case(
            "duplicate uptime checks",
            with_token(&format!("{}{}", check_tcp("a:22"), check_tcp("b:22"))),
            &["uptime.checks[1].name = \"ssh\"", "same name"],
        ),
        case("unsupported version", with_token("version = 2"), &["version = 2", "version 1"]),
    ];
    let table = check(&collector_bin(), &["--check", "--config"], "collector.toml", &cases);
    println!("| collector.toml mistake | file | message |\n|---|---|---|\n{table}");
}

#[test]
fn the_example_files_pass() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(lake_bin())
        .args(["check-config", "--config"])
        .arg(repo.join("lake/examples/lake.toml"))
        .env("LAKE_TOKEN_GATEWAY", "g".repeat(32))
        .env("LAKE_ADMIN_TOKENS", format!("{},{}", "a".repeat(20), "b".repeat(20)))
        // The example's webhooks read their secrets from the environment, as a unit's
        // EnvironmentFile= would give them.
        .env("STRIPE_WHSEC", "whsec_example")
        .env("POSTMARK_HOOK_PASSWORD", "p".repeat(20))
        .env("GITHUB_WEBHOOK_SECRET", "s".repeat(20))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(collector_bin())
        .args(["--check", "--config"])
        .arg(repo.join("collector/examples/collector.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
