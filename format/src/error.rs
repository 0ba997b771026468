//! Error messages on one line: an error followed by its sources. reqwest, hyper and io
//! errors keep the useful part ("connection refused", "UnknownIssuer") in their sources,
//! so a log line or an error column that shows only the outer message says nothing.

/// An error and its sources joined with ": " (`outer: inner: innermost`). A source whose
/// text the message already holds is skipped, since many errors repeat their source.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn sources_follow_once() {
        let e = E("request failed", Some(Box::new(E("connect", Some(Box::new(E("connection refused", None)))))));
        assert_eq!(error_chain(&e), "request failed: connect: connection refused");
        let e = E("io: timed out", Some(Box::new(E("timed out", None))));
        assert_eq!(error_chain(&e), "io: timed out");
    }
}
