//! The gate: may this operation run on this collection now? The decision is
//! the core's ([`ruvector_integrity::gate::decide`]), made from a copy of the
//! collection's view in shared memory ([`Target`]), found by relation (the
//! hooks) or by name (the SQL functions) under one shared lock; counting it
//! and a search's place are atomics. No SPI, no table read, unless shared
//! memory does not hold the collection yet (registered in this transaction,
//! or before the worker's first refresh after a start): then its row is read.

use pgrx::pg_sys;
use pgrx::prelude::*;
use ruvector_integrity::gate::{self, Decision, GateInput, Operation, Outcome, Rows, Verdict};
use ruvector_integrity::Micros;
use serde_json::json;

use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::jsonb::{self, Scalar};
use crate::shmem::{self, CollectionView, SlotRef};
use crate::{clock, gucs, installation, privileges, store, xact};

/// A collection, as a decision needs it.
#[derive(Clone, Debug)]
pub struct Target {
    /// Where shared memory holds it (`None`: read from its row).
    pub slot: Option<SlotRef>,
    pub view: CollectionView,
    /// Its name, when shared memory does not hold it.
    name: Option<String>,
}

impl Target {
    /// A collection shared memory holds.
    pub fn shared(slot: SlotRef, view: CollectionView) -> Target {
        Target {
            slot: Some(slot),
            view,
            name: None,
        }
    }

    /// A collection shared memory does not hold yet.
    pub fn unshared(name: &str, view: CollectionView) -> Target {
        Target {
            slot: None,
            view,
            name: Some(name.to_owned()),
        }
    }

    /// Its name (read from shared memory: for messages and audit events).
    pub fn name(&self) -> String {
        match (&self.name, self.slot) {
            (Some(name), _) => name.clone(),
            (None, Some(slot)) => shmem::shared()
                .ok()
                .and_then(|s| s.name(slot))
                .unwrap_or_default(),
            (None, None) => String::new(),
        }
    }

    /// Whether `self` and `other` are the same collection.
    pub fn same(&self, other: &Target) -> bool {
        self.view.collection_id == other.view.collection_id
    }
}

/// The collection named `name`: from shared memory, else this transaction's
/// registration, else its row (read as the extension's owner).
pub fn target_named(name: &str) -> SqlResult<Target> {
    if let Some((slot, view)) = shmem::shared()?.view(name) {
        return Ok(Target::shared(slot, view));
    }
    if let Some(view) = xact::pending_view(name) {
        return Ok(Target::unshared(name, view));
    }
    let installed = installation::installed().ok_or_else(|| SqlError::unknown_collection(name))?;
    let collection = installation::as_owner(installed, || store::collections::find(name))?;
    Ok(Target::unshared(name, collection.view()))
}

/// The gate's answer to one call.
pub struct Answer {
    pub verdict: Verdict,
    pub allowed: bool,
    pub lambda_norm: f64,
    /// Set when the gate is switched off.
    pub disabled: bool,
    pub slot: Option<SlotRef>,
    /// When it was decided.
    pub at: Micros,
}

impl Answer {
    /// Counts this decision in the gate's statistics as `outcome`.
    pub fn count(&self, outcome: Outcome) {
        if let (Some(slot), Ok(shared)) = (self.slot, shmem::shared()) {
            shared.tally(slot, self.verdict.operation, outcome, self.at);
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

    /// The answer as `ruvector_integrity_gate` returns it.
    pub fn to_jsonb(&self, collection: &str) -> jsonb::Built {
        let verdict = &self.verdict;
        let reason = self.reason();
        jsonb::object(&[
            ("collection", Scalar::Text(collection)),
            ("operation", Scalar::Text(verdict.operation.name())),
            ("allowed", Scalar::Bool(self.allowed)),
            ("decision", Scalar::Text(verdict.decision.as_str())),
            ("throttle_pct", Scalar::Int(verdict.throttle_pct.into())),
            (
                "retry_after_secs",
                Scalar::Int(verdict.retry_after_secs.into()),
            ),
            ("state", Scalar::Text(verdict.state.as_str())),
            ("reason", Scalar::Text(&reason)),
            ("risk", Scalar::Text(verdict.risk().as_str())),
            ("lambda_norm", Scalar::Float(self.lambda_norm)),
            ("stale", Scalar::Bool(verdict.stale)),
        ])
    }
}

/// A uniform roll in [0, 1) from the backend's PRNG.
fn roll() -> f64 {
    // SAFETY: the backend's own PRNG state, used by this backend only.
    unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) }
}

