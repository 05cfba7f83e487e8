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

// Foundations: they call nothing above them.
mod catalog;
mod clock;
mod control;
mod errors;
mod gucs;
mod installation;
mod jsonb;
mod privileges;
mod server;
mod shmem;
mod xact;

// The typed store: every SQL statement the extension runs.
mod store;

// Features, one concern a module.
mod api;
mod audit;
mod gate;
mod graph_builder;
mod hooks;
mod keys;
mod sampler;
mod sync;
mod worker;

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
    // SAFETY: a flag PostgreSQL sets while it preloads libraries.
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        errors::SqlError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "ruvector must be loaded via shared_preload_libraries",
        )
        .hint("Add ruvector to shared_preload_libraries in postgresql.conf and restart the server.")
        .raise();
    }
    gucs::define();
    // SAFETY: a flag set before libraries are preloaded.
    if unsafe { pg_sys::IsBinaryUpgrade } {
        return; // pg_upgrade: no worker, no hooks
    }
    shmem::install_hooks();
    hooks::install();
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
            "ruvector.integrity_sample_interval = 1",
        ]
    }
}
