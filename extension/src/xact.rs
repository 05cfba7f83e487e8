//! Work tied to the current transaction, kept in backend-local memory:
//!
//! - shared-memory changes that may only be seen once the transaction commits
//!   (a registration, a policy, an override, relations coming and going),
//!   dropped if it, or the subtransaction that made them, rolls back; until
//!   then, this backend sees its own registrations and new partitions here;
//! - the room in shared memory those changes were promised when their
//!   statement ran, given back once they are made, or at rollback;
//! - searches counted against `max_concurrent_searches`: a query's released
//!   when its executor ends, a gate call's when the transaction ends; and in
//!   any case when the transaction or subtransaction that took them ends, or
//!   the backend exits;
//! - the statements `ruvector.integrity_bypass` let through, written to the
//!   audit trail when the transaction commits (one event per collection and
//!   role);
//! - whether to wake the worker after commit.
//!
//! A transaction with such changes cannot be prepared (two-phase commit):
//! shared memory would never learn of them.

use std::cell::RefCell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use ruvector_integrity::gate::Operation;

use crate::errors::{SqlError, SqlResult};
use crate::shmem::{self, CollectionView, Place, Shared, SlotRef};

type Change = Box<dyn FnOnce(Shared)>;

/// A collection this transaction registered or unregistered, or relations it
/// added to one. The newest entry of a collection wins.
struct Local {
    collection: String,
    /// Set for a registration.
    view: Option<CollectionView>,
    relations: Vec<pg_sys::Oid>,
    /// An unregistration: the collection's earlier entries no longer count.
    unregistered: bool,
}

#[derive(Default)]
struct Pending {
    /// Changes and the subtransaction that made each.
    changes: Vec<(pg_sys::SubTransactionId, Change)>,
    /// What this backend sees before commit, and the subtransaction of each.
    local: Vec<(pg_sys::SubTransactionId, Local)>,
    /// Searches this backend holds a place for.
    searches: Vec<Held>,
    /// Statements the bypass let through: collection, operation, and the
    /// role that ran each.
    bypasses: Vec<(pg_sys::SubTransactionId, Bypass)>,
    /// Room reserved in shared memory: (subtransaction, slots, relations).
    reserved: Vec<(pg_sys::SubTransactionId, usize, usize)>,
    /// Pending audit events appended, by id: tracked in shared memory from
    /// commit until the worker signs them.
    appended: Vec<(pg_sys::SubTransactionId, i64)>,
    wake_worker: bool,
}

/// A hold on a place in a collection's live search count. A backend takes
/// one place per collection however many of its executors read it at once;
/// the place is given back when its last hold goes.
struct Held {
    place: Place,
    /// The executor (its `QueryDesc`) that releases it when it ends; 0 for a
    /// gate call, which holds it to the end of the transaction.
    executor: usize,
    subxact: pg_sys::SubTransactionId,
}

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

/// What the features above want done at transaction boundaries: this module
/// calls nothing above it, it calls these (installed once, from `_PG_init`).
pub struct Callbacks {
    /// Before commit (and before PREPARE), with the statements the bypass let
    /// through: their audit events are written while the transaction can
    /// still fail, and take them back.
    pub before_commit: fn(Vec<Bypass>),
    /// When the transaction ends, however it ends.
    pub at_end: fn(),
}

static CALLBACKS: std::sync::OnceLock<Callbacks> = std::sync::OnceLock::new();

