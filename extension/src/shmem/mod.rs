//! Shared memory: what the gate and the utility hook read without SQL.
//!
//! - one slot per registered collection ([`slots`]): state, λ, compiled policy,
//!   override, last sample, live search count;
//! - the relation map ([`relations`]): every relation of a collection (its
//!   table and each partition), by database and OID, to the collection's slot,
//!   so that the hook answers "not ours" for any other relation without SQL;
//! - the worker's pid, latch and heartbeat.
//!
//! Layout, sized at server start by `ruvector.max_collections` and
//! `ruvector.max_relations`:
//! `Header | Slot × slots | i32 × 2·slots | RelationEntry × relations | i32 × 2·relations`
//! (the `i32` arrays are open-addressing indexes of entry + 1, 0 for empty).
//! One LWLock guards slots, relations and both indexes: readers take it
//! shared, writers (the worker, and backends at commit) exclusive. Live search
//! counts are atomics, changed without the lock.
//!
//! Everything is scoped to a database: a backend sees the slots and relations
//! of the database it is connected to, nothing else.
//!
//! This module must not do SPI or allocate on the read path: it is the gate's
//! fast path.

mod relations;
mod slots;

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicPtr, AtomicU64, Ordering};

use pgrx::pg_sys;
use pgrx::pg_sys::ffi::pg_guard_ffi_boundary;
use pgrx::prelude::*;
use ruvector_integrity::gate::CompiledPolicy;
use ruvector_integrity::hysteresis::State;

use crate::errors::SqlError;
use crate::gucs;

pub use relations::{GatedRelation, RelationFlags};
pub use slots::SlotRef;

/// Longest collection name, in bytes (PostgreSQL's NAMEDATALEN − 1).
pub const NAME_MAX: usize = 63;

const SHMEM_NAME: &std::ffi::CStr = c"ruvector integrity";
const TRANCHE: &std::ffi::CStr = c"ruvector";

/// What the gate and status read about one collection.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct CollectionView {
    pub collection_id: i32,
    pub relid: pg_sys::Oid,
    /// The controller's state (not the override).
    pub state: State,
    /// An operator's pinned state and when it expires (PostgreSQL µs).
    pub override_state: Option<State>,
    pub override_until: i64,
    /// PostgreSQL µs; 0 before the first sample.
    pub last_sample_at: i64,
    pub lambda_cut: f64,
    pub lambda_norm: f64,
    pub policy: CompiledPolicy,
}

impl CollectionView {
    /// The state in force at `now`: an unexpired override, else the controller's.
    pub fn effective_state(&self, now: i64) -> State {
        match self.override_state {
            Some(state) if now < self.override_until => state,
            _ => self.state,
        }
    }
}

#[repr(C)]
struct Header {
    lock: *mut pg_sys::LWLock,
    slot_capacity: u32,
    relation_capacity: u32,
    /// Entries in use at the start of the relation array.
    relation_count: u32,
    /// Slots and relation entries promised to transactions in progress (a
    /// registration, a new partition): taken when the statement passes its
    /// check, turned into entries at commit, given back at abort. Only those
    /// commits may use them; everyone else sees them as taken.
    reserved_slots: u32,
    reserved_relations: u32,
    /// Bumped by every change a backend makes to the relation map, so that the
    /// worker's refresh from an older snapshot only adds, never removes.
    relations_version: u64,
    worker_pid: AtomicI32,
    worker_latch: AtomicPtr<pg_sys::Latch>,
    /// PostgreSQL µs of the worker's last loop.
    heartbeat: AtomicI64,
    /// Set once the relation map was filled from the tables since the server
    /// started (by the worker, or by a backend that could not wait for it).
    synced: AtomicBool,
    /// Bytes the solver functions' calls hold of `ruvector.solver_memory_limit`.
    solver_memory: AtomicU64,
    /// Pending events committed since the server started and not yet signed
    /// (or found missing) by the worker, as (database, id): the worker checks
    /// that each is signed, and records the ones that vanished before it could
    /// (under the lock). Beyond the room here they are only counted.
    tracked_pending: [(pg_sys::Oid, i64); TRACKED_PENDING],
    tracked_pending_len: u32,
    untracked_pending: u64,
    /// The worker's signing state, as JSON text (under the lock).
    signing_note_len: u32,
    signing_note: [u8; SIGNING_NOTE_MAX],
}

/// Room for the worker's signing state in shared memory.
const SIGNING_NOTE_MAX: usize = 1024;

/// Pending events tracked until the worker signs them: the worker drains
/// them every tick (at most 5 s, usually 1), and a burst of more commits
/// than this between two ticks is rare; 128 kB of shared memory.
const TRACKED_PENDING: usize = 8192;

static mut HEADER: *mut Header = std::ptr::null_mut();
static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// Byte offsets of the four arrays, and the total size.
struct Layout {
    slots: usize,
    slot_index: usize,
    relations: usize,
    relation_index: usize,
    total: usize,
}

