//! The integrity worker: one background worker, connected to
//! `ruvector.integrity_database`, that alone holds the signing key.
//!
//! Each tick, every step in its own transaction, so that an ERROR in one
//! collection is logged and the others go on:
//! 1. load the collections and bring shared memory in line with them;
//! 2. sign and chain the events backends left pending (rotating the key first
//!    if it was revoked), and write a checkpoint of the head;
//! 3. end overrides whose time is up;
//! 4. sample every collection that is due: build its graph, compute λ, feed the
//!    hysteresis controller, store state and sample, and on a state change
//!    append one signed event and `NOTIFY ruvector_integrity`.
//!
//! It then sleeps on its latch until the next collection is due, a backend
//! wakes it, or SIGHUP (which reloads the settings) or SIGTERM arrives.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::audit::Event;
use ruvector_integrity::hysteresis::{State, Transition};
use ruvector_integrity::SECOND;
use serde_json::{json, Value};

use crate::audit::Head;
use crate::collections::CollectionRow;
use crate::errors::{Optional, OrRaise, SqlError, SqlResult};
use crate::keys::KeyHolder;
use crate::shmem::{self, CollectionView, Shared};
use crate::{audit, clock, graph_builder, gucs, installation, sampler, sync};

/// The longest the worker sleeps between ticks, in µs.
const MAX_SLEEP: i64 = 5 * SECOND;

/// How often the worker notes that it is alive (a small file write): the
/// precision with which its next start can tell when it stopped.
const ALIVE_NOTE_EVERY: i64 = 10 * SECOND;

/// The settings the gate runs under, as this process sees them: every
/// `ruvector.*` setting but the per-session bypass, and the preload list.
fn gate_settings() -> SqlResult<BTreeMap<String, String>> {
    let settings = Spi::get_one::<JsonB>(
        "SELECT jsonb_object_agg(name, setting) FROM pg_catalog.pg_settings
         WHERE (name LIKE 'ruvector.%' AND name <> 'ruvector.integrity_bypass')
            OR name = 'shared_preload_libraries'",
    )?
    .map_or(Value::Null, |j| j.0);
    Ok(serde_json::from_value(settings)?)
}

