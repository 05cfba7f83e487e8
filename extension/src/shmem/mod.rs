//! Shared memory: what the gate and the hooks read without SQL.
//!
//! - one slot per registered collection ([`slots`]): its view (state, λ,
//!   compiled policy, override, last sample), its live search count and the
//!   gate's counters;
//! - the relation map ([`relations`]): every relation of a collection (its
//!   table and each partition), by database and OID, to the collection's
//!   slot, so that a hook answers "not ours" for any other relation without
//!   SQL, and "ours" with the collection's view under one lock;
//! - what is reserved and held ([`accounts`]): entries promised to
//!   transactions in progress, the solvers' memory, the pending audit events
//!   the worker follows;
//! - one entry per database with a worker ([`databases`]): its pid, latch,
//!   heartbeat and signing note; and the launcher's pid and latch.
//! - one row per backend ([`places`]): the search places it holds, announced
//!   where no other process writes.
//!
//! Layout, sized at server start by `ruvector.max_collections`,
//! `ruvector.max_relations` and `ruvector.max_databases`:
//! `Header | Slot × slots | i32 × 2·slots | RelationEntry × relations | i32 × 2·relations | DatabaseEntry × databases | Row × MaxBackends`
//! (the `i32` arrays are open-addressing indexes of entry + 1, 0 for empty).
//! One LWLock guards slots, relations and both indexes: readers take it
//! shared, writers (the worker, and backends at commit) exclusive. Search
//! places, counters and the solvers' memory are atomics, changed without it.
//!
//! Everything is scoped to a database: a backend sees the slots and relations
//! of the database it is connected to, nothing else. Times are Unix µs.
//!
//! This module must not do SPI or allocate on the read path: it is the gate's
//! fast path.

mod accounts;
mod cache;
mod databases;
mod places;
mod relations;
mod slots;

use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering};

use pgrx::pg_sys;
use pgrx::pg_sys::ffi::pg_guard_ffi_boundary;
use pgrx::prelude::*;
use ruvector_integrity::gate::{self, CompiledPolicy, Override};
use ruvector_integrity::state::State;
use ruvector_integrity::{Micros, SECOND};

use crate::errors::SqlError;
use crate::gucs;

pub use accounts::Full;
pub use databases::{forget_launcher, forget_worker, Claim};
pub use places::Place;
pub use slots::SlotRef;

const SHMEM_NAME: &std::ffi::CStr = c"ruvector integrity";
const TRANCHE: &std::ffi::CStr = c"ruvector";

/// What the gate and status read about one collection.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct CollectionView {
    pub collection_id: i32,
    pub relid: pg_sys::Oid,
    /// The last sample's state (not the override's).
    pub state: State,
    /// An operator's pin, while it lasts.
    pub pin: Option<Override>,
    /// `None` before the first sample.
    pub last_sample: Option<Micros>,
    pub lambda_cut: f64,
    pub lambda_norm: f64,
    pub policy: CompiledPolicy,
}

impl CollectionView {
    /// The state the gate acts on at `now`, and whether it is stale.
    pub fn in_force(&self, now: Micros) -> (State, bool) {
        let stale_after = gucs::STALE_AFTER.get() as i64 * SECOND;
        gate::state_in_force(self.state, self.last_sample, self.pin, stale_after, now)
    }
}

#[repr(C)]
struct Header {
    lock: *mut pg_sys::LWLock,
    slot_capacity: u32,
    relation_capacity: u32,
    /// Entries in use at the start of the relation array.
    relation_count: u32,
    /// Bumped by every change a backend makes to the relation map, so that the
    /// worker's refresh from an older snapshot only adds, never removes.
    relations_version: u64,
    /// Moved by every change to the slots or the relation map, as it begins
    /// (under the exclusive lock): what a backend read at one value is
    /// still true while it stays there (see [`cache`]).
    changes: AtomicU64,
    database_capacity: u32,
    /// One search-place row per backend (`MaxBackends`).
    row_capacity: u32,
    launcher_pid: AtomicI32,
    launcher_latch: AtomicPtr<pg_sys::Latch>,
    /// What the launcher must learn (under the lock).
    wanted: databases::Mailbox,
    absent: databases::Mailbox,
    accounts: accounts::Accounts,
}

/// The segment, set once by `shmem_startup` in the postmaster (inherited by
/// every process) or when a backend attaches; never changed after.
static mut HEADER: *mut Header = std::ptr::null_mut();
/// The hooks that were installed before ours, set once in `_PG_init`.
static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// Byte offsets of the six arrays, and the total size.
struct Layout {
    slots: usize,
    slot_index: usize,
    relations: usize,
    relation_index: usize,
    databases: usize,
    rows: usize,
    total: usize,
}

