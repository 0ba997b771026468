//! [`Secret`]: a password, token or secret URL held in configuration. One type for every
//! such value in the lake and its tools, so that none shows in `Debug` output or a log
//! line by accident: its `Debug` prints `Secret(<redacted>)`.
//!
//! The value is read with [`Secret::expose`] where it is used (an `Authorization` header,
//! an SMTP login, an S3 signature). It deserializes from a plain TOML/JSON string, so a
//! config file's `*File` struct can hold one directly.
//!
//! [`resolve`] is the one reading of a secret given as `key`, `key_env` or `key_file`
//! (the collector's sources, the alert senders, the webhooks): the same rules and the
//! same error text wherever an operator writes one.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A secret string whose `Debug` output is redacted.
///
/// The field is public so that code holding a secret can build and read it without
/// ceremony; what keeps it out of logs is that nothing prints it but `Debug`, which hides
/// it. Prefer [`Secret::new`] and [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(#[doc = "The secret value; prefer [`Secret::expose`]."] pub String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret given as `key`, `key_env` or `key_file` could not be read. Its text says
/// what is wrong; [`SecretError::field`] names the key it is about, for the caller's
/// own error type (`section.field: text`).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// More than one of the three forms was given.
    #[error("give at most one of {key}, {key}_env and {key}_file")]
    Several {
        /// The key without suffix, e.g. `bearer_token`.
        key: String,
    },
    /// `key_env` names a variable that is not set, or set to blanks.
    #[error("the environment variable {var} is not set or empty")]
    Unset {
        /// The key without suffix.
        key: String,
        /// The variable's name.
        var: String,
    },
    /// `key_file` cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The key without suffix.
        key: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The value (inline or in the file) is empty once trimmed.
    #[error("the secret is empty")]
    Empty {
        /// The key without suffix.
        key: String,
        /// Which form was empty: `""`, `"_file"`.
        suffix: &'static str,
    },
}

impl SecretError {
    /// The configuration key the error is about: `key`, `key_env` or `key_file`.
    pub fn field(&self) -> String {
        match self {
            SecretError::Several { key } => key.clone(),
            SecretError::Unset { key, .. } => format!("{key}_env"),
            SecretError::Unreadable { key, .. } => format!("{key}_file"),
            SecretError::Empty { key, suffix } => format!("{key}{suffix}"),
        }
    }
}

/// Reads a secret given inline (`key`), through an environment variable (`key_env`) or
/// in a file (`key_file`): at most one of them, trimmed (a file's trailing newline, a
/// pasted space), never empty. `None` when none is given. `env` looks a variable up (the
/// process environment, or a test's map).
pub fn resolve(
    key: &str,
    inline: Option<String>,
    var: Option<String>,
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, SecretError> {
    let (value, suffix) = match (inline, var, file) {
        (None, None, None) => return Ok(None),
        (Some(v), None, None) => (v, ""),
        (None, Some(var), None) => match env(&var).filter(|v| !v.trim().is_empty()) {
            Some(v) => (v, "_env"),
            None => return Err(SecretError::Unset { key: key.to_string(), var }),
        },
        (None, None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(v) => (v, "_file"),
            Err(source) => {
                return Err(SecretError::Unreadable { key: key.to_string(), path: path.to_path_buf(), source })
            }
        },
        _ => return Err(SecretError::Several { key: key.to_string() }),
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(SecretError::Empty { key: key.to_string(), suffix });
    }
    Ok(Some(Secret::new(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        match var {
            "SET" => Some(" tok\n".to_string()),
            "BLANK" => Some("  ".to_string()),
            _ => None,
        }
    }

    #[test]
    fn one_of_three_forms_trimmed() {
        let dir = std::env::temp_dir().join(format!("lake-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s");
        std::fs::write(&file, "from-file\n").unwrap();
        let get = |i: Option<&str>, v: Option<&str>, f: Option<&Path>| {
            resolve("password", i.map(str::to_string), v.map(str::to_string), f, &env)
        };
        assert_eq!(get(None, None, None).unwrap(), None);
        assert_eq!(get(Some(" inline "), None, None).unwrap(), Some(Secret::new("inline")));
        assert_eq!(get(None, Some("SET"), None).unwrap(), Some(Secret::new("tok")));
        assert_eq!(get(None, None, Some(&file)).unwrap(), Some(Secret::new("from-file")));

        let e = get(Some("a"), Some("SET"), None).unwrap_err();
        assert_eq!(
            (e.field(), e.to_string()),
            ("password".into(), "give at most one of password, password_env and password_file".into())
        );
        let e = get(None, Some("NOPE"), None).unwrap_err();
        assert_eq!(
            (e.field(), e.to_string()),
            ("password_env".into(), "the environment variable NOPE is not set or empty".into())
        );
        let e = get(None, Some("BLANK"), None).unwrap_err();
        assert_eq!(e.field(), "password_env");
        let e = get(None, None, Some(&dir.join("missing"))).unwrap_err();
        assert_eq!(e.field(), "password_file");
        assert!(e.to_string().starts_with("cannot read "), "{e}");
        let e = get(Some("  "), None, None).unwrap_err();
        assert_eq!((e.field(), e.to_string()), ("password".into(), "the secret is empty".into()));
        std::fs::write(&file, "\n").unwrap();
        assert_eq!(get(None, None, Some(&file)).unwrap_err().field(), "password_file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret(<redacted>))");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn it_reads_as_a_plain_string() {
        #[derive(Debug, Deserialize)]
        struct File {
            token: Secret,
            tokens: Vec<Secret>,
        }
        let f: File = serde_json::from_str(r#"{"token": "a", "tokens": ["b", "c"]}"#).unwrap();
        assert_eq!(f.token.expose(), "a");
        assert_eq!(f.tokens, [Secret::new("b"), Secret::new("c")]);
        assert!(!format!("{f:?}").contains('b'));
    }
}
