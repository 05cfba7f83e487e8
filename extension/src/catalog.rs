//! What the catalog says of a relation, a schema or a server, read through
//! PostgreSQL's caches (no SQL): the lookups the hooks, the worker and the SQL
//! functions share. By OID: a name can change under a caller, an OID cannot.
//!
//! PostgreSQL functions that pgrx 0.18 does not bind are declared here, each
//! checked against the PostgreSQL 15 header it mirrors.

use std::ffi::{c_char, CStr};

use pgrx::pg_sys;
use pgrx::pg_sys::ffi::pg_guard_ffi_boundary;

unsafe extern "C-unwind" {
    /// `catalog/pg_inherits.h`: `extern List *find_all_inheritors(Oid
    /// parentrelId, LOCKMODE lockmode, List **parents);`
    fn find_all_inheritors(
        relid: pg_sys::Oid,
        lockmode: pg_sys::LOCKMODE,
        parents: *mut *mut pg_sys::List,
    ) -> *mut pg_sys::List;

    /// `catalog/partition.h`: `extern Oid get_partition_parent(Oid relid,
    /// bool even_if_detached);`
    fn get_partition_parent(relid: pg_sys::Oid, even_if_detached: bool) -> pg_sys::Oid;
}

/// A palloc'd C string as Rust text ("" for NULL).
///
/// # Safety
/// `s` is NULL or a valid NUL-terminated string.
pub unsafe fn text(s: *const c_char) -> String {
    if s.is_null() {
        String::new()
    } else {
        // SAFETY: per the function's contract.
        unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
    }
}

/// Whether relation `relid` exists.
pub fn exists(relid: pg_sys::Oid) -> bool {
    // SAFETY: a syscache probe by OID.
    unsafe {
        pg_sys::SearchSysCacheExists(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            pg_sys::Datum::from(relid),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        )
    }
}

/// The relation's name, unqualified ("" once it is gone).
pub fn name(relid: pg_sys::Oid) -> String {
    // SAFETY: a syscache lookup returning a palloc'd copy or NULL.
    unsafe { text(pg_sys::get_rel_name(relid)) }
}

/// The relation's current name, quoted and qualified for SQL (`None` once it
/// is gone). Lock the relation first for the name to stay its own.
pub fn qualified_name(relid: pg_sys::Oid) -> Option<String> {
    // SAFETY: syscache lookups by OID returning palloc'd copies or NULL.
    unsafe {
        let name = pg_sys::get_rel_name(relid);
        let schema = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        if name.is_null() || schema.is_null() {
            return None;
        }
        Some(pgrx::spi::quote_qualified_identifier(
            text(schema),
            text(name),
        ))
    }
}

pub fn namespace(relid: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY: a syscache lookup by OID (InvalidOid when missing).
    unsafe { pg_sys::get_rel_namespace(relid) }
}

/// The relation's tablespace (InvalidOid: the database's default).
pub fn tablespace(relid: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY: as `namespace`.
    unsafe { pg_sys::get_rel_tablespace(relid) }
}

pub fn is_foreign(relid: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup by OID ('\0' when missing).
    unsafe { pg_sys::get_rel_relkind(relid) == pg_sys::RELKIND_FOREIGN_TABLE as c_char }
}

pub fn is_partition(relid: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup by OID (false when missing).
    unsafe { pg_sys::get_rel_relispartition(relid) }
}

/// The table `relid` is a partition of (InvalidOid when it is none's).
pub fn partition_parent(relid: pg_sys::Oid) -> pg_sys::Oid {
    if !is_partition(relid) {
        return pg_sys::InvalidOid;
    }
    // SAFETY: `relid` is a partition, whose parent the catalog records; an
    // ERROR raised inside comes back through pgrx's guard.
    unsafe { pg_guard_ffi_boundary(|| get_partition_parent(relid, true)) }
}

/// `relid` and every partition under it (not inheritance children), each
/// locked with `lock` (`NoLock`: none).
pub fn partition_tree(relid: pg_sys::Oid, lock: pg_sys::LOCKMODE) -> Vec<pg_sys::Oid> {
    // SAFETY: the list is palloc'd by the callee in the current memory
    // context and read right away; an ERROR inside comes back through pgrx's
    // guard.
    let all = unsafe {
        let list = pg_guard_ffi_boundary(|| find_all_inheritors(relid, lock, std::ptr::null_mut()));
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).oid_value)
            .collect::<Vec<_>>()
    };
    all.into_iter()
        .filter(|&r| r == relid || is_partition(r))
        .collect()
}

