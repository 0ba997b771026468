//! The pure part of the Grafana JSON datasource: its SQL macros and template variables
//! ([`macros`]), shared by the lake's `/grafana/…` handlers (`lake::http::grafana`),
//! named queries run through `/v1/sql` and `lake query`, and alert rules.

pub mod macros;
