//! The launcher: one background worker, connected to no database, that keeps
//! one integrity worker running for each database that has the extension.
//!
//! Every few seconds, and whenever it is woken (a CREATE EXTENSION committed,
//! a worker it started began or ended), it reads `pg_database` (a shared
//! catalog) and:
//! - starts a worker for each database that accepts connections and is not a
//!   template, unless it already knows the extension is not installed there
//!   (a worker that finds no extension leaves at once, and says so by giving
//!   up its entry in shared memory);
//! - starts again, after a pause, a worker that ended while the extension
//!   was still installed (an ERROR, `pg_terminate_backend()`): integrity
//!   control is not optional;
//! - forgets the databases that are gone.
//!
//! It is bounded by `max_worker_processes`: when no slot is free it says so
//! in the log, once per database, and tries again on its next round. A
//! database whose worker an owner's statement stopped (DROP DATABASE...) is
//! left alone until that statement had its chance.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use ruvector_integrity::{Micros, SECOND};

use crate::clock;
use crate::errors::OrRaise;
use crate::shmem::{self, Shared};

/// How long the launcher sleeps between two rounds when nothing wakes it.
const ROUND: Duration = Duration::from_secs(5);

/// How long after a worker ended on its own the launcher starts another.
const RESTART_AFTER: Micros = 5 * SECOND;

/// Registers the launcher; called from `_PG_init` while preloading.
pub fn register() {
    BackgroundWorkerBuilder::new("ruvector launcher")
        .set_type("ruvector launcher")
        .set_library("ruvector")
        .set_function("ruvector_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn ruvector_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // No database: only the shared catalogs (pg_database) can be read.
    BackgroundWorker::connect_worker_to_spi(None, None);
    let shared = shmem::shared().or_raise();
    // SAFETY: the launcher's own pid and latch, published until the exit
    // callback registered here clears them.
    unsafe {
        shared.set_launcher(pg_sys::MyProcPid, pg_sys::MyLatch);
        pg_sys::before_shmem_exit(Some(shmem::forget_launcher), pg_sys::Datum::from(0));
    }
    log!("ruvector launcher started");
    let mut launcher = Launcher::default();
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: between transactions, as PostgreSQL's own processes do.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        launcher.round(shared);
        if !BackgroundWorker::wait_latch(Some(ROUND)) {
            break;
        }
    }
    log!("ruvector launcher stopping");
    // SAFETY: ends the process, as a background worker's main may; exit code
    // 1 has the postmaster start the launcher again (its workers run on).
    unsafe { pg_sys::proc_exit(1) };
}

/// A database that accepts connections, as `pg_database` says.
struct Database {
    oid: pg_sys::Oid,
    name: String,
}

/// What the launcher knows of one database.
#[derive(Default)]
struct Known {
    /// The worker it started, while it may still run.
    worker: Option<DynamicBackgroundWorker>,
    /// The extension is not installed there (its worker said so).
    absent: bool,
    /// When a worker may be started there again.
    not_before: Micros,
    /// Whether "no slot free" was logged since its last worker started.
    warned: bool,
}

#[derive(Default)]
struct Launcher {
    known: HashMap<pg_sys::Oid, Known>,
}

impl Launcher {
    fn round(&mut self, shared: Shared) {
        let databases = databases();
        let now = clock::now();
        let (entries, wanted) = shared.database_workers();
        let live: HashMap<pg_sys::Oid, i32> = entries.iter().map(|e| (e.database, e.pid)).collect();
        let held_off: HashSet<pg_sys::Oid> = entries
            .iter()
            .filter(|e| e.held_off_until > now)
            .map(|e| e.database)
            .collect();
        for db in wanted {
            let known = self.known.entry(db).or_default();
            known.absent = false;
            known.not_before = 0;
        }
        let exists: HashSet<pg_sys::Oid> = databases.iter().map(|d| d.oid).collect();
        for gone in entries.iter().filter(|e| !exists.contains(&e.database)) {
            shared.forget_database(gone.database);
        }
        self.known.retain(|db, _| exists.contains(db));

        for database in &databases {
            let known = self.known.entry(database.oid).or_default();
            if let Some(worker) = &known.worker {
                match worker.pid() {
                    Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted) => continue,
                    Err(_) => {
                        // It ended: on its own (the extension is not there,
                        // and it gave up its entry), or not.
                        known.worker = None;
                        if live.contains_key(&database.oid) {
                            known.not_before = now + RESTART_AFTER;
                        } else {
                            known.absent = true;
                        }
                    }
                }
            }
            // A worker this launcher did not start (an earlier launcher did)
            // is left to run.
            let running = live.get(&database.oid).is_some_and(|&pid| pid != 0);
            if known.absent || running || now < known.not_before || held_off.contains(&database.oid)
            {
                continue;
            }
            match start_worker(database) {
                Some(worker) => {
                    known.worker = Some(worker);
                    known.warned = false;
                }
                None => {
                    if !known.warned {
                        warning!(
                            "ruvector: cannot start the integrity worker of database \"{}\": no background worker slot is free (max_worker_processes = {})",
                            database.name,
                            max_worker_processes()
                        );
                        known.warned = true;
                    }
                    known.not_before = now + RESTART_AFTER;
                }
            }
        }
    }
}

fn max_worker_processes() -> i32 {
    // SAFETY: a postmaster setting, fixed while the server runs.
    unsafe { pg_sys::max_worker_processes }
}

/// Starts the integrity worker of `database`, telling this launcher when it
/// starts and ends; `None` when no slot is free.
fn start_worker(database: &Database) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new(&format!("ruvector integrity worker {}", database.name))
        .set_type("ruvector integrity worker")
        .set_library("ruvector")
        .set_function("ruvector_integrity_worker_main")
        .set_argument(Some(pg_sys::Datum::from(u32::from(database.oid))))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        // SAFETY: this process's pid.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .ok()
}

/// The databases a worker can connect to: they accept connections, are not
/// templates, and are not half dropped (`datconnlimit` = -2).
fn databases() -> Vec<Database> {
    let mut found = Vec::new();
    // SAFETY: a catalog scan of pg_database in a transaction of its own, as
    // a backend with no database may do; the tuples are read while the scan
    // holds them, and copied out.
    unsafe {
        pg_sys::StartTransactionCommand();
        let relation = pg_sys::table_open(
            pg_sys::DatabaseRelationId,
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
        );
        let scan = pg_sys::table_beginscan_catalog(relation, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let form = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            if form.datallowconn && !form.datistemplate && form.datconnlimit != -2 {
                found.push(Database {
                    oid: form.oid,
                    name: std::ffi::CStr::from_ptr(form.datname.data.as_ptr())
                        .to_string_lossy()
                        .into_owned(),
                });
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        pg_sys::CommitTransactionCommand();
    }
    found
}
