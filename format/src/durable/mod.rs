//! Durability primitives shared by the collector's spool and the lake's WAL: the framed
//! record ([`frame`]) both append and check after a crash, and the atomic file
//! replacement ([`atomic`]) every small state file goes through.
//!
//! These used to be written twice (three times for the atomic write); a fix to torn-tail
//! handling or to the fsync order now lands in both data paths at once. The on-disk
//! formats did not change: each user keeps its own magic and bounds, passed in as a
//! [`Frame`].

pub mod atomic;
pub mod frame;

pub use atomic::{sync_dir, write_atomic, write_atomic_via};
pub use frame::{Bad, Frame, Header, Read, Scan, HEADER_LEN};
