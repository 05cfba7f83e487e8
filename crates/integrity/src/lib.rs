//! The integrity control plane's core, free of PostgreSQL.
//!
//! Everything here is plain Rust and is tested with `cargo test` in seconds: the
//! contracted operational graph ([`graph`]), its exact global minimum cut
//! ([`mincut`]) and algebraic connectivity ([`spectral`]), the hysteresis state
//! machine ([`hysteresis`]), the per-collection policy ([`policy`]) and the gate
//! decision it drives ([`gate`]), and the signed, hash-chained audit trail
//! ([`audit`]). The solvers take a [`control::Control`]: size limits checked
//! before allocation and an interrupt hook called every few thousand steps.
//!
//! This crate must not depend on pgrx or touch a database: the extension in
//! `extension/` moves data between PostgreSQL and these types, nothing more.

pub mod audit;
pub mod control;
pub mod dot;
pub mod edge_list;
mod error;
pub mod explain;
pub mod gate;
pub mod graph;
pub mod hysteresis;
pub mod kmeans;
pub mod mincut;
pub mod policy;
pub mod registration;
pub mod rng;
pub mod sources;
pub mod spectral;
pub mod state;
pub mod time;
mod union_find;

pub use error::Error;

/// Microseconds since the Unix epoch. All time in this crate is injected by the
/// caller as this type, so state machines and audit encodings are exact and testable.
pub type Micros = i64;

/// One second in [`Micros`].
pub const SECOND: Micros = 1_000_000;
