//! `lake token add|list|revoke`: the bearer tokens of the tokens file ([`crate::auth`]).
//!
//! They edit the file (locked, replaced atomically); a running lake picks the change up
//! within [`crate::auth::POLL_INTERVAL`] (or at once on SIGHUP), so no restart is needed.
//! `add` prints the new token on stdout and nothing else, so it can be captured
//! (`TOKEN=$(lake token add --role read)`); it is shown only then, the file keeps its
//! SHA-256. `list` never shows a token or its hash.

use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use clap::{Args, Subcommand, ValueEnum};
use ring::rand::SecureRandom as _;

use crate::auth::{self, FileLock, Role, TokenEntry, TokenHash, TokensFile};
use crate::config::TokensView;

/// `lake token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    /// The lake's configuration: its `data_dir` or `[auth] tokens_file` locate the file.
    #[arg(long, short, env = "LAKE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The tokens file itself, instead of the one the configuration names.
    #[arg(long, global = true)]
    file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it: it is shown this once, only its SHA-256 is kept.
    Add {
        /// What it allows: ingest (as one node), read (SQL, Grafana, alerts, UI), alerts
        /// (list alerts, add and remove silences) or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The node an ingest token sends as.
        #[arg(long)]
        node: Option<String>,
        /// Free text shown by `list`, e.g. who holds it.
        #[arg(long)]
        comment: Option<String>,
        /// Refuse the token after this long, e.g. `90d`.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// The tokens of the file: id, role, node, created, expiry, comment (never a secret).
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Remove a token by id; a running lake refuses it within seconds.
    Revoke {
        /// The token's id (`lake token list`).
        id: String,
        /// Allow revoking the last read token (after a restart the read APIs are then open).
        #[arg(long)]
        allow_open: bool,
    },
}

/// How `list` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ListFormat {
    Table,
    Json,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse().map_err(|e: crate::auth::UnknownRole| e.to_string())
}

