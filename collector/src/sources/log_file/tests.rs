use super::*;

fn parse(toml: &str) -> anyhow::Result<Vec<LogFileConfig>> {
    #[derive(Deserialize)]
    struct F {
        log_file: Vec<LogFileFile>,
    }
    let f: F = toml::from_str(toml)?;
    validate_all(f.log_file)
}

fn err(toml: &str) -> String {
    format!("{:#}", parse(toml).unwrap_err())
}

const HEAD: &str = "[[log_file]]\nname = \"app\"\npaths = [\"/var/log/app/*.log\"]\ntimezone = \"UTC\"\n";

#[test]
fn presets_bring_their_multiline_start_and_others_have_none() {
    let c = parse(&format!("{HEAD}format = \"python\"\n")).unwrap();
    assert_eq!((c[0].name, c[0].source), ("app", "log_file/app"));
    let m = c[0].multiline.as_ref().unwrap();
    assert!(m.start.is_match(b"ERROR:root:x") && !m.start.is_match(b"Traceback (most recent call last):"));
    assert_eq!((m.max_bytes, m.max_wait), (256 << 10, Duration::from_secs(2)));
    assert!(parse(&format!("{HEAD}format = \"syslog\"\n")).unwrap()[0].multiline.is_none());
    let c = parse(&format!("{HEAD}format = \"nginx_combined\"\n")).unwrap();
    assert!(describe(&c[0]).contains("→ http"), "{}", describe(&c[0]));
    let c = parse(&format!("{HEAD}format = \"regex\"\nregex = '^(?P<ts>\\S+) (?P<message>.*)'\nts_format = \"unix\"\n[log_file.multiline]\nstart = '^\\d'\nmax_wait = \"5s\"\n")).unwrap();
    assert_eq!(c[0].multiline.as_ref().unwrap().max_wait, Duration::from_secs(5));
    // A preset's start can be kept while its bounds change.
    let c = parse(&format!("{HEAD}format = \"rails\"\n[log_file.multiline]\nmax_bytes = \"1MiB\"\n")).unwrap();
    assert!(c[0].multiline.as_ref().unwrap().start.is_match(b"E, [2026"));
}

#[test]
fn bad_sections_say_what_is_wrong() {
    let e = err(&format!("{HEAD}format = \"nginx\"\n"));
    assert!(
        e.contains("log_file[0] (\"app\").format = \"nginx\": unknown; the formats are nginx_combined, nginx_json"),
        "{e}"
    );
    let e = err(&format!("{HEAD}format = \"regex\"\nregex = '^(?P<ts>\\S+ (?P<message>.*)'\n"));
    assert!(e.starts_with("log_file[0] (\"app\").regex: regex parse error"), "{e}");
    let e = err(&format!("{HEAD}format = \"regex\"\nregex = '^(?P<msg>.*)'\n"));
    assert!(e.contains("no `message` capture"), "{e}");
    assert!(err(&format!("{HEAD}format = \"regex\"\n")).contains("needs a `regex`"));
    assert!(err(&format!("{HEAD}format = \"python\"\nregex = '(?P<message>.*)'\n"))
        .contains("not with the \"python\" preset"));
    let e = err(&format!("{HEAD}format = \"regex\"\nregex = '(?P<message>.*)'\nts_format = \"dd/mm\"\n"));
    assert!(e.contains("ts_format = \"dd/mm\""), "{e}");
    let e = err(&format!("{HEAD}format = \"syslog\"\n[log_file.multiline]\nmax_wait = \"1s\"\n"));
    assert!(e.contains("multiline.start: the \"syslog\" format has no default"), "{e}");
    let e = err(&format!("{HEAD}format = \"regex\"\nregex = '(?P<message>.*)'\n[log_file.multiline]\nstart = '('\n"));
    assert!(e.contains("multiline.start = \"(\""), "{e}");
    assert!(
        err(&format!("{HEAD}format = \"python\"\n[log_file.multiline]\nmax_bytes = \"10\"\n")).contains("max_bytes")
    );
    assert!(err(&format!("{HEAD}format = \"python\"\n[log_file.multiline]\nmax_wait = \"0s\"\n")).contains("max_wait"));
    assert!(err(&format!("{HEAD}format = \"python\"\ntimezone = \"Mars/Olympus\"\n")).contains("timezone"));
    assert!(
        err("[[log_file]]\nname = \"journald\"\npaths = [\"/a\"]\nformat = \"syslog\"\n").contains("choose another")
    );
    assert!(err("[[log_file]]\nname = \"App\"\npaths = [\"/a\"]\nformat = \"syslog\"\n").contains("[a-z0-9_-]"));
    assert!(err("[[log_file]]\nname = \"a\"\npaths = []\nformat = \"syslog\"\n").contains("paths"));
    assert!(
        err("[[log_file]]\nname = \"a\"\npaths = [\"/a\"]\nformat = \"syslog\"\nlevel = 1\n").contains("unknown field")
    );
    let two = "[[log_file]]\nname = \"a\"\npaths = [\"/a\"]\nformat = \"syslog\"\n";
    assert!(err(&format!("{two}{two}")).contains("the name \"a\" is used by two [[log_file]] entries"));
}

/// The commented `[[log_file]]` examples of `collector/examples/collector.toml` parse as
/// documented once switched on.
#[test]
fn the_example_config_entries_are_valid() {
    let example = include_str!("../../../examples/collector.toml");
    let start = example.find("# [[log_file]]\n# name = \"nginx\"").expect("the nginx example");
    let block: String = example[start..]
        .lines()
        .take_while(|l| l.starts_with('#') && !l.starts_with("# ---"))
        .map(|l| format!("{}\n", l.strip_prefix("# ").or(l.strip_prefix('#')).unwrap_or(l)))
        .collect();
    let c = parse(&block).unwrap();
    let formats: Vec<&str> = c.iter().map(|c| c.format_name.as_str()).collect();
    assert_eq!(formats, ["nginx_combined", "postgres", "python", "regex"]);
    assert_eq!(c[2].multiline.as_ref().unwrap().max_wait, Duration::from_secs(5));
    assert!(c[3].multiline.as_ref().unwrap().start.is_match(b"2026-11-22 10:15:01 [INFO] x"));
}
