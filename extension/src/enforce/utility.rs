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

unsafe extern "C-unwind" {
    /// `catalog/partition.h`: the table `relid` is a partition of.
    fn get_partition_parent(relid: pg_sys::Oid, even_if_detached: bool) -> pg_sys::Oid;
}

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
    /// A database-wide VACUUM FULL or CLUSTER by a role that is not a
    /// superuser: compaction of the collections it owns.
    owned_sweep: bool,
    /// ALTER TABLE ALL IN TABLESPACE: compaction of every collection relation
    /// in this tablespace.
    moved_tablespace: Option<pg_sys::Oid>,
    /// ALTER SERVER: a bypass for the collections with a foreign partition
    /// on this server (their rows would come from elsewhere).
    altered_server: Option<pg_sys::Oid>,
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
                    fx.owned_sweep = (*s).rels.is_null() && !pg_sys::superuser();
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
                if (*s).relation.is_null() {
                    fx.owned_sweep = !pg_sys::superuser();
                } else {
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
            T_CreateStmt => create_table(&mut fx, stmt.cast(), false),
            T_CreateForeignTableStmt => create_table(
                &mut fx,
                &raw mut (*stmt.cast::<pg_sys::CreateForeignTableStmt>()).base,
                true,
            ),
            T_AlterTableStmt => alter_table(&mut fx, stmt.cast()),
            T_AlterTableMoveAllStmt => {
                let s = stmt.cast::<pg_sys::AlterTableMoveAllStmt>();
                fx.moved_tablespace =
                    Some(pg_sys::get_tablespace_oid((*s).orig_tablespacename, true));
            }
            T_RuleStmt => {
                let s = stmt.cast::<pg_sys::RuleStmt>();
                fx.bypasses
                    .push((relid_of((*s).relation), "CREATE RULE".into()));
            }
            T_AlterForeignServerStmt => {
                let s = stmt.cast::<pg_sys::AlterForeignServerStmt>();
                let server = pg_sys::GetForeignServerByName((*s).servername, true);
                if !server.is_null() {
                    fx.altered_server = Some((*server).serverid);
                }
            }
            T_DropStmt => {
                let s = stmt.cast::<pg_sys::DropStmt>();
                // Dropped tables are gated where every drop passes (the
                // object access hook); here only the extension itself.
                fx.drops_extension = (*s).removeType == pg_sys::ObjectType::OBJECT_EXTENSION
                    && list::<pg_sys::String>((*s).objects)
                        .iter()
                        .any(|&n| text((*n).sval) == "ruvector")
                    && installation::installed().is_some();
            }
            _ => {}
        }
    }
    fx
}

