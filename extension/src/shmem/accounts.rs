//! What shared memory promises and lends, beyond its slots and relations:
//!
//! - entries reserved for transactions in progress (a registration, a new
//!   partition): taken when their statement passes its check, turned into
//!   entries at commit, given back at abort, so that two transactions never
//!   both have the last one;
//! - the memory the solver functions' calls hold of
//!   `ruvector.solver_memory_limit`, given back when a call ends (and by the
//!   backend's exit, should a FATAL end it mid-call);
//! - the pending audit events committed in this server run and not yet
//!   signed, by database: the worker checks each one is signed, and records
//!   those that vanish before it could;
//! - how far the audit trail was exported in this server run (the
//!   installation exported last): DROP EXTENSION is refused while signed
//!   entries were not.

use std::sync::atomic::{AtomicU64, Ordering};

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use super::{database, Shared};
use crate::errors::SqlError;
use crate::gucs;

/// Pending events tracked until the worker signs them: the worker drains
/// them every tick (at most 5 s, usually 1), and a burst of more commits
/// than this between two ticks is rare; 128 kB of shared memory.
const TRACKED_PENDING: usize = 8192;

#[repr(C)]
pub(super) struct Accounts {
    /// Under the lock.
    reserved_slots: u32,
    reserved_relations: u32,
    /// Bytes held by the solver calls running now.
    solver_memory: AtomicU64,
    /// Under the lock: (database, id), and how many went untracked for want
    /// of room.
    tracked_pending: [(pg_sys::Oid, i64); TRACKED_PENDING],
    tracked_pending_len: u32,
    untracked_pending: u64,
    /// Under the lock: the installation (database, extension) whose trail
    /// `ruvector_audit_export()` produced last, and the highest seq it
    /// produced there (a new installation's chain starts at seq 1 again).
    exported: (pg_sys::Oid, pg_sys::Oid, u64),
}

/// What shared memory cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Collections,
    Relations,
}

/// How full shared memory is, for `ruvector._shared_memory()`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub slot_capacity: usize,
    pub slots_used: usize,
    pub slots_reserved: usize,
    pub relation_capacity: usize,
    pub relations_used: usize,
    pub relations_reserved: usize,
    pub relations_version: u64,
    pub solver_memory_held: u64,
    pub pending_tracked: usize,
    pub pending_untracked: u64,
    pub database_capacity: usize,
    pub databases_used: usize,
}

impl Shared {
    fn accounts(&self) -> &Accounts {
        &self.header().accounts
    }

    #[allow(clippy::mut_from_ref)]
    fn accounts_mut(&self) -> &mut Accounts {
        &mut self.header_mut().accounts
    }

    fn slots_used(&self) -> usize {
        (0..self.slot_capacity())
            .filter(|&i| self.slot(i).in_use())
            .count()
    }

    /// Slots neither used nor reserved, under a lock held by the caller.
    pub(super) fn reserved_slots(&self) -> usize {
        self.accounts().reserved_slots as usize
    }

    pub(super) fn reserved_relations(&self) -> usize {
        self.accounts().reserved_relations as usize
    }

    /// Promises `slots` slots and `relations` relation entries to the current
    /// transaction, if that many are neither used nor promised to another.
    pub fn reserve(&self, slots: usize, relations: usize) -> Result<(), Full> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        if self.slots_used() + self.reserved_slots() + slots > self.slot_capacity() {
            return Err(Full::Collections);
        }
        let capacity = self.header().relation_capacity as usize;
        if self.relation_count() + self.reserved_relations() + relations > capacity {
            return Err(Full::Relations);
        }
        let accounts = self.accounts_mut();
        accounts.reserved_slots += slots as u32;
        accounts.reserved_relations += relations as u32;
        Ok(())
    }

    /// Gives back what [`Shared::reserve`] promised (at commit, once the
    /// entries are made; at abort, unused).
    pub fn unreserve(&self, slots: usize, relations: usize) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let accounts = self.accounts_mut();
        accounts.reserved_slots = accounts.reserved_slots.saturating_sub(slots as u32);
        accounts.reserved_relations = accounts.reserved_relations.saturating_sub(relations as u32);
    }

    pub fn usage(&self) -> Usage {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let header = self.header();
        let accounts = self.accounts();
        Usage {
            slot_capacity: self.slot_capacity(),
            slots_used: self.slots_used(),
            slots_reserved: self.reserved_slots(),
            relation_capacity: header.relation_capacity as usize,
            relations_used: self.relation_count(),
            relations_reserved: self.reserved_relations(),
            relations_version: header.relations_version,
            solver_memory_held: accounts.solver_memory.load(Ordering::Acquire),
            pending_tracked: accounts.tracked_pending_len as usize,
            pending_untracked: accounts.untracked_pending,
            database_capacity: self.database_capacity(),
            databases_used: self.databases_used(),
        }
    }
}

