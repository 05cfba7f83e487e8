//! The launcher: one background worker, connected to no database, that keeps
//! one integrity worker running for each database that has the extension.
//!
//! Every few seconds, and whenever it is woken (a CREATE EXTENSION committed,
//! a worker it started began or ended), it reads `pg_database` (a shared
//! catalog) and:
//! - starts a worker for each database that accepts connections and is not a
//!   template, unless it already knows the extension is not installed there:
//!   a worker that finds no extension leaves at once and says so (a mailbox
//!   in shared memory). Databases not yet known to have it are looked at one
//!   at a time;
//! - starts again, after a pause, a worker that ended while the extension
//!   was still installed (an ERROR, `pg_terminate_backend()`): integrity
//!   control is not optional. The pause doubles (up to 5 minutes) each time
//!   one ends within a minute of its start;
//! - forgets the databases that are gone, and those without the extension.
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
    /// When that worker started.
    started_at: Micros,
    /// The extension is not installed there (a worker said so).
    absent: bool,
    /// A CREATE EXTENSION committed there since the server started.
    created: bool,
    /// A CREATE EXTENSION committed while the running worker may have looked
    /// before it: a report that the extension is absent does not count.
    wanted_since_start: bool,
    /// When a worker may be started there again.
    not_before: Micros,
    /// Workers in a row that ended within a minute of their start.
    failures: u32,
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
        let mail = shared.take_mail();
        for db in mail.absent {
            let known = self.known.entry(db).or_default();
            known.absent = !std::mem::take(&mut known.wanted_since_start);
            known.created &= !known.absent;
        }
        if mail.wanted_overflowed {
            self.known.values_mut().for_each(|k| k.absent = false);
        }
        for db in mail.wanted {
            let known = self.known.entry(db).or_default();
            known.absent = false;
            known.created = true;
            known.not_before = 0;
            known.failures = 0;
            known.wanted_since_start = known.worker.is_some();
        }
        let exists: HashSet<pg_sys::Oid> = databases.iter().map(|d| d.oid).collect();
        self.known.retain(|db, _| exists.contains(db));
        let entries = shared.database_workers();
        for entry in entries.iter().filter(|e| e.pid == 0) {
            let absent = self.known.get(&entry.database).is_some_and(|k| k.absent);
            if absent || !exists.contains(&entry.database) {
                shared.forget_database(entry.database);
            }
        }
        let entry = |db: pg_sys::Oid| entries.iter().find(|e| e.database == db);

        // Databases not known to have the extension are looked at one at a
        // time: a worker slot each, for the moment it takes to look.
        let mut looking = self
            .known
            .iter()
            .any(|(db, k)| k.worker.is_some() && !k.created && entry(*db).is_none());
        for database in &databases {
            let known = self.known.entry(database.oid).or_default();
            if let Some(worker) = &known.worker {
                if matches!(
                    worker.pid(),
                    Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted)
                ) {
                    continue;
                }
                known.worker = None;
                if !known.absent {
                    // It ended with the extension there: after a pause, longer
                    // each time it ends soon after it started.
                    known.failures = if now - known.started_at < 60 * SECOND {
                        known.failures + 1
                    } else {
                        0
                    };
                    known.not_before =
                        now + (RESTART_AFTER << known.failures.saturating_sub(1).min(6));
                }
            }
            let found = entry(database.oid);
            let running = found.is_some_and(|e| e.pid != 0);
            let held_off = found.is_some_and(|e| e.held_off_until > now);
            let probe = found.is_none() && !known.created;
            if known.absent || running || held_off || now < known.not_before || (probe && looking) {
                continue;
            }
            match start_worker(database) {
                Some(worker) => {
                    known.worker = Some(worker);
                    known.started_at = now;
                    known.warned = false;
                    looking |= probe;
                }
                None => {
                    if !known.warned {
                        let what = if probe {
                            "look for the extension in"
                        } else {
                            "start the integrity worker of"
                        };
                        warning!(
                            "ruvector: cannot {what} database \"{}\": no background worker slot is free (max_worker_processes = {})",
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