/// Registers the transaction callbacks; called from `_PG_init`.
pub fn install_callbacks(callbacks: Callbacks) {
    let _ = CALLBACKS.set(callbacks);
    // SAFETY: `_PG_init`, once per process that loads the library; the
    // callbacks are functions of this library, loaded for the process's life.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

fn subxact() -> pg_sys::SubTransactionId {
    // SAFETY: reads the backend's transaction state; no side effect.
    unsafe { pg_sys::GetCurrentSubTransactionId() }
}

/// Applies `change` to shared memory when the current transaction commits.
pub fn at_commit(change: impl FnOnce(Shared) + 'static) {
    PENDING.with(|p| p.borrow_mut().changes.push((subxact(), Box::new(change))));
}

/// A registration: the slot and relations of `collection` appear at commit,
/// and at once for this backend.
pub fn register_at_commit(collection: &str, view: CollectionView, relations: Vec<pg_sys::Oid>) {
    let name = collection.to_owned();
    let (view_at_commit, relations_at_commit) = (view, relations.clone());
    at_commit(move |shared| {
        match shared.insert(&name, view_at_commit) {
        Some(slot) => {
            if !shared.add_relations(slot, &relations_at_commit) {
                warn_relations_full(&name);
            }
        }
        None => pgrx::warning!(
            "ruvector: collection \"{name}\" is registered but shared memory is full (ruvector.max_collections = {}); its gate answers from the tables until a slot frees",
            shared.slot_capacity()
        ),
    }
    });
    remember(Local {
        collection: collection.to_owned(),
        view: Some(view),
        relations,
        unregistered: false,
    });
}

fn warn_relations_full(collection: &str) {
    pgrx::warning!(
        "ruvector: the relation map is full: some relations of collection \"{collection}\" are not gated by the utility hook; raise ruvector.max_relations"
    );
}

/// New partitions of `collection`: in the relation map at commit, and at
/// once for this backend.
pub fn add_relations_at_commit(collection: &str, relations: Vec<pg_sys::Oid>) {
    let name = collection.to_owned();
    let at_commit_relations = relations.clone();
    at_commit(move |shared| {
        if let Some((slot, _)) = shared.view(&name) {
            if !shared.add_relations(slot, &at_commit_relations) {
                warn_relations_full(&name);
            }
        }
    });
    remember(Local {
        collection: collection.to_owned(),
        view: None,
        relations,
        unregistered: false,
    });
}

/// An unregistration: this backend stops seeing `collection` as registered
/// at once (shared memory forgets it at commit).
pub fn forget_at_commit(collection: &str) {
    let name = collection.to_owned();
    at_commit(move |shared| shared.remove(&name));
    remember(Local {
        collection: collection.to_owned(),
        view: None,
        relations: Vec::new(),
        unregistered: true,
    });
}

/// Relations that left their collection (detached or dropped).
pub fn remove_relations_at_commit(relations: Vec<pg_sys::Oid>) {
    at_commit(move |shared| shared.remove_relations(&relations));
}

/// Reserves room in shared memory for `slots` new collections and
/// `relations` new relations of this transaction, or refuses (`53400`): a
/// collection or relation that shared memory could not hold at commit would
/// go ungated. The room is the transaction's until it ends.
pub fn reserve(slots: usize, relations: usize) -> Result<(), SqlError> {
    let full = |setting: &str| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            format!("ruvector's shared memory is full: {setting} is reached"),
        )
        .hint(format!(
            "Raise {setting} and restart the server, or unregister collections you no longer need."
        ))
    };
    shmem::shared()?
        .reserve(slots, relations)
        .map_err(|what| match what {
            shmem::Full::Collections => full("ruvector.max_collections"),
            shmem::Full::Relations => full("ruvector.max_relations"),
        })?;
    PENDING.with(|p| p.borrow_mut().reserved.push((subxact(), slots, relations)));
    Ok(())
}

/// Gives back reserved room.
fn unreserve(reserved: &[(pg_sys::SubTransactionId, usize, usize)]) {
    let (slots, relations) = reserved
        .iter()
        .fold((0, 0), |(s, r), &(_, ds, dr)| (s + ds, r + dr));
    if slots + relations > 0 {
        if let Ok(shared) = shmem::shared() {
            shared.unreserve(slots, relations);
        }
    }
}

fn remember(local: Local) {
    PENDING.with(|p| p.borrow_mut().local.push((subxact(), local)));
}

/// What this transaction's registration says of `collection`, before commit.
pub fn pending_view(collection: &str) -> Option<CollectionView> {
    PENDING.with(|p| {
        p.borrow()
            .local
            .iter()
            .rev()
            .filter(|(_, l)| l.collection == collection)
            .take_while(|(_, l)| !l.unregistered)
            .find_map(|(_, l)| l.view)
    })
}

/// Whether this transaction unregistered any collection.
pub fn unregistered_anything() -> bool {
    PENDING.with(|p| p.borrow().local.iter().any(|(_, l)| l.unregistered))
}

