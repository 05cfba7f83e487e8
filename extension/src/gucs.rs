//! The extension's settings (`ruvector.*`). Defaults and meanings are listed in
//! the README; each is read where it is used, never cached across a reload.

use std::ffi::CString;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

pub static INTEGRITY_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
/// 0.2's watched database: the one that takes 0.2's key file (see `keys`).
pub static INTEGRITY_DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
pub static SAMPLE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(60);
pub static STALE_AFTER: GucSetting<i32> = GucSetting::<i32>::new(300);
pub static SIGNING_KEY_PATH: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static MAX_COLLECTIONS: GucSetting<i32> = GucSetting::<i32>::new(1000);
pub static SAMPLE_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(7 * 86_400);
pub static MAX_RELATIONS: GucSetting<i32> = GucSetting::<i32>::new(16_384);
pub static MAX_DATABASES: GucSetting<i32> = GucSetting::<i32>::new(32);
pub static WORKER_STATEMENT_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(60_000);
pub static CHECKPOINT_COMMAND: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static EXPECTED_STANDBYS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
/// kB.
pub static REPLICATION_LAG_BUDGET: GucSetting<i32> = GucSetting::<i32>::new(64 * 1024);
pub static STARTUP_GRACE: GucSetting<i32> = GucSetting::<i32>::new(60);
pub static GATE_SEARCHES: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static INTEGRITY_BYPASS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static ALLOW_UNEXPORTED_DROP: GucSetting<bool> = GucSetting::<bool>::new(false);
/// kB.
pub static SOLVER_MEMORY_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(2 * 1024 * 1024);
pub static SOLVER_MAX_EDGES: GucSetting<i32> =
    GucSetting::<i32>::new(ruvector_integrity::control::DEFAULT_MAX_EDGES as i32);

