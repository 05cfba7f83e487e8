//! Enforcement: the gate applied to real statements on a registered table.
//!
//! - INSERT, UPDATE, DELETE and TRUNCATE: statement triggers installed at
//!   registration on the table and each of its partitions call
//!   `ruvector._enforce` with the statement's row count. One row is an insert or
//!   a delete; more is a bulk insert or bulk delete; COPY is always a bulk insert.
//! - CREATE INDEX and REINDEX (index builds), VACUUM FULL and CLUSTER
//!   (compaction), COPY FROM (bulk insert): a ProcessUtility hook, before the
//!   command runs.
//!
//! A refusal is an ERROR, so the statement's effects roll back whole:
//! `55000` (object_not_in_prerequisite_state) for a reject, `53000`
//! (insufficient_resources) for a defer or a throttle, which are worth retrying.

use std::cell::RefCell;

use pgrx::pg_sys;
use pgrx::pg_sys::ffi::pg_guard_ffi_boundary;
use pgrx::prelude::*;
use ruvector_integrity::gate::{Decision, Operation};

use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::gate::{self, Answer};
use crate::gucs;

const COLLECTIONS_ON: &str = include_str!("../sql/queries/collections_on.sql");

thread_local! {
    /// Tables whose COPY FROM the utility hook already let through in this
    /// transaction: the statement trigger then counts it as a bulk insert and
    /// does not roll the throttle again.
    static COPY_PASSED: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
}

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

