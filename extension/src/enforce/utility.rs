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

use std::cell::RefCell;

use pgrx::pg_sys;
use pgrx::prelude::*;
use ruvector_integrity::gate::{Operation, Rows};
use serde_json::json;

use super::{collection_of, enforce, enforce_provisionally, insertion, list, tree};
use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::installation;
use crate::shmem::GatedRelation;
use crate::{collections, gate, xact};

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
    /// A database-wide VACUUM FULL, CLUSTER or REINDEX DATABASE by a role that
    /// is not a superuser: that operation on every collection it can reach (it
    /// owns the table, or the database).
    owned_sweep: Option<Operation>,
    /// ALTER TABLE ALL IN TABLESPACE: compaction of every collection relation
    /// in this tablespace.
    moved_tablespace: Option<pg_sys::Oid>,
    /// ALTER SERVER or a user mapping's DDL: a bypass for the collections
    /// with a foreign partition on this server (their rows would come from
    /// elsewhere).
    altered_server: Option<pg_sys::Oid>,
    /// Renamed or moved relations, or their options changed: a bypass when
    /// one is a collection's foreign partition (it would read another remote
    /// table), whatever keyword the statement used.
    repointed: Vec<(pg_sys::Oid, &'static str)>,
    /// ALTER SCHEMA ... RENAME: a bypass for the collections with a foreign
    /// partition in it (postgres_fdw reads the remote schema of the local
    /// one's name unless told otherwise).
    renamed_schema: Option<pg_sys::Oid>,
    /// VACUUM FULL: the database's owner may run it on any table.
    database_owner_may: bool,
    /// ALTER TYPE of a composite type: a bypass when a collection's table is
    /// of that type (its columns would change).
    altered_type: Option<(pg_sys::Oid, &'static str)>,
    /// Compare the files of the collection relations before and after: a
    /// rewrite, by whatever ALTER, is compaction.
    watch_rewrites: bool,
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
    unsafe { lookup(range, pg_sys::NoLock as _) }
}

unsafe fn lookup(range: *mut pg_sys::RangeVar, lock: pg_sys::LOCKMODE) -> pg_sys::Oid {
    if range.is_null() {
        return pg_sys::InvalidOid;
    }
    unsafe {
        pg_sys::RangeVarGetRelidExtended(
            range,
            lock,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    }
}

/// The relation `range` names, bound for the rest of the transaction: when
/// the current role owns it, it is locked with `lock`, the lock the statement
/// itself takes, so that a concurrent rename cannot make the name point to
/// another relation (a collection's) by the time the statement looks it up
/// again. (A relation the role does not own is left unlocked, so that nobody
/// can queue a lock on someone else's table through this hook.)
unsafe fn bind(range: *mut pg_sys::RangeVar, lock: pg_sys::LOCKMODE) -> pg_sys::Oid {
    unsafe {
        let seen = relid_of(range);
        if seen != pg_sys::InvalidOid && pg_sys::pg_class_ownercheck(seen, pg_sys::GetUserId()) {
            lookup(range, lock)
        } else {
            seen
        }
    }
}

fn is_true_option(options: *mut pg_sys::List, name: &[u8]) -> bool {
    unsafe {
        list::<pg_sys::DefElem>(options).into_iter().any(|d| {
            std::ffi::CStr::from_ptr((*d).defname).to_bytes() == name && pg_sys::defGetBoolean(d)
        })
    }
}

const SHARE: pg_sys::LOCKMODE = pg_sys::ShareLock as pg_sys::LOCKMODE;
const SHARE_UPDATE_EXCLUSIVE: pg_sys::LOCKMODE =
    pg_sys::ShareUpdateExclusiveLock as pg_sys::LOCKMODE;
const ACCESS_EXCLUSIVE: pg_sys::LOCKMODE = pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE;
const ROW_EXCLUSIVE: pg_sys::LOCKMODE = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;

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
                let lock = if (*s).concurrent {
                    SHARE_UPDATE_EXCLUSIVE
                } else {
                    SHARE
                };
                fx.gated
                    .push((Operation::IndexBuild, bind((*s).relation, lock)));
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
                    REINDEX_OBJECT_TABLE => {
                        let lock = if is_true_option((*s).params, b"concurrently") {
                            SHARE_UPDATE_EXCLUSIVE
                        } else {
                            SHARE
                        };
                        fx.gated
                            .push((Operation::IndexBuild, bind((*s).relation, lock)))
                    }
                    REINDEX_OBJECT_SCHEMA => {
                        let namespace = pg_sys::get_namespace_oid((*s).name, true);
                        fx.gated_schema = Some((Operation::IndexBuild, namespace));
                    }
                    // A database owner's REINDEX DATABASE reaches every collection;
                    // a superuser's sweep (SYSTEM, DATABASE) is never gated.
                    REINDEX_OBJECT_DATABASE => {
                        fx.owned_sweep =
                            Some(Operation::IndexBuild).filter(|_| !pg_sys::superuser())
                    }
                    _ => {}
                }
            }
            T_VacuumStmt => {
                let s = stmt.cast::<pg_sys::VacuumStmt>();
                if (*s).is_vacuumcmd && is_true_option((*s).options, b"full") {
                    fx.database_owner_may = true;
                    if (*s).rels.is_null() && !pg_sys::superuser() {
                        fx.owned_sweep = Some(Operation::Compaction);
                    }
                    for r in list::<pg_sys::VacuumRelation>((*s).rels) {
                        let relid = if (*r).oid != pg_sys::InvalidOid {
                            (*r).oid
                        } else {
                            bind((*r).relation, ACCESS_EXCLUSIVE)
                        };
                        fx.gated.push((Operation::Compaction, relid));
                    }
                }
            }
            T_ClusterStmt => {
                let s = stmt.cast::<pg_sys::ClusterStmt>();
                if (*s).relation.is_null() {
                    if !pg_sys::superuser() {
                        fx.owned_sweep = Some(Operation::Compaction);
                    }
                } else {
                    fx.gated
                        .push((Operation::Compaction, bind((*s).relation, ACCESS_EXCLUSIVE)));
                }
            }
            T_CopyStmt => {
                let s = stmt.cast::<pg_sys::CopyStmt>();
                if (*s).is_from && !(*s).relation.is_null() {
                    let relid = bind((*s).relation, ROW_EXCLUSIVE);
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
                    .push((bind((*s).relation, ACCESS_EXCLUSIVE), "CREATE RULE".into()));
            }
            T_AlterForeignServerStmt => {
                fx.altered_server =
                    server_named((*stmt.cast::<pg_sys::AlterForeignServerStmt>()).servername)
            }
            T_RenameStmt => {
                let s = stmt.cast::<pg_sys::RenameStmt>();
                use pg_sys::ObjectType::*;
                match (*s).renameType {
                    // A column of a collection's table renamed: the collection's
                    // column could become another one.
                    OBJECT_COLUMN => fx.bypasses.push((
                        bind((*s).relation, ACCESS_EXCLUSIVE),
                        "ALTER TABLE ... RENAME COLUMN".into(),
                    )),
                    OBJECT_ATTRIBUTE => {
                        fx.altered_type =
                            Some((type_of((*s).relation), "ALTER TYPE ... RENAME ATTRIBUTE"))
                    }
                    // A foreign partition renamed reads another remote table
                    // (ALTER INDEX ... RENAME renames any relation).
                    OBJECT_TABLE | OBJECT_FOREIGN_TABLE | OBJECT_INDEX => fx.repointed.push((
                        bind((*s).relation, ACCESS_EXCLUSIVE),
                        "ALTER ... RENAME (of a foreign partition)",
                    )),
                    OBJECT_SCHEMA => {
                        fx.renamed_schema = Some(pg_sys::get_namespace_oid((*s).subname, true))
                    }
                    _ => {}
                }
            }
            T_AlterObjectSchemaStmt => {
                let s = stmt.cast::<pg_sys::AlterObjectSchemaStmt>();
                if matches!(
                    (*s).objectType,
                    pg_sys::ObjectType::OBJECT_TABLE | pg_sys::ObjectType::OBJECT_FOREIGN_TABLE
                ) {
                    fx.repointed.push((
                        bind((*s).relation, ACCESS_EXCLUSIVE),
                        "ALTER ... SET SCHEMA (of a foreign partition)",
                    ));
                }
            }
            T_AlterExtensionContentsStmt => {
                // A collection's table made part of an extension leaves pg_dump.
                let s = stmt.cast::<pg_sys::AlterExtensionContentsStmt>();
                if matches!(
                    (*s).objtype,
                    pg_sys::ObjectType::OBJECT_TABLE | pg_sys::ObjectType::OBJECT_FOREIGN_TABLE
                ) {
                    let names = list::<pg_sys::String>((*s).object.cast());
                    fx.bypasses.push((
                        relid_of_names(&names),
                        "ALTER EXTENSION ... ADD/DROP TABLE".into(),
                    ));
                }
            }
            T_CreateUserMappingStmt => {
                fx.altered_server =
                    server_named((*stmt.cast::<pg_sys::CreateUserMappingStmt>()).servername)
            }
            T_AlterUserMappingStmt => {
                fx.altered_server =
                    server_named((*stmt.cast::<pg_sys::AlterUserMappingStmt>()).servername)
            }
            T_DropUserMappingStmt => {
                fx.altered_server =
                    server_named((*stmt.cast::<pg_sys::DropUserMappingStmt>()).servername)
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

/// The foreign server named `name`, if there is one.
unsafe fn server_named(name: *const std::ffi::c_char) -> Option<pg_sys::Oid> {
    unsafe {
        let server = pg_sys::GetForeignServerByName(name, true);
        (!server.is_null()).then(|| (*server).serverid)
    }
}

/// The composite type named by `range` (ALTER TYPE's target).
unsafe fn type_of(range: *mut pg_sys::RangeVar) -> pg_sys::Oid {
    unsafe {
        let relid = relid_of(range);
        if relid == pg_sys::InvalidOid {
            pg_sys::InvalidOid
        } else {
            pg_sys::get_rel_type_id(relid)
        }
    }
}

/// CREATE [FOREIGN] TABLE: a new partition joins its collection (a foreign
/// one brings the remote table's rows: a bulk insert); a new inheritance
/// child of a collection table would hold rows past its gate.
unsafe fn create_table(fx: &mut Effects, s: *mut pg_sys::CreateStmt, foreign: bool) {
    unsafe {
        let parents: Vec<pg_sys::Oid> = list::<pg_sys::RangeVar>((*s).inhRelations)
            .into_iter()
            .map(|r| bind(r, SHARE_UPDATE_EXCLUSIVE))
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
        // Any ALTER of a table, its type or an index may rewrite a collection's
        // relation: their files are compared before and after.
        fx.watch_rewrites = true;
        match (*s).objtype {
            pg_sys::ObjectType::OBJECT_TABLE | pg_sys::ObjectType::OBJECT_FOREIGN_TABLE => {}
            pg_sys::ObjectType::OBJECT_TYPE => {
                fx.altered_type = Some((type_of((*s).relation), "ALTER TYPE ... ATTRIBUTE"));
                return;
            }
            _ => return,
        }
        let relid = bind((*s).relation, pg_sys::AlterTableGetLockLevel((*s).cmds));
        for cmd in list::<pg_sys::AlterTableCmd>((*s).cmds) {
            match (*cmd).subtype {
                AT_DetachPartition | AT_DetachPartitionFinalize => {
                    let partition = bind(
                        (*(*cmd).def.cast::<pg_sys::PartitionCmd>()).name,
                        ACCESS_EXCLUSIVE,
                    );
                    fx.bypasses
                        .push((partition, "ALTER TABLE ... DETACH PARTITION".into()));
                    fx.detached.push(partition);
                }
                AT_AddInherit | AT_DropInherit => {
                    let parent = bind(
                        (*cmd).def.cast::<pg_sys::RangeVar>(),
                        SHARE_UPDATE_EXCLUSIVE,
                    );
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
                        bind(attached, ACCESS_EXCLUSIVE),
                        "ALTER TABLE ... ATTACH PARTITION (to another table)".into(),
                    ));
                    fx.new_partition = Some((relid, attached));
                }
                // (By the relation's kind, not the statement's keyword:
                // ALTER TABLE reaches a foreign table's options too.)
                AT_GenericOptions | AT_AlterColumnGenericOptions => fx
                    .repointed
                    .push((relid, "ALTER ... OPTIONS (of a foreign partition)")),
                AT_DropColumn => fx
                    .bypasses
                    .push((relid, "ALTER TABLE ... DROP COLUMN".into())),
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

/// Whether the current role owns `relid` (a superuser owns everything).
fn owns(relid: pg_sys::Oid) -> bool {
    // SAFETY: a catalog lookup by OID, in the statement's transaction.
    unsafe { pg_sys::pg_class_ownercheck(relid, pg_sys::GetUserId()) }
}

/// Whether the current role may insert into `relid` (the table, or any column).
fn may_insert(relid: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups by OID, in the statement's transaction.
    unsafe {
        let user = pg_sys::GetUserId();
        let mode = pg_sys::ACL_INSERT as pg_sys::AclMode;
        pg_sys::pg_class_aclcheck(relid, user, mode) == pg_sys::AclResult::ACLCHECK_OK
            || pg_sys::pg_attribute_aclcheck_all(relid, user, mode, pg_sys::AclMaskHow::ACLMASK_ANY)
                == pg_sys::AclResult::ACLCHECK_OK
    }
}

fn is_foreign(relid: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup by OID.
    unsafe { pg_sys::get_rel_relkind(relid) == pg_sys::RELKIND_FOREIGN_TABLE as std::ffi::c_char }
}

/// Checks a statement's effects before it runs.
///
/// Permission first: where the role lacks what PostgreSQL will ask of it for
/// the statement (owning the table, INSERT for a COPY), the gate neither
/// decides, nor counts, nor names the collection: PostgreSQL refuses the
/// statement itself, as it would on any other table.
fn before(fx: &Effects, tag: &str) -> SqlResult<()> {
    // A relation in the map of a database whose extension was just dropped
    // (before the worker noticed) is nobody's.
    let mine =
        |relid: pg_sys::Oid| collection_of(relid).filter(|_| installation::installed().is_some());
    let database_owner =
        unsafe { pg_sys::pg_database_ownercheck(pg_sys::MyDatabaseId, pg_sys::GetUserId()) };
    for (relid, what) in fx.bypasses.iter().filter(|(r, _)| owns(*r)) {
        if let Some(gated) = mine(*relid) {
            refuse_or_record_bypass(&gated, tag, what, *relid)?;
        }
    }
    // A COPY's bulk insert is counted once its rows are (see `after`).
    let copied = fx.copy_into.and_then(mine).map(|g| g.collection);
    let mut decided: Vec<(Operation, String)> = Vec::new();
    let mut gate_one = |op: Operation, gated: GatedRelation| -> SqlResult<()> {
        if !decided
            .iter()
            .any(|(o, c)| *o == op && *c == gated.collection)
        {
            if op == Operation::BulkInsert && copied.as_ref() == Some(&gated.collection) {
                enforce_provisionally(&gated.collection, op)?;
            } else {
                // The rows an attached or foreign partition brings are never
                // counted: the strictest batch rule.
                enforce(&gated.collection, op, Rows::Unseen, false)?;
            }
            decided.push((op, gated.collection));
        }
        Ok(())
    };
    for &(op, relid) in &fx.gated {
        let permitted = if fx.copy_into == Some(relid) {
            may_insert(relid)
        } else {
            owns(relid) || (fx.database_owner_may && database_owner)
        };
        if let Some(gated) = mine(relid).filter(|_| permitted) {
            gate_one(op, gated)?;
        }
    }
    for &(relid, what) in &fx.repointed {
        if let Some(gated) = mine(relid).filter(|_| is_foreign(relid) && owns(relid)) {
            refuse_or_record_bypass(&gated, tag, what, relid)?;
        }
    }
    // Statements that reach every collection relation of a schema, a
    // tablespace, a server or a type, each for the roles PostgreSQL lets run it.
    // (An object that does not exist is PostgreSQL's to report.)
    let user = unsafe { pg_sys::GetUserId() };
    let owns_schema = |namespace: pg_sys::Oid| {
        namespace != pg_sys::InvalidOid
            && unsafe { pg_sys::pg_namespace_ownercheck(namespace, user) }
    };
    let gated_schema = fx
        .gated_schema
        .filter(|&(_, namespace)| owns_schema(namespace));
    let renamed_schema = fx
        .renamed_schema
        .filter(|&namespace| owns_schema(namespace));
    let altered_server = fx.altered_server.filter(|&server| unsafe {
        pg_sys::pg_foreign_server_ownercheck(server, user)
            || pg_sys::pg_foreign_server_aclcheck(
                server,
                user,
                pg_sys::ACL_USAGE as pg_sys::AclMode,
            ) == pg_sys::AclResult::ACLCHECK_OK
    });
    let altered_type = fx.altered_type.filter(|&(type_id, _)| {
        type_id != pg_sys::InvalidOid && unsafe { pg_sys::pg_type_ownercheck(type_id, user) }
    });
    let sweeping = gated_schema.is_some()
        || renamed_schema.is_some()
        || fx.owned_sweep.is_some()
        || fx.moved_tablespace.is_some()
        || altered_server.is_some()
        || altered_type.is_some();
    let everything = match (crate::shmem::shared(), installation::installed()) {
        (Ok(shared), Some(_)) if sweeping => shared.relations_of_database(),
        _ => Vec::new(),
    };
    for (relid, _root, gated) in everything {
        let namespace = unsafe { pg_sys::get_rel_namespace(relid) };
        if let Some((op, schema)) = gated_schema {
            if namespace == schema {
                gate_one(op, gated.clone())?;
            }
        }
        if renamed_schema == Some(namespace) && is_foreign(relid) {
            refuse_or_record_bypass(
                &gated,
                tag,
                "ALTER SCHEMA ... RENAME (of a foreign partition's schema)",
                relid,
            )?;
        }
        if let Some(op) = fx.owned_sweep {
            if database_owner || owns(relid) {
                gate_one(op, gated.clone())?;
            }
        }
        let moved = fx.moved_tablespace.is_some_and(|space| {
            let here = unsafe { pg_sys::get_rel_tablespace(relid) };
            space == here
                || (here == pg_sys::InvalidOid && space == unsafe { pg_sys::MyDatabaseTableSpace })
        });
        if moved && owns(relid) {
            gate_one(Operation::Compaction, gated.clone())?;
        }
        if let Some(server) = altered_server {
            if is_foreign(relid) && unsafe { (*pg_sys::GetForeignTable(relid)).serverid } == server
            {
                refuse_or_record_bypass(
                    &gated,
                    tag,
                    "ALTER SERVER or USER MAPPING (of a foreign partition's server)",
                    relid,
                )?;
            }
        }
        if let Some((type_id, what)) = altered_type {
            if reloftype(relid) == type_id {
                refuse_or_record_bypass(&gated, tag, what, relid)?;
            }
        }
    }
    Ok(())
}

/// An OID field of `relid`'s `pg_class` row (InvalidOid when there is none).
fn pg_class_oid(
    relid: pg_sys::Oid,
    field: impl FnOnce(&pg_sys::FormData_pg_class) -> pg_sys::Oid,
) -> pg_sys::Oid {
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            pg_sys::Datum::from(relid),
        );
        if tuple.is_null() {
            return pg_sys::InvalidOid;
        }
        let value = field(&*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tuple));
        pg_sys::ReleaseSysCache(tuple);
        value
    }
}

/// The composite type a typed table (`CREATE TABLE ... OF type`) is of.
fn reloftype(relid: pg_sys::Oid) -> pg_sys::Oid {
    pg_class_oid(relid, |c| c.reloftype)
}

/// The file of `relid` (0 for a partitioned table, which has none).
fn relfilenode(relid: pg_sys::Oid) -> pg_sys::Oid {
    pg_class_oid(relid, |c| c.relfilenode)
}

/// The files of every collection relation of this database, when the
/// statement is to be watched for rewrites.
fn files_before(fx: &Effects) -> Vec<(pg_sys::Oid, pg_sys::Oid, GatedRelation)> {
    if !fx.watch_rewrites {
        return Vec::new();
    }
    match (crate::shmem::shared(), installation::installed()) {
        (Ok(shared), Some(_)) => shared
            .relations_of_database()
            .into_iter()
            .map(|(relid, _, gated)| (relid, relfilenode(relid), gated))
            .collect(),
        _ => Vec::new(),
    }
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
    super::append_bypass_events([(
        gated.collection.clone(),
        json!({
            "statement": tag,
            "action": what,
            "relation": relation_name(relid),
            "by": collections::caller(),
        }),
    )])
}

/// Runs `body` with an active snapshot, pushing one if the utility statement
/// runs without (VACUUM does): SPI needs one.
pub(super) fn with_snapshot<R>(body: impl FnOnce() -> SqlResult<R>) -> SqlResult<R> {
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

/// Acts on what the statement changed, after it ran (its locks still held,
/// its effects still undone by an error). `rows`: what a COPY wrote (not
/// counted when it ran inside a SQL function, which passes no completion).
fn after(flight: &InFlight, rows: Rows) -> SqlResult<()> {
    let fx = &flight.fx;
    if let Some(gated) = fx.copy_into.and_then(collection_of) {
        // Passed the gate before it ran; now its size is known.
        match insertion(rows) {
            Some(op) => enforce(&gated.collection, op, rows, true)?,
            None => gate::count_allowed(&gated.collection, Operation::BulkInsert),
        }
    }
    // A rewrite, however the statement spelled it (a serial column, a
    // domain's default, ALTER TYPE ... CASCADE), changed a relation's file.
    let mut rewritten: Vec<&str> = Vec::new();
    for (relid, before, gated) in &flight.files {
        let now = relfilenode(*relid);
        if *before != pg_sys::InvalidOid
            && now != *before
            && !rewritten.contains(&gated.collection.as_str())
        {
            enforce(&gated.collection, Operation::Compaction, Rows::Later, false)?;
            rewritten.push(&gated.collection);
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
                let relations = tree(partition, pg_sys::NoLock as _);
                xact::reserve(0, relations.len())?;
                xact::add_relations_at_commit(&gated.collection, relations);
            }
        }
    }
    let detached: Vec<pg_sys::Oid> = fx
        .detached
        .iter()
        .filter(|&&p| collection_of(p).is_some())
        .flat_map(|&p| tree(p, pg_sys::NoLock as _).into_iter().map(|(r, _)| r))
        .collect();
    if !detached.is_empty() {
        xact::remove_relations_at_commit(detached);
    }
    if fx.drops_extension {
        xact::at_commit(|shared| shared.clear_database());
    }
    Ok(())
}

impl Effects {
    fn is_empty(&self) -> bool {
        self.gated.is_empty()
            && self.gated_schema.is_none()
            && self.owned_sweep.is_none()
            && self.moved_tablespace.is_none()
            && self.altered_server.is_none()
            && self.repointed.is_empty()
            && self.altered_type.is_none()
            && self.renamed_schema.is_none()
            && !self.watch_rewrites
            && self.bypasses.is_empty()
            && self.new_partition.is_none()
            && !self.drops_extension
    }
}

/// A statement between its check and its after-work: its effects, and the
/// files of the collection relations before it ran.
struct InFlight {
    fx: Effects,
    files: Vec<(pg_sys::Oid, pg_sys::Oid, GatedRelation)>,
}

thread_local! {
    /// Statements in flight, by nesting depth (a utility statement can run
    /// another one).
    static IN_FLIGHT: RefCell<Vec<InFlight>> = const { RefCell::new(Vec::new()) };
}

/// Forgets statements an error cut short; called at transaction end.
pub fn forget_in_flight() {
    IN_FLIGHT.with(|f| f.borrow_mut().clear());
}

/// Works out and checks a statement's effects before it runs; returns the
/// depth of what it left for [`utility_after`], 0 when nothing.
#[pg_guard]
unsafe extern "C-unwind" fn utility_before(pstmt: *mut pg_sys::PlannedStmt) -> usize {
    unsafe {
        // Single-user mode and bootstrap: catalog repair must always work.
        if !pg_sys::IsUnderPostmaster {
            return 0;
        }
        let stmt = (*pstmt).utilityStmt;
        let fx = effects(stmt);
        if fx.is_empty() {
            return 0;
        }
        before(&fx, &text(pg_sys::CreateCommandName(stmt))).or_raise();
        let files = files_before(&fx);
        IN_FLIGHT.with(|f| {
            let mut f = f.borrow_mut();
            f.push(InFlight { fx, files });
            f.len()
        })
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn utility_after(depth: usize, qc: *mut pg_sys::QueryCompletion) {
    let flight = IN_FLIGHT.with(|f| {
        let mut f = f.borrow_mut();
        f.truncate(depth);
        (f.len() == depth).then(|| f.pop()).flatten()
    });
    if let Some(flight) = flight {
        let rows = if qc.is_null() {
            Rows::Unseen
        } else {
            // SAFETY: a non-null completion is the caller's, filled by the
            // statement that just ran.
            Rows::Counted(unsafe { (*qc).nprocessed })
        };
        after(&flight, rows).or_raise();
    }
}

unsafe extern "C-unwind" {
    /// PostgreSQL's own, unwrapped: an error in it is PostgreSQL's longjmp,
    /// not a Rust panic (pgrx's binding would turn it into one).
    #[link_name = "standard_ProcessUtility"]
    fn standard_process_utility(
        pstmt: *mut pg_sys::PlannedStmt,
        query_string: *const std::ffi::c_char,
        read_only_tree: bool,
        context: pg_sys::ProcessUtilityContext::Type,
        params: pg_sys::ParamListInfo,
        query_env: *mut pg_sys::QueryEnvironment,
        dest: *mut pg_sys::DestReceiver,
        qc: *mut pg_sys::QueryCompletion,
    );
}

/// The hook itself holds no Rust value while PostgreSQL runs the statement,
/// and is not guarded: the statement's own errors pass through untouched
/// (with their context, position and names), as through a C hook.
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
        let depth = utility_before(pstmt);
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
            None => standard_process_utility(
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
        if depth > 0 {
            utility_after(depth, qc);
        }
    }
}
