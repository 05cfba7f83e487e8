//! This database's installation of ruvector, as code that runs in every
//! database (the hooks, the worker) must see it:
//!
//! - [`installed`]: whether the extension is installed here, from
//!   `pg_extension` and the extension's membership of schema `ruvector` — never
//!   from a name alone, since anyone with CREATE on the database can make a
//!   schema called `ruvector`. Cached per backend and forgotten when any schema
//!   changes (CREATE and DROP EXTENSION create and drop `ruvector`), through a
//!   syscache callback, so the common answer costs no catalog access. The one
//!   "is it installed" check there is.
//! - [`as_owner`], [`as_role`]: run SQL the extension runs on
//!   someone's behalf (an audit event, filling the relation map, reading a
//!   collection's vectors) as that role, in a security-restricted context, with
//!   `search_path = pg_catalog, pg_temp`.
//! - [`reading_for_itself`]: marks the extension's own reads of a collection's
//!   rows (training, drift samples, registration checks), which are no
//!   searches.

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
    /// Depth of the extension's own reads of collection data.
    static READING_FOR_ITSELF: Cell<u32> = const { Cell::new(0) };
}

/// The syscache callback: any schema changed.
#[pgrx::pg_guard]
extern "C-unwind" fn forget(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    CACHE.with(|c| c.set(None));
}

/// The extension in this database, or `None` when it is not installed here.
/// Needs a transaction (it may read the catalog).
pub fn installed() -> Option<Installed> {
    if !CALLBACK_REGISTERED.with(Cell::get) {
        // SAFETY: registered once per backend; the callback only clears this
        // module's thread-local.
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
    let found = look_up();
    CACHE.with(|c| c.set(Some(found)));
    found
}

fn look_up() -> Option<Installed> {
    // SAFETY: catalog lookups by name and OID, in the caller's transaction;
    // the namespace tuple is pinned from SearchSysCache1 to ReleaseSysCache.
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

/// Runs `body` as `role`, restricted as [`as_owner`] is: for reading a
/// table's rows as its owner, so that any code the data brings along (a cast,
/// a function) runs with the owner's rights, whoever asked.
pub fn as_role<R>(role: pg_sys::Oid, body: impl FnOnce() -> R) -> R {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    // SAFETY: the identity and a GUC nest level are saved here and restored
    // below; should `body` raise an ERROR, the (sub)transaction's abort
    // restores both, as for any SECURITY DEFINER function.
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
    // SAFETY: restores what was saved above, at the nest level opened above.
    unsafe {
        pg_sys::AtEOXact_GUC(false, nest_level);
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
    }
    result
}

/// Sets `search_path = pg_catalog, pg_temp` for the current GUC nest level
/// (`GUC_ACTION_SAVE`) or for the session (`GUC_ACTION_SET`, the worker).
pub fn pin_search_path(action: pg_sys::GucAction::Type) {
    // SAFETY: sets a built-in setting to a constant value, in the caller's
    // transaction (or session, for the worker).
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

/// Runs `body`, in which the extension reads a collection's rows for itself
/// (IVF training, drift samples, registration checks): not a search.
pub fn reading_for_itself<R>(body: impl FnOnce() -> R) -> R {
    struct Depth;
    impl Drop for Depth {
        fn drop(&mut self) {
            READING_FOR_ITSELF.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    READING_FOR_ITSELF.with(|d| d.set(d.get() + 1));
    let _depth = Depth;
    body()
}

/// Whether the extension is reading a collection's rows for itself now.
pub fn is_reading_for_itself() -> bool {
    READING_FOR_ITSELF.with(|d| d.get() > 0)
}