pub fn install_hook() {
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// Forgets COPY passes at the end of a transaction.
pub fn end_of_transaction() {
    COPY_PASSED.with(|c| c.borrow_mut().clear());
}

/// Installs the statement triggers of collection `id` on its table and partitions.
pub fn install_triggers(id: i32, name: &str, table: pg_sys::Oid) -> SqlResult<()> {
    Spi::run_with_args(
        "SELECT ruvector._install_gate_triggers($1, $2, $3)",
        &[id.into(), name.into(), table.into()],
    )?;
    Ok(())
}

/// Drops the statement triggers of collection `id`, wherever they are.
pub fn remove_triggers(id: i32) -> SqlResult<()> {
    Spi::run_with_args("SELECT ruvector._remove_gate_triggers($1)", &[id.into()])?;
    Ok(())
}

/// Refuses the statement unless the gate allows it.
fn refuse_unless_allowed(collection: &str, answer: &Answer) -> SqlResult<()> {
    if answer.allowed {
        return Ok(());
    }
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
    Err(SqlError::new(
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
    .hint(hint))
}

/// Called by the statement trigger: `statement` is insert, update, delete or
/// truncate, `rows` the rows it touched (-1 when unknown).
#[pg_extern(schema = "ruvector", name = "_enforce")]
fn enforce(collection: &str, statement: &str, rows: i64, table: pg_sys::Oid) {
    enforce_statement(collection, statement, rows, table).or_raise()
}

fn enforce_statement(
    collection: &str,
    statement: &str,
    rows: i64,
    table: pg_sys::Oid,
) -> SqlResult<()> {
    if !gucs::INTEGRITY_ENABLED.get() || rows == 0 {
        return Ok(());
    }
    // A COPY the utility hook let through is consumed by its own trigger.
    let copied = statement == "insert"
        && COPY_PASSED.with(|c| {
            let mut passed = c.borrow_mut();
            let found = passed.iter().position(|&t| t == table);
            found.map(|i| passed.remove(i)).is_some()
        });
    let op = match statement {
        "insert" if copied || rows > 1 => Operation::BulkInsert,
        "insert" => Operation::Insert,
        "update" => Operation::Update,
        "delete" if rows > 1 => Operation::BulkDelete,
        "delete" => Operation::Delete,
        "truncate" => Operation::BulkDelete,
        other => return Err(SqlError::internal(format!("unexpected statement {other}"))),
    };
    let rows = u64::try_from(rows).ok();
    let answer = gate::check(collection, op, rows, copied)?;
    refuse_unless_allowed(collection, &answer)
}

/// Which tables a utility statement touches.
enum Scope {
    /// A table (a partition stands for the tables it is a partition of).
    Table(pg_sys::Oid),
    Schema(pg_sys::Oid),
    Database,
}

/// The registered collections in `scope`. Read from the tables, so that a
/// collection registered earlier in the same transaction counts too; these
/// statements are rare and heavy, unlike the gate's fast path.
fn collections_in(scope: Scope) -> SqlResult<Vec<String>> {
    let (tables, schema): (Option<Vec<i64>>, Option<pg_sys::Oid>) = match scope {
        Scope::Table(relid) if relid == pg_sys::InvalidOid => return Ok(Vec::new()),
        Scope::Table(relid) => {
            let mut tables = vec![relid];
            if unsafe { pg_sys::get_rel_relispartition(relid) } {
                tables.extend(unsafe {
                    list_oids(pg_guard_ffi_boundary(|| get_partition_ancestors(relid)))
                });
            }
            (
                Some(tables.into_iter().map(|t| u32::from(t) as i64).collect()),
                None,
            )
        }
        Scope::Schema(namespace) => (None, Some(namespace)),
        Scope::Database => (None, None),
    };
    let names = with_snapshot(|| {
        match Spi::get_one::<bool>("SELECT to_regclass('ruvector.collections') IS NOT NULL")? {
            Some(true) => Ok(Spi::get_one_with_args::<pgrx::JsonB>(
                COLLECTIONS_ON,
                &[tables.into(), schema.into()],
            )?),
            _ => Ok(None),
        }
    })?;
    Ok(names
        .map(|j| serde_json::from_value(j.0))
        .transpose()?
        .unwrap_or_default())
}

/// Runs `body` with an active snapshot, pushing one if the utility statement
/// runs without (VACUUM does): SPI needs one.
fn with_snapshot<R>(body: impl FnOnce() -> SqlResult<R>) -> SqlResult<R> {
    let needs_snapshot = unsafe { !pg_sys::ActiveSnapshotSet() };
    if needs_snapshot {
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    }
    let result = body();
    if needs_snapshot {
        unsafe { pg_sys::PopActiveSnapshot() };
    }
    result
}

/// The partitioned table a statement adds a partition to (CREATE TABLE ...
/// PARTITION OF, ALTER TABLE ... ATTACH PARTITION), if any.
unsafe fn new_partition_of(stmt: *mut pg_sys::Node) -> Option<pg_sys::Oid> {
    use pg_sys::NodeTag::*;
    if stmt.is_null() {
        return None;
    }
    match (*stmt).type_ {
        T_CreateStmt => {
            let s = stmt.cast::<pg_sys::CreateStmt>();
            if (*s).partbound.is_null() {
                return None;
            }
            list_ptrs::<pg_sys::RangeVar>((*s).inhRelations)
                .first()
                .map(|&parent| relid_of(parent))
        }
        T_AlterTableStmt => {
            let s = stmt.cast::<pg_sys::AlterTableStmt>();
            let attaches = list_ptrs::<pg_sys::AlterTableCmd>((*s).cmds)
                .iter()
                .any(|&c| (*c).subtype == pg_sys::AlterTableType::AT_AttachPartition);
            attaches.then(|| relid_of((*s).relation))
        }
        _ => None,
    }
}

/// A new partition of a registered table gets its statement triggers at once.
fn guard_new_partition(parent: pg_sys::Oid) -> SqlResult<()> {
    with_snapshot(|| {
        for name in collections_in(Scope::Table(parent))? {
            let row = crate::collections::find(&name)?;
            install_triggers(row.id, &row.name, row.relid())?;
        }
        Ok(())
    })
}

unsafe extern "C-unwind" {
    /// `catalog/partition.h`, which pgrx does not bind: the tables `relid` is a
    /// partition of, nearest first.
    fn get_partition_ancestors(relid: pg_sys::Oid) -> *mut pg_sys::List;
}

unsafe fn list_oids(list: *mut pg_sys::List) -> Vec<pg_sys::Oid> {
    if list.is_null() {
        return Vec::new();
    }
    (0..(*list).length as usize)
        .map(|i| (*(*list).elements.add(i)).oid_value)
        .collect()
}

unsafe fn list_ptrs<T>(list: *mut pg_sys::List) -> Vec<*mut T> {
    if list.is_null() {
        return Vec::new();
    }
    (0..(*list).length as usize)
        .map(|i| (*(*list).elements.add(i)).ptr_value.cast::<T>())
        .collect()
}

unsafe fn relid_of(range: *mut pg_sys::RangeVar) -> pg_sys::Oid {
    if range.is_null() {
        return pg_sys::InvalidOid;
    }
    pg_sys::RangeVarGetRelidExtended(
        range,
        pg_sys::NoLock as _,
        pg_sys::RVROption::RVR_MISSING_OK,
        None,
        std::ptr::null_mut(),
    )
}

/// What a utility statement means for the gate: the operation, the tables it
/// touches, and for COPY FROM the table copied into.
unsafe fn gated(stmt: *mut pg_sys::Node) -> Option<(Operation, Vec<Scope>, Option<pg_sys::Oid>)> {
    use pg_sys::NodeTag::*;
    if stmt.is_null() {
        return None;
    }
    match (*stmt).type_ {
        T_IndexStmt => {
            let s = stmt.cast::<pg_sys::IndexStmt>();
            Some((
                Operation::IndexBuild,
                vec![Scope::Table(relid_of((*s).relation))],
                None,
            ))
        }
        T_ReindexStmt => {
            let s = stmt.cast::<pg_sys::ReindexStmt>();
            use pg_sys::ReindexObjectType::*;
            let scope = match (*s).kind {
                REINDEX_OBJECT_INDEX => {
                    let index = relid_of((*s).relation);
                    Scope::Table(if index == pg_sys::InvalidOid {
                        index
                    } else {
                        pg_sys::IndexGetRelation(index, true)
                    })
                }
                REINDEX_OBJECT_TABLE => Scope::Table(relid_of((*s).relation)),
                REINDEX_OBJECT_SCHEMA => Scope::Schema(pg_sys::get_namespace_oid((*s).name, true)),
                _ => Scope::Database,
            };
            Some((Operation::IndexBuild, vec![scope], None))
        }
        T_VacuumStmt => {
            let s = stmt.cast::<pg_sys::VacuumStmt>();
            let full = list_ptrs::<pg_sys::DefElem>((*s).options)
                .into_iter()
                .any(|d| {
                    std::ffi::CStr::from_ptr((*d).defname).to_bytes() == b"full"
                        && pg_sys::defGetBoolean(d)
                });
            if !(*s).is_vacuumcmd || !full {
                return None;
            }
            let rels = list_ptrs::<pg_sys::VacuumRelation>((*s).rels);
            let scopes = if rels.is_empty() {
                vec![Scope::Database]
            } else {
                rels.into_iter()
                    .map(|r| {
                        Scope::Table(if (*r).oid != pg_sys::InvalidOid {
                            (*r).oid
                        } else {
                            relid_of((*r).relation)
                        })
                    })
                    .collect()
            };
            Some((Operation::Compaction, scopes, None))
        }
        T_ClusterStmt => {
            let s = stmt.cast::<pg_sys::ClusterStmt>();
            let scope = if (*s).relation.is_null() {
                Scope::Database
            } else {
                Scope::Table(relid_of((*s).relation))
            };
            Some((Operation::Compaction, vec![scope], None))
        }
        T_CopyStmt => {
            let s = stmt.cast::<pg_sys::CopyStmt>();
            if !(*s).is_from || (*s).relation.is_null() {
                return None;
            }
            let relid = relid_of((*s).relation);
            Some((
                Operation::BulkInsert,
                vec![Scope::Table(relid)],
                Some(relid),
            ))
        }
        _ => None,
    }
}

fn gate_utility(stmt: *mut pg_sys::Node) -> SqlResult<()> {
    if !gucs::INTEGRITY_ENABLED.get() {
        return Ok(());
    }
    let Some((op, scopes, copy_into)) = (unsafe { gated(stmt) }) else {
        return Ok(());
    };
    let mut collections = Vec::new();
    for scope in scopes {
        collections.extend(collections_in(scope)?);
    }
    collections.sort();
    collections.dedup();
    for collection in &collections {
        let answer = gate::check(collection, op, None, false)?;
        refuse_unless_allowed(collection, &answer)?;
    }
    if let Some(relid) = copy_into.filter(|_| !collections.is_empty()) {
        COPY_PASSED.with(|c| c.borrow_mut().push(relid));
    }
    Ok(())
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    unsafe {
        let stmt = (*pstmt).utilityStmt;
        gate_utility(stmt).or_raise();
        let partition_of = new_partition_of(stmt);
        match PREV_PROCESS_UTILITY {
            Some(prev) => pg_guard_ffi_boundary(|| {
                prev(
                    pstmt,
                    query_string,
                    read_only_tree,
                    context,
                    params,
                    query_env,
                    dest,
                    qc,
                )
            }),
            None => pg_sys::standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
        if let Some(parent) = partition_of {
            guard_new_partition(parent).or_raise();
        }
    }
}
