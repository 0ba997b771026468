//! The contracts of lake, shared by the collector and the lake: the table catalog as
//! Arrow schemas ([`catalog`]), the batch envelope on the wire ([`wire`]), the on-disk
//! layout ([`layout`]), row builders ([`rows`]) and self-describing config units
//! ([`units`]). Small and dependency-light on purpose: the collector links it.
#![deny(missing_docs)]

pub mod catalog;
pub mod custom;
pub mod layout;
pub mod rows;
pub mod units;
pub mod wire;

pub use catalog::Table;
pub use wire::BatchId;
