//! The integrity worker: one background worker per database that has the
//! extension, started by the [`launcher`], that alone holds its database's
//! signing key.
//!
//! Each tick, every step in its own transaction, so that an ERROR in one
//! collection is logged and the others go on:
//! 1. load the collections and bring shared memory in line with them;
//! 2. sign and chain the events backends left pending (rotating the key first
//!    if it was revoked), and write a checkpoint of the head ([`signing`]);
//! 3. record the settings the gate runs under when they change ([`settings`]);
//! 4. end overrides whose time is up, and sample every collection that is
//!    due: build its graph, compute λ, feed the hysteresis controller, store
//!    state and sample, and on a state change append one signed event and
//!    `NOTIFY ruvector_integrity` ([`sampling`]).
//!
//! It then sleeps on its latch until the next collection is due, a backend
//! wakes it, or SIGHUP (which reloads the settings) or SIGTERM arrives. When
//! it finds the extension is not installed (or no longer is), it gives up its
//! entry in shared memory and leaves: the launcher starts no other there
//! until a CREATE EXTENSION commits.

mod launcher;
mod sampling;
mod settings;
mod signing;
mod witness;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use ruvector_integrity::audit::Event;
use ruvector_integrity::{Micros, SECOND};
use serde_json::{json, Value};

use crate::errors::{OrRaise, SqlResult};
use crate::keys::KeyHolder;
use crate::shmem::{self, Claim, Shared};
use crate::store::collections::Collection;
use crate::{audit, clock, graph_builder, gucs, installation, store, sync};

/// The longest the worker sleeps between ticks, in µs.
const MAX_SLEEP: Micros = 5 * SECOND;

pub use launcher::register;

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn ruvector_integrity_worker_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(database), None);
    let shared = shmem::shared().or_raise();
    // SAFETY: catalog lookups in a transaction of their own.
    let (name, installed) = unsafe {
        pg_sys::StartTransactionCommand();
        let found = (
            crate::catalog::database_name(),
            installation::installed().is_some(),
        );
        pg_sys::CommitTransactionCommand();
        found
    };
    if !installed {
        // Nothing to watch here: the launcher is told, and starts none again
        // until a CREATE EXTENSION commits.
        shared.report_absent();
        // SAFETY: ends the process before it did anything.
        unsafe { pg_sys::proc_exit(0) };
    }
    // SAFETY: the worker's own pid and latch, published until the exit
    // callback registered below clears them.
    let (pid, latch) = unsafe { (pg_sys::MyProcPid, pg_sys::MyLatch) };
    let claim = shared.claim_worker(pid, latch, clock::now());
    let refused = match claim {
        Claim::Taken => None,
        Claim::Duplicate(other) => Some(format!(
            "the integrity worker of database \"{name}\" is already running (pid {other})"
        )),
        Claim::HeldOff => Some(format!(
            "the integrity worker of database \"{name}\" waits: a statement needs the database without connections"
        )),
        Claim::Full => Some(format!(
            "no integrity worker for database \"{name}\": ruvector.max_databases ({}) databases already have one",
            shared.database_capacity()
        )),
    };
    if let Some(why) = refused {
        if matches!(claim, Claim::Full) {
            warning!("ruvector: {why}");
        } else {
            log!("ruvector: {why}");
        }
        // SAFETY: ends the process before it did anything.
        unsafe { pg_sys::proc_exit(0) };
    }
    // SAFETY: the callback clears what `claim_worker` published.
    unsafe { pg_sys::before_shmem_exit(Some(shmem::forget_worker), pg_sys::Datum::from(0)) };
    pin_settings();
    let mut worker = Worker::new(database);
    let mut announced = false;
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: between transactions, as PostgreSQL's own processes do.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        // The worker's reads of collection data are not searches.
        let Some(wait) = installation::reading_for_itself(|| worker.tick(shared)) else {
            // The extension was dropped: nothing to watch.
            shared.release_worker(pid, true);
            log!("ruvector integrity worker of database \"{name}\" stopping: the extension was dropped");
            // SAFETY: ends the process, as a background worker's main may.
            unsafe { pg_sys::proc_exit(0) };
        };
        if !announced {
            log!("ruvector integrity worker started on database \"{name}\"");
            announced = true;
        }
        if worker.stopping() || !BackgroundWorker::wait_latch(Some(wait)) {
            break;
        }
    }
    // The launcher starts the worker again after a pause, unless the server
    // is shutting down or an owner's statement (DROP DATABASE...) stopped it:
    // a worker stopped by pg_terminate_backend() comes back; integrity
    // control is not optional.
    log!("ruvector integrity worker of database \"{name}\" stopping");
    // SAFETY: ends the process, as a background worker's main may.
    unsafe { pg_sys::proc_exit(0) };
}

