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

use std::collections::BTreeMap;

use pgrx::pg_sys;
use pgrx::pg_sys::ffi::pg_guard_ffi_boundary;
use pgrx::prelude::*;
use ruvector_integrity::gate::{Decision, Operation, Outcome, Rows};
use serde_json::json;

use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::gate::{self, Answer};
use crate::shmem::{GatedRelation, RelationFlags};
use crate::{audit, collections, gucs, installation, sync, xact};

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
    enforce(collection, op, Rows::Later, false)
}

/// Puts `op` on `collection` through the gate; an error if it is refused.
/// `rolled` skips the throttle roll (this statement already passed it).
fn enforce(collection: &str, op: Operation, rows: Rows, rolled: bool) -> SqlResult<()> {
    decide(collection, op, rows, rolled, 0, true)
}

/// As [`enforce`], for a first look at a statement that a later check will
/// count: an allowed answer is not counted yet.
fn enforce_provisionally(collection: &str, op: Operation) -> SqlResult<()> {
    decide(collection, op, Rows::Later, false, 0, false)
}

/// The gate's decision, counted, with the operator's bypass applied. An
/// admitted search holds its place until `executor` ends (0: the transaction).
fn decide(
    collection: &str,
    op: Operation,
    rows: Rows,
    rolled: bool,
    executor: usize,
    count_allowed: bool,
) -> SqlResult<()> {
    if !gucs::INTEGRITY_ENABLED.get() {
        return Ok(());
    }
    let answer = gate::check(collection, op, rows, rolled, executor)?;
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
                collection: collection.to_owned(),
                operation: op,
                role: collections::caller(),
            });
        }
        Ok(())
    } else {
        answer.count(answer.outcome());
        Err(refusal(collection, &answer))
    }
}

/// Whether `ruvector.integrity_bypass` lets a refused statement through: it is
/// on, the session's role may use it, and the transaction can write the audit
/// event (a read-only transaction cannot: its statements stay refused).
fn bypassing() -> bool {
    gucs::INTEGRITY_BYPASS.get() && unsafe { !pg_sys::XactReadOnly } && may_bypass()
}

/// Whether the session's role may use `ruvector.integrity_bypass`: a
/// superuser, or a role with the privileges of ruvector_admin. The session's
/// role, not a SECURITY DEFINER function's owner.
pub fn may_bypass() -> bool {
    unsafe {
        let role = pg_sys::GetOuterUserId();
        if pg_sys::superuser_arg(role) {
            return true;
        }
        let admin = pg_sys::get_role_oid(c"ruvector_admin".as_ptr(), true);
        admin != pg_sys::InvalidOid && pg_sys::has_privs_of_role(role, admin)
    }
}

/// Writes the statements the bypass let through in this transaction to the
/// audit trail: one event per collection and role, with a count per operation.
pub fn audit_bypasses(bypasses: impl Iterator<Item = xact::Bypass>) {
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
                audit::append_pending(None, &collection, "gate_bypass", None, None, metadata)?;
            }
            Ok(())
        })
    })?;
    xact::wake_worker_at_commit();
    Ok(())
}

thread_local! {
    /// Depth of the extension's own reads of collection data.
    static INTERNAL: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Runs `body`, in which the extension reads a collection's rows for itself
/// (IVF training, drift samples, registration checks): not a search.
pub fn internal<R>(body: impl FnOnce() -> R) -> R {
    struct Depth;
    impl Drop for Depth {
        fn drop(&mut self) {
            INTERNAL.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    INTERNAL.with(|d| d.set(d.get() + 1));
    let _depth = Depth;
    body()
}

fn is_internal() -> bool {
    INTERNAL.with(|d| d.get() > 0)
}

/// The operation a statement that adds `rows` rows is (None: no rows, nothing
/// to gate). Rows that are not counted are a bulk insert.
fn insertion(rows: Rows) -> Option<Operation> {
    match rows {
        Rows::Counted(0) => None,
        Rows::Counted(1) => Some(Operation::Insert),
        _ => Some(Operation::BulkInsert),
    }
}

/// The operation a statement that removes `rows` rows is.
fn deletion(rows: Rows) -> Option<Operation> {
    match rows {
        Rows::Counted(0) => None,
        Rows::Counted(1) => Some(Operation::Delete),
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

/// The pointers a PostgreSQL `List` holds.
unsafe fn list<T>(list: *mut pg_sys::List) -> Vec<*mut T> {
    if list.is_null() {
        return Vec::new();
    }
    unsafe {
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).ptr_value.cast::<T>())
            .collect()
    }
}

unsafe extern "C-unwind" {
    /// `catalog/pg_inherits.h`: `relid` and every relation under it.
    fn find_all_inheritors(
        relid: pg_sys::Oid,
        lockmode: pg_sys::LOCKMODE,
        parents: *mut *mut pg_sys::List,
    ) -> *mut pg_sys::List;
}

/// `relid` and every partition under it (not inheritance children), each
/// locked with `lock` (`NoLock`: none).
pub fn tree(relid: pg_sys::Oid, lock: pg_sys::LOCKMODE) -> Vec<(pg_sys::Oid, RelationFlags)> {
    let all = unsafe {
        let list = pg_guard_ffi_boundary(|| find_all_inheritors(relid, lock, std::ptr::null_mut()));
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).oid_value)
            .collect::<Vec<_>>()
    };
    all.into_iter()
        .filter(|&r| r == relid || unsafe { pg_sys::get_rel_relispartition(r) })
        .map(|r| (r, RelationFlags { root: false }))
        .collect()
}
