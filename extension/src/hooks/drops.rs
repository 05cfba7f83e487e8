//! The object access hook: every way a collection's relation is emptied or
//! dropped passes here — TRUNCATE (of the table, of a parent, or by CASCADE
//! through a foreign key), DROP TABLE, DROP SCHEMA ... CASCADE, DROP OWNED —
//! and each is a `bulk_delete` for the gate, whatever statement caused it.
//! (A dropped registered table then unregisters its collection: the
//! `sql_drop` event trigger.)

use pgrx::pg_sys;
use pgrx::prelude::*;
use ruvector_integrity::gate::{Operation, Rows};

use super::{collection_of, enforce};
use crate::errors::OrRaise;
use crate::{installation, privileges};

/// The hook that was installed before ours, set once in `_PG_init`.
static mut PREV_OBJECT_ACCESS: pg_sys::object_access_hook_type = None;

pub fn install_hook() {
    // SAFETY: `_PG_init` runs once per process that loads the library,
    // before any statement runs: nothing reads this static concurrently.
    unsafe {
        PREV_OBJECT_ACCESS = pg_sys::object_access_hook;
        pg_sys::object_access_hook = Some(object_access);
    }
}

/// Not guarded: another hook's errors pass through untouched.
///
/// # Safety
/// Called by PostgreSQL as `object_access_hook`, with its live arguments.
unsafe extern "C-unwind" fn object_access(
    access: pg_sys::ObjectAccessType::Type,
    class_id: pg_sys::Oid,
    object_id: pg_sys::Oid,
    sub_id: std::ffi::c_int,
    arg: *mut std::ffi::c_void,
) {
    // SAFETY: the previous hook with PostgreSQL's arguments; with OAT_DROP,
    // `arg` is NULL or an ObjectAccessDrop.
    unsafe {
        if let Some(prev) = PREV_OBJECT_ACCESS {
            prev(access, class_id, object_id, sub_id, arg);
        }
        let emptied = match access {
            pg_sys::ObjectAccessType::OAT_TRUNCATE => true,
            // Internal drops (a rewrite's transient table) are not the user's.
            pg_sys::ObjectAccessType::OAT_DROP => {
                let flags = arg.cast::<pg_sys::ObjectAccessDrop>();
                flags.is_null()
                    || (*flags).dropflags & pg_sys::PERFORM_DELETION_INTERNAL as i32 == 0
            }
            _ => false,
        };
        if emptied
            && class_id == pg_sys::RelationRelationId
            && sub_id == 0
            && pg_sys::IsUnderPostmaster
        {
            check_emptied(object_id, access == pg_sys::ObjectAccessType::OAT_TRUNCATE);
        }
    }
}

/// A relation emptied (`truncated`) or dropped: a bulk delete for the gate
/// when it is a collection's.
#[pg_guard]
extern "C-unwind" fn check_emptied(relid: pg_sys::Oid, truncated: bool) {
    // Permission first: PostgreSQL checks a TRUNCATE's privilege after
    // this hook (a DROP's ownership before it, a cascade's at its root).
    let permitted = !truncated || privileges::may_truncate(relid, privileges::current());
    if let Some(target) =
        collection_of(relid).filter(|_| permitted && installation::installed().is_some())
    {
        enforce(&target, Operation::BulkDelete, Rows::Later, false).or_raise();
    }
}
