//! Enforcement: the gate applied to real statements on a collection's
//! relations (its table and every partition, as the relation map in shared
//! memory lists them).
//!
//! - INSERT, UPDATE, DELETE and MERGE ([`executor`]): decided when the
//!   statement has run, before its AFTER triggers and its commit, with the
//!   exact number of rows it touched. One row is an insert or a delete; more
//!   is a bulk insert or bulk delete. Searches are decided when the executor
//!   starts.
//! - Utility statements ([`utility`], what each means: [`statements`]): COPY
//!   FROM (a bulk insert, decided before a byte is read and checked again
//!   against the batch limit once the rows are counted), TRUNCATE, index
//!   builds, table rewrites, partitions coming and going, and the statements
//!   that would move rows in or out of a collection past the gate.
//! - Every emptying or drop of a relation ([`drops`]).
//!
//! They are hooks, not triggers: nothing is installed on the user's tables, so
//! there is nothing a table owner could disable, drop or replace, and foreign
//! partitions (which cannot keep transition tables) are gated like any other.
//! They decide from shared memory only, and do nothing, without SQL, for
//! relations that are not a collection's, or statements the role may not run
//! (PostgreSQL refuses those itself).
//!
//! A refusal is an ERROR, so the statement's effects roll back whole:
//! `55000` (object_not_in_prerequisite_state) for a reject, `53000`
//! (insufficient_resources) for a defer or a throttle, which are worth retrying.

mod drops;
mod executor;
mod statements;
mod utility;

use std::collections::BTreeMap;

use pgrx::pg_sys;
use pgrx::prelude::*;
use ruvector_integrity::audit::Event;
use ruvector_integrity::gate::{Decision, Operation, Outcome, Rows};
use serde_json::json;

use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::gate::{self, Answer, Target};
use crate::{clock, gucs, installation, privileges, shmem, store, sync, xact};

/// Installs the executor, utility and object access hooks, and what they
/// need done at transaction boundaries; called from `_PG_init`.
pub fn install() {
    executor::install_hooks();
    utility::install_hook();
    drops::install_hook();
    xact::install_callbacks(xact::Callbacks {
        before_commit: audit_bypasses,
        at_end: utility::forget_in_flight,
    });
}

/// The error a refused statement raises.
pub fn refusal(collection: &str, answer: &Answer) -> SqlError {
    let verdict = &answer.verdict;
    let op = verdict.operation.name();
    let (code, hint) = match verdict.decision {
        Decision::Reject => (
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "The policy does not allow {op} in state {}. Retry once the collection has recovered (see ruvector_integrity_status('{collection}')); an administrator can pin a state with ruvector_integrity_override().",
                verdict.state.as_str()
            ),
        ),
        _ => (
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES,
            format!("Retry after {} seconds.", verdict.retry_after_secs.max(1)),
        ),
    };
    SqlError::new(
        code,
        format!(
            "ruvector refused {op} on collection \"{collection}\" in state {}: {}",
            verdict.state.as_str(),
            answer.reason()
        ),
    )
    .detail(format!(
        "decision: {}, risk: {}, lambda_norm: {}, stale: {}, retry_after_secs: {}",
        verdict.decision.as_str(),
        verdict.risk().as_str(),
        if answer.lambda_norm.is_finite() {
            format!("{:.4}", answer.lambda_norm)
        } else {
            "none".into()
        },
        verdict.stale,
        verdict.retry_after_secs
    ))
    .hint(hint)
}

/// Puts an operation the extension itself runs (IVF training) through the
/// gate; an error if it is refused.
pub fn gate_operation(target: &Target, op: Operation) -> SqlResult<()> {
    enforce(target, op, Rows::Later, false)
}

/// Puts `op` on `target` through the gate; an error if it is refused.
/// `rolled` skips the throttle roll (this statement already passed it).
fn enforce(target: &Target, op: Operation, rows: Rows, rolled: bool) -> SqlResult<()> {
    decide(target, op, rows, rolled, 0, true)
}

/// As [`enforce`], for a first look at a statement that a later check will
/// count: an allowed answer is not counted yet.
fn enforce_provisionally(target: &Target, op: Operation) -> SqlResult<()> {
    decide(target, op, Rows::Later, false, 0, false)
}

