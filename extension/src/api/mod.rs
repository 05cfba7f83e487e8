//! The SQL API, grouped as docs/sql-api.md presents it: each function here is
//! the Rust behind a `SECURITY DEFINER` wrapper of `sql/finalize.sql` (the
//! gate's functions are `crate::gate`'s, the audit trail's and the keys'
//! `crate::audit`'s and `crate::keys`').

pub mod collections;
mod explain;
mod graph;
mod ivf;
mod policies;
mod solver;
mod status;