fn layout(slots: usize, relations: usize) -> Layout {
    use std::mem::{align_of, size_of};
    let slots_at = size_of::<Header>().next_multiple_of(align_of::<slots::Slot>());
    let slot_index = slots_at + slots * size_of::<slots::Slot>();
    let relations_at = (slot_index + 2 * slots * size_of::<i32>())
        .next_multiple_of(align_of::<relations::RelationEntry>());
    let relation_index = relations_at + relations * size_of::<relations::RelationEntry>();
    Layout {
        slots: slots_at,
        slot_index,
        relations: relations_at,
        relation_index,
        total: relation_index + 2 * relations * size_of::<i32>(),
    }
}

fn layout_from_settings() -> Layout {
    layout(
        gucs::MAX_COLLECTIONS.get() as usize,
        gucs::MAX_RELATIONS.get() as usize,
    )
}

/// Installs the shared-memory hooks; called from `_PG_init` while preloading.
pub fn install_hooks() {
    unsafe {
        PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(shmem_request);
        PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST {
            pg_guard_ffi_boundary(|| prev());
        }
        pg_sys::RequestAddinShmemSpace(layout_from_settings().total);
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 1);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP {
            pg_guard_ffi_boundary(|| prev());
        }
        let total = layout_from_settings().total;
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let base = pg_sys::ShmemInitStruct(SHMEM_NAME.as_ptr(), total, &mut found).cast::<u8>();
        if !found {
            std::ptr::write_bytes(base, 0, total);
            let header = base.cast::<Header>();
            (*header).lock = &raw mut (*pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr())).lock;
            (*header).slot_capacity = gucs::MAX_COLLECTIONS.get() as u32;
            (*header).relation_capacity = gucs::MAX_RELATIONS.get() as u32;
        }
        HEADER = base.cast::<Header>();
        pg_sys::LWLockRelease(init_lock);
    }
}

/// The shared state, or an error telling the DBA to preload the library.
pub fn shared() -> Result<Shared, SqlError> {
    let header = unsafe { HEADER };
    if header.is_null() {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "ruvector must be loaded via shared_preload_libraries",
        )
        .hint(
            "Add ruvector to shared_preload_libraries in postgresql.conf and restart the server.",
        ));
    }
    Ok(Shared { header })
}

/// A handle on the shared segment.
#[derive(Clone, Copy)]
pub struct Shared {
    header: *mut Header,
}

/// Holds the segment's lock until dropped.
struct Guard(*mut pg_sys::LWLock);

impl Drop for Guard {
    fn drop(&mut self) {
        unsafe { pg_sys::LWLockRelease(self.0) };
    }
}

/// The database the current process is connected to.
fn database() -> pg_sys::Oid {
    unsafe { pg_sys::MyDatabaseId }
}

/// The 64-bit FNV-1a hash of `bytes`, seeded with a database OID.
fn hash(database: pg_sys::Oid, bytes: &[u8]) -> u64 {
    let seed = 0xcbf2_9ce4_8422_2325u64 ^ u64::from(u32::from(database));
    bytes
        .iter()
        .fold(seed, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl Shared {
    fn header(&self) -> &Header {
        unsafe { &*self.header }
    }

    #[allow(clippy::mut_from_ref)]
    fn header_mut(&self) -> &mut Header {
        unsafe { &mut *self.header }
    }

    fn layout(&self) -> Layout {
        let h = self.header();
        layout(h.slot_capacity as usize, h.relation_capacity as usize)
    }

    fn at<T>(&self, offset: usize) -> *mut T {
        unsafe { self.header.cast::<u8>().add(offset).cast::<T>() }
    }

    fn lock(&self, mode: pg_sys::LWLockMode::Type) -> Guard {
        unsafe { pg_sys::LWLockAcquire(self.header().lock, mode) };
        Guard(self.header().lock)
    }

    pub fn set_worker(&self, pid: i32, latch: *mut pg_sys::Latch) {
        self.header().worker_latch.store(latch, Ordering::Release);
        self.header().worker_pid.store(pid, Ordering::Release);
    }

    pub fn worker_pid(&self) -> i32 {
        self.header().worker_pid.load(Ordering::Acquire)
    }

    pub fn beat(&self, now: i64) {
        self.header().heartbeat.store(now, Ordering::Release);
    }

    pub fn heartbeat(&self) -> i64 {
        self.header().heartbeat.load(Ordering::Acquire)
    }

    /// Wakes the worker so that it acts before its next tick.
    pub fn wake_worker(&self) {
        let latch = self.header().worker_latch.load(Ordering::Acquire);
        if !latch.is_null() && self.worker_pid() != 0 {
            unsafe { pg_sys::SetLatch(latch) };
        }
    }

    /// The extension was dropped from this database: forget its collections
    /// and relations (and only this database's).
    pub fn clear_database(&self) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let db = database();
        self.remove_slots_where(|_| true);
        self.remove_relations_where(|e| e.database == db);
    }

    /// The worker publishes its signing state (JSON text, cut to fit).
    pub fn set_signing_note(&self, note: &str) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut len = note.len().min(SIGNING_NOTE_MAX);
        while !note.is_char_boundary(len) {
            len -= 1;
        }
        let header = self.header_mut();
        header.signing_note[..len].copy_from_slice(&note.as_bytes()[..len]);
        header.signing_note_len = len as u32;
    }

    pub fn signing_note(&self) -> String {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let header = self.header();
        String::from_utf8_lossy(&header.signing_note[..header.signing_note_len as usize])
            .into_owned()
    }

    /// Whether the relation map has been filled from the tables since the
    /// server started.
    pub fn synced(&self) -> bool {
        self.header().synced.load(Ordering::Acquire)
    }

    pub fn mark_synced(&self) {
        self.header().synced.store(true, Ordering::Release);
    }
}