/// An OID field of `relid`'s `pg_class` row (InvalidOid when there is none).
fn pg_class_oid(
    relid: pg_sys::Oid,
    field: impl FnOnce(&pg_sys::FormData_pg_class) -> pg_sys::Oid,
) -> pg_sys::Oid {
    // SAFETY: the tuple is pinned from SearchSysCache1 to ReleaseSysCache, and
    // only read in between.
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

/// The role that owns `relid` (InvalidOid when there is no such relation).
pub fn owner(relid: pg_sys::Oid) -> pg_sys::Oid {
    pg_class_oid(relid, |c| c.relowner)
}

/// The composite type a typed table (`CREATE TABLE ... OF type`) is of.
pub fn typed_table_type(relid: pg_sys::Oid) -> pg_sys::Oid {
    pg_class_oid(relid, |c| c.reloftype)
}

/// The file of `relid` (0 for a partitioned table, which has none).
pub fn file_node(relid: pg_sys::Oid) -> pg_sys::Oid {
    pg_class_oid(relid, |c| c.relfilenode)
}

/// The row type of relation `relid` (InvalidOid for none).
pub fn row_type(relid: pg_sys::Oid) -> pg_sys::Oid {
    if relid == pg_sys::InvalidOid {
        return pg_sys::InvalidOid;
    }
    // SAFETY: a syscache lookup by OID.
    unsafe { pg_sys::get_rel_type_id(relid) }
}

/// The foreign server a foreign table reads from.
pub fn server_of(foreign_table: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY: the caller checked that `foreign_table` is a foreign table; the
    // struct is palloc'd and read at once.
    unsafe { (*pg_sys::GetForeignTable(foreign_table)).serverid }
}

/// The foreign server named `name`, if there is one.
///
/// # Safety
/// `name` is a valid NUL-terminated string.
pub unsafe fn server_named(name: *const c_char) -> Option<pg_sys::Oid> {
    // SAFETY: a catalog lookup that returns NULL when missing.
    unsafe {
        let server = pg_sys::GetForeignServerByName(name, true);
        (!server.is_null()).then(|| (*server).serverid)
    }
}

/// The schema named `name` (InvalidOid when there is none).
///
/// # Safety
/// `name` is a valid NUL-terminated string.
pub unsafe fn schema_named(name: *const c_char) -> pg_sys::Oid {
    // SAFETY: a catalog lookup by name, missing_ok.
    unsafe { pg_sys::get_namespace_oid(name, true) }
}

/// The tablespace named `name` (InvalidOid when there is none).
///
/// # Safety
/// `name` is a valid NUL-terminated string.
pub unsafe fn tablespace_named(name: *const c_char) -> pg_sys::Oid {
    // SAFETY: a catalog lookup by name, missing_ok.
    unsafe { pg_sys::get_tablespace_oid(name, true) }
}

/// The table an index is on (InvalidOid when `index` is none).
pub fn indexed_table(index: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY: a syscache lookup, missing_ok.
    unsafe { pg_sys::IndexGetRelation(index, true) }
}

/// The database the backend is connected to.
pub fn database() -> pg_sys::Oid {
    // SAFETY: set once the backend has connected.
    unsafe { pg_sys::MyDatabaseId }
}

/// The name of the database the backend is connected to ("" before it is).
pub fn database_name() -> String {
    // SAFETY: a syscache lookup returning a palloc'd copy or NULL.
    unsafe { text(pg_sys::get_database_name(database())) }
}

/// Locks relation `relid` with `lock` until the transaction ends (waiting
/// for it; a cancel or `lock_timeout` ends the wait with an ERROR).
pub fn lock(relid: pg_sys::Oid, lock: pg_sys::LOCKMODE) {
    // SAFETY: a lock request in the caller's transaction, released with it.
    unsafe { pg_sys::LockRelationOid(relid, lock) }
}