/// Whether this transaction unregistered `collection` (shared memory still
/// holds it until commit).
pub fn unregistered_here(collection: &str) -> bool {
    PENDING.with(|p| {
        p.borrow()
            .local
            .iter()
            .rev()
            .find(|(_, l)| l.collection == collection)
            .is_some_and(|(_, l)| l.unregistered)
    })
}

/// The collection this transaction made `relid` part of, before commit.
pub fn pending_relation(relid: pg_sys::Oid) -> Option<String> {
    PENDING.with(|p| {
        let p = p.borrow();
        let (_, local) = p
            .local
            .iter()
            .rev()
            .find(|(_, l)| l.relations.contains(&relid))?;
        let unregistered_since = p
            .local
            .iter()
            .rev()
            .take_while(|(_, l)| !std::ptr::eq(l, local))
            .any(|(_, l)| l.unregistered && l.collection == local.collection);
        (!unregistered_since).then(|| local.collection.clone())
    })
}

/// Runs `body` in a subtransaction that is rolled back when it returns, so
/// that the locks it took are released at once rather than held to the end
/// of the caller's transaction. `body` reads; whatever it writes is undone.
/// An error inside rolls the subtransaction back and is raised again.
pub fn released<R>(body: impl FnOnce() -> SqlResult<R>) -> SqlResult<R> {
    // SAFETY: the PL/pgSQL exception-block pattern: the subtransaction is
    // begun and ended here, in the caller's memory context and resource owner,
    // which are restored after; an error (a longjmp turned into a panic by
    // pgrx) is caught, the subtransaction rolled back, and the error re-raised.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let end = || {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        };
        let outcome = PgTryBuilder::new(std::panic::AssertUnwindSafe(body))
            .catch_others(|caught| {
                end();
                caught.rethrow()
            })
            .execute();
        end();
        outcome
    }
}

/// A pending audit event this transaction appended: once it commits, the
/// worker makes sure it gets signed, or records that it vanished.
pub fn appended_pending(id: i64) {
    PENDING.with(|p| p.borrow_mut().appended.push((subxact(), id)));
}

/// Wakes the worker when the current transaction commits.
pub fn wake_worker_at_commit() {
    PENDING.with(|p| p.borrow_mut().wake_worker = true);
}

/// The search place this backend holds on the collection in `slot`, if any.
pub fn held_place(slot: SlotRef) -> Option<Place> {
    PENDING.with(|p| {
        let searches = &p.borrow().searches;
        searches
            .iter()
            .find(|h| h.place.slot == slot)
            .map(|h| h.place)
    })
}

/// Remembers a search place (taken, or held already), to be released when
/// `executor` ends (0: when the transaction ends).
pub fn hold_search(place: Place, executor: usize) {
    let subxact = subxact();
    PENDING.with(|p| {
        let searches = &mut p.borrow_mut().searches;
        // (A gate call repeated in one transaction holds its place once.)
        let held = |h: &Held| h.place == place && h.executor == executor && h.subxact == subxact;
        if !searches.iter().any(held) {
            searches.push(Held {
                place,
                executor,
                subxact,
            });
        }
    });
}

/// The executor `executor` ends: its holds go.
pub fn release_executor(executor: usize) {
    PENDING.with(|p| drop_holds(&mut p.borrow_mut().searches, |h| h.executor == executor));
}

/// Removes the holds `ending` picks from `searches`, and gives back the
/// place of each slot whose last hold went. No allocation.
fn drop_holds(searches: &mut Vec<Held>, ending: impl Fn(&Held) -> bool) {
    let mut i = 0;
    while i < searches.len() {
        if !ending(&searches[i]) {
            i += 1;
            continue;
        }
        let held = searches.swap_remove(i);
        if !searches.iter().any(|h| h.place == held.place) {
            if let Ok(shared) = shmem::shared() {
                shared.give_back(held.place);
            }
        }
    }
}

