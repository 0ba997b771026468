//! The contracts of lake, shared by the collector and the lake: the table catalog as
//! Arrow schemas ([`catalog`]), the batch envelope on the wire ([`wire`]), the on-disk
//! layout ([`layout`]), row builders ([`rows`], and [`logs`] for the `logs` table),
//! self-describing config units ([`units`]), the durability primitives of the spool and the
//! WAL ([`durable`]), the one type of every secret held in configuration ([`Secret`]),
//! one-line error messages ([`error`]) and self-telemetry declared where it is counted
//! ([`metrics`]). Small and dependency-light on purpose: the collector links it.
#![deny(missing_docs)]

pub mod catalog;
pub mod custom;
pub mod durable;
pub mod error;
pub mod layout;
pub mod logs;
pub mod metrics;
pub mod rows;
pub mod secret;
pub mod units;
pub mod wire;

pub use catalog::Table;
pub use secret::{Secret, SecretError};
pub use wire::BatchId;

/// Replays the inputs that once crashed a fuzz target, for the crates' plain tests.
#[doc(hidden)]
pub mod fuzz_regressions {
    use std::path::{Path, PathBuf};

    /// `fixtures/fuzz-regressions/` of the workspace.
    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fuzz-regressions")
    }

    /// A fuzz target: its name (the directory of its inputs) and its entry point.
    pub type Target = (&'static str, fn(&[u8]));

    /// Every file under `fixtures/fuzz-regressions/<target>/` (but notes, `*.md`) through
    /// its target's entry point; how many were replayed.
    pub fn replay(targets: &[Target]) -> usize {
        let mut n = 0;
        for (name, run) in targets {
            let Ok(entries) = std::fs::read_dir(root().join(name)) else {
                continue;
            };
            for e in entries {
                let path = e.expect("readable directory").path();
                if path.extension().is_some_and(|x| x == "md") {
                    continue;
                }
                eprintln!("replaying {}", path.display());
                run(&std::fs::read(&path).expect("readable regression input"));
                n += 1;
            }
        }
        n
    }
}