thread_local! {
    /// Bytes this backend holds of the solvers' budget, given back at exit
    /// should a FATAL end it in the middle of a call (no destructor runs then).
    static SOLVER_HELD: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static SOLVER_EXIT_REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A solver call's share of `ruvector.solver_memory_limit`, given back when dropped.
pub struct SolverShare {
    shared: Shared,
    bytes: u64,
}

impl Drop for SolverShare {
    fn drop(&mut self) {
        self.shared.release_solver_memory(self.bytes);
    }
}

/// Gives back what an exiting backend still holds.
extern "C-unwind" fn release_solver_memory_at_exit(_code: i32, _arg: pg_sys::Datum) {
    let held = SOLVER_HELD.with(|h| h.replace(0));
    if let (Ok(shared), true) = (super::shared(), held > 0) {
        shared
            .accounts()
            .solver_memory
            .fetch_sub(held, Ordering::AcqRel);
    }
}

impl Shared {
    /// Takes `bytes` of the cluster-wide budget of the solver functions, or
    /// refuses (`53200`) when the calls running now hold too much of it.
    pub fn reserve_solver_memory(&self, bytes: usize) -> Result<SolverShare, SqlError> {
        let limit = gucs::SOLVER_MEMORY_LIMIT.get() as u64 * 1024;
        let bytes = bytes as u64;
        let taken = self.accounts().solver_memory.fetch_update(
            Ordering::AcqRel,
            Ordering::Acquire,
            |held| held.checked_add(bytes).filter(|&total| total <= limit),
        );
        if let Err(held) = taken {
            let mb = |b: u64| b.div_ceil(1 << 20);
            let error = SqlError::new(
                PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
                format!(
                    "this graph needs about {} MB, and the solver calls running now hold {} MB of the {} MB of ruvector.solver_memory_limit",
                    mb(bytes),
                    mb(held),
                    mb(limit)
                ),
            );
            return Err(if bytes > limit {
                error.hint("Raise ruvector.solver_memory_limit (postgresql.conf, then reload) if the server has the memory, or solve a smaller graph.")
            } else {
                error.hint(
                    "Retry once other calls of ruvector_mincut() or ruvector_lambda2() have ended.",
                )
            });
        }
        if !SOLVER_EXIT_REGISTERED.with(|r| r.replace(true)) {
            // SAFETY: registered once per backend; the callback touches only
            // this module's atomics and thread-local.
            unsafe {
                pg_sys::before_shmem_exit(
                    Some(release_solver_memory_at_exit),
                    pg_sys::Datum::from(0),
                )
            };
        }
        SOLVER_HELD.with(|h| h.set(h.get() + bytes));
        Ok(SolverShare {
            shared: *self,
            bytes,
        })
    }

    fn release_solver_memory(&self, bytes: u64) {
        SOLVER_HELD.with(|h| h.set(h.get().saturating_sub(bytes)));
        self.accounts()
            .solver_memory
            .fetch_sub(bytes, Ordering::AcqRel);
    }
}

impl Shared {
    /// A transaction that appended pending events `ids` committed.
    pub fn track_pending(&self, ids: &[i64]) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let db = database();
        let accounts = self.accounts_mut();
        for &id in ids {
            let len = accounts.tracked_pending_len as usize;
            if len < TRACKED_PENDING {
                accounts.tracked_pending[len] = (db, id);
                accounts.tracked_pending_len += 1;
            } else {
                accounts.untracked_pending += 1;
            }
        }
    }

    /// The pending events of this database committed and not yet signed,
    /// and how many (in any database) went untracked for want of room.
    pub fn tracked_pending(&self) -> (Vec<i64>, u64) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let db = database();
        let accounts = self.accounts();
        let ids = accounts.tracked_pending[..accounts.tracked_pending_len as usize]
            .iter()
            .filter(|(d, _)| *d == db)
            .map(|&(_, id)| id)
            .collect();
        (ids, accounts.untracked_pending)
    }

    /// The worker signed, or recorded as vanished, pending events `ids`, and
    /// recorded `untracked` of the ones that went untracked.
    pub fn untrack_pending(&self, ids: &[i64], untracked: u64) {
        if ids.is_empty() && untracked == 0 {
            return;
        }
        let mut done = ids.to_vec();
        done.sort_unstable();
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let db = database();
        let accounts = self.accounts_mut();
        let len = accounts.tracked_pending_len as usize;
        let mut kept = 0;
        for i in 0..len {
            let entry = accounts.tracked_pending[i];
            if !(entry.0 == db && done.binary_search(&entry.1).is_ok()) {
                accounts.tracked_pending[kept] = entry;
                kept += 1;
            }
        }
        accounts.tracked_pending_len = kept as u32;
        accounts.untracked_pending = accounts.untracked_pending.saturating_sub(untracked);
    }

    /// Notes that `ruvector_audit_export()` produced entry `seq` of the trail
    /// of `extension` in this database (entries come in seq order: every one
    /// before it was produced).
    pub fn note_exported(&self, extension: pg_sys::Oid, seq: u64) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let db = database();
        let exported = &mut self.accounts_mut().exported;
        if (exported.0, exported.1) != (db, extension) {
            *exported = (db, extension, seq);
        } else if seq > exported.2 {
            exported.2 = seq;
        }
    }

    /// The highest seq of the trail of `extension` in this database exported
    /// in this server run (0: none, or another installation's since).
    pub fn exported_through(&self, extension: pg_sys::Oid) -> u64 {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let (db, ext, seq) = self.accounts().exported;
        if (db, ext) == (database(), extension) {
            seq
        } else {
            0
        }
    }
}
