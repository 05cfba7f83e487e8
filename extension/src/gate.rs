//! The gate's SQL functions. The fast path reads shared memory only: a lookup
//! under a shared lock, the core's decision, and a random roll for throttles.
//! A collection shared memory does not hold yet (registered in this
//! transaction, or before the worker's first refresh) is read from the tables.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::gate::{
    self, Decision, GateInput, Needs, Operation, Outcome, Rows, Verdict,
};
use ruvector_integrity::hysteresis::State;
use ruvector_integrity::SECOND;
use serde_json::json;
use std::sync::atomic::Ordering;

use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::shmem::{self, CollectionView, SlotRef};
use crate::{clock, collections, gucs, installation, xact};

/// The gate's answer to one call.
pub struct Answer {
    pub verdict: Verdict,
    pub allowed: bool,
    pub lambda_norm: f64,
    /// Set when the gate is switched off.
    pub disabled: bool,
    /// Where shared memory holds the collection (none: read from the tables).
    pub slot: Option<SlotRef>,
}

impl Answer {
    /// Counts this decision in the gate's statistics as `outcome`.
    pub fn count(&self, outcome: Outcome) {
        if let (Some(slot), Ok(shared)) = (self.slot, shmem::shared()) {
            shared.tally(slot, self.verdict.operation, outcome, clock::now_pg());
        }
    }

    /// What became of the call, bypass aside.
    pub fn outcome(&self) -> Outcome {
        Outcome::of(&self.verdict, self.allowed)
    }

    pub fn reason(&self) -> String {
        if self.disabled {
            "ruvector.integrity_enabled is off: every operation is allowed".to_owned()
        } else {
            self.verdict.to_string()
        }
    }

    pub fn to_json(&self, collection: &str) -> serde_json::Value {
        json!({
            "collection": collection,
            "operation": self.verdict.operation.name(),
            "allowed": self.allowed,
            "decision": self.verdict.decision.as_str(),
            "throttle_pct": self.verdict.throttle_pct,
            "retry_after_secs": self.verdict.retry_after_secs,
            "state": self.verdict.state.as_str(),
            "reason": self.reason(),
            "risk": self.verdict.risk().as_str(),
            "lambda_norm": self.lambda_norm.is_finite().then_some(self.lambda_norm),
            "stale": self.verdict.stale,
        })
    }
}

/// A uniform roll in [0, 1) from the backend's PRNG.
fn roll() -> f64 {
    unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) }
}

/// What shared memory holds for `collection` (and where), else what this
/// transaction's registration says, else the tables (a collection shared
/// memory does not hold: the segment is full, or the server just restarted
/// and the worker has not refilled it yet).
pub fn view_of(collection: &str) -> SqlResult<(Option<SlotRef>, CollectionView)> {
    let shared = shmem::shared()?;
    if let Some((slot, view)) = shared.view(collection) {
        return Ok((Some(slot), view));
    }
    if let Some(view) = xact::pending_view(collection) {
        return Ok((None, view));
    }
    let installed =
        installation::installed().ok_or_else(|| SqlError::unknown_collection(collection))?;
    let view = installation::as_owner(installed, || collections::find(collection)?.view())?;
    Ok((None, view))
}

/// Decides `op` on `collection`; `already_rolled` skips the throttle roll (the
/// caller already passed it for this statement). An admitted search holds its
/// place until `executor` ends (0: until the transaction ends). The caller
/// counts the answer.
pub fn check(
    collection: &str,
    op: Operation,
    rows: Rows,
    already_rolled: bool,
    executor: usize,
) -> SqlResult<Answer> {
    let shared = shmem::shared()?;
    let (slot, view) = view_of(collection)?;
    Ok(decide(
        shared,
        slot,
        &view,
        op,
        rows,
        already_rolled,
        executor,
    ))
}

/// The state the gate acts on at `now` (an unexpired override, else the last
/// sample's, else unknown), and whether it is stale (no override, and no sample
/// within `ruvector.integrity_stale_after`).
pub fn current_state(view: &CollectionView, now: i64) -> (State, bool) {
    let overridden = view.override_state.is_some() && now < view.override_until;
    let sampled = view.last_sample_at != 0;
    let state = if overridden || sampled {
        view.effective_state(now)
    } else {
        State::Unknown
    };
    let stale = !overridden
        && (!sampled || now - view.last_sample_at > gucs::STALE_AFTER.get() as i64 * SECOND);
    (state, stale)
}

