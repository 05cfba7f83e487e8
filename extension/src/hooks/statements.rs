//! What a utility statement means for the gate, worked out from its parse
//! tree before it runs ([`effects`]): one function per kind of statement.
//!
//! - CREATE INDEX, REINDEX, ALTER TABLE ... ADD PRIMARY KEY / UNIQUE / EXCLUDE
//!   are `index_build`; VACUUM FULL, CLUSTER and table rewrites (ALTER COLUMN
//!   TYPE, SET TABLESPACE, SET ACCESS METHOD, SET LOGGED / UNLOGGED) are
//!   `compaction`; COPY FROM and ATTACH PARTITION are `bulk_insert`.
//! - Statements that move rows in or out of a collection past the gate —
//!   DETACH PARTITION, INHERIT / NO INHERIT, CREATE TABLE ... INHERITS, a
//!   rule, a dropped or renamed column, a foreign partition pointed elsewhere
//!   — are bypasses (refused unless the role is a superuser).
//! - A new partition (CREATE [FOREIGN] TABLE ... PARTITION OF, ATTACH
//!   PARTITION) joins its collection's relations.
//!
//! Relations are named by OID, looked up here once: where the role owns a
//! relation the lookup takes the lock the statement itself will take, so that
//! a concurrent rename cannot make the name point elsewhere by the time the
//! statement looks it up again.

use std::ffi::c_char;

use pgrx::pg_sys;
use ruvector_integrity::gate::Operation;

use super::list;
use crate::catalog::{self, text};
use crate::{installation, privileges};

