//! The ProcessUtility hook. It runs for every utility statement in every
//! database and for every role, so it asks one question first, from shared
//! memory and without SQL: does the statement touch a relation of a
//! collection (of this database)? When it does not, the hook does nothing.
//!
//! On a collection's relation:
//! - CREATE INDEX, REINDEX, ALTER TABLE ... ADD PRIMARY KEY / UNIQUE / EXCLUDE
//!   are `index_build`; VACUUM FULL, CLUSTER and table rewrites (ALTER COLUMN
//!   TYPE, SET TABLESPACE, SET ACCESS METHOD, SET LOGGED / UNLOGGED) are
//!   `compaction`; COPY FROM and ATTACH PARTITION are `bulk_insert`; TRUNCATE
//!   and DROP TABLE are `bulk_delete`. Each goes through the gate before it
//!   runs; a COPY's row count is checked against the batch limit after.
//! - Statements that move rows in or out of a collection past the gate —
//!   DETACH PARTITION, INHERIT / NO INHERIT, CREATE TABLE ... INHERITS — are
//!   refused unless the role is a superuser; a superuser's is let through and
//!   written to the audit trail as a `gate_bypass` event.
//! - A new partition (CREATE [FOREIGN] TABLE ... PARTITION OF, ATTACH
//!   PARTITION) joins its collection's relations at once.
//!
//! Never gated: anything in single-user mode or outside the postmaster,
//! `REINDEX SYSTEM`, and database-wide sweeps (VACUUM FULL, REINDEX DATABASE
//! and CLUSTER without a table), which must always be able to run.

use pgrx::pg_sys;
use pgrx::pg_sys::ffi::pg_guard_ffi_boundary;
use pgrx::prelude::*;
use ruvector_integrity::gate::Operation;
use serde_json::json;

use super::{collection_of, enforce, insertion, tree};
use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::installation;
use crate::shmem::GatedRelation;
use crate::{audit, collections, xact};

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

