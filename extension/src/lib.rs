//! ruvector: an integrity control plane for vector collections.
//!
//! A thin pgrx layer over `ruvector-integrity`: it moves data between
//! PostgreSQL and the core library, and owns what only a server can do (shared
//! memory, the background worker, hooks and triggers, SQL functions).
//!
//! The library must be preloaded (`shared_preload_libraries = 'ruvector'`):
//! `_PG_init` refuses otherwise, and every function that needs shared memory
//! says so.

use pgrx::prelude::*;

mod audit;
mod clock;
mod collections;
mod dot;
mod enforce;
mod errors;
mod gate;
mod graph_builder;
mod gucs;
mod installation;
mod jsonb;
mod keys;
mod sampler;
mod shmem;
mod solver;
mod status;
mod sync;
mod worker;
mod xact;

::pgrx::pg_module_magic!();

pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

/// Schema `ruvector`: the tables, and the Rust functions behind the public API
/// (named with a leading underscore, callable only through the wrappers in
/// `sql/finalize.sql`).
#[pg_schema]
mod ruvector {}

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        errors::SqlError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "ruvector must be loaded via shared_preload_libraries",
        )
        .hint("Add ruvector to shared_preload_libraries in postgresql.conf and restart the server.")
        .raise();
    }
    gucs::define();
    if unsafe { pg_sys::IsBinaryUpgrade } {
        return; // pg_upgrade: no worker, no hooks
    }
    shmem::install_hooks();
    xact::install_callbacks();
    enforce::install_hooks();
    worker::register();
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// pgrx's test harness: each `#[pg_test]` runs in a cluster started with these
/// settings, in a transaction that is rolled back.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'ruvector'",
            "ruvector.integrity_database = 'pgrx_tests'",
            "ruvector.integrity_sample_interval = 1",
        ]
    }
}
