//! [`Secret`]: a password, token or secret URL held in configuration. One type for every
//! such value in the lake and its tools, so that none shows in `Debug` output or a log
//! line by accident: its `Debug` prints `Secret(<redacted>)`.
//!
//! The value is read with [`Secret::expose`] where it is used (an `Authorization` header,
//! an SMTP login, an S3 signature). It deserializes from a plain TOML/JSON string, so a
//! config file's `*File` struct can hold one directly.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