fn layout(slots: usize, relations: usize, databases: usize, rows: usize) -> Layout {
    use std::mem::{align_of, size_of};
    let slots_at = size_of::<Header>().next_multiple_of(align_of::<slots::Slot>());
    let slot_index = slots_at + slots * size_of::<slots::Slot>();
    let relations_at = (slot_index + 2 * slots * size_of::<i32>())
        .next_multiple_of(align_of::<relations::RelationEntry>());
    let relation_index = relations_at + relations * size_of::<relations::RelationEntry>();
    let databases_at = (relation_index + 2 * relations * size_of::<i32>())
        .next_multiple_of(align_of::<databases::DatabaseEntry>());
    let rows_at = (databases_at + databases * size_of::<databases::DatabaseEntry>())
        .next_multiple_of(align_of::<places::Row>());
    Layout {
        slots: slots_at,
        slot_index,
        relations: relations_at,
        relation_index,
        databases: databases_at,
        rows: rows_at,
        total: rows_at + rows * size_of::<places::Row>(),
    }
}

fn layout_from_settings() -> Layout {
    layout(
        gucs::MAX_COLLECTIONS.get() as usize,
        gucs::MAX_RELATIONS.get() as usize,
        gucs::MAX_DATABASES.get() as usize,
        max_backends(),
    )
}

/// The backends PostgreSQL can run: set before shared memory is sized.
fn max_backends() -> usize {
    // SAFETY: set by the postmaster from its settings before
    // `shmem_request_hook` runs, and never changed after.
    unsafe { pg_sys::MaxBackends as usize }
}

/// Installs the shared-memory hooks; called from `_PG_init` while preloading.
pub fn install_hooks() {
    // SAFETY: `_PG_init` runs once, in the postmaster, before any other
    // process exists: nothing reads these statics concurrently.
    unsafe {
        PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(shmem_request);
        PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
    }
}

/// # Safety
/// Called by PostgreSQL as `shmem_request_hook`, in the postmaster.
#[pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: called by the postmaster once, while it sizes shared memory;
    // the previous hook was saved by `install_hooks`.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST {
            pg_guard_ffi_boundary(|| prev());
        }
        pg_sys::RequestAddinShmemSpace(layout_from_settings().total);
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 1);
    }
}

/// # Safety
/// Called by PostgreSQL as `shmem_startup_hook`.
#[pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: under AddinShmemInitLock (`lwlocknames.h`: `MainLWLockArray[21]`)
    // as PostgreSQL requires: the first process zeroes and initialises the
    // segment, any later one only finds it. The settings sizing it are
    // postmaster-only, the same in every process.
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
            (*header).database_capacity = gucs::MAX_DATABASES.get() as u32;
            (*header).row_capacity = max_backends() as u32;
        }
        HEADER = base.cast::<Header>();
        pg_sys::LWLockRelease(init_lock);
    }
}

/// The shared state, or an error telling the DBA to preload the library.
pub fn shared() -> Result<Shared, SqlError> {
    // SAFETY: HEADER is written once before any backend reads it (see its
    // declaration), so this read never races a write.
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
        // SAFETY: the lock this guard's `Shared::lock` acquired.
        unsafe { pg_sys::LWLockRelease(self.0) };
    }
}

/// The database the current process is connected to.
fn database() -> pg_sys::Oid {
    crate::catalog::database()
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
        // SAFETY: `header` points at the live segment for the process's life.
        // Fields that change are atomics or read under the lock.
        unsafe { &*self.header }
    }

    /// The header, to change: callers hold the lock exclusively (or change
    /// only atomics).
    #[allow(clippy::mut_from_ref)]
    fn header_mut(&self) -> &mut Header {
        // SAFETY: as `header`; exclusivity is the callers' lock.
        unsafe { &mut *self.header }
    }

    fn layout(&self) -> Layout {
        let h = self.header();
        layout(
            h.slot_capacity as usize,
            h.relation_capacity as usize,
            h.database_capacity as usize,
            h.row_capacity as usize,
        )
    }

    /// A pointer `offset` bytes into the segment (within its layout).
    fn at<T>(&self, offset: usize) -> *mut T {
        // SAFETY: offsets come from `layout`, within the segment's size.
        unsafe { self.header.cast::<u8>().add(offset).cast::<T>() }
    }

    fn lock(&self, mode: pg_sys::LWLockMode::Type) -> Guard {
        // SAFETY: the segment's one LWLock, released by the guard (or by
        // PostgreSQL's error cleanup should an ERROR cut in).
        unsafe { pg_sys::LWLockAcquire(self.header().lock, mode) };
        Guard(self.header().lock)
    }

    /// The lock, exclusively, to change the slots or the relation map: the
    /// change counter moves before anything else does.
    fn lock_to_change(&self) -> Guard {
        let guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        self.header().changes.fetch_add(1, Ordering::AcqRel);
        guard
    }

    /// The change counter (stable while the caller holds the lock).
    fn changes(&self) -> u64 {
        self.header().changes.load(Ordering::Acquire)
    }

    /// The extension was dropped from this database: forget its collections
    /// and relations (and only this database's).
    pub fn clear_database(&self) {
        let _guard = self.lock_to_change();
        let db = database();
        self.remove_slots_where(|_| true);
        self.remove_relations_where(|e| e.database == db);
        self.unmark_synced();
    }
}