/// The database's settings are not ours to trust: `ALTER DATABASE ... SET`
/// reaches background workers at their start, and its owner may set any
/// setting a user may. The worker pins those that would change who it is
/// (`session_authorization`, `role`: it runs as the bootstrap superuser),
/// whether an error ends it (`exit_on_error`), what it reads
/// (`search_path = pg_catalog, pg_temp`), whether it can write (a read-only
/// default would stop every tick), and how its waits and commits behave: a
/// table locked by someone else must not stop the worker for long (it gives
/// up on that step, logs it, and tries again next tick), and its commits are
/// flushed before a checkpoint says they happened.
fn pin_settings() {
    installation::pin_search_path(pg_sys::GucAction::GUC_ACTION_SET);
    // SAFETY: in the worker's own transaction (the identity settings look up
    // roles); an override source outranks every database and role setting.
    unsafe {
        pg_sys::StartTransactionCommand();
        let superuser =
            pg_sys::GetUserNameFromId(pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID), false);
        pg_sys::SetConfigOption(
            c"session_authorization".as_ptr(),
            superuser,
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        );
        for (name, value) in [
            (c"role", c"none"),
            (c"exit_on_error", c"off"),
            (c"session_replication_role", c"origin"),
            (c"default_transaction_read_only", c"off"),
            (c"default_transaction_isolation", c"read committed"),
            (c"extra_float_digits", c"1"),
            (c"synchronous_commit", c"local"),
            (c"statement_timeout", c"0"),
            (c"idle_in_transaction_session_timeout", c"0"),
            // Short enough that a DROP EXTENSION waiting on the worker's
            // locks wins before the deadlock detector (deadlock_timeout,
            // 1 s by default) has to choose.
            (c"lock_timeout", c"500ms"),
        ] {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_OVERRIDE,
            );
        }
        pg_sys::CommitTransactionCommand();
    }
}

unsafe extern "C-unwind" {
    /// `utils/timeout.h` (not bound by pgrx): `extern void
    /// enable_timeout_after(TimeoutId id, int delay_ms);`
    fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
    /// `utils/timeout.h`: `extern void disable_timeout(TimeoutId id, bool
    /// keep_indicator);`
    fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
}

/// `STATEMENT_TIMEOUT` of `enum TimeoutId` in `utils/timeout.h` (the fourth).
const STATEMENT_TIMEOUT: std::ffi::c_int = 3;

/// Runs `body` in a transaction of its own. An ERROR inside, or in its commit
/// (a full NOTIFY queue fails a commit), rolls it back and comes back as
/// `Err`, so the worker carries on. The step is bounded by
/// `ruvector.worker_statement_timeout`: setting `statement_timeout` does not
/// arm it in a background worker (only a client's top-level statement does),
/// so the timer is armed here.
fn transaction<R>(what: &str, body: impl FnOnce() -> SqlResult<R>) -> Result<R, String> {
    // SAFETY: between transactions (the worker runs one at a time); the
    // snapshot is popped and the transaction ended below, or aborted.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let timeout = gucs::WORKER_STATEMENT_TIMEOUT.get();
        if timeout > 0 {
            enable_timeout_after(STATEMENT_TIMEOUT, timeout);
        }
    }
    let outcome = PgTryBuilder::new(AssertUnwindSafe(|| {
        let done = body().map_err(|e| match e.detail {
            Some(detail) => format!("{} ({detail})", e.message),
            None => e.message,
        })?;
        // SAFETY: the transaction begun above, its snapshot pushed above.
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        }
        Ok(done)
    }))
    .catch_others(|caught| {
        Err(match caught {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r.message().to_owned(),
            CaughtError::RustPanic { ereport, .. } => ereport.message().to_owned(),
        })
    })
    .execute();
    // SAFETY: an error left the transaction begun above open (or its commit
    // half done): abort it, as PostgreSQL does after any error.
    unsafe {
        disable_timeout(STATEMENT_TIMEOUT, false);
        if outcome.is_err() {
            pg_sys::AbortCurrentTransaction();
        }
    }
    outcome.map_err(|e| format!("{what}: {e}"))
}