/// Runs `lake token …`.
pub(crate) fn run(args: TokenArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lake token: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_inner(args: TokenArgs) -> anyhow::Result<()> {
    let view = TokensView::load(args.config.as_deref())?;
    let path = args.file.clone().unwrap_or_else(|| view.tokens_file.clone());
    match args.command {
        TokenCommand::Add { role, node, comment, expires_in } => add(&view, &path, role, node, comment, expires_in),
        TokenCommand::List { format } => list(&path, format),
        TokenCommand::Revoke { id, allow_open } => revoke(&view, &path, &id, allow_open),
    }
}

/// `lake_<role letter>_` and 32 random bytes in base64url.
fn new_token(role: Role, rng: &ring::rand::SystemRandom) -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes).map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
    Ok(format!("lake_{}_{}", role.letter(), base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

fn add(
    view: &TokensView,
    path: &std::path::Path,
    role: Role,
    node: Option<String>,
    comment: Option<String>,
    expires_in: Option<Duration>,
) -> anyhow::Result<()> {
    match (role, &node) {
        (Role::Ingest, None) => bail!("--role ingest needs --node NAME (the node the token sends as)"),
        (Role::Ingest, Some(n)) => lake_format::wire::validate_node_name(n).with_context(|| format!("--node {n:?}"))?,
        (_, Some(_)) => bail!("--node is for ingest tokens only"),
        (_, None) => {}
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let rng = ring::rand::SystemRandom::new();
    let token = new_token(role, &rng)?;
    let now = jiff::Timestamp::now();
    let now = now.round(jiff::Unit::Second).unwrap_or(now);
    let expires = match expires_in {
        Some(d) => {
            let span = jiff::SignedDuration::try_from(d).context("--expires-in is too long")?;
            Some(now.checked_add(span).context("--expires-in is too long")?.to_string())
        }
        None => None,
    };
    let id = {
        let _lock = FileLock::acquire(path)?;
        let mut file = auth::read_file(path)?.unwrap_or_default();
        // The file must stay loadable: check it as the lake will, before adding to it.
        auth::keys_of(path, &file)?;
        let id = loop {
            let mut b = [0u8; 4];
            rng.fill(&mut b).map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
            let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
            if !file.tokens.iter().any(|t| t.id == id) {
                break id;
            }
        };
        file.tokens.push(TokenEntry {
            id: id.clone(),
            role: role.to_string(),
            node: node.clone(),
            sha256: TokenHash::of(&token).to_hex(),
            created: now.to_string(),
            expires,
            comment,
        });
        auth::write_file(path, &file)?;
        id
    };
    println!("{token}");
    let _ = std::io::stdout().flush();
    let who = node.as_deref().map_or(String::new(), |n| format!(", node {n}"));
    eprintln!(
        "lake token: added {id} ({role}{who}) to {}. The token above is shown only this once; a running lake accepts it within {}s.",
        path.display(),
        auth::POLL_INTERVAL.as_secs()
    );
    if let Some(n) = node.filter(|n| !view.nodes.contains(n)) {
        eprintln!("lake token: note: {n} has no [[nodes]] entry in lake.toml; it can send, but the per-node alert rules cover it only once declared there (name = {n:?}, no token needed)");
    }
    Ok(())
}

fn list(path: &std::path::Path, format: ListFormat) -> anyhow::Result<()> {
    let file = auth::read_file(path)?.unwrap_or_default();
    auth::keys_of(path, &file)?;
    let now = jiff::Timestamp::now();
    let expired =
        |t: &TokenEntry| t.expires.as_deref().and_then(|e| e.parse::<jiff::Timestamp>().ok()).is_some_and(|e| e <= now);
    let mut out = std::io::stdout().lock();
    let written = match format {
        ListFormat::Json => {
            let rows: Vec<serde_json::Value> = file
                .tokens
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "id": t.id, "role": t.role, "node": t.node, "created": t.created,
                        "expires": t.expires, "expired": expired(t), "comment": t.comment,
                    })
                })
                .collect();
            writeln!(out, "{}", serde_json::Value::Array(rows))
        }
        ListFormat::Table => (|| {
            writeln!(out, "{:<10} {:<7} {:<20} {:<21} {:<21} COMMENT", "ID", "ROLE", "NODE", "CREATED", "EXPIRES")?;
            for t in &file.tokens {
                let exp = match (&t.expires, expired(t)) {
                    (Some(e), true) => format!("{e} (expired)"),
                    (Some(e), false) => e.clone(),
                    (None, _) => "-".into(),
                };
                writeln!(
                    out,
                    "{:<10} {:<7} {:<20} {:<21} {:<21} {}",
                    t.id,
                    t.role,
                    t.node.as_deref().unwrap_or("-"),
                    t.created,
                    exp,
                    t.comment.as_deref().unwrap_or("")
                )?;
            }
            Ok(())
        })(),
    };
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn revoke(view: &TokensView, path: &std::path::Path, id: &str, allow_open: bool) -> anyhow::Result<()> {
    let _lock = FileLock::acquire(path)?;
    let mut file: TokensFile = auth::read_file(path)?.unwrap_or_default();
    let Some(at) = file.tokens.iter().position(|t| t.id == id) else {
        let known: Vec<&str> = file.tokens.iter().map(|t| t.id.as_str()).collect();
        bail!(
            "no token with id {id:?} in {} (ids: {})",
            path.display(),
            if known.is_empty() { "none".into() } else { known.join(", ") }
        );
    };
    let removed = file.tokens.remove(at);
    let reads_left = file.tokens.iter().any(|t| t.role == "read");
    if removed.role == "read" && !reads_left && !view.config_read_tokens && !allow_open {
        bail!(
            "{id} is the last read token. A running lake would then refuse every read until one is added, and after a restart \
             the SQL API, Grafana and the UI would be open to anyone reaching `listen`. Add its successor first \
             (`lake token add --role read`), or pass --allow-open"
        );
    }
    auth::keys_of(path, &file)?;
    auth::write_file(path, &file)?;
    eprintln!(
        "lake token: revoked {id} ({}{}); a running lake refuses it within {}s.",
        removed.role,
        removed.node.as_deref().map_or(String::new(), |n| format!(", node {n}")),
        auth::POLL_INTERVAL.as_secs()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_role_and_32_random_bytes() {
        let rng = ring::rand::SystemRandom::new();
        let a = new_token(Role::Ingest, &rng).unwrap();
        let b = new_token(Role::Ingest, &rng).unwrap();
        assert!(a.starts_with("lake_i_") && a.len() == 7 + 43, "{a}");
        assert_ne!(a, b);
        assert!(new_token(Role::Read, &rng).unwrap().starts_with("lake_r_"));
        assert!(new_token(Role::Alerts, &rng).unwrap().starts_with("lake_l_"));
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'), "{a}");
    }
}
