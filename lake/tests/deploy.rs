//! Deployment (issue 10, part 4): `deploy/install.sh` into a temporary root — users,
//! binaries, libduckdb, configuration skeletons, secrets files, units, enabling — checked
//! file by file with modes and owners; run again, it changes nothing; then
//! `systemd-analyze verify` on the installed units (no warning allowed) and
//! `systemd-analyze security` on their sandboxing.
//!
//! Runs as root (it creates users in the temporary root's /etc/passwd and chowns files),
//! as CI does. `systemd-analyze` comes with Debian's `systemd` package, which
//! `scripts/setup peers` installs; this test is never skipped for want of it.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A fresh root with the /etc files useradd needs, the systemd-journal and caddy groups,
/// and (for `systemd-analyze --root`) the host's systemd units.
fn fresh_root() -> tempfile::TempDir {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the deploy tests run as root (they create users in a temporary root and chown files)"
    );
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nsystemd-journal:x:190:\ncaddy:x:191:\n").unwrap();
    std::fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    std::fs::write(etc.join("gshadow"), "root:*::\nsystemd-journal:!::\ncaddy:!::\n").unwrap();
    dir
}

fn install(root: &Path, args: &[&str]) -> Output {
    let bin_dir = lake_bin().parent().unwrap().to_path_buf();
    // The collector is built by `cargo test --workspace` (make test) beside lake.
    collector_bin();
    let out = Command::new(repo().join("deploy/install.sh"))
        .arg("--root")
        .arg(root)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--lib")
        .arg(repo().join(".duckdb/lib/libduckdb.so"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "install.sh {args:?} failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `(mode, uid, gid)` of a path.
fn meta(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

/// uid and gid of a user in `root`'s /etc/passwd.
fn ids(root: &Path, user: &str) -> (u32, u32, String) {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap_or_else(|| panic!("no user {user}:\n{passwd}"));
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap(), f[6].to_string())
}

fn env_value(file: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {}:\n{text}", file.display()))
        .to_string()
}

#[test]
fn the_installer_puts_everything_in_place_and_is_idempotent() {
    let root = fresh_root();
    let r = root.path();
    let out = install(r, &["--node", "salem-storage"]);
    let said = text(&out.stdout);

    // Users: system accounts without a login, each with its own group.
    let (lake_uid, lake_gid, lake_shell) = ids(r, "lake");
    let (col_uid, col_gid, col_shell) = ids(r, "lake-collector");
    assert!(lake_uid < 1000 && col_uid < 1000 && lake_uid != col_uid, "{lake_uid} {col_uid}");
    assert_eq!((lake_shell.as_str(), col_shell.as_str()), ("/usr/sbin/nologin", "/usr/sbin/nologin"));

    // Binaries and the library, root-owned, and the lake finds the library beside it.
    for (p, mode) in [
        ("opt/lake/bin/lake", 0o755),
        ("opt/lake/bin/lake-collector", 0o755),
        ("opt/lake/lib/libduckdb.so", 0o644),
        ("opt/lake/README.md", 0o644),
    ] {
        assert_eq!(meta(&r.join(p)), (mode, 0, 0), "{p}");
    }
    let dynamic = Command::new("readelf").arg("-d").arg(r.join("opt/lake/bin/lake")).output().unwrap();
    assert!(text(&dynamic.stdout).contains("$ORIGIN/../lib"), "{}", text(&dynamic.stdout));

    // Configuration readable by the program's group only; secrets root-only.
    assert_eq!(meta(&r.join("etc/lake")), (0o755, 0, 0));
    assert_eq!(meta(&r.join("etc/lake/lake.toml")), (0o640, 0, lake_gid));
    assert_eq!(meta(&r.join("etc/lake/collector.toml")), (0o640, 0, col_gid));
    assert_eq!(meta(&r.join("etc/lake/lake.env")), (0o600, 0, 0));
    assert_eq!(meta(&r.join("etc/lake/collector.env")), (0o600, 0, 0));
    // This node's token from `lake token add`: in collector.env, and only its hash in the
    // tokens file of the data directory (mode 600, the lake's).
    let token = env_value(&r.join("etc/lake/collector.env"), "LAKE_TOKEN");
    assert!(token.starts_with("lake_i_") && token.len() == 50, "{token}");
    assert_eq!(meta(&r.join("var/lib/lake")), (0o750, lake_uid, lake_gid));
    let tokens = r.join("var/lib/lake/tokens.toml");
    assert_eq!(meta(&tokens), (0o600, lake_uid, lake_gid));
    let stored = std::fs::read_to_string(&tokens).unwrap();
    assert!(!stored.contains(&token) && stored.contains(&lake::auth::TokenHash::of(&token).to_hex()), "{stored}");
    assert!(stored.contains("node = \"salem-storage\""), "{stored}");
    let list =
        Command::new(r.join("opt/lake/bin/lake")).args(["token", "list", "--file"]).arg(&tokens).output().unwrap();
    assert!(
        text(&list.stdout).contains("salem-storage") && text(&list.stdout).contains("deploy/install.sh"),
        "{}",
        text(&list.stderr)
    );

    // The skeletons are valid configurations as they stand, with those secrets.
    let check = Command::new(r.join("opt/lake/bin/lake"))
        .args(["check-config", "--config"])
        .arg(r.join("etc/lake/lake.toml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}{}", text(&check.stdout), text(&check.stderr));
    assert!(text(&check.stdout).contains("salem-storage"), "{}", text(&check.stdout));
    let check = Command::new(r.join("opt/lake/bin/lake-collector"))
        .args(["--check", "--config"])
        .arg(r.join("etc/lake/collector.toml"))
        .env("LAKE_TOKEN", &token)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}{}", text(&check.stdout), text(&check.stderr));
    assert!(text(&check.stdout).contains("salem-storage"), "{}", text(&check.stdout));

    // Units, the caddy drop-in (the group exists here) and the enabling symlinks.
    let units = r.join("etc/systemd/system");
    for u in ["lake.service", "lake-collector.service", "lake-collector.service.d/caddy.conf"] {
        assert_eq!(meta(&units.join(u)), (0o644, 0, 0), "{u}");
    }
    assert!(std::fs::read_to_string(units.join("lake-collector.service.d/caddy.conf"))
        .unwrap()
        .contains("SupplementaryGroups=caddy"));
    for u in ["lake.service", "lake-collector.service"] {
        let link = std::fs::read_link(units.join("multi-user.target.wants").join(u)).unwrap();
        assert_eq!(link, Path::new("/etc/systemd/system").join(u));
    }
    assert!(said.contains("enabled lake.service lake-collector.service"), "{said}");

    // Again: nothing changes, the secrets stay.
    let before = snapshot(r);
    let again = text(&install(r, &["--node", "salem-storage"]).stdout);
    assert!(!again.contains("installed ") && !again.contains("wrote ") && !again.contains("created"), "{again}");
    assert!(again.contains("unchanged") && again.contains("kept"), "{again}");
    assert!(before == snapshot(r), "a second run changed files");

    // A secrets file loosened by hand is tightened; a deleted collector.env comes back with
    // a new token (the lake has only the old one's hash), added beside the old one.
    std::fs::set_permissions(r.join("etc/lake/lake.env"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::remove_file(r.join("etc/lake/collector.env")).unwrap();
    let fixed = text(&install(r, &["--node", "salem-storage"]).stdout);
    assert!(fixed.contains("tightened") && fixed.contains("added an ingest token for salem-storage"), "{fixed}");
    assert_eq!(meta(&r.join("etc/lake/lake.env")), (0o600, 0, 0));
    let new = env_value(&r.join("etc/lake/collector.env"), "LAKE_TOKEN");
    assert!(new.starts_with("lake_i_") && new != token, "{new}");
    let stored = std::fs::read_to_string(&tokens).unwrap();
    assert_eq!(stored.matches("[[tokens]]").count(), 2, "{stored}");
    assert_eq!(meta(&tokens), (0o600, lake_uid, lake_gid), "a rewrite keeps the owner");
}

/// Every file under `root` with its mode, owners and content.
type Snapshot = Vec<(PathBuf, (u32, u32, u32), Vec<u8>)>;

fn snapshot(root: &Path) -> Snapshot {
    files(root).into_iter().map(|p| (p.clone(), meta(&p), std::fs::read(&p).unwrap())).collect()
}

/// Every regular file under `root`, sorted.
fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn dry_run_changes_nothing_and_prefix_and_node_role_are_honoured() {
    let root = fresh_root();
    let r = root.path();
    let out = install(r, &["--dry-run"]);
    let said = text(&out.stdout);
    assert!(said.contains("would run: useradd") && said.contains("would write:"), "{said}");
    assert_eq!(files(r).len(), 4, "a dry run wrote files: {:?}", files(r));

    // Another prefix: the units start the binaries from there.
    let out = install(r, &["--prefix", "/usr/local/lake", "--node", "n1"]);
    assert!(out.status.success());
    assert!(r.join("usr/local/lake/bin/lake").exists() && !r.join("opt/lake").exists());
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/lake.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/lake/bin/lake serve --config /etc/lake/lake.toml"), "{unit}");
    assert!(!unit.contains("/opt/lake/bin"), "{unit}");

    // A node that only runs the collector: no lake user, no lake binary, no token of its own.
    let node = fresh_root();
    let n = node.path();
    install(n, &["--role", "node", "--lake-url", "http://100.101.102.103:7470", "--node", "web-1"]);
    assert!(
        n.join("opt/lake/bin/lake-collector").exists()
            && !n.join("opt/lake/bin/lake").exists()
            && !n.join("opt/lake/lib").exists()
    );
    assert!(!std::fs::read_to_string(n.join("etc/passwd")).unwrap().contains("\nlake:"));
    assert!(!n.join("etc/lake/lake.toml").exists() && !n.join("etc/systemd/system/lake.service").exists());
    let toml = std::fs::read_to_string(n.join("etc/lake/collector.toml")).unwrap();
    assert!(toml.contains("url = \"http://100.101.102.103:7470\"") && toml.contains("node = \"web-1\""), "{toml}");
    let env = std::fs::read_to_string(n.join("etc/lake/collector.env")).unwrap();
    assert!(!env.lines().any(|l| l.starts_with("LAKE_TOKEN=")), "{env}");

    // Bad arguments are refused with a message.
    let bad =
        Command::new(repo().join("deploy/install.sh")).args(["--role", "everything", "--dry-run"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("--role must be storage or node"), "{}", text(&bad.stderr));
}

#[test]
fn systemd_analyze_verifies_the_installed_units() {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing: `scripts/setup peers` installs Debian's systemd package (apt-get install systemd)"
    );
    let root = fresh_root();
    let r = root.path();
    install(r, &["--node", "salem-storage"]);
    // `--root` resolves the units' dependencies (sysinit.target, …) inside the root.
    let sys = r.join("usr/lib/systemd");
    std::fs::create_dir_all(&sys).unwrap();
    let cp = Command::new("cp").arg("-a").arg("/usr/lib/systemd/system").arg(&sys).status().unwrap();
    assert!(cp.success());

    let units = ["lake.service", "lake-collector.service"];
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .args(units)
        .output()
        .unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    println!("systemd-analyze verify {units:?}: exit {:?}\n{said}", out.status.code());
    // verify exits 0 on unknown keys and bad values too: they must not appear at all.
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");

    // And it does catch mistakes: a misspelt key, a missing binary.
    let unit = r.join("etc/systemd/system/lake.service");
    let good = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(&unit, good.replace("ProtectSystem=strict", "ProtectSystem=strict\nProtectSytem=strict")).unwrap();
    std::fs::remove_file(r.join("opt/lake/bin/lake")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .arg("lake.service")
        .output()
        .unwrap();
    let said = text(&out.stderr);
    assert!(said.contains("ProtectSytem") && said.contains("/opt/lake/bin/lake is not executable"), "{said}");

    // The sandboxing, scored by systemd itself (0 = locked down, 10 = exposed).
    std::fs::write(&unit, good).unwrap();
    for u in units {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(format!("--root={}", r.display()))
            .arg(u)
            .output()
            .unwrap();
        let said = text(&out.stdout);
        let score: f64 = said
            .lines()
            .find_map(|l| {
                l.split_once(&format!("exposure level for {u}: "))
                    .map(|(_, s)| s.split_whitespace().next().unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no exposure level for {u}:\n{said}{}", text(&out.stderr)));
        println!("systemd-analyze security {u}: {score}");
        assert!(score <= 2.5, "{u} exposure {score}:\n{said}");
    }
}
