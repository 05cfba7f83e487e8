//! Who may do what, asked of PostgreSQL's own catalogs: ownership, table
//! privileges, membership of `ruvector_admin`. The hooks ask before they
//! decide (a role that may not run a statement meets PostgreSQL's error, not
//! the gate's), the SQL functions before they act.
//!
//! Two identities: [`current`] is the role whose rights a statement runs with
//! (a SECURITY DEFINER function's owner inside one), [`caller`] the role that
//! called into the extension's SECURITY DEFINER wrappers (`GetOuterUserId`).

use std::cell::{Cell, RefCell};

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use ruvector_integrity::gate::Needs;

use crate::errors::{SqlError, SqlResult};

/// The role whose rights the current statement runs with.
pub fn current() -> pg_sys::Oid {
    // SAFETY: reads the backend's current user, set for every transaction.
    unsafe { pg_sys::GetUserId() }
}

/// The role that called into a SECURITY DEFINER wrapper.
pub fn caller() -> pg_sys::Oid {
    // SAFETY: reads the backend's outer user, set for every transaction.
    unsafe { pg_sys::GetOuterUserId() }
}

/// The name of `role`, or "unknown" once it is gone.
pub fn role_name(role: pg_sys::Oid) -> String {
    // SAFETY: a syscache lookup; the name is a palloc'd copy or NULL.
    unsafe {
        let name = pg_sys::GetUserNameFromId(role, true);
        if name.is_null() {
            "unknown".to_owned()
        } else {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        }
    }
}

/// The caller's name, as audit events record who did something.
pub fn caller_name() -> String {
    role_name(caller())
}

pub fn is_superuser(role: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup by OID.
    unsafe { pg_sys::superuser_arg(role) }
}

/// Whether `role` owns relation `relid` (a superuser owns everything).
/// `relid` must exist.
pub fn owns(relid: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup by OID; it raises an ERROR for a relation
    // that does not exist, which callers rule out.
    unsafe { pg_sys::pg_class_ownercheck(relid, role) }
}

/// Whether `role` owns the current database.
pub fn owns_database(role: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup of the database the backend is connected to.
    unsafe { pg_sys::pg_database_ownercheck(pg_sys::MyDatabaseId, role) }
}

/// Whether `role` owns extension `extension` (or is a superuser).
pub fn owns_extension(extension: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    // SAFETY: a catalog lookup of an extension that exists (the caller found it).
    unsafe { pg_sys::pg_extension_ownercheck(extension, role) }
}

pub fn owns_schema(namespace: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup; a schema that does not exist is nobody's.
    namespace != pg_sys::InvalidOid && unsafe { pg_sys::pg_namespace_ownercheck(namespace, role) }
}

pub fn owns_type(type_id: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    // SAFETY: as `owns_schema`.
    type_id != pg_sys::InvalidOid && unsafe { pg_sys::pg_type_ownercheck(type_id, role) }
}

/// Whether `role` owns foreign server `server` or may use it.
pub fn may_use_server(server: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    // SAFETY: syscache lookups of a server that exists (the caller found it).
    unsafe {
        pg_sys::pg_foreign_server_ownercheck(server, role)
            || pg_sys::pg_foreign_server_aclcheck(
                server,
                role,
                pg_sys::ACL_USAGE as pg_sys::AclMode,
            ) == pg_sys::AclResult::ACLCHECK_OK
    }
}

/// Whether `role` has `mode` on table `relid`, or on any of its columns
/// (false when the table is gone).
fn has_table_privilege(relid: pg_sys::Oid, role: pg_sys::Oid, mode: u32) -> bool {
    let mode = mode as pg_sys::AclMode;
    let mut missing = false;
    // SAFETY: syscache lookups; a relation that is gone is reported through
    // `missing` (and by the column check as no privilege), not raised.
    unsafe {
        pg_sys::pg_class_aclcheck_ext(relid, role, mode, &mut missing)
            == pg_sys::AclResult::ACLCHECK_OK
            || (!missing
                && pg_sys::pg_attribute_aclcheck_all(
                    relid,
                    role,
                    mode,
                    pg_sys::AclMaskHow::ACLMASK_ANY,
                ) == pg_sys::AclResult::ACLCHECK_OK)
    }
}

pub fn may_insert(relid: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    has_table_privilege(relid, role, pg_sys::ACL_INSERT)
}