pub fn define() {
    GucRegistry::define_bool_guc(
        c"ruvector.integrity_enabled",
        c"Sample collections and enforce the integrity gate.",
        c"When off, the worker takes no samples and the gate allows every operation.",
        &INTEGRITY_ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"ruvector.integrity_database",
        c"The database ruvector 0.2 watched: its worker takes 0.2's signing key file.",
        c"Every database with the extension has its own integrity worker since 0.3.",
        &INTEGRITY_DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.integrity_sample_interval",
        c"Seconds between two samples of a collection.",
        c"A policy's sample_interval_secs overrides it for its collection.",
        &SAMPLE_INTERVAL,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"ruvector.integrity_stale_after",
        c"Seconds without a sample after which a collection's state is stale.",
        c"A stale state defers high-risk operations.",
        &STALE_AFTER,
        1,
        7 * 86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"ruvector.signing_key_path",
        c"File holding the audit signing key (32 raw bytes, mode 0600).",
        c"Empty means ruvector_signing.key in the data directory. Created if missing.",
        &SIGNING_KEY_PATH,
        GucContext::Postmaster,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_int_guc(
        c"ruvector.max_collections",
        c"Collections the shared-memory gate can hold.",
        c"Sizes shared memory at server start.",
        &MAX_COLLECTIONS,
        1,
        100_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.sample_retention",
        c"Seconds of per-sample history kept in ruvector.integrity_samples.",
        c"Older samples are deleted by the worker. State changes are kept in the signed event log forever.",
        &SAMPLE_RETENTION,
        60,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"ruvector.max_relations",
        c"Relations (collection tables and all their partitions) the gate can hold.",
        c"Sizes shared memory at server start. A registration or a new partition that would not fit is refused.",
        &MAX_RELATIONS,
        16,
        10_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.max_databases",
        c"Databases with the extension that can have an integrity worker at once.",
        c"Sizes shared memory at server start. Each worker also takes one of max_worker_processes.",
        &MAX_DATABASES,
        1,
        4096,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.worker_statement_timeout",
        c"Longest the integrity worker spends on one step (a collection's sample, signing), in milliseconds.",
        c"A step that runs longer is cancelled, logged, and tried again on the next tick; 0 disables the limit.",
        &WORKER_STATEMENT_TIMEOUT,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_string_guc(
        c"ruvector.checkpoint_command",
        c"Shell command that ships each signed audit checkpoint out of the server (%p its file, %f its name, %d the database OID).",
        c"Run by each database's integrity worker, as archive_command is by the archiver: a checkpoint is shipped, in order, when the command exits 0, and retried every tick until then. Empty: checkpoints are not shipped.",
        &CHECKPOINT_COMMAND,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"ruvector.expected_standbys",
        c"Application names of the standbys every collection's data must reach (comma list).",
        c"Each is a replication_target node, joined to pg_stat_replication by application_name; the standbys named in synchronous_standby_names are expected too.",
        &EXPECTED_STANDBYS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.replication_lag_budget",
        c"Replay lag an expected standby may have.",
        c"Up to half of it a standby is healthy; its health then falls linearly to 0.3 at the budget.",
        &REPLICATION_LAG_BUDGET,
        1,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"ruvector.startup_grace",
        c"Seconds after the server starts during which an expected standby still reconnecting is not counted as lost.",
        c"0 counts it lost from the first sample.",
        &STARTUP_GRACE,
        0,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"ruvector.solver_max_edges",
        c"Edges a minimum cut or λ₂ may take, in ruvector_mincut(), ruvector_lambda2() and samples.",
        c"Larger inputs are refused (SQLSTATE 54000) from the input's header, before anything is read or allocated; a min cut takes 70 to 130 bytes per edge.",
        &SOLVER_MAX_EDGES,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.solver_memory_limit",
        c"Memory all running calls of ruvector_mincut() and ruvector_lambda2() may hold together, cluster-wide.",
        c"Each call reserves what its input needs (160 bytes per edge plus the input's size) before reading it, and is refused (SQLSTATE 53200) when the calls running now hold too much; the worker's samples do not count.",
        &SOLVER_MEMORY_LIMIT,
        1024,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_bool_guc(
        c"ruvector.allow_unexported_drop",
        c"Let DROP EXTENSION ruvector delete signed audit entries that were never exported.",
        c"Off: DROP EXTENSION ruvector is refused while the signed trail holds entries that ruvector_audit_export() has not produced since the server started.",
        &ALLOW_UNEXPORTED_DROP,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"ruvector.gate_searches",
        c"Gate every query that reads a collection's table as a search.",
        c"When off, searches are gated only where the application calls ruvector_integrity_allowed().",
        &GATE_SEARCHES,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: the check hook is a function of this library, loaded for the
    // process's life; `_PG_init` runs once.
    unsafe {
        GucRegistry::define_bool_guc_with_hooks(
            c"ruvector.integrity_bypass",
            c"Let this session's statements through the integrity gate (ruvector_admin members and superusers).",
            c"Each statement let through that the gate refused is counted as bypassed and written to the audit trail when its transaction commits, one event per collection and role.",
            &INTEGRITY_BYPASS,
            GucContext::Userset,
            GucFlags::default(),
            Some(check_bypass),
            None,
            None,
        );
    }
    // SAFETY: a constant prefix, once, after every setting of it is defined.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"ruvector".as_ptr()) };
}

/// Only an operator may turn the bypass on, and only for a session: never for
/// everyone from the server's configuration. (The gate checks the role again
/// when it uses the bypass: a `SET ROLE` after the `SET` does not keep it.)
///
/// # Safety
/// Called by PostgreSQL as the setting's check hook, with a valid `value`.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_bypass(
    value: *mut bool,
    _extra: *mut *mut std::ffi::c_void,
    source: pgrx::pg_sys::GucSource::Type,
) -> bool {
    use pgrx::pg_sys;
    // SAFETY: PostgreSQL passes a valid pointer to the new value; the
    // GUC_check_* strings are palloc'd, as PostgreSQL frees them.
    unsafe {
        if !*value || pg_sys::InitializingParallelWorker {
            return true;
        }
        let refusal = if source < pg_sys::GucSource::PGC_S_DATABASE {
            c"ruvector.integrity_bypass cannot be turned on in the server's configuration"
        } else if pg_sys::IsTransactionState() && !crate::privileges::may_bypass() {
            c"permission denied to set ruvector.integrity_bypass"
        } else {
            return true;
        };
        pg_sys::GUC_check_errcode(pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as i32);
        pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(refusal.as_ptr());
        pg_sys::GUC_check_errhint_string = pg_sys::pstrdup(
            c"Only members of ruvector_admin and superusers may bypass the integrity gate, per session: SET ruvector.integrity_bypass = on.".as_ptr(),
        );
        false
    }
}

/// `ruvector.checkpoint_command`, if set.
pub fn checkpoint_command() -> Option<String> {
    CHECKPOINT_COMMAND
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.trim().is_empty())
}

/// `ruvector.expected_standbys` (empty when unset).
pub fn expected_standbys() -> String {
    EXPECTED_STANDBYS
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `ruvector.integrity_database` (0.2's watched database).
pub fn integrity_database() -> String {
    INTEGRITY_DATABASE
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postgres".to_owned())
}

/// The key file of database `database`: `ruvector.signing_key_path` (see
/// [`signing_key_path`]) followed by `.` and the database's OID.
pub fn database_key_path(database: pgrx::pg_sys::Oid) -> std::path::PathBuf {
    let mut path = signing_key_path().into_os_string();
    path.push(format!(".{}", u32::from(database)));
    path.into()
}

/// `ruvector.signing_key_path`, with the data-directory default applied:
/// where a key is adopted from (see `keys`).
pub fn signing_key_path() -> std::path::PathBuf {
    match SIGNING_KEY_PATH.get() {
        Some(path) if !path.as_bytes().is_empty() => {
            std::path::PathBuf::from(path.to_string_lossy().into_owned())
        }
        _ => {
            // SAFETY: the data directory's path, set before any setting is read.
            let data_dir = unsafe { std::ffi::CStr::from_ptr(pgrx::pg_sys::DataDir) };
            std::path::Path::new(&*data_dir.to_string_lossy()).join("ruvector_signing.key")
        }
    }
}