/// Decides `op` on `target`; `already_rolled` skips the throttle roll (the
/// caller already passed it for this statement). An admitted search holds its
/// place until `executor` ends (0: until the transaction ends). The caller
/// counts the answer.
pub fn decide(
    target: &Target,
    op: Operation,
    rows: Rows,
    already_rolled: bool,
    executor: usize,
) -> Answer {
    let at = clock::now_coarse();
    let (state, stale) = target.view.in_force(at);
    let slot = target.slot;
    let policy = &target.view.policy;
    let searching = op == Operation::Search;
    let limit = if searching {
        policy.max_concurrent_searches(state)
    } else {
        0
    };
    let shared = slot
        .filter(|_| searching)
        .and_then(|_| shmem::shared().ok());
    let held = slot.filter(|_| searching).and_then(xact::held_place);
    // (Counted only where a limit applies: that reads every backend's row.)
    let (counted, announced) = match (shared, slot) {
        (Some(shared), Some(slot)) if limit > 0 => shared.live_searches(slot),
        _ => (0, 0),
    };
    let live_searches = (counted + announced).saturating_sub(u32::from(held.is_some()));
    let mut verdict = gate::decide(
        policy,
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
    // A search takes its place ([`shmem::Place`]: with a limit, by one
    // compare-and-swap, so that callers racing for the last place never
    // exceed the limit together); a backend that holds the place already
    // adds a hold on it.
    if allowed && !disabled {
        if let (Some(shared), Some(slot)) = (shared, slot) {
            if held.is_none() {
                xact::give_back_at_exit();
            }
            match held.or_else(|| shared.take_place(slot, limit, announced)) {
                Some(place) => xact::hold_search(place, executor),
                None => {
                    verdict = verdict.over_search_limit(limit);
                    allowed = false;
                }
            }
        }
    }
    Answer {
        verdict,
        allowed,
        lambda_norm: target.view.lambda_norm,
        disabled,
        slot,
        at,
    }
}

/// Counts an allowed `op` on `slot` that was decided before, provisionally.
pub fn count_allowed(slot: Option<SlotRef>, op: Operation) {
    if let (Ok(shared), Some(slot), true) = (shmem::shared(), slot, gucs::INTEGRITY_ENABLED.get()) {
        shared.tally(slot, op, Outcome::Allowed, clock::now());
    }
}

/// Adds a hold for `executor` on `slot`'s search place if this backend holds
/// it already: a query nested in a search of the same collection (a function
/// it calls) is part of that search. Returns whether it did.
pub fn join_search(slot: Option<SlotRef>, executor: usize) -> bool {
    let held = slot.and_then(xact::held_place);
    if let Some(place) = held {
        xact::hold_search(place, executor);
    }
    held.is_some()
}

/// Refuses (`42501`) a role that could not run the statement `op` stands for
/// on the collection's table: the answer (and a search's place in the
/// concurrent count, held to the end of the transaction) is for those who could.
fn check_may_ask(collection: &str, relid: pg_sys::Oid, op: Operation) -> SqlResult<()> {
    let needs = op.needs();
    if privileges::has(needs, relid, privileges::current()) {
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

/// A gate call from SQL: decided, counted, and (for a search) held to the
/// end of the transaction. Advisory: the bypass does not change its answer.
fn call(collection: &str, operation: &str) -> SqlResult<Answer> {
    let op = Operation::parse(operation)?;
    let target = target_named(collection)?;
    check_may_ask(collection, target.view.relid, op)?;
    let answer = decide(&target, op, Rows::Later, false, 0);
    if !answer.disabled {
        answer.count(answer.outcome());
    }
    Ok(answer)
}

/// May `operation` run on `collection` now? The decision as JSON:
/// `allowed`, `decision` (allow, throttle, defer, reject), `throttle_pct`,
/// `retry_after_secs`, `state`, `reason`, `risk`, `lambda_norm`, `stale`.
#[pg_extern(volatile)]
fn ruvector_integrity_gate(collection: &str, operation: &str) -> jsonb::Built {
    call(collection, operation).or_raise().to_jsonb(collection)
}

/// The gate's decision for this call as a boolean, for hot call sites.
#[pg_extern(volatile)]
fn ruvector_integrity_allowed(collection: &str, operation: &str) -> bool {
    call(collection, operation).or_raise().allowed
}

/// The gate's statistics: per collection, operation and outcome, how many
/// decisions and the last one's time (Unix µs). Behind the view
/// `ruvector.integrity_gate_stats`.
#[pg_extern(schema = "ruvector", name = "_integrity_gate_stats")]
fn integrity_gate_stats() -> TableIterator<
    'static,
    (
        name!(collection, String),
        name!(operation, String),
        name!(decision, String),
        name!(count, i64),
        name!(last_at_unix_us, i64),
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

/// Sets the gate's counters of `collection` (of every collection whose table
/// the caller owns, if NULL) back to zero; returns how many collections it
/// reset. A collection's counters are its table owner's to reset.
#[pg_extern(schema = "ruvector", name = "_integrity_gate_stats_reset")]
fn integrity_gate_stats_reset(collection: Option<&str>) -> i32 {
    let shared = shmem::shared().or_raise();
    let may_reset = |c: &store::collections::Collection| {
        privileges::require_owner(
            c.relid,
            &c.qualified_table(),
            "reset the gate statistics of",
            &c.name,
        )
    };
    let names: Vec<String> = match collection {
        Some(name) => {
            let found = store::collections::find(name).or_raise();
            may_reset(&found).or_raise();
            vec![found.name]
        }
        None => store::collections::load(None)
            .or_raise()
            .into_iter()
            .filter(|c| may_reset(c).is_ok())
            .map(|c| c.name)
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
