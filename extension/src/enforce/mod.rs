//! Enforcement: the gate applied to real statements on a collection's
//! relations (its table and every partition, as the relation map in shared
//! memory lists them).
//!
//! - INSERT, UPDATE, DELETE and MERGE ([`executor`]): decided when the
//!   statement has run, before its AFTER triggers and its commit, with the
//!   exact number of rows it touched. One row is an insert or a delete; more
//!   is a bulk insert or bulk delete.
//! - Utility statements ([`utility`]): COPY FROM (a bulk insert, decided
//!   before a byte is read and checked again against the batch limit once the
//!   rows are counted), TRUNCATE, index builds, table rewrites, partitions
//!   coming and going, and the statements that would move rows in or out of a
//!   collection past the gate.
//!
//! Both are hooks, not triggers: nothing is installed on the user's tables, so
//! there is nothing a table owner could disable, drop or replace, and foreign
//! partitions (which cannot keep transition tables) are gated like any other.
//! Both decide from shared memory only, and do nothing, without SQL, for
//! relations that are not a collection's.
//!
//! A refusal is an ERROR, so the statement's effects roll back whole:
//! `55000` (object_not_in_prerequisite_state) for a reject, `53000`
//! (insufficient_resources) for a defer or a throttle, which are worth retrying.

mod drops;
mod executor;
mod utility;

use pgrx::pg_sys;
use pgrx::pg_sys::ffi::pg_guard_ffi_boundary;
use pgrx::prelude::*;
use ruvector_integrity::gate::{Decision, Operation};

use crate::errors::{SqlError, SqlResult};
use crate::gate::{self, Answer};
use crate::shmem::{GatedRelation, RelationFlags};
use crate::{gucs, sync, xact};

/// Installs the executor and utility hooks; called from `_PG_init`.
pub use utility::forget_in_flight;

pub fn install_hooks() {
    executor::install_hooks();
    utility::install_hook();
    drops::install_hook();
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
pub fn gate_operation(collection: &str, op: Operation) -> SqlResult<()> {
    enforce(collection, op, None, false)
}

/// Puts `op` on `collection` through the gate; an error if it is refused.
/// `rolled` skips the throttle roll (this statement already passed it).
fn enforce(collection: &str, op: Operation, rows: Option<u64>, rolled: bool) -> SqlResult<()> {
    if !gucs::INTEGRITY_ENABLED.get() {
        return Ok(());
    }
    let answer = gate::check(collection, op, rows, rolled)?;
    if answer.allowed {
        Ok(())
    } else {
        Err(refusal(collection, &answer))
    }
}

/// The operation a statement that adds `rows` rows is (None: no rows, nothing to gate).
fn insertion(rows: Option<u64>) -> Option<Operation> {
    match rows {
        Some(0) => None,
        Some(1) => Some(Operation::Insert),
        _ => Some(Operation::BulkInsert),
    }
}

/// The operation a statement that removes `rows` rows is.
fn deletion(rows: Option<u64>) -> Option<Operation> {
    match rows {
        Some(0) => None,
        Some(1) => Some(Operation::Delete),
        _ => Some(Operation::BulkDelete),
    }
}

/// The collection `relid` belongs to: shared memory, or a registration or a
/// new partition of this transaction (none once this transaction unregistered
/// it). No SQL, but once after a server start, before the worker's first
/// refresh: then this backend fills shared memory itself (see [`sync::ensure`]).
fn collection_of(relid: pg_sys::Oid) -> Option<GatedRelation> {
    if relid == pg_sys::InvalidOid {
        return None;
    }
    let shared = crate::shmem::shared().ok()?;
    shared
        .relation(relid)
        .or_else(|| xact::pending_relation(relid))
        .or_else(|| {
            sync::ensure(shared)
                .then(|| shared.relation(relid))
                .flatten()
        })
        .filter(|gated| !xact::unregistered_here(&gated.collection))
}

unsafe extern "C-unwind" {
    /// `catalog/pg_inherits.h`: `relid` and every relation under it.
    fn find_all_inheritors(
        relid: pg_sys::Oid,
        lockmode: pg_sys::LOCKMODE,
        parents: *mut *mut pg_sys::List,
    ) -> *mut pg_sys::List;
}

/// `relid` and every partition under it (not inheritance children).
pub fn tree(relid: pg_sys::Oid) -> Vec<(pg_sys::Oid, RelationFlags)> {
    let all = unsafe {
        let list = pg_guard_ffi_boundary(|| {
            find_all_inheritors(relid, pg_sys::NoLock as _, std::ptr::null_mut())
        });
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).oid_value)
            .collect::<Vec<_>>()
    };
    all.into_iter()
        .filter(|&r| r == relid || unsafe { pg_sys::get_rel_relispartition(r) })
        .map(|r| (r, RelationFlags { root: false }))
        .collect()
}