/// The gate's decision, counted, with the operator's bypass applied. An
/// admitted search holds its place until `executor` ends (0: the transaction).
fn decide(
    target: &Target,
    op: Operation,
    rows: Rows,
    rolled: bool,
    executor: usize,
    count_allowed: bool,
) -> SqlResult<()> {
    if !gucs::INTEGRITY_ENABLED.get() {
        return Ok(());
    }
    let answer = gate::decide(target, op, rows, rolled, executor);
    if answer.allowed {
        if count_allowed {
            answer.count(Outcome::Allowed);
        }
        Ok(())
    } else if bypassing() {
        // A provisional look is bypassed again, and counted, by the later check.
        if count_allowed {
            answer.count(Outcome::Bypassed);
            xact::record_bypass(xact::Bypass {
                collection: target.name(),
                operation: op,
                role: privileges::caller_name(),
            });
        }
        Ok(())
    } else {
        answer.count(answer.outcome());
        Err(refusal(&target.name(), &answer))
    }
}

/// Whether `ruvector.integrity_bypass` lets a refused statement through: it is
/// on, the session's role may use it, and the transaction can write the audit
/// event (a read-only transaction cannot: its statements stay refused).
fn bypassing() -> bool {
    // SAFETY: reads the transaction's read-only flag.
    gucs::INTEGRITY_BYPASS.get() && unsafe { !pg_sys::XactReadOnly } && privileges::may_bypass()
}

/// Writes the statements the bypass let through in this transaction to the
/// audit trail: one event per collection and role, with a count per
/// operation. Called before the transaction commits.
fn audit_bypasses(bypasses: Vec<xact::Bypass>) {
    let mut grouped: BTreeMap<(String, String), BTreeMap<&'static str, u64>> = BTreeMap::new();
    for b in bypasses {
        *grouped
            .entry((b.collection, b.role))
            .or_default()
            .entry(b.operation.name())
            .or_default() += 1;
    }
    if installation::installed().is_none() {
        return; // the extension was dropped in this transaction
    }
    append_bypass_events(grouped.into_iter().map(|((collection, role), operations)| {
        let metadata = json!({
            "setting": "ruvector.integrity_bypass",
            "statements": operations.values().sum::<u64>(),
            "operations": operations,
            "by": role,
        });
        (collection, metadata)
    }))
    .or_raise();
}

/// Appends `gate_bypass` events (collection, metadata) to the audit trail as
/// the extension's owner, for the worker to sign once they commit.
fn append_bypass_events(
    events: impl IntoIterator<Item = (String, serde_json::Value)>,
) -> SqlResult<()> {
    let installed = installation::installed()
        .ok_or_else(|| SqlError::internal("ruvector is not installed here"))?;
    utility::with_snapshot(|| {
        installation::as_owner(installed, || {
            for (collection, metadata) in events {
                let event = Event::new(
                    None,
                    &collection,
                    "gate_bypass",
                    None,
                    None,
                    &metadata,
                    clock::now(),
                );
                store::events::append_pending(&event)?;
            }
            Ok(())
        })
    })?;
    xact::wake_worker_at_commit();
    Ok(())
}

/// The collection `relid` belongs to: shared memory, or a registration or a
/// new partition of this transaction (none once this transaction unregistered
/// it). No SQL, but once after a server start, before the worker's first
/// refresh: then this backend fills shared memory itself (see [`sync::ensure`]).
fn collection_of(relid: pg_sys::Oid) -> Option<Target> {
    if relid == pg_sys::InvalidOid {
        return None;
    }
    let shared = shmem::shared().ok()?;
    let target = match shared.relation(relid) {
        Some((slot, view)) => Target::shared(slot, view),
        None => match xact::pending_relation(relid) {
            // A new partition of this transaction: its collection was
            // registered here too, or shared memory holds it.
            Some(name) => match xact::pending_view(&name) {
                Some(view) => Target::unshared(&name, view),
                None => {
                    let (slot, view) = shared.view(&name)?;
                    Target::shared(slot, view)
                }
            },
            None if sync::ensure(shared) => {
                let (slot, view) = shared.relation(relid)?;
                Target::shared(slot, view)
            }
            None => return None,
        },
    };
    // (Checked by name only when this transaction unregistered anything.)
    if xact::unregistered_anything() && xact::unregistered_here(&target.name()) {
        return None;
    }
    Some(target)
}

/// The pointers a PostgreSQL `List` holds.
///
/// # Safety
/// `list` is NULL or a valid `List` of pointers to `T`.
unsafe fn list<T>(list: *mut pg_sys::List) -> Vec<*mut T> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: per the function's contract, `length` cells of pointers.
    unsafe {
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).ptr_value.cast::<T>())
            .collect()
    }
}
