//! The gate's SQL functions. The fast path reads shared memory only: a lookup
//! under a shared lock, the core's decision, and a random roll for throttles.
//! A collection shared memory does not hold yet (registered in this
//! transaction, or before the worker's first refresh) is read from the tables.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::gate::{self, Decision, GateInput, Operation, Verdict};
use ruvector_integrity::hysteresis::State;
use ruvector_integrity::SECOND;
use serde_json::json;

use crate::errors::{OrRaise, SqlResult};
use crate::shmem::{self, CollectionView};
use crate::{clock, collections, gucs, xact};

/// The gate's answer to one call.
pub struct Answer {
    pub verdict: Verdict,
    pub allowed: bool,
    pub lambda_norm: f64,
    /// Set when the gate is switched off.
    pub disabled: bool,
}

impl Answer {
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

/// Decides `op` on `collection`; `already_rolled` skips the throttle roll (the
/// caller already passed it for this statement).
pub fn check(
    collection: &str,
    op: Operation,
    rows: Option<u64>,
    already_rolled: bool,
) -> SqlResult<Answer> {
    let shared = shmem::shared()?;
    let (slot, view) = match shared.view(collection) {
        Some((slot, view)) => (Some(slot), view),
        None => (None, collections::find(collection)?.view()?),
    };
    Ok(decide(shared, slot, &view, op, rows, already_rolled))
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
    slot: Option<usize>,
    view: &CollectionView,
    op: Operation,
    rows: Option<u64>,
    already_rolled: bool,
) -> Answer {
    let (state, stale) = current_state(view, clock::now_pg());
    let counter = slot.and_then(|i| shared.live_searches(i, view.collection_id));
    let ours = slot.is_some_and(|i| xact::holds_search(i, view.collection_id));
    let live_searches = counter
        .map_or(0, |c| c.load(std::sync::atomic::Ordering::Acquire))
        .saturating_sub(u32::from(ours));
    let verdict = gate::decide(
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
    let allowed = disabled
        || match verdict.decision {
            Decision::Throttle if already_rolled => true,
            Decision::Throttle => verdict.allowed(roll()),
            _ => verdict.allowed(0.0),
        };
    if allowed && op == Operation::Search {
        if let Some(i) = slot {
            xact::hold_search(shared, i, view.collection_id);
        }
    }
    Answer {
        verdict,
        allowed,
        lambda_norm: view.lambda_norm,
        disabled,
    }
}

/// May `operation` run on `collection` now? The decision as JSON:
/// `allowed`, `decision` (allow, throttle, defer, reject), `throttle_pct`,
/// `retry_after_secs`, `state`, `reason`, `risk`, `lambda_norm`, `stale`.
#[pg_extern(volatile)]
fn ruvector_integrity_gate(collection: &str, operation: &str) -> JsonB {
    let op = Operation::parse(operation).or_raise();
    JsonB(
        check(collection, op, None, false)
            .or_raise()
            .to_json(collection),
    )
}

/// The gate's decision for this call as a boolean, for hot call sites.
#[pg_extern(volatile)]
fn ruvector_integrity_allowed(collection: &str, operation: &str) -> bool {
    let op = Operation::parse(operation).or_raise();
    check(collection, op, None, false).or_raise().allowed
}