/// However the backend exits, what it holds is given back: a transaction
/// still open at exit is aborted (which releases), and this catches the rest.
/// Called before the first place is taken (registering can fail, FATAL).
pub fn give_back_at_exit() {
    thread_local! {
        static REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !REGISTERED.replace(true) {
        // SAFETY: registered once per backend; the callback touches only this
        // module's thread-local and shared memory's atomics.
        unsafe { pg_sys::before_shmem_exit(Some(release_all), pg_sys::Datum::from(0)) };
    }
}

/// Gives back every search place this backend holds, as it exits.
extern "C-unwind" fn release_all(_code: i32, _arg: pg_sys::Datum) {
    PENDING.with(|p| drop_holds(&mut p.borrow_mut().searches, |_| true));
}

/// A statement that the gate refused and the bypass let through.
pub struct Bypass {
    pub collection: String,
    pub operation: Operation,
    pub role: String,
}

/// Remembers a bypassed statement, for the audit trail at commit.
pub fn record_bypass(bypass: Bypass) {
    PENDING.with(|p| p.borrow_mut().bypasses.push((subxact(), bypass)));
}

/// Writes what the bypass let through in this transaction to the audit
/// trail, while the transaction can still fail (and take it back).
fn audit_bypasses() {
    let bypasses = PENDING.with(|p| std::mem::take(&mut p.borrow_mut().bypasses));
    if !bypasses.is_empty() {
        if let Some(callbacks) = CALLBACKS.get() {
            (callbacks.before_commit)(bypasses.into_iter().map(|(_, b)| b).collect());
        }
    }
}

#[pg_guard]
extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    let committed = match event {
        XACT_EVENT_PRE_PREPARE => {
            audit_bypasses();
            let changed = PENDING.with(|p| !p.borrow().changes.is_empty());
            if changed {
                SqlError::new(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    "cannot PREPARE a transaction that changed ruvector state (collections, their partitions, policies or overrides)",
                )
                .hint("Commit such changes in a transaction of their own.")
                .raise();
            }
            return;
        }
        XACT_EVENT_PRE_COMMIT => return audit_bypasses(),
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => true,
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT | XACT_EVENT_PREPARE => false,
        _ => return,
    };
    if let Some(callbacks) = CALLBACKS.get() {
        (callbacks.at_end)();
    }
    // The searches' vector keeps its room for the next transaction.
    let pending = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        drop_holds(&mut p.searches, |_| true);
        let searches = std::mem::take(&mut p.searches);
        let rest = std::mem::take(&mut *p);
        p.searches = searches;
        rest
    });
    let Ok(shared) = shmem::shared() else { return };
    if committed {
        for (_, change) in pending.changes {
            change(shared);
        }
        if !pending.appended.is_empty() {
            let ids: Vec<i64> = pending.appended.iter().map(|&(_, id)| id).collect();
            shared.track_pending(&ids);
        }
        if pending.wake_worker {
            shared.wake_worker();
        }
    }
    unreserve(&pending.reserved);
}

#[pg_guard]
extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    parent_subid: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let p = &mut *p;
        match event {
            SUBXACT_EVENT_ABORT_SUB => {
                p.changes.retain(|(subxact, _)| *subxact < my_subid);
                p.local.retain(|(subxact, _)| *subxact < my_subid);
                p.bypasses.retain(|(subxact, _)| *subxact < my_subid);
                p.appended.retain(|(subxact, _)| *subxact < my_subid);
                let (gone, kept) = std::mem::take(&mut p.reserved)
                    .into_iter()
                    .partition::<Vec<_>, _>(|(subxact, _, _)| *subxact >= my_subid);
                p.reserved = kept;
                unreserve(&gone);
                drop_holds(&mut p.searches, |h| h.subxact >= my_subid);
            }
            SUBXACT_EVENT_COMMIT_SUB => {
                for subxact in p
                    .changes
                    .iter_mut()
                    .map(|(s, _)| s)
                    .chain(p.local.iter_mut().map(|(s, _)| s))
                    .chain(p.bypasses.iter_mut().map(|(s, _)| s))
                    .chain(p.reserved.iter_mut().map(|(s, _, _)| s))
                    .chain(p.appended.iter_mut().map(|(s, _)| s))
                    .chain(p.searches.iter_mut().map(|h| &mut h.subxact))
                {
                    if *subxact >= my_subid {
                        *subxact = parent_subid;
                    }
                }
            }
            _ => {}
        }
    });
}