impl Shared {
    /// A transaction that appended pending events `ids` committed.
    pub fn track_pending(&self, ids: &[i64]) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let db = database();
        let header = self.header_mut();
        for &id in ids {
            let len = header.tracked_pending_len as usize;
            if len < TRACKED_PENDING {
                header.tracked_pending[len] = (db, id);
                header.tracked_pending_len += 1;
            } else {
                header.untracked_pending += 1;
            }
        }
    }

    /// The pending events of this database committed and not yet signed,
    /// and how many (in any database) went untracked for want of room.
    pub fn tracked_pending(&self) -> (Vec<i64>, u64) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let db = database();
        let header = self.header();
        let ids = header.tracked_pending[..header.tracked_pending_len as usize]
            .iter()
            .filter(|(d, _)| *d == db)
            .map(|&(_, id)| id)
            .collect();
        (ids, header.untracked_pending)
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
        let header = self.header_mut();
        let len = header.tracked_pending_len as usize;
        let mut kept = 0;
        for i in 0..len {
            let entry = header.tracked_pending[i];
            if !(entry.0 == db && done.binary_search(&entry.1).is_ok()) {
                header.tracked_pending[kept] = entry;
                kept += 1;
            }
        }
        header.tracked_pending_len = kept as u32;
        header.untracked_pending = header.untracked_pending.saturating_sub(untracked);
    }
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
}

impl Shared {
    pub fn usage(&self) -> Usage {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let header = self.header();
        Usage {
            slot_capacity: self.slot_capacity(),
            slots_used: (0..self.slot_capacity())
                .filter(|&i| self.slot(i).in_use())
                .count(),
            slots_reserved: header.reserved_slots as usize,
            relation_capacity: header.relation_capacity as usize,
            relations_used: header.relation_count as usize,
            relations_reserved: header.reserved_relations as usize,
            relations_version: header.relations_version,
            solver_memory_held: header.solver_memory.load(Ordering::Acquire),
            pending_tracked: header.tracked_pending_len as usize,
            pending_untracked: header.untracked_pending,
        }
    }
}

/// What shared memory cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Collections,
    Relations,
}

impl Shared {
    /// Promises `slots` slots and `relations` relation entries to the current
    /// transaction, if that many are neither used nor promised to another.
    pub fn reserve(&self, slots: usize, relations: usize) -> Result<(), Full> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let header = self.header_mut();
        let used_slots = (0..self.slot_capacity())
            .filter(|&i| self.slot(i).in_use())
            .count();
        if used_slots + header.reserved_slots as usize + slots > self.slot_capacity() {
            return Err(Full::Collections);
        }
        let used = header.relation_count as usize + header.reserved_relations as usize;
        if used + relations > header.relation_capacity as usize {
            return Err(Full::Relations);
        }
        header.reserved_slots += slots as u32;
        header.reserved_relations += relations as u32;
        Ok(())
    }

    /// Gives back what [`Shared::reserve`] promised (at commit, once the
    /// entries are made; at abort, unused).
    pub fn unreserve(&self, slots: usize, relations: usize) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let header = self.header_mut();
        header.reserved_slots = header.reserved_slots.saturating_sub(slots as u32);
        header.reserved_relations = header.reserved_relations.saturating_sub(relations as u32);
    }
}

/// Called by the worker on exit so that no backend signals a latch it left.
pub unsafe extern "C-unwind" fn forget_worker(_code: i32, _arg: pg_sys::Datum) {
    if let Ok(shared) = shared() {
        shared.set_worker(0, std::ptr::null_mut());
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
unsafe extern "C-unwind" fn release_solver_memory_at_exit(_code: i32, _arg: pg_sys::Datum) {
    let held = SOLVER_HELD.with(|h| h.replace(0));
    if let (Ok(shared), true) = (shared(), held > 0) {
        shared
            .header()
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
        let counter = &self.header().solver_memory;
        let taken = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(bytes).filter(|&total| total <= limit)
        });
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
        self.header()
            .solver_memory
            .fetch_sub(bytes, Ordering::AcqRel);
    }
}