fn decide(
    shared: shmem::Shared,
    slot: Option<SlotRef>,
    view: &CollectionView,
    op: Operation,
    rows: Rows,
    already_rolled: bool,
    executor: usize,
) -> Answer {
    let (state, stale) = current_state(view, clock::now_pg());
    let counter = slot.and_then(|s| shared.live_searches(s));
    let ours = slot.is_some_and(xact::holds_search);
    let live_searches = counter
        .map_or(0, |c| c.load(Ordering::Acquire))
        .saturating_sub(u32::from(ours));
    let mut verdict = gate::decide(
        &view.policy,
        GateInput {
            state,
            stale,
            live_searches,
            rows,
        },
        op,
    );
    let disabled = !gucs::INTEGRITY_ENABLED.get();
    let mut allowed = disabled
        || match verdict.decision {
            Decision::Throttle if already_rolled => true,
            Decision::Throttle => verdict.allowed(roll()),
            _ => verdict.allowed(0.0),
        };
    // A search takes its place with one compare-and-swap, so that callers
    // racing for the last place never exceed the limit together; a backend
    // that holds the place already adds a hold on it.
    if allowed && !disabled && op == Operation::Search {
        if let (Some(slot), Some(counter)) = (slot, counter) {
            let limit = view.policy.max_concurrent_searches(state);
            let admitted = ours
                || counter
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (limit == 0 || n < limit).then_some(n + 1)
                    })
                    .is_ok();
            if admitted {
                xact::hold_search(slot, executor);
            } else {
                verdict = verdict.over_search_limit(limit);
                allowed = false;
            }
        }
    }
    Answer {
        verdict,
        allowed,
        lambda_norm: view.lambda_norm,
        disabled,
        slot,
    }
}

/// Counts an allowed `op` on `collection` that was decided before, provisionally.
pub fn count_allowed(collection: &str, op: Operation) {
    if let (Ok(shared), Ok((Some(slot), _))) = (shmem::shared(), view_of(collection)) {
        if gucs::INTEGRITY_ENABLED.get() {
            shared.tally(slot, op, Outcome::Allowed, clock::now_pg());
        }
    }
}

/// Adds a hold for `executor` on `collection`'s search place if this backend
/// holds it already: a query nested in a search of the same collection (a
/// function it calls) is part of that search. Returns whether it did.
pub fn join_search(collection: &str, executor: usize) -> bool {
    // The common case, a backend holding nothing, looks nothing up.
    if !xact::holds_any_search() {
        return false;
    }
    let held = shmem::shared()
        .ok()
        .and_then(|shared| shared.view(collection))
        .map(|(slot, _)| slot)
        .filter(|&slot| xact::holds_search(slot));
    if let Some(slot) = held {
        xact::hold_search(slot, executor);
    }
    held.is_some()
}

/// A gate call from SQL: decided, counted, and (for a search) held to the
/// end of the transaction. Advisory: the bypass does not change its answer.
fn call(collection: &str, operation: &str) -> SqlResult<Answer> {
    let op = Operation::parse(operation)?;
    let (_, view) = view_of(collection)?;
    check_may_ask(collection, view.relid, op)?;
    let answer = check(collection, op, Rows::Later, false, 0)?;
    if !answer.disabled {
        answer.count(answer.outcome());
    }
    Ok(answer)
}