pub fn may_truncate(relid: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup of a relation that exists.
    unsafe {
        pg_sys::pg_class_aclcheck(relid, role, pg_sys::ACL_TRUNCATE as pg_sys::AclMode)
            == pg_sys::AclResult::ACLCHECK_OK
    }
}

/// Whether `role` has what `needs` says on table `relid` (false once the
/// table is gone). Remembered until a relation's row, a column's, a role or a
/// role membership changes anywhere (the gate asks on every call).
pub fn has(needs: Needs, relid: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    watch_grants();
    let key = (needs, relid, role);
    if let Some(known) =
        ANSWERS.with(|a| a.borrow().iter().find(|(k, _)| *k == key).map(|&(_, v)| v))
    {
        return known;
    }
    // (An invalidation while the catalog is read makes this answer one that
    // may already be stale: then it is not remembered.)
    let asked_at = FORGOTTEN.get();
    let answer = match needs {
        Needs::Select => has_table_privilege(relid, role, pg_sys::ACL_SELECT),
        Needs::Insert => has_table_privilege(relid, role, pg_sys::ACL_INSERT),
        Needs::Delete => has_table_privilege(relid, role, pg_sys::ACL_DELETE),
        Needs::Update => has_table_privilege(relid, role, pg_sys::ACL_UPDATE),
        Needs::Ownership => crate::catalog::exists(relid) && owns(relid, role),
    };
    if FORGOTTEN.get() == asked_at {
        ANSWERS.with(|a| {
            let mut answers = a.borrow_mut();
            if answers.len() >= REMEMBERED {
                answers.clear();
            }
            answers.push((key, answer));
        });
    }
    answer
}

/// Answers [`has`] remembers at most.
const REMEMBERED: usize = 64;

/// An answer of [`has`]: what was asked, and whether.
type Answer = ((Needs, pg_sys::Oid, pg_sys::Oid), bool);

thread_local! {
    static ANSWERS: RefCell<Vec<Answer>> = const { RefCell::new(Vec::new()) };
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    /// How many times the answers were forgotten.
    static FORGOTTEN: Cell<u64> = const { Cell::new(0) };
}

/// A syscache callback: something that grants or takes privileges changed.
extern "C-unwind" fn forget_answers(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    ANSWERS.with(|a| a.borrow_mut().clear());
    FORGOTTEN.set(FORGOTTEN.get() + 1);
}

/// Registers [`forget_answers`] for every catalog a privilege comes from:
/// `pg_class` (owner, ACL), `pg_attribute` (column ACLs), `pg_authid`
/// (superuser), `pg_auth_members` (role membership), `pg_database` (its owner
/// is `pg_database_owner`).
fn watch_grants() {
    if WATCHING.replace(true) {
        return;
    }
    use pg_sys::SysCacheIdentifier::*;
    for cache in [RELOID, ATTNUM, AUTHOID, AUTHMEMROLEMEM, DATABASEOID] {
        // SAFETY: once per backend; the callback only clears this module's
        // thread-local.
        unsafe {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as i32,
                Some(forget_answers),
                pg_sys::Datum::from(0),
            )
        };
    }
}

/// Refuses (`42501`) a caller who may not change how the collection of table
/// `relid` (`schema.table`) is gated: that is its table's owner's (or a
/// superuser's), as registering it was. A collection whose table is gone
/// guards nothing any more.
pub fn require_owner(
    relid: pg_sys::Oid,
    table: &str,
    what: &str,
    collection: &str,
) -> SqlResult<()> {
    if !crate::catalog::exists(relid) || owns(relid, caller()) {
        return Ok(());
    }
    Err(SqlError::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("must be owner of table {table} to {what} collection \"{collection}\""),
    )
    .hint("Ask the table's owner (or a superuser)."))
}

/// Whether the session's role may use `ruvector.integrity_bypass`: a
/// superuser, or a role with the privileges of ruvector_admin. The session's
/// role, not a SECURITY DEFINER function's owner.
pub fn may_bypass() -> bool {
    let role = caller();
    if is_superuser(role) {
        return true;
    }
    // SAFETY: catalog lookups by name and OID; a missing role is InvalidOid.
    unsafe {
        let admin = pg_sys::get_role_oid(c"ruvector_admin".as_ptr(), true);
        admin != pg_sys::InvalidOid && pg_sys::has_privs_of_role(role, admin)
    }
}