/// Whether SIGTERM arrived, noted in `flag` (pgrx's own flag is reset when
/// read).
fn stopping(flag: &Cell<bool>) -> bool {
    flag.set(flag.get() | BackgroundWorker::sigterm_received());
    flag.get()
}

/// What listeners of `ruvector_integrity` are told of an event.
fn notification(event: &Event, seq: Option<u64>, lambda_norm: Option<f64>) -> Value {
    json!({
        "collection": event.collection, "event_type": event.event_type,
        "previous_state": event.previous_state, "new_state": event.new_state,
        "lambda_norm": lambda_norm, "event_seq": seq,
    })
}

struct Worker {
    keys: KeyHolder,
    /// Where checkpoints of this installation's chain go (known once loaded).
    checkpoint_path: Option<PathBuf>,
    /// Where the worker notes that it is alive, and when it last did.
    alive_path: Option<PathBuf>,
    last_alive_note: Micros,
    /// The settings the gate runs under, as last recorded in the chain
    /// (`None` until this worker's first record).
    recorded_settings: Option<BTreeMap<String, String>>,
    /// When each collection was last sampled. It is due again one sample
    /// interval later, as its policy says now (a policy or a reload that
    /// shortens the interval takes effect at once).
    last_sampled: HashMap<i32, Micros>,
    last_prune: Micros,
    /// The last sampling error of each collection, so that it is logged once.
    last_errors: HashMap<i32, String>,
    /// The last error of each of the worker's own steps, logged once too.
    last_step_errors: HashMap<&'static str, String>,
    /// What of each collection's stored row did not decode, logged once.
    reported_damage: HashMap<i32, String>,
    /// Notifications the step under way will send once it has committed.
    outbox: RefCell<Vec<Value>>,
    warned_relations_full: bool,
    /// SIGTERM arrived (it is looked at between steps too).
    stopping: Cell<bool>,
    /// Checkpoints shipped by `ruvector.checkpoint_command`.
    witness: witness::Shipping,
}

impl Worker {
    fn new(database: pg_sys::Oid) -> Worker {
        Worker {
            keys: KeyHolder::new(gucs::database_key_path(database)),
            checkpoint_path: None,
            alive_path: None,
            last_alive_note: 0,
            recorded_settings: None,
            last_sampled: HashMap::new(),
            last_prune: 0,
            last_errors: HashMap::new(),
            last_step_errors: HashMap::new(),
            reported_damage: HashMap::new(),
            outbox: RefCell::new(Vec::new()),
            warned_relations_full: false,
            stopping: Cell::new(false),
            witness: witness::Shipping::default(),
        }
    }

    /// Whether SIGTERM arrived: the worker ends its tick early and leaves (an
    /// owner's DROP DATABASE waits for it).
    fn stopping(&self) -> bool {
        stopping(&self.stopping)
    }