/// What a utility statement means for ruvector, worked out before it runs.
#[derive(Default)]
pub struct Effects {
    /// Operations to put through the gate, on relations.
    pub gated: Vec<(Operation, pg_sys::Oid)>,
    /// A collection-wide operation on every collection in a schema.
    pub gated_schema: Option<(Operation, pg_sys::Oid)>,
    /// A database-wide VACUUM FULL, CLUSTER or REINDEX DATABASE by a role that
    /// is not a superuser: that operation on every collection it can reach (it
    /// owns the table, or the database).
    pub owned_sweep: Option<Operation>,
    /// ALTER TABLE ALL IN TABLESPACE: compaction of every collection relation
    /// in this tablespace.
    pub moved_tablespace: Option<pg_sys::Oid>,
    /// ALTER SERVER or a user mapping's DDL: a bypass for the collections
    /// with a foreign partition on this server (their rows would come from
    /// elsewhere).
    pub altered_server: Option<pg_sys::Oid>,
    /// Renamed or moved relations, or their options changed: a bypass when
    /// one is a collection's foreign partition (it would read another remote
    /// table), whatever keyword the statement used.
    pub repointed: Vec<(pg_sys::Oid, &'static str)>,
    /// ALTER SCHEMA ... RENAME: a bypass for the collections with a foreign
    /// partition in it (postgres_fdw reads the remote schema of the local
    /// one's name unless told otherwise).
    pub renamed_schema: Option<pg_sys::Oid>,
    /// VACUUM FULL: the database's owner may run it on any table.
    pub database_owner_may: bool,
    /// ALTER TYPE of a composite type: a bypass when a collection's table is
    /// of that type (its columns would change).
    pub altered_type: Option<(pg_sys::Oid, &'static str)>,
    /// Compare the files of the collection relations before and after: a
    /// rewrite, by whatever ALTER, is compaction.
    pub watch_rewrites: bool,
    /// Would move rows in or out of a collection past the gate: (relation, what).
    pub bypasses: Vec<(pg_sys::Oid, &'static str)>,
    /// The relation a COPY FROM writes into.
    pub copy_into: Option<pg_sys::Oid>,
    /// A partition comes in: (parent, the new partition's name) — the
    /// partition exists only once the statement has run.
    pub new_partition: Option<(pg_sys::Oid, *mut pg_sys::RangeVar)>,
    /// Partitions that leave a collection (a superuser's DETACH).
    pub detached: Vec<pg_sys::Oid>,
    /// `DROP EXTENSION ruvector`.
    pub drops_extension: bool,
    /// `CREATE EXTENSION ruvector` where it is not installed: the launcher
    /// starts a worker at commit.
    pub creates_extension: bool,
    /// A database the statement needs without connections, when PostgreSQL
    /// would run it: its worker leaves first (see [`Vacated`]).
    pub vacated_database: Option<Vacated>,
}

/// DROP DATABASE, ALTER DATABASE ... RENAME or SET TABLESPACE, or CREATE
/// DATABASE ... TEMPLATE of a database the current role owns, outside a
/// transaction block, not the database it is connected to, with CREATEDB
/// where the statement needs it: PostgreSQL's own preconditions, so that a
/// statement sure to fail stops no worker.
#[derive(Clone, Copy)]
pub struct Vacated {
    pub database: pg_sys::Oid,
    /// DROP DATABASE: the database's key file goes with it.
    pub dropped: bool,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
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
            && !self.creates_extension
            && self.vacated_database.is_none()
    }
}

const SHARE: pg_sys::LOCKMODE = pg_sys::ShareLock as pg_sys::LOCKMODE;
const SHARE_UPDATE_EXCLUSIVE: pg_sys::LOCKMODE =
    pg_sys::ShareUpdateExclusiveLock as pg_sys::LOCKMODE;
const ACCESS_EXCLUSIVE: pg_sys::LOCKMODE = pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE;
const ROW_EXCLUSIVE: pg_sys::LOCKMODE = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;

/// What `stmt` means for the gate (see [`Effects`]).
///
/// # Safety
/// `stmt` is NULL or the utility statement PostgreSQL is about to run, in
/// the statement's transaction.
pub unsafe fn effects(stmt: *mut pg_sys::Node) -> Effects {
    use pg_sys::NodeTag::*;
    let mut fx = Effects::default();
    if stmt.is_null() {
        return fx;
    }
    // SAFETY: each arm casts the node to the struct its tag names.
    unsafe {
        match (*stmt).type_ {
            T_IndexStmt => index(&mut fx, stmt.cast()),
            T_ReindexStmt => reindex(&mut fx, stmt.cast()),
            T_VacuumStmt => vacuum(&mut fx, stmt.cast()),
            T_ClusterStmt => cluster(&mut fx, stmt.cast()),
            T_CopyStmt => copy(&mut fx, stmt.cast()),
            T_CreateStmt => create_table(&mut fx, stmt.cast(), false),
            T_CreateForeignTableStmt => create_table(
                &mut fx,
                &raw mut (*stmt.cast::<pg_sys::CreateForeignTableStmt>()).base,
                true,
            ),
            T_AlterTableStmt => alter_table(&mut fx, stmt.cast()),
            T_AlterTableMoveAllStmt => {
                let s = stmt.cast::<pg_sys::AlterTableMoveAllStmt>();
                fx.moved_tablespace = Some(catalog::tablespace_named((*s).orig_tablespacename));
            }
            T_RuleStmt => {
                let s = stmt.cast::<pg_sys::RuleStmt>();
                fx.bypasses
                    .push((bind((*s).relation, ACCESS_EXCLUSIVE), "CREATE RULE"));
            }
            T_RenameStmt => {
                let s = stmt.cast::<pg_sys::RenameStmt>();
                if (*s).renameType == pg_sys::ObjectType::OBJECT_DATABASE && may_create_databases()
                {
                    fx.vacated_database = vacated((*s).subname, false);
                }
                rename(&mut fx, s)
            }
            T_DropdbStmt => {
                fx.vacated_database = vacated((*stmt.cast::<pg_sys::DropdbStmt>()).dbname, true)
            }
            T_CreatedbStmt => {
                let s = stmt.cast::<pg_sys::CreatedbStmt>();
                if let Some(template) = option((*s).options, "template") {
                    if !(*template).arg.is_null() && may_create_databases() {
                        fx.vacated_database = vacated(pg_sys::defGetString(template), false);
                    }
                }
            }
            T_AlterDatabaseStmt => {
                let s = stmt.cast::<pg_sys::AlterDatabaseStmt>();
                if option((*s).options, "tablespace").is_some() {
                    fx.vacated_database = vacated((*s).dbname, false);
                }
            }
            T_CreateExtensionStmt => {
                let s = stmt.cast::<pg_sys::CreateExtensionStmt>();
                fx.creates_extension =
                    text((*s).extname) == "ruvector" && installation::installed().is_none();
            }
            T_AlterObjectSchemaStmt => set_schema(&mut fx, stmt.cast()),
            T_AlterExtensionContentsStmt => extension_contents(&mut fx, stmt.cast()),
            T_AlterForeignServerStmt => {
                fx.altered_server =
                    server((*stmt.cast::<pg_sys::AlterForeignServerStmt>()).servername)
            }
            T_CreateUserMappingStmt => {
                fx.altered_server =
                    server((*stmt.cast::<pg_sys::CreateUserMappingStmt>()).servername)
            }
            T_AlterUserMappingStmt => {
                fx.altered_server =
                    server((*stmt.cast::<pg_sys::AlterUserMappingStmt>()).servername)
            }
            T_DropUserMappingStmt => {
                fx.altered_server = server((*stmt.cast::<pg_sys::DropUserMappingStmt>()).servername)
            }
            T_DropStmt => {
                // Dropped tables are gated where every drop passes (the
                // object access hook); here only the extension itself.
                let s = stmt.cast::<pg_sys::DropStmt>();
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

/// The relation `range` names, or `InvalidOid` when there is none, locked
/// with `lock`.
///
/// # Safety
/// `range` is NULL or a valid `RangeVar`.
pub unsafe fn lookup(range: *mut pg_sys::RangeVar, lock: pg_sys::LOCKMODE) -> pg_sys::Oid {
    if range.is_null() {
        return pg_sys::InvalidOid;
    }
    // SAFETY: a name lookup, missing_ok; an ERROR (a lock wait cancelled)
    // propagates as PostgreSQL's.
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

/// The relation `range` names, unlocked.
///
/// # Safety
/// As [`lookup`].
pub unsafe fn relid_of(range: *mut pg_sys::RangeVar) -> pg_sys::Oid {
    // SAFETY: per the function's contract.
    unsafe { lookup(range, pg_sys::NoLock as _) }
}

/// The relation `range` names, bound for the rest of the transaction: when
/// the current role owns it, it is locked with `lock`, the lock the statement
/// itself takes. (A relation the role does not own is left unlocked, so that
/// nobody can queue a lock on someone else's table through this hook.)
///
/// # Safety
/// As [`lookup`].
unsafe fn bind(range: *mut pg_sys::RangeVar, lock: pg_sys::LOCKMODE) -> pg_sys::Oid {
    // SAFETY: per the function's contract.
    let seen = unsafe { relid_of(range) };
    if seen != pg_sys::InvalidOid && privileges::owns(seen, privileges::current()) {
        // SAFETY: as above.
        unsafe { lookup(range, lock) }
    } else {
        seen
    }
}

/// Whether the boolean option `name` is on in a list of `DefElem`s.
///
/// # Safety
/// `options` is NULL or a valid `List` of `DefElem`.
unsafe fn is_true_option(options: *mut pg_sys::List, name: &str) -> bool {
    // SAFETY: per the function's contract; `defGetBoolean` reads the element.
    unsafe {
        list::<pg_sys::DefElem>(options)
            .into_iter()
            .any(|d| text((*d).defname) == name && pg_sys::defGetBoolean(d))
    }
}

/// The foreign server named by `name`, if there is one.
///
/// # Safety
/// `name` is NULL or a valid NUL-terminated string.
unsafe fn server(name: *mut c_char) -> Option<pg_sys::Oid> {
    if name.is_null() {
        return None;
    }
    // SAFETY: per the function's contract.
    unsafe { catalog::server_named(name) }
}

/// The composite type named by `range` (ALTER TYPE's target).
///
/// # Safety
/// As [`lookup`].
unsafe fn type_of(range: *mut pg_sys::RangeVar) -> pg_sys::Oid {
    // SAFETY: per the function's contract.
    catalog::row_type(unsafe { relid_of(range) })
}

/// # Safety
/// `s` is a valid `IndexStmt`.
unsafe fn index(fx: &mut Effects, s: *mut pg_sys::IndexStmt) {
    // SAFETY: per the function's contract.
    unsafe {
        let lock = if (*s).concurrent {
            SHARE_UPDATE_EXCLUSIVE
        } else {
            SHARE
        };
        fx.gated
            .push((Operation::IndexBuild, bind((*s).relation, lock)));
    }
}

/// # Safety
/// `s` is a valid `ReindexStmt`.
unsafe fn reindex(fx: &mut Effects, s: *mut pg_sys::ReindexStmt) {
    use pg_sys::ReindexObjectType::*;
    // SAFETY: per the function's contract.
    unsafe {
        match (*s).kind {
            REINDEX_OBJECT_INDEX => {
                let index = relid_of((*s).relation);
                if index != pg_sys::InvalidOid {
                    fx.gated
                        .push((Operation::IndexBuild, catalog::indexed_table(index)));
                }
            }
            REINDEX_OBJECT_TABLE => {
                let lock = if is_true_option((*s).params, "concurrently") {
                    SHARE_UPDATE_EXCLUSIVE
                } else {
                    SHARE
                };
                fx.gated
                    .push((Operation::IndexBuild, bind((*s).relation, lock)))
            }
            REINDEX_OBJECT_SCHEMA => {
                fx.gated_schema = Some((Operation::IndexBuild, catalog::schema_named((*s).name)));
            }
            // A database owner's REINDEX DATABASE reaches every collection;
            // a superuser's sweep (SYSTEM, DATABASE) is never gated.
            REINDEX_OBJECT_DATABASE => fx.owned_sweep = sweep(Operation::IndexBuild),
            _ => {}
        }
    }
}

/// A database-wide `op`: gated unless a superuser runs it.
fn sweep(op: Operation) -> Option<Operation> {
    Some(op).filter(|_| !privileges::is_superuser(privileges::current()))
}

/// # Safety
/// `s` is a valid `VacuumStmt`.
unsafe fn vacuum(fx: &mut Effects, s: *mut pg_sys::VacuumStmt) {
    // SAFETY: per the function's contract.
    unsafe {
        if !(*s).is_vacuumcmd || !is_true_option((*s).options, "full") {
            return;
        }
        fx.database_owner_may = true;
        if (*s).rels.is_null() {
            fx.owned_sweep = sweep(Operation::Compaction);
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

/// # Safety
/// `s` is a valid `ClusterStmt`.
unsafe fn cluster(fx: &mut Effects, s: *mut pg_sys::ClusterStmt) {
    // SAFETY: per the function's contract.
    unsafe {
        if (*s).relation.is_null() {
            fx.owned_sweep = sweep(Operation::Compaction);
        } else {
            fx.gated
                .push((Operation::Compaction, bind((*s).relation, ACCESS_EXCLUSIVE)));
        }
    }
}

/// # Safety
/// `s` is a valid `CopyStmt`.
unsafe fn copy(fx: &mut Effects, s: *mut pg_sys::CopyStmt) {
    // SAFETY: per the function's contract.
    unsafe {
        if (*s).is_from && !(*s).relation.is_null() {
            let relid = bind((*s).relation, ROW_EXCLUSIVE);
            fx.gated.push((Operation::BulkInsert, relid));
            fx.copy_into = Some(relid);
        }
    }
}

/// CREATE [FOREIGN] TABLE: a new partition joins its collection (a foreign
/// one brings the remote table's rows: a bulk insert); a new inheritance
/// child of a collection table would hold rows past its gate.
///
/// # Safety
/// `s` is a valid `CreateStmt`.
unsafe fn create_table(fx: &mut Effects, s: *mut pg_sys::CreateStmt, foreign: bool) {
    // SAFETY: per the function's contract.
    unsafe {
        let parents: Vec<pg_sys::Oid> = list::<pg_sys::RangeVar>((*s).inhRelations)
            .into_iter()
            .map(|r| bind(r, SHARE_UPDATE_EXCLUSIVE))
            .collect();
        if (*s).partbound.is_null() {
            fx.bypasses.extend(
                parents
                    .into_iter()
                    .map(|p| (p, "CREATE TABLE ... INHERITS")),
            );
        } else if let Some(&parent) = parents.first() {
            fx.new_partition = Some((parent, (*s).relation));
            if foreign {
                fx.gated.push((Operation::BulkInsert, parent));
            }
        }
    }
}

/// # Safety
/// `s` is a valid `AlterTableStmt`.
#[allow(non_upper_case_globals)]
unsafe fn alter_table(fx: &mut Effects, s: *mut pg_sys::AlterTableStmt) {
    use pg_sys::AlterTableType::*;
    // Any ALTER of a table, its type or an index may rewrite a collection's
    // relation: their files are compared before and after.
    fx.watch_rewrites = true;
    // SAFETY: per the function's contract; each command's `def` is the node
    // its subtype takes.
    unsafe {
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
                        .push((partition, "ALTER TABLE ... DETACH PARTITION"));
                    fx.detached.push(partition);
                }
                AT_AddInherit | AT_DropInherit => {
                    let parent = bind(
                        (*cmd).def.cast::<pg_sys::RangeVar>(),
                        SHARE_UPDATE_EXCLUSIVE,
                    );
                    let what = if (*cmd).subtype == AT_AddInherit {
                        "ALTER TABLE ... INHERIT"
                    } else {
                        "ALTER TABLE ... NO INHERIT"
                    };
                    fx.bypasses.push((relid, what));
                    fx.bypasses.push((parent, what));
                }
                AT_AttachPartition => {
                    let attached = (*(*cmd).def.cast::<pg_sys::PartitionCmd>()).name;
                    fx.gated.push((Operation::BulkInsert, relid));
                    // A collection's own table or partition going under
                    // another parent: rows written there reach it past the gate.
                    fx.bypasses.push((
                        bind(attached, ACCESS_EXCLUSIVE),
                        "ALTER TABLE ... ATTACH PARTITION (to another table)",
                    ));
                    fx.new_partition = Some((relid, attached));
                }
                // (By the relation's kind, not the statement's keyword:
                // ALTER TABLE reaches a foreign table's options too.)
                AT_GenericOptions | AT_AlterColumnGenericOptions => fx
                    .repointed
                    .push((relid, "ALTER ... OPTIONS (of a foreign partition)")),
                AT_DropColumn => fx.bypasses.push((relid, "ALTER TABLE ... DROP COLUMN")),
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

/// # Safety
/// `s` is a valid `RenameStmt`.
unsafe fn rename(fx: &mut Effects, s: *mut pg_sys::RenameStmt) {
    use pg_sys::ObjectType::*;
    // SAFETY: per the function's contract.
    unsafe {
        match (*s).renameType {
            // A column of a collection's table renamed: the collection's
            // column could become another one.
            OBJECT_COLUMN => fx.bypasses.push((
                bind((*s).relation, ACCESS_EXCLUSIVE),
                "ALTER TABLE ... RENAME COLUMN",
            )),
            OBJECT_ATTRIBUTE => {
                fx.altered_type = Some((type_of((*s).relation), "ALTER TYPE ... RENAME ATTRIBUTE"))
            }
            // A foreign partition renamed reads another remote table
            // (ALTER INDEX ... RENAME renames any relation).
            OBJECT_TABLE | OBJECT_FOREIGN_TABLE | OBJECT_INDEX => fx.repointed.push((
                bind((*s).relation, ACCESS_EXCLUSIVE),
                "ALTER ... RENAME (of a foreign partition)",
            )),
            OBJECT_SCHEMA => fx.renamed_schema = Some(catalog::schema_named((*s).subname)),
            _ => {}
        }
    }
}

/// The database named `name` as [`Vacated`], when the statement would run
/// (see there).
///
/// # Safety
/// `name` is NULL or a C string.
unsafe fn vacated(name: *const std::ffi::c_char, dropped: bool) -> Option<Vacated> {
    if name.is_null() {
        return None;
    }
    // SAFETY: syscache lookups and the backend's transaction state, no SQL.
    unsafe {
        let database = pg_sys::get_database_oid(name, true);
        (database != pg_sys::InvalidOid
            && database != pg_sys::MyDatabaseId
            && !pg_sys::IsTransactionBlock()
            && pg_sys::pg_database_ownercheck(database, pg_sys::GetUserId()))
        .then_some(Vacated { database, dropped })
    }
}

/// Whether the current role may create databases (`CREATEDB`, or a
/// superuser), as RENAME and CREATE DATABASE require.
fn may_create_databases() -> bool {
    // SAFETY: a syscache lookup of the current role, released before return.
    unsafe {
        let role = pg_sys::GetUserId();
        if pg_sys::superuser_arg(role) {
            return true;
        }
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::AUTHOID as i32,
            pg_sys::Datum::from(role),
        );
        if tuple.is_null() {
            return false;
        }
        let may = (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_authid>(tuple)).rolcreatedb;
        pg_sys::ReleaseSysCache(tuple);
        may
    }
}

/// The option `name` of a statement's `DefElem` list.
///
/// # Safety
/// `options` is NULL or a valid `List` of `DefElem`.
unsafe fn option(options: *mut pg_sys::List, name: &str) -> Option<*mut pg_sys::DefElem> {
    // SAFETY: per the function's contract.
    unsafe {
        list::<pg_sys::DefElem>(options)
            .into_iter()
            .find(|&d| text((*d).defname) == name)
    }
}

/// # Safety
/// `s` is a valid `AlterObjectSchemaStmt`.
unsafe fn set_schema(fx: &mut Effects, s: *mut pg_sys::AlterObjectSchemaStmt) {
    // SAFETY: per the function's contract.
    unsafe {
        if is_table((*s).objectType) {
            fx.repointed.push((
                bind((*s).relation, ACCESS_EXCLUSIVE),
                "ALTER ... SET SCHEMA (of a foreign partition)",
            ));
        }
    }
}

/// A collection's table made part of an extension leaves pg_dump.
///
/// # Safety
/// `s` is a valid `AlterExtensionContentsStmt`.
unsafe fn extension_contents(fx: &mut Effects, s: *mut pg_sys::AlterExtensionContentsStmt) {
    // SAFETY: per the function's contract; a table's object is a List of
    // String nodes.
    unsafe {
        if is_table((*s).objtype) {
            let names = list::<pg_sys::String>((*s).object.cast());
            fx.bypasses
                .push((relid_of_names(&names), "ALTER EXTENSION ... ADD/DROP TABLE"));
        }
    }
}

fn is_table(kind: pg_sys::ObjectType::Type) -> bool {
    matches!(
        kind,
        pg_sys::ObjectType::OBJECT_TABLE | pg_sys::ObjectType::OBJECT_FOREIGN_TABLE
    )
}

/// The relation named by the qualified name `names` (a list of String nodes).
///
/// # Safety
/// Each pointer is a valid `String` node.
unsafe fn relid_of_names(names: &[*mut pg_sys::String]) -> pg_sys::Oid {
    // SAFETY: per the function's contract; `makeRangeVar` copies nothing and
    // allocates in the current context.
    unsafe {
        let parts: Vec<*mut c_char> = names.iter().map(|&s| (*s).sval).collect();
        let (schema, relation) = match parts.as_slice() {
            [relation] => (std::ptr::null_mut(), *relation),
            [.., schema, relation] => (*schema, *relation),
            [] => return pg_sys::InvalidOid,
        };
        relid_of(pg_sys::makeRangeVar(schema, relation, -1))
    }
}

/// Whether `def` (a Constraint or an IndexStmt) builds an index.
///
/// # Safety
/// `def` is a valid node.
#[allow(non_upper_case_globals)]
unsafe fn builds_index(def: *mut pg_sys::Node) -> bool {
    use pg_sys::ConstrType::*;
    // SAFETY: per the function's contract; cast by tag.
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
///
/// # Safety
/// `def` is a valid node.
unsafe fn column_builds_index(def: *mut pg_sys::Node) -> bool {
    // SAFETY: per the function's contract; cast by tag.
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
///
/// # Safety
/// `def` is a valid node.
#[allow(non_upper_case_globals)]
unsafe fn column_rewrites(def: *mut pg_sys::Node) -> bool {
    use pg_sys::ConstrType::*;
    // SAFETY: per the function's contract; cast by tag.
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
///
/// # Safety
/// `expr` is a valid node.
unsafe fn is_constant(expr: *mut pg_sys::Node) -> bool {
    // SAFETY: per the function's contract; cast by tag.
    unsafe {
        match (*expr).type_ {
            pg_sys::NodeTag::T_A_Const => true,
            pg_sys::NodeTag::T_TypeCast => is_constant((*expr.cast::<pg_sys::TypeCast>()).arg),
            _ => false,
        }
    }
}
