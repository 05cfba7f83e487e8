//! This database's installation of ruvector, as code that runs in every
//! database (the utility hook, the worker) must see it:
//!
//! - [`installed`]: whether the extension is installed here, from
//!   `pg_extension` and the extension's membership of schema `ruvector` — never
//!   from a name alone, since anyone with CREATE on the database can make a
//!   schema called `ruvector`. Cached per backend and forgotten when any schema
//!   changes (CREATE and DROP EXTENSION create and drop `ruvector`), through a
//!   syscache callback, so the common answer costs no catalog access.
//! - [`as_owner`]: runs SQL the extension must run on a user's behalf (triggers
//!   on a new partition, an audit event) as the extension's owner, in a
//!   security-restricted context, with `search_path = pg_catalog, pg_temp`.

use std::cell::Cell;

use pgrx::pg_sys;

/// The extension as installed in the current database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Installed {
    pub extension: pg_sys::Oid,
    /// Schema `ruvector`, a member of the extension.
    pub schema: pg_sys::Oid,
    /// The role that owns the extension's schema (the role that created it).
    pub owner: pg_sys::Oid,
}

thread_local! {
    /// `None`: not looked up since the last schema change.
    static CACHE: Cell<Option<Option<Installed>>> = const { Cell::new(None) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn forget(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    CACHE.with(|c| c.set(None));
}

/// The extension in this database, or `None` when it is not installed here.
/// Needs a transaction (it may read the catalog).
pub fn installed() -> Option<Installed> {
    if !CALLBACK_REGISTERED.with(Cell::get) {
        unsafe {
            pg_sys::CacheRegisterSyscacheCallback(
                pg_sys::SysCacheIdentifier::NAMESPACEOID as i32,
                Some(forget),
                pg_sys::Datum::from(0),
            )
        };
        CALLBACK_REGISTERED.with(|r| r.set(true));
    }
    if let Some(known) = CACHE.with(Cell::get) {
        return known;
    }
    let found = unsafe { look_up() };
    CACHE.with(|c| c.set(Some(found)));
    found
}

unsafe fn look_up() -> Option<Installed> {
    unsafe {
        let extension = pg_sys::get_extension_oid(c"ruvector".as_ptr(), true);
        if extension == pg_sys::InvalidOid {
            return None;
        }
        let schema = pg_sys::get_namespace_oid(c"ruvector".as_ptr(), true);
        if schema == pg_sys::InvalidOid
            || pg_sys::getExtensionOfObject(pg_sys::NamespaceRelationId, schema) != extension
        {
            return None;
        }
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as i32,
            pg_sys::Datum::from(schema),
        );
        if tuple.is_null() {
            return None;
        }
        let owner =
            (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_namespace>(tuple)).nspowner;
        pg_sys::ReleaseSysCache(tuple);
        Some(Installed {
            extension,
            schema,
            owner,
        })
    }
}

/// Runs `body` as `installed.owner` in a security-restricted context with
/// `search_path = pg_catalog, pg_temp`, then restores the caller's identity
/// and settings (an error restores them too, through the (sub)transaction's
/// abort).
pub fn as_owner<R>(installed: Installed, body: impl FnOnce() -> R) -> R {
    as_role(installed.owner, body)
}

/// Runs `body` as the role that called into a SECURITY DEFINER function,
/// restricted as [`as_owner`] is: for reading a user's own data, where any
/// code the data brings along (a cast, a function) runs with the user's
/// rights, not the extension owner's.
pub fn as_caller<R>(body: impl FnOnce() -> R) -> R {
    as_role(unsafe { pg_sys::GetOuterUserId() }, body)
}

/// Runs `body` as `role`, restricted as [`as_owner`] is.
pub fn as_role<R>(role: pg_sys::Oid, body: impl FnOnce() -> R) -> R {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    let nest_level = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            role,
            saved_context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
        let nest_level = pg_sys::NewGUCNestLevel();
        pin_search_path(pg_sys::GucAction::GUC_ACTION_SAVE);
        nest_level
    };
    let result = body();
    unsafe {
        pg_sys::AtEOXact_GUC(false, nest_level);
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
    }
    result
}

/// Sets `search_path = pg_catalog, pg_temp` for the current GUC nest level
/// (`GUC_ACTION_SAVE`) or for the session (`GUC_ACTION_SET`, the worker).
pub fn pin_search_path(action: pg_sys::GucAction::Type) {
    unsafe {
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            if action == pg_sys::GucAction::GUC_ACTION_SET {
                pg_sys::GucSource::PGC_S_OVERRIDE
            } else {
                pg_sys::GucSource::PGC_S_SESSION
            },
            action,
            true,
            0,
            false,
        );
    }
}