    /// One tick; returns how long to sleep, or `None` when the extension is
    /// not installed here.
    fn tick(&mut self, shared: Shared) -> Option<Duration> {
        shared.beat(clock::now());
        graph_builder::forget_probes();
        let idle = Duration::from_secs(gucs::SAMPLE_INTERVAL.get().clamp(1, 5) as u64);

        let (collections, overflow) = match transaction("loading collections", || self.load(shared))
        {
            Ok(Some(loaded)) => {
                self.last_step_errors.remove("loading");
                loaded
            }
            Ok(None) => {
                // The extension is not installed (or was dropped) here.
                shared.clear_database();
                return None;
            }
            Err(e) => {
                self.warn_once("loading", e);
                return Some(idle);
            }
        };
        for name in overflow.collections {
            warning!("ruvector: no shared-memory slot for collection \"{name}\": it is not gated; raise ruvector.max_collections");
        }
        if overflow.relations && !self.warned_relations_full {
            warning!("ruvector: the relation map is full: some collection relations are not gated; raise ruvector.max_relations");
            self.warned_relations_full = true;
        }
        self.last_sampled
            .retain(|id, _| collections.iter().any(|c| c.id == *id));
        self.report_damage(&collections);

        self.sign_pending(shared);
        if let Some(file) = &self.checkpoint_path {
            let flag = &self.stopping;
            self.witness.ship(file, || stopping(flag));
        }
        self.record_settings();
        for collection in collections
            .iter()
            .filter(|c| c.pin.is_some_and(|p| !p.in_force(clock::now())))
        {
            self.end_override(shared, collection);
        }
        if gucs::INTEGRITY_ENABLED.get() {
            let requested = shared.take_sample_requests();
            for collection in &collections {
                if self.stopping() {
                    break;
                }
                let due = self.due(collection).is_none_or(|d| d <= clock::now());
                if due || requested.contains(&collection.id) {
                    self.sample(shared, collection);
                }
            }
        }
        self.housekeeping();

        // Sleep until the next sample is due, but never longer than MAX_SLEEP:
        // the heartbeat and override expiries need the worker awake now and then.
        let now = clock::now();
        let next = collections
            .iter()
            .filter_map(|c| self.due(c))
            .min()
            .map_or(Micros::MAX, |due| due - now);
        Some(Duration::from_micros(next.clamp(10_000, MAX_SLEEP) as u64))
    }

    /// Queues a notification for listeners, sent when the step commits.
    fn announce(&self, payload: Value) {
        self.outbox.borrow_mut().push(payload);
    }

    /// Sends what the step that just ended announced, if it committed, in a
    /// transaction of its own: any role can fill the NOTIFY queue (a LISTEN
    /// held in an idle transaction), and a full queue must cost the
    /// notifications, never the sample or the signatures that made them.
    fn send_announced(&mut self, committed: bool) {
        let payloads = std::mem::take(&mut *self.outbox.borrow_mut());
        if !committed || payloads.is_empty() {
            return;
        }
        match transaction("notifying listeners", || {
            payloads.iter().try_for_each(store::events::notify)
        }) {
            Ok(()) => {
                self.last_step_errors.remove("notifying");
            }
            Err(e) => self.warn_once("notifying", e),
        }
    }

    /// Says, once, what of a collection's stored row was replaced by its
    /// default because it did not decode (a sample writes the state and the
    /// controller again; a policy stays replaced until it is set again).
    fn report_damage(&mut self, collections: &[Collection]) {
        self.reported_damage.retain(|id, _| {
            collections
                .iter()
                .any(|c| c.id == *id && !c.damage.is_empty())
        });
        for c in collections.iter().filter(|c| !c.damage.is_empty()) {
            let what = c.damage.join("; ");
            if self.reported_damage.get(&c.id) != Some(&what) {
                warning!(
                    "ruvector: collection \"{}\": {what}: its default is used instead",
                    c.name
                );
                self.reported_damage.insert(c.id, what);
            }
        }
    }

    /// Logs `error` of `step` unless it is the one logged last time.
    fn warn_once(&mut self, step: &'static str, error: String) {
        if self.last_step_errors.get(step) != Some(&error) {
            warning!("ruvector: {error}");
            self.last_step_errors.insert(step, error);
        }
    }

    /// The collections (shared memory brought in line with them), or `None`
    /// when the extension is not installed here.
    fn load(&mut self, shared: Shared) -> SqlResult<Option<(Vec<Collection>, sync::Overflow)>> {
        if installation::installed().is_none() {
            return Ok(None);
        }
        self.checkpoint_path = Some(audit::checkpoint_path()?);
        self.alive_path = Some(audit::alive_path()?);
        sync::refresh(shared).map(Some)
    }
}