/// CREATE [FOREIGN] TABLE: a new partition joins its collection (a foreign
/// one brings the remote table's rows: a bulk insert); a new inheritance
/// child of a collection table would hold rows past its gate.
unsafe fn create_table(fx: &mut Effects, s: *mut pg_sys::CreateStmt, foreign: bool) {
    unsafe {
        let parents: Vec<pg_sys::Oid> = list::<pg_sys::RangeVar>((*s).inhRelations)
            .into_iter()
            .map(|r| relid_of(r))
            .collect();
        if !(*s).partbound.is_null() {
            if let Some(&parent) = parents.first() {
                fx.new_partition = Some((parent, (*s).relation));
                if foreign {
                    fx.gated.push((Operation::BulkInsert, parent));
                }
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
                        .push((partition, "ALTER TABLE ... DETACH PARTITION".into()));
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
                    let attached = (*(*cmd).def.cast::<pg_sys::PartitionCmd>()).name;
                    fx.gated.push((Operation::BulkInsert, relid));
                    // A collection's own table or partition going under
                    // another parent: rows written there reach it past the gate.
                    fx.bypasses.push((
                        relid_of(attached),
                        "ALTER TABLE ... ATTACH PARTITION (to another table)".into(),
                    ));
                    fx.new_partition = Some((relid, attached));
                }
                AT_GenericOptions if (*s).objtype == pg_sys::ObjectType::OBJECT_FOREIGN_TABLE => fx
                    .bypasses
                    .push((relid, "ALTER FOREIGN TABLE ... OPTIONS".into())),
                AT_AddConstraint | AT_AddIndex if builds_index((*cmd).def) => {
                    fx.gated.push((Operation::IndexBuild, relid))
                }
                AT_AddColumn if column_builds_index((*cmd).def) => {
                    fx.gated.push((Operation::IndexBuild, relid))
                }
                AT_AddColumn if column_rewrites((*cmd).def) => {
                    fx.gated.push((Operation::Compaction, relid))
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

/// Whether a new column (a ColumnDef) makes PostgreSQL rewrite the table: an
/// identity or generated column, or a default that is not a plain constant
/// (a volatile one is evaluated for every row).
#[allow(non_upper_case_globals)]
unsafe fn column_rewrites(def: *mut pg_sys::Node) -> bool {
    use pg_sys::ConstrType::*;
    unsafe {
        if (*def).type_ != pg_sys::NodeTag::T_ColumnDef {
            return false;
        }
        list::<pg_sys::Constraint>((*def.cast::<pg_sys::ColumnDef>()).constraints)
            .into_iter()
            .any(|c| match (*c).contype {
                CONSTR_IDENTITY | CONSTR_GENERATED => true,
                CONSTR_DEFAULT => !is_constant((*c).raw_expr),
                _ => false,
            })
    }
}

/// A literal, or a literal with a cast.
unsafe fn is_constant(expr: *mut pg_sys::Node) -> bool {
    unsafe {
        match (*expr).type_ {
            pg_sys::NodeTag::T_A_Const => true,
            pg_sys::NodeTag::T_TypeCast => is_constant((*expr.cast::<pg_sys::TypeCast>()).arg),
            _ => false,
        }
    }
}

/// Checks a statement's effects before it runs.
fn before(fx: &Effects, tag: &str) -> SqlResult<()> {
    // A relation in the map of a database whose extension was just dropped
    // (before the worker noticed) is nobody's.
    let mine =
        |relid: pg_sys::Oid| collection_of(relid).filter(|_| installation::installed().is_some());
    for (relid, what) in &fx.bypasses {
        if let Some(gated) = mine(*relid) {
            refuse_or_record_bypass(&gated, tag, what, *relid)?;
        }
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
    let sweeping = fx.gated_schema.is_some()
        || fx.owned_sweep
        || fx.moved_tablespace.is_some()
        || fx.altered_server.is_some();
    let everything = match (crate::shmem::shared(), installation::installed()) {
        (Ok(shared), Some(_)) if sweeping => shared.relations_of_database(),
        _ => Vec::new(),
    };
    for (relid, root, gated) in everything {
        let in_schema = fx.gated_schema.is_some_and(|(_, namespace)| {
            root && unsafe { pg_sys::get_rel_namespace(relid) } == namespace
        });
        let owned = fx.owned_sweep
            && root
            && unsafe { pg_sys::pg_class_ownercheck(relid, pg_sys::GetUserId()) };
        let moved = fx.moved_tablespace.is_some_and(|space| {
            let here = unsafe { pg_sys::get_rel_tablespace(relid) };
            space == here
                || (here == pg_sys::InvalidOid && space == unsafe { pg_sys::MyDatabaseTableSpace })
        });
        if in_schema {
            gate_one(
                fx.gated_schema.map_or(Operation::IndexBuild, |(op, _)| op),
                gated.clone(),
            )?;
        }
        if owned || moved {
            gate_one(Operation::Compaction, gated.clone())?;
        }
        if let Some(server) = fx.altered_server {
            let foreign = unsafe { pg_sys::get_rel_relkind(relid) }
                == pg_sys::RELKIND_FOREIGN_TABLE as std::ffi::c_char;
            if foreign && unsafe { (*pg_sys::GetForeignTable(relid)).serverid } == server {
                refuse_or_record_bypass(
                    &gated,
                    tag,
                    "ALTER SERVER (of a foreign partition)",
                    relid,
                )?;
            }
        }
    }
    Ok(())
}

/// A statement that would move rows of a collection past its gate: refused
/// unless the role is a superuser, whose statement is audited instead.
fn refuse_or_record_bypass(
    gated: &GatedRelation,
    tag: &str,
    what: &str,
    relid: pg_sys::Oid,
) -> SqlResult<()> {
    if unsafe { pg_sys::superuser() } {
        return record_bypass(gated, tag, what, relid);
    }
    Err(SqlError::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!(
            "ruvector refused {what} on \"{}\": it would move rows of collection \"{}\" past its integrity gate",
            relation_name(relid),
            gated.collection
        ),
    )
    .detail("Rows that enter or leave a collection this way are never put through its gate; only a superuser may do it.")
    .hint("Ask a superuser (each such statement of theirs is written to the audit trail), or unregister the collection with ruvector_unregister_collection()."))
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
            // (CREATE TABLE IF NOT EXISTS may have created nothing: the name
            // must now be a partition of that parent.)
            let partition = unsafe { relid_of(range) };
            let joined = partition != pg_sys::InvalidOid
                && unsafe { pg_sys::get_rel_relispartition(partition) }
                && unsafe { get_partition_parent(partition, true) } == parent;
            if joined {
                let relations = tree(partition);
                crate::collections::check_room(false, relations.len())?;
                xact::add_relations_at_commit(&gated.collection, relations);
            }
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
            && !fx.owned_sweep
            && fx.moved_tablespace.is_none()
            && fx.altered_server.is_none()
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