pub fn install_hook() {
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// What a utility statement means for ruvector, worked out before it runs.
#[derive(Default)]
struct Effects {
    /// Operations to put through the gate, on relations.
    gated: Vec<(Operation, pg_sys::Oid)>,
    /// Collection-wide operations on every collection in a schema.
    gated_schema: Option<(Operation, pg_sys::Oid)>,
    /// Would move rows in or out of a collection past the gate: (relation, what).
    bypasses: Vec<(pg_sys::Oid, String)>,
    /// The relation a COPY FROM writes into.
    copy_into: Option<pg_sys::Oid>,
    /// A partition comes in: (parent, the new partition's name) — the
    /// partition exists only once the statement has run.
    new_partition: Option<(pg_sys::Oid, *mut pg_sys::RangeVar)>,
    /// Partitions that leave a collection (a superuser's DETACH).
    detached: Vec<pg_sys::Oid>,
    /// `DROP EXTENSION ruvector`.
    drops_extension: bool,
}

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

unsafe fn text(s: *const std::ffi::c_char) -> String {
    if s.is_null() {
        String::new()
    } else {
        unsafe { std::ffi::CStr::from_ptr(s) }
            .to_string_lossy()
            .into_owned()
    }
}

/// The relation `range` names, or `InvalidOid` when there is none.
unsafe fn relid_of(range: *mut pg_sys::RangeVar) -> pg_sys::Oid {
    if range.is_null() {
        return pg_sys::InvalidOid;
    }
    unsafe {
        pg_sys::RangeVarGetRelidExtended(
            range,
            pg_sys::NoLock as _,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    }
}

/// The relation named by the qualified name `names` (a list of String nodes).
unsafe fn relid_of_names(names: &[*mut pg_sys::String]) -> pg_sys::Oid {
    unsafe {
        let parts: Vec<*mut std::ffi::c_char> = names.iter().map(|&s| (*s).sval).collect();
        let (schema, relation) = match parts.as_slice() {
            [relation] => (std::ptr::null_mut(), *relation),
            [.., schema, relation] => (*schema, *relation),
            [] => return pg_sys::InvalidOid,
        };
        relid_of(pg_sys::makeRangeVar(schema, relation, -1))
    }
}

/// What `stmt` means for the gate (see [`Effects`]).
unsafe fn effects(stmt: *mut pg_sys::Node) -> Effects {
    use pg_sys::NodeTag::*;
    let mut fx = Effects::default();
    if stmt.is_null() {
        return fx;
    }
    unsafe {
        match (*stmt).type_ {
            T_IndexStmt => {
                let s = stmt.cast::<pg_sys::IndexStmt>();
                fx.gated
                    .push((Operation::IndexBuild, relid_of((*s).relation)));
            }
            T_ReindexStmt => {
                use pg_sys::ReindexObjectType::*;
                let s = stmt.cast::<pg_sys::ReindexStmt>();
                match (*s).kind {
                    REINDEX_OBJECT_INDEX => {
                        let index = relid_of((*s).relation);
                        if index != pg_sys::InvalidOid {
                            fx.gated.push((
                                Operation::IndexBuild,
                                pg_sys::IndexGetRelation(index, true),
                            ));
                        }
                    }
                    REINDEX_OBJECT_TABLE => fx
                        .gated
                        .push((Operation::IndexBuild, relid_of((*s).relation))),
                    REINDEX_OBJECT_SCHEMA => {
                        let namespace = pg_sys::get_namespace_oid((*s).name, true);
                        fx.gated_schema = Some((Operation::IndexBuild, namespace));
                    }
                    _ => {} // SYSTEM, DATABASE: never gated
                }
            }
            T_VacuumStmt => {
                let s = stmt.cast::<pg_sys::VacuumStmt>();
                let full = list::<pg_sys::DefElem>((*s).options).into_iter().any(|d| {
                    std::ffi::CStr::from_ptr((*d).defname).to_bytes() == b"full"
                        && pg_sys::defGetBoolean(d)
                });
                if (*s).is_vacuumcmd && full {
                    for r in list::<pg_sys::VacuumRelation>((*s).rels) {
                        let relid = if (*r).oid != pg_sys::InvalidOid {
                            (*r).oid
                        } else {
                            relid_of((*r).relation)
                        };
                        fx.gated.push((Operation::Compaction, relid));
                    }
                }
            }
            T_ClusterStmt => {
                let s = stmt.cast::<pg_sys::ClusterStmt>();
                if !(*s).relation.is_null() {
                    fx.gated
                        .push((Operation::Compaction, relid_of((*s).relation)));
                }
            }
            T_CopyStmt => {
                let s = stmt.cast::<pg_sys::CopyStmt>();
                if (*s).is_from && !(*s).relation.is_null() {
                    let relid = relid_of((*s).relation);
                    fx.gated.push((Operation::BulkInsert, relid));
                    fx.copy_into = Some(relid);
                }
            }
            T_CreateStmt => create_table(&mut fx, stmt.cast()),
            T_CreateForeignTableStmt => create_table(
                &mut fx,
                &raw mut (*stmt.cast::<pg_sys::CreateForeignTableStmt>()).base,
            ),
            T_AlterTableStmt => alter_table(&mut fx, stmt.cast()),
            T_TruncateStmt => {
                let s = stmt.cast::<pg_sys::TruncateStmt>();
                for r in list::<pg_sys::RangeVar>((*s).relations) {
                    fx.gated.push((Operation::BulkDelete, relid_of(r)));
                }
            }
            T_DropStmt => {
                let s = stmt.cast::<pg_sys::DropStmt>();
                match (*s).removeType {
                    pg_sys::ObjectType::OBJECT_TABLE | pg_sys::ObjectType::OBJECT_FOREIGN_TABLE => {
                        for names in list::<pg_sys::List>((*s).objects) {
                            let relid = relid_of_names(&list::<pg_sys::String>(names));
                            fx.gated.push((Operation::BulkDelete, relid));
                        }
                    }
                    pg_sys::ObjectType::OBJECT_EXTENSION => {
                        fx.drops_extension = list::<pg_sys::String>((*s).objects)
                            .iter()
                            .any(|&n| text((*n).sval) == "ruvector");
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    fx
}

unsafe fn create_table(fx: &mut Effects, s: *mut pg_sys::CreateStmt) {
    unsafe {
        let parents: Vec<pg_sys::Oid> = list::<pg_sys::RangeVar>((*s).inhRelations)
            .into_iter()
            .map(|r| relid_of(r))
            .collect();
        if !(*s).partbound.is_null() {
            if let Some(&parent) = parents.first() {
                fx.new_partition = Some((parent, (*s).relation));
            }
        } else {
            for parent in parents {
                fx.bypasses
                    .push((parent, "CREATE TABLE ... INHERITS".to_owned()));
            }
        }
    }
}

#[allow(non_upper_case_globals)]
unsafe fn alter_table(fx: &mut Effects, s: *mut pg_sys::AlterTableStmt) {
    use pg_sys::AlterTableType::*;
    unsafe {
        if !matches!(
            (*s).objtype,
            pg_sys::ObjectType::OBJECT_TABLE | pg_sys::ObjectType::OBJECT_FOREIGN_TABLE
        ) {
            return;
        }
        let relid = relid_of((*s).relation);
        for cmd in list::<pg_sys::AlterTableCmd>((*s).cmds) {
            match (*cmd).subtype {
                AT_DetachPartition | AT_DetachPartitionFinalize => {
                    let partition = relid_of((*(*cmd).def.cast::<pg_sys::PartitionCmd>()).name);
                    fx.bypasses
                        .push((relid, "ALTER TABLE ... DETACH PARTITION".into()));
                    fx.detached.push(partition);
                }
                AT_AddInherit | AT_DropInherit => {
                    let parent = relid_of((*cmd).def.cast::<pg_sys::RangeVar>());
                    let what = if (*cmd).subtype == AT_AddInherit {
                        "INHERIT"
                    } else {
                        "NO INHERIT"
                    };
                    fx.bypasses.push((relid, format!("ALTER TABLE ... {what}")));
                    fx.bypasses
                        .push((parent, format!("ALTER TABLE ... {what}")));
                }
                AT_AttachPartition => {
                    fx.gated.push((Operation::BulkInsert, relid));
                    fx.new_partition =
                        Some((relid, (*(*cmd).def.cast::<pg_sys::PartitionCmd>()).name));
                }
                AT_AddConstraint | AT_AddIndex if builds_index((*cmd).def) => {
                    fx.gated.push((Operation::IndexBuild, relid))
                }
                AT_AddColumn if column_builds_index((*cmd).def) => {
                    fx.gated.push((Operation::IndexBuild, relid))
                }
                AT_AlterColumnType | AT_SetTableSpace | AT_SetAccessMethod | AT_SetLogged
                | AT_SetUnLogged => fx.gated.push((Operation::Compaction, relid)),
                _ => {}
            }
        }
    }
}

/// Whether `def` (a Constraint or an IndexStmt) builds an index.
#[allow(non_upper_case_globals)]
unsafe fn builds_index(def: *mut pg_sys::Node) -> bool {
    use pg_sys::ConstrType::*;
    unsafe {
        match (*def).type_ {
            pg_sys::NodeTag::T_IndexStmt => true,
            pg_sys::NodeTag::T_Constraint => matches!(
                (*def.cast::<pg_sys::Constraint>()).contype,
                CONSTR_PRIMARY | CONSTR_UNIQUE | CONSTR_EXCLUSION
            ),
            _ => false,
        }
    }
}

/// Whether a new column (a ColumnDef) comes with a PRIMARY KEY or UNIQUE.
unsafe fn column_builds_index(def: *mut pg_sys::Node) -> bool {
    unsafe {
        (*def).type_ == pg_sys::NodeTag::T_ColumnDef
            && list::<pg_sys::Node>((*def.cast::<pg_sys::ColumnDef>()).constraints)
                .into_iter()
                .any(|c| builds_index(c))
    }
}

/// Checks a statement's effects before it runs.
fn before(fx: &Effects, tag: &str) -> SqlResult<()> {
    // A relation in the map of a database whose extension was just dropped
    // (before the worker noticed) is nobody's.
    let mine =
        |relid: pg_sys::Oid| collection_of(relid).filter(|_| installation::installed().is_some());
    for (relid, what) in &fx.bypasses {
        let Some(gated) = mine(*relid) else { continue };
        if !unsafe { pg_sys::superuser() } {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!(
                    "ruvector refused {what} on \"{}\": it would move rows of collection \"{}\" past its integrity gate",
                    relation_name(*relid),
                    gated.collection
                ),
            )
            .detail("Rows that enter or leave a collection this way are never put through its gate; only a superuser may do it.")
            .hint("Ask a superuser (each such statement of theirs is written to the audit trail), or unregister the collection with ruvector_unregister_collection()."));
        }
        record_bypass(&gated, tag, what, *relid)?;
    }
    let mut decided: Vec<(Operation, String)> = Vec::new();
    let mut gate_one = |op: Operation, gated: GatedRelation| -> SqlResult<()> {
        if !decided
            .iter()
            .any(|(o, c)| *o == op && *c == gated.collection)
        {
            enforce(&gated.collection, op, None, false)?;
            decided.push((op, gated.collection));
        }
        Ok(())
    };
    for &(op, relid) in &fx.gated {
        if let Some(gated) = mine(relid) {
            gate_one(op, gated)?;
        }
    }
    if let Some((op, namespace)) = fx.gated_schema {
        if let (Ok(shared), Some(_)) = (crate::shmem::shared(), installation::installed()) {
            for gated in shared.collections_in_schema(namespace) {
                gate_one(op, gated)?;
            }
        }
    }
    Ok(())
}

fn relation_name(relid: pg_sys::Oid) -> String {
    unsafe { text(pg_sys::get_rel_name(relid)) }
}

/// A superuser's bypass, written to the audit trail (signed by the worker).
fn record_bypass(
    gated: &GatedRelation,
    tag: &str,
    what: &str,
    relid: pg_sys::Oid,
) -> SqlResult<()> {
    let installed = installation::installed()
        .ok_or_else(|| SqlError::internal("ruvector is not installed here"))?;
    with_snapshot(|| {
        installation::as_owner(installed, || {
            audit::append_pending(
                None,
                &gated.collection,
                "gate_bypass",
                None,
                None,
                json!({
                    "statement": tag,
                    "action": what,
                    "relation": relation_name(relid),
                    "by": collections::caller(),
                }),
            )
        })
    })?;
    xact::wake_worker_at_commit();
    Ok(())
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

/// Acts on what the statement changed, after it ran. `rows`: what a COPY
/// wrote.
fn after(fx: &Effects, rows: u64) -> SqlResult<()> {
    if let Some(gated) = fx.copy_into.and_then(collection_of) {
        // Passed the gate before it ran; now its size is known.
        if let Some(op) = insertion(Some(rows)) {
            enforce(&gated.collection, op, Some(rows), true)?;
        }
    }
    if let Some((parent, range)) = fx.new_partition {
        if let Some(gated) = collection_of(parent) {
            let partition = unsafe { relid_of(range) };
            xact::add_relations_at_commit(&gated.collection, tree(partition));
        }
    }
    let detached: Vec<pg_sys::Oid> = fx
        .detached
        .iter()
        .filter(|&&p| collection_of(p).is_some())
        .flat_map(|&p| tree(p).into_iter().map(|(r, _)| r))
        .collect();
    if !detached.is_empty() {
        xact::remove_relations_at_commit(detached);
    }
    if fx.drops_extension {
        xact::at_commit(|shared| shared.clear_database());
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
        let run = || match PREV_PROCESS_UTILITY {
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
        };
        // Single-user mode and bootstrap: catalog repair must always work.
        if !pg_sys::IsUnderPostmaster {
            return run();
        }
        let stmt = (*pstmt).utilityStmt;
        let fx = effects(stmt);
        if fx.gated.is_empty()
            && fx.gated_schema.is_none()
            && fx.bypasses.is_empty()
            && fx.new_partition.is_none()
            && !fx.drops_extension
        {
            return run();
        }
        before(&fx, &text(pg_sys::CreateCommandName(stmt))).or_raise();
        run();
        let rows = if qc.is_null() { 0 } else { (*qc).nprocessed };
        after(&fx, rows).or_raise();
    }
}