/// Registers the worker; called from `_PG_init` while preloading.
pub fn register() {
    BackgroundWorkerBuilder::new("ruvector integrity worker")
        .set_type("ruvector integrity worker")
        .set_library("ruvector")
        .set_function("ruvector_integrity_worker_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn ruvector_integrity_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::integrity_database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let shared = shmem::shared().or_raise();
    pin_settings();
    unsafe {
        shared.set_worker(pg_sys::MyProcPid, pg_sys::MyLatch);
        pg_sys::before_shmem_exit(Some(shmem::forget_worker), pg_sys::Datum::from(0));
    }
    log!("ruvector integrity worker started on database \"{database}\"");
    let mut worker = Worker::new();
    loop {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        // The worker's reads of collection data are not searches.
        let wait = crate::enforce::internal(|| worker.tick(shared));
        if !BackgroundWorker::wait_latch(Some(wait)) {
            break;
        }
    }
    // Exit code 1: the postmaster starts the worker again after its restart
    // time, unless the server is shutting down. A worker stopped by
    // pg_terminate_backend() comes back; integrity control is not optional.
    log!("ruvector integrity worker stopping");
    unsafe { pg_sys::proc_exit(1) };
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
    // `utils/timeout.h`, which pgrx does not bind.
    fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
    fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
}

/// `TimeoutId::STATEMENT_TIMEOUT` in `utils/timeout.h`.
const STATEMENT_TIMEOUT: std::ffi::c_int = 3;

/// Runs `body` in a transaction of its own. An ERROR inside, or in its commit
/// (a full NOTIFY queue fails a commit), rolls it back and comes back as
/// `Err`, so the worker carries on. The step is bounded by
/// `ruvector.worker_statement_timeout`: setting `statement_timeout` does not
/// arm it in a background worker (only a client's top-level statement does),
/// so the timer is armed here.
fn transaction<R>(what: &str, body: impl FnOnce() -> SqlResult<R>) -> Result<R, String> {
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

fn notify(payload: &Value) -> SqlResult<()> {
    Spi::run_with_args(
        "SELECT pg_notify('ruvector_integrity', $1)",
        &[payload.to_string().as_str().into()],
    )?;
    Ok(())
}

struct Worker {
    keys: KeyHolder,
    /// Where checkpoints of this installation's chain go (known once loaded).
    checkpoint_path: Option<std::path::PathBuf>,
    /// Where the worker notes that it is alive, and when it last did (PostgreSQL µs).
    alive_path: Option<std::path::PathBuf>,
    last_alive_note: i64,
    /// The settings the gate runs under, as last recorded in the chain
    /// (`None` until this worker's first record).
    recorded_settings: Option<BTreeMap<String, String>>,
    /// When each collection was last sampled, PostgreSQL µs. It is due again
    /// one sample interval later, as its policy says now (a policy or a
    /// reload that shortens the interval takes effect at once).
    last_sampled: HashMap<i32, i64>,
    last_prune: i64,
    /// The last sampling error of each collection, so that it is logged once.
    last_errors: HashMap<i32, String>,
    /// The last error of each of the worker's own steps, logged once too.
    last_step_errors: HashMap<&'static str, String>,
    /// Notifications the step under way will send once it has committed.
    outbox: std::cell::RefCell<Vec<Value>>,
    warned_relations_full: bool,
}

impl Worker {
    fn new() -> Worker {
        Worker {
            keys: KeyHolder::new(gucs::signing_key_path()),
            checkpoint_path: None,
            alive_path: None,
            last_alive_note: 0,
            recorded_settings: None,
            last_sampled: HashMap::new(),
            last_prune: 0,
            last_errors: HashMap::new(),
            last_step_errors: HashMap::new(),
            outbox: std::cell::RefCell::new(Vec::new()),
            warned_relations_full: false,
        }
    }
}

/// What a sample changed, for shared memory and the log.
struct Sampled {
    view: CollectionView,
    transition: Option<Transition>,
    /// The witness edges, for the log: "source -- target, ...".
    witness: String,
}

impl Worker {
    /// One tick; returns how long to sleep.
    fn tick(&mut self, shared: Shared) -> Duration {
        let now = clock::now_pg();
        shared.beat(now);
        graph_builder::forget_probes();
        let idle = Duration::from_secs(gucs::SAMPLE_INTERVAL.get().clamp(1, 5) as u64);

        let (rows, overflow) = match transaction("loading collections", || self.load(shared)) {
            Ok(Some(loaded)) => {
                self.last_step_errors.remove("loading");
                loaded
            }
            Ok(None) => {
                // The extension is not installed (or was dropped) here.
                shared.clear_database();
                return idle;
            }
            Err(e) => {
                self.warn_once("loading", e);
                return idle;
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
            .retain(|id, _| rows.iter().any(|r| r.id == *id));

        self.sign_pending(shared);
        self.record_settings();
        for row in rows
            .iter()
            .filter(|r| r.override_until.is_some_and(|u| u <= clock::now_unix()))
        {
            self.end_override(shared, row);
        }
        if gucs::INTEGRITY_ENABLED.get() {
            let requested = shared.take_sample_requests();
            for row in &rows {
                if self.due(row).is_none_or(|d| d <= clock::now_pg()) || requested.contains(&row.id)
                {
                    self.sample(shared, row);
                }
            }
        }
        self.housekeeping();

        // Sleep until the next sample is due, but never longer than MAX_SLEEP:
        // the heartbeat and override expiries need the worker awake now and then.
        let now = clock::now_pg();
        let next = rows
            .iter()
            .filter_map(|row| self.due(row))
            .min()
            .map_or(i64::MAX, |due| due - now);
        Duration::from_micros(next.clamp(10_000, MAX_SLEEP) as u64)
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
            payloads.iter().try_for_each(notify)
        }) {
            Ok(()) => {
                self.last_step_errors.remove("notifying");
            }
            Err(e) => self.warn_once("notifying", e),
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
    fn load(&mut self, shared: Shared) -> SqlResult<Option<(Vec<CollectionRow>, sync::Overflow)>> {
        let installed = Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'ruvector')",
        )?
        .unwrap_or(false);
        if !installed {
            return Ok(None);
        }
        self.checkpoint_path = Some(audit::checkpoint_path()?);
        self.alive_path = Some(audit::alive_path()?);
        sync::refresh(shared).map(Some)
    }

    /// Checks the key at start, acts on the operators' key requests, and
    /// signs what backends left pending, a batch per transaction, each
    /// followed by a checkpoint once it is durable.
    fn sign_pending(&mut self, shared: Shared) {
        loop {
            let keys = &mut self.keys;
            let outbox = &self.outbox;
            let result = transaction("signing pending events", || {
                let mut changed = keys.prepare()?;
                keys.lock_current()?;
                let pending = audit::pending()?;
                changed |= keys.before_batch(&pending)?;
                let Some(signer) = keys.signer() else {
                    return Ok((false, None, Vec::new(), 0));
                };
                // A pending event committed and gone without a signature was
                // taken out of the table behind the worker's back (a superuser
                // under session_replication_role, a trigger switched off): the
                // chain records that it vanished.
                let (tracked, untracked) = shared.tracked_pending();
                let present = audit::still_pending(&tracked)?;
                let mut settled: Vec<i64> = tracked
                    .into_iter()
                    .filter(|id| present.binary_search(id).is_err())
                    .collect();
                if !settled.is_empty() || untracked > 0 {
                    audit::append_signed(signer, &vanished(&settled, untracked))?;
                    changed = true;
                }
                let signed = audit::sign(signer, pending)?;
                settled.extend(signed.iter().map(|s| s.pending_id));
                for s in signed
                    .iter()
                    .filter(|s| s.event.event_type == "manual_override")
                {
                    let lambda_norm = shared
                        .view(&s.event.collection)
                        .map(|(_, v)| v.lambda_norm)
                        .filter(|x| x.is_finite());
                    outbox.borrow_mut().push(json!({
                        "collection": s.event.collection, "event_type": "manual_override",
                        "previous_state": s.event.previous_state, "new_state": s.event.new_state,
                        "lambda_norm": lambda_norm, "event_seq": s.seq,
                    }));
                }
                let full = signed.len() as i64 >= audit::SIGNING_BATCH;
                let head = if changed || !signed.is_empty() {
                    audit::head()?
                } else {
                    None
                };
                Ok((full, head, settled, untracked))
            });
            self.send_announced(result.is_ok());
            match result {
                Ok((full, head, settled, untracked)) => {
                    self.keys.committed();
                    shared.untrack_pending(&settled, untracked);
                    self.checkpoint(head);
                    if !full {
                        break;
                    }
                }
                Err(e) => {
                    self.keys.aborted();
                    self.warn_once("signing", e);
                    break;
                }
            }
        }
        shared.set_signing_note(&self.keys.note().to_string());
    }

    /// Records in the chain the settings the gate runs under: at this
    /// worker's start (with when the server started and when a worker of this
    /// installation was last alive, so that a time without the gate, or with
    /// the worker elsewhere, shows as a gap), and whenever they change (the
    /// gate switched off by `ruvector.integrity_enabled`, say). Then notes
    /// that the worker is alive.
    fn record_settings(&mut self) {
        let Some(alive_path) = self.alive_path.clone() else {
            return;
        };
        let settings = match transaction("reading settings", gate_settings) {
            Ok(settings) => settings,
            Err(e) => return self.warn_once("settings", e),
        };
        let metadata = match &self.recorded_settings {
            None => {
                let last_alive = std::fs::read_to_string(&alive_path)
                    .ok()
                    .and_then(|text| text.trim().parse::<i64>().ok());
                Some(json!({
                    "action": "worker_started",
                    "settings": settings,
                    "server_started_unix_us": clock::pg_to_unix(unsafe { pg_sys::PgStartTime }),
                    "last_alive_unix_us": last_alive,
                }))
            }
            Some(before) if *before != settings => {
                let changed: BTreeMap<&String, (Option<&String>, Option<&String>)> = before
                    .keys()
                    .chain(settings.keys())
                    .filter(|k| before.get(*k) != settings.get(*k))
                    .map(|k| (k, (before.get(k), settings.get(k))))
                    .collect();
                Some(json!({"action": "settings", "settings": settings, "changed": changed}))
            }
            Some(_) => None,
        };
        if let Some(metadata) = metadata {
            let event = Event::new(None, "", "audit", None, None, &metadata, clock::now_unix());
            let recorded = transaction("recording settings", || self.record(&event, None));
            self.send_announced(recorded.is_ok());
            match recorded {
                Ok(head) => {
                    self.recorded_settings = Some(settings);
                    self.checkpoint(head);
                }
                Err(e) => return self.warn_once("settings", e),
            }
        }
        let now = clock::now_pg();
        if now - self.last_alive_note >= ALIVE_NOTE_EVERY {
            self.last_alive_note = now;
            if let Err(e) = std::fs::write(&alive_path, clock::pg_to_unix(now).to_string()) {
                self.warn_once(
                    "alive",
                    format!("cannot write {}: {e}", alive_path.display()),
                );
            }
        }
    }

    /// Writes a checkpoint of `head` (committed and flushed).
    fn checkpoint(&self, head: Option<Head>) {
        let (Some(head), Some(path), Some(signer), Some(root)) = (
            head,
            &self.checkpoint_path,
            self.keys.signer(),
            self.keys.root(),
        ) else {
            return;
        };
        if let Err(e) = audit::write_checkpoint(signer, head, &root, path) {
            warning!(
                "ruvector: cannot write the audit checkpoint {}: {e}",
                path.display()
            );
        }
    }

    /// Ends `row`'s override once its time is up, with a signed event.
    fn end_override(&mut self, shared: Shared, row: &CollectionRow) {
        let result = transaction("ending an override", || {
            let ended = Spi::get_one_with_args::<String>(
                "UPDATE ruvector.integrity_state s
                 SET override_state = NULL, override_until = NULL, override_reason = NULL, override_by = NULL,
                     updated_at = now()
                 FROM (SELECT override_state FROM ruvector.integrity_state WHERE collection_id = $1 FOR UPDATE) old
                 WHERE s.collection_id = $1 AND s.override_until <= now()
                 RETURNING old.override_state",
                &[row.id.into()],
            )
            .optional()?;
            let Some(pinned) = ended else { return Ok(None) };
            let event = event(
                row,
                "manual_override",
                Some(pinned.clone()),
                Some(row.state.clone()),
                json!({"action": "expired", "state": pinned}),
            );
            self.record(&event, None).map(Some)
        });
        self.send_announced(result.is_ok());
        match result {
            Ok(Some(head)) => {
                shared.update(&row.name, |v| v.override_state = None);
                self.checkpoint(head);
            }
            Ok(None) => {}
            Err(e) => warning!("ruvector: collection \"{}\": {e}", row.name),
        }
    }

    /// Appends `event` signed (or pending when there is no key) and notifies
    /// listeners; returns the new head when it was signed.
    fn record(&self, event: &Event, lambda_norm: Option<f64>) -> SqlResult<Option<Head>> {
        let seq = match self.keys.signer() {
            Some(signer) => Some(audit::append_signed(signer, event)?),
            None => {
                let metadata: Value = serde_json::from_str(&event.metadata)?;
                audit::append_pending(
                    event.collection_id,
                    &event.collection,
                    &event.event_type,
                    event.previous_state.as_deref(),
                    event.new_state.as_deref(),
                    json!({"lambda_cut": event.lambda_cut, "lambda_norm": event.lambda_norm, "event": metadata}),
                )?;
                None
            }
        };
        self.announce(json!({
            "collection": event.collection, "event_type": event.event_type,
            "previous_state": event.previous_state, "new_state": event.new_state,
            "lambda_norm": lambda_norm, "event_seq": seq,
        }));
        Ok(match seq {
            Some(_) => audit::head()?,
            None => None,
        })
    }

    /// When `row` is next due (`None`: never sampled by this worker, so now).
    fn due(&self, row: &CollectionRow) -> Option<i64> {
        let interval = row
            .policy()
            .ok()
            .and_then(|p| p.sample_interval_secs)
            .unwrap_or(gucs::SAMPLE_INTERVAL.get() as u32) as i64;
        self.last_sampled
            .get(&row.id)
            .map(|&last| last + interval * SECOND)
    }

    fn sample(&mut self, shared: Shared, row: &CollectionRow) {
        self.last_sampled.insert(row.id, clock::now_pg());
        let sampled = transaction("sampling", || self.take_sample(row));
        self.send_announced(sampled.is_ok());
        match sampled {
            Ok((sampled, head)) => {
                self.last_errors.remove(&row.id);
                shared.record_sample(&row.name, &sampled.view);
                if let Some(t) = sampled.transition {
                    // One line per state change; quiet samples log nothing.
                    log!(
                        "ruvector: collection \"{}\" went from {} to {} (lambda_norm {:.4}, witness: {})",
                        row.name,
                        t.from.as_str(),
                        t.to.as_str(),
                        sampled.view.lambda_norm,
                        sampled.witness
                    );
                }
                self.checkpoint(head);
            }
            Err(e) => {
                // Logged once per distinct error, not every tick; the latest is
                // always in ruvector_integrity_status().
                if self.last_errors.get(&row.id) != Some(&e) {
                    warning!("ruvector: collection \"{}\": {e}", row.name);
                    self.last_errors.insert(row.id, e.clone());
                }
                let _ = transaction("recording a sampling error", || {
                    Spi::run_with_args(
                        "UPDATE ruvector.integrity_state SET last_error = $2, last_error_at = now() WHERE collection_id = $1",
                        &[row.id.into(), e.as_str().into()],
                    )?;
                    Ok(())
                });
            }
        }
    }

    fn take_sample(&self, row: &CollectionRow) -> SqlResult<(Sampled, Option<Head>)> {
        let started = std::time::Instant::now();
        let measurement = sampler::measure(row)?;
        let policy = row.policy()?;
        let mut controller = row.controller();
        let now = clock::now_unix();
        let integrity = &measurement.integrity;
        let transition = controller
            .try_observe(
                integrity.lambda_norm,
                now,
                &policy.thresholds(),
                &policy.hysteresis,
            )
            .map_err(SqlError::from)?;
        Spi::run_with_args(
            "UPDATE ruvector.integrity_state
             SET state = $2, lambda_cut = $3, lambda_nominal = $4, lambda_norm = $5, lambda2 = $6,
                 witness_edges = $7, controller = $8,
                 last_sample = 'epoch'::timestamptz + $9::bigint * interval '1 microsecond',
                 sample_count = sample_count + 1, last_error = NULL, last_error_at = NULL, updated_at = now()
             WHERE collection_id = $1",
            &[
                row.id.into(),
                controller.state.as_str().into(),
                integrity.lambda_cut.into(),
                integrity.lambda_nominal.into(),
                integrity.lambda_norm.into(),
                measurement.lambda2.into(),
                JsonB(serde_json::to_value(measurement.witness_edges())?).into(),
                JsonB(serde_json::to_value(&controller)?).into(),
                now.into(),
            ],
        )?;
        measurement.store(row.id, false)?;
        Spi::run_with_args(
            "INSERT INTO ruvector.integrity_samples
                 (collection_id, sampled_at, lambda_cut, lambda_nominal, lambda_norm, lambda2, state, node_count, edge_count,
                  duration_ms)
             VALUES ($1, 'epoch'::timestamptz + $2::bigint * interval '1 microsecond', $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT DO NOTHING",
            &[
                row.id.into(),
                now.into(),
                integrity.lambda_cut.into(),
                integrity.lambda_nominal.into(),
                integrity.lambda_norm.into(),
                measurement.lambda2.into(),
                controller.state.as_str().into(),
                (measurement.built.graph.nodes().len() as i32).into(),
                (measurement.built.graph.edges().len() as i32).into(),
                (started.elapsed().as_secs_f64() * 1000.0).into(),
            ],
        )?;
        let head = match transition {
            Some(t) => {
                let mut event = event(
                    row,
                    "state_change",
                    Some(t.from.as_str().to_owned()),
                    Some(t.to.as_str().to_owned()),
                    json!({
                        "direction": if t.from == State::Unknown { "initial" } else if t.to > t.from { "escalation" } else { "recovery" },
                        "lambda_nominal": integrity.lambda_nominal,
                        "threshold_high": policy.threshold_high,
                        "threshold_low": policy.threshold_low,
                        "policy": row.policy_name,
                        "samples_below_high": controller.below_high,
                        "samples_below_low": controller.below_low,
                    }),
                );
                event.lambda_cut = Some(integrity.lambda_cut);
                event.lambda_norm = Some(integrity.lambda_norm);
                event.lambda2 = Some(measurement.lambda2);
                event.witness_edges = measurement.witness_edges();
                self.record(&event, Some(integrity.lambda_norm))?
            }
            None => None,
        };
        let mut view = row.view()?;
        view.state = controller.state;
        view.last_sample_at = clock::unix_to_pg(now);
        view.lambda_cut = integrity.lambda_cut;
        view.lambda_norm = integrity.lambda_norm;
        let witness = measurement
            .witness_edges()
            .iter()
            .map(|e| format!("{} -- {}", e.source, e.target))
            .collect::<Vec<_>>()
            .join(", ");
        Ok((
            Sampled {
                view,
                transition,
                witness,
            },
            head,
        ))
    }

    /// Prunes old samples now and then.
    fn housekeeping(&mut self) {
        let now = clock::now_pg();
        if now - self.last_prune >= 600 * SECOND {
            self.last_prune = now;
            let retention = gucs::SAMPLE_RETENTION.get() as f64;
            if let Err(e) = transaction("pruning samples", || {
                Spi::run_with_args(
                    "DELETE FROM ruvector.integrity_samples WHERE sampled_at < now() - make_interval(secs => $1)",
                    &[retention.into()],
                )?;
                Ok(())
            }) {
                warning!("ruvector: {e}");
            }
        }
    }
}

/// The alert for pending events that left the table unsigned: their ids (the
/// first hundred), and how many more went untracked.
fn vanished(ids: &[i64], untracked: u64) -> Event {
    Event::new(
        None,
        "",
        "alert",
        None,
        None,
        &json!({
            "action": "pending_events_vanished",
            "count": ids.len(),
            "ids": &ids[..ids.len().min(100)],
            "untracked": untracked,
            "detail": "pending events committed in this server run left ruvector.pending_events without being signed; untracked ones were committed while the worker was too far behind to follow them",
        }),
        clock::now_unix(),
    )
}

/// An event about `row`, stamped now.
fn event(
    row: &CollectionRow,
    event_type: &str,
    previous: Option<String>,
    new: Option<String>,
    metadata: Value,
) -> Event {
    Event::new(
        Some(row.id),
        &row.name,
        event_type,
        previous,
        new,
        &metadata,
        clock::now_unix(),
    )
}
