//! Work tied to the current transaction, kept in backend-local memory:
//!
//! - shared-memory changes that may only be seen once the transaction commits
//!   (a registration, a policy, an override), dropped if it, or the
//!   subtransaction that made them, rolls back;
//! - searches counted against `max_concurrent_searches`, released when the
//!   transaction ends however it ends;
//! - whether to wake the worker after commit.

use std::cell::RefCell;
use std::sync::atomic::Ordering;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::shmem::{self, Shared};

type Change = Box<dyn FnOnce(Shared)>;

#[derive(Default)]
struct Pending {
    /// Changes and the subtransaction that made each.
    changes: Vec<(pg_sys::SubTransactionId, Change)>,
    /// (slot, collection id) of each search this transaction holds.
    searches: Vec<(usize, i32)>,
    wake_worker: bool,
}

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

/// Registers the transaction callbacks; called from `_PG_init`.
pub fn install_callbacks() {
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

/// Applies `change` to shared memory when the current transaction commits.
pub fn at_commit(change: impl FnOnce(Shared) + 'static) {
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    PENDING.with(|p| p.borrow_mut().changes.push((subxact, Box::new(change))));
}

/// Wakes the worker when the current transaction commits.
pub fn wake_worker_at_commit() {
    PENDING.with(|p| p.borrow_mut().wake_worker = true);
}

/// Whether this transaction already holds a search on the collection in `slot`.
pub fn holds_search(slot: usize, collection_id: i32) -> bool {
    PENDING.with(|p| p.borrow().searches.contains(&(slot, collection_id)))
}

/// Counts a search on the collection in `slot` until the transaction ends.
pub fn hold_search(shared: Shared, slot: usize, collection_id: i32) {
    if holds_search(slot, collection_id) {
        return;
    }
    if let Some(counter) = shared.live_searches(slot, collection_id) {
        counter.fetch_add(1, Ordering::AcqRel);
        PENDING.with(|p| p.borrow_mut().searches.push((slot, collection_id)));
    }
}

fn release_searches(shared: Shared, searches: Vec<(usize, i32)>) {
    for (slot, collection_id) in searches {
        if let Some(counter) = shared.live_searches(slot, collection_id) {
            // Never below zero, even if the slot was reset under us.
            let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    let committed = match event {
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => true,
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT | XACT_EVENT_PREPARE => false,
        _ => return,
    };
    crate::enforce::end_of_transaction();
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let Ok(shared) = shmem::shared() else { return };
    release_searches(shared, pending.searches);
    if committed {
        for (_, change) in pending.changes {
            change(shared);
        }
        if pending.wake_worker {
            shared.wake_worker();
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    parent_subid: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        match event {
            SUBXACT_EVENT_ABORT_SUB => p.changes.retain(|(subxact, _)| *subxact < my_subid),
            SUBXACT_EVENT_COMMIT_SUB => p
                .changes
                .iter_mut()
                .filter(|(subxact, _)| *subxact >= my_subid)
                .for_each(|(subxact, _)| *subxact = parent_subid),
            _ => {}
        }
    });
}