/// Refuses (`42501`) a role that could not run the statement `op` stands for
/// on the collection's table: the answer (and a search's place in the
/// concurrent count, held to the end of the transaction) is for those who could.
fn check_may_ask(collection: &str, relid: pg_sys::Oid, op: Operation) -> SqlResult<()> {
    let needs = op.needs();
    // SAFETY: catalog lookups by OID in the caller's transaction; a table that
    // is gone is nobody's to ask about.
    let permitted = unsafe {
        let user = pg_sys::GetUserId();
        let exists = pg_sys::SearchSysCacheExists(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            pg_sys::Datum::from(relid),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        );
        let mode = match needs {
            Needs::Select => pg_sys::ACL_SELECT,
            Needs::Insert => pg_sys::ACL_INSERT,
            Needs::Delete => pg_sys::ACL_DELETE,
            Needs::Update => pg_sys::ACL_UPDATE,
            Needs::Ownership => 0,
        } as pg_sys::AclMode;
        exists
            && if needs == Needs::Ownership {
                pg_sys::pg_class_ownercheck(relid, user)
            } else {
                pg_sys::pg_class_aclcheck(relid, user, mode) == pg_sys::AclResult::ACLCHECK_OK
                    || pg_sys::pg_attribute_aclcheck_all(
                        relid,
                        user,
                        mode,
                        pg_sys::AclMaskHow::ACLMASK_ANY,
                    ) == pg_sys::AclResult::ACLCHECK_OK
            }
    };
    if permitted {
        return Ok(());
    }
    Err(SqlError::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!(
            "permission denied to ask the gate about {} on collection \"{collection}\"",
            op.name()
        ),
    )
    .detail(format!(
        "{} needs {} on the collection's table, as the statement it stands for would.",
        op.name(),
        needs.as_str()
    ))
    .hint("Ask the table's owner for the privilege."))
}

/// May `operation` run on `collection` now? The decision as JSON:
/// `allowed`, `decision` (allow, throttle, defer, reject), `throttle_pct`,
/// `retry_after_secs`, `state`, `reason`, `risk`, `lambda_norm`, `stale`.
#[pg_extern(volatile)]
fn ruvector_integrity_gate(collection: &str, operation: &str) -> JsonB {
    JsonB(call(collection, operation).or_raise().to_json(collection))
}

/// The gate's decision for this call as a boolean, for hot call sites.
#[pg_extern(volatile)]
fn ruvector_integrity_allowed(collection: &str, operation: &str) -> bool {
    call(collection, operation).or_raise().allowed
}

/// The gate's statistics: per collection, operation and outcome, how many
/// decisions and the last one's time (PostgreSQL µs). Behind the view
/// `ruvector.integrity_gate_stats`.
#[pg_extern(schema = "ruvector", name = "_integrity_gate_stats")]
fn integrity_gate_stats() -> TableIterator<
    'static,
    (
        name!(collection, String),
        name!(operation, String),
        name!(decision, String),
        name!(count, i64),
        name!(last_at_pg_us, i64),
    ),
> {
    let stats = shmem::shared().or_raise().gate_stats(None);
    TableIterator::new(stats.into_iter().map(|s| {
        (
            s.collection,
            s.operation.name().to_owned(),
            s.outcome.as_str().to_owned(),
            s.count as i64,
            s.last_at,
        )
    }))
}

/// Sets the gate's counters of `collection` (of every collection in this
/// database if NULL) back to zero; returns how many collections it reset.
#[pg_extern(schema = "ruvector", name = "_integrity_gate_stats_reset")]
fn integrity_gate_stats_reset(collection: Option<&str>) -> i32 {
    let shared = shmem::shared().or_raise();
    // A collection's counters are its table owner's to reset (all of them:
    // only those of the collections the caller may change).
    let names: Vec<String> = match collection {
        Some(name) => {
            let row = collections::find(name).or_raise();
            collections::check_may_change(&row, "reset the gate statistics of").or_raise();
            vec![name.to_owned()]
        }
        None => collections::load(None)
            .or_raise()
            .into_iter()
            .filter(|row| collections::check_may_change(row, "").is_ok())
            .map(|row| row.name)
            .collect(),
    };
    names
        .iter()
        .map(|name| shared.reset_gate_stats(Some(name)))
        .sum::<usize>() as i32
}

/// The gate's counters of one collection, for its status.
pub fn stats_json(shared: shmem::Shared, collection: &str) -> serde_json::Value {
    let mut decisions = serde_json::Map::new();
    for s in shared.gate_stats(Some(collection)) {
        let by_outcome = decisions
            .entry(s.operation.name())
            .or_insert_with(|| json!({}));
        by_outcome[s.outcome.as_str()] = json!(s.count);
    }
    json!({
        "live_searches": shared.live_search_count(collection),
        "decisions": decisions,
    })
}
