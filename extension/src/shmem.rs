//! Shared memory: one slot per registered collection, holding what the gate needs
//! (state, λ, compiled policy, override, last sample) and its live search count,
//! plus a name → slot index and the worker's heartbeat and latch.
//!
//! Layout, sized by `ruvector.max_collections` at server start:
//! `Header | Slot × capacity | i32 × 2·capacity` (open-addressing index of
//! slot + 1, 0 for empty). One LWLock guards slots and index: the gate takes it
//! shared, writers (the worker, and backends at commit) take it exclusive. Live
//! search counts are atomics, updated without the lock.
//!
//! This module must not do SPI or allocate on the read path: it is the gate's
//! fast path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicPtr, AtomicU32, Ordering};

use pgrx::pg_sys;
use pgrx::pg_sys::ffi::pg_guard_ffi_boundary;
use pgrx::prelude::*;
use ruvector_integrity::gate::CompiledPolicy;
use ruvector_integrity::hysteresis::State;

use crate::errors::SqlError;
use crate::gucs;

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
struct Slot {
    in_use: bool,
    name_len: u8,
    name: [u8; NAME_MAX],
    view: CollectionView,
    /// Bumped by every change a backend commits (registration, policy,
    /// override), so the worker's refresh from an older snapshot can tell it
    /// must not overwrite them.
    version: u64,
    live_searches: AtomicU32,
    /// Set by `ruvector_integrity_sample`: the worker samples it on its next tick.
    sample_requested: AtomicBool,
}

#[repr(C)]
struct Header {
    lock: *mut pg_sys::LWLock,
    capacity: u32,
    worker_pid: AtomicI32,
    worker_latch: AtomicPtr<pg_sys::Latch>,
    /// PostgreSQL µs of the worker's last loop.
    heartbeat: AtomicI64,
}

static mut HEADER: *mut Header = std::ptr::null_mut();
static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

fn capacity_setting() -> usize {
    gucs::MAX_COLLECTIONS.get() as usize
}

fn layout(capacity: usize) -> (usize, usize, usize) {
    let slots = std::mem::size_of::<Header>().next_multiple_of(std::mem::align_of::<Slot>());
    let index = slots + capacity * std::mem::size_of::<Slot>();
    let total = index + 2 * capacity * std::mem::size_of::<i32>();
    (slots, index, total)
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
        pg_sys::RequestAddinShmemSpace(layout(capacity_setting()).2);
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 1);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP {
            pg_guard_ffi_boundary(|| prev());
        }
        let capacity = capacity_setting();
        let (_, _, total) = layout(capacity);
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let base = pg_sys::ShmemInitStruct(SHMEM_NAME.as_ptr(), total, &mut found).cast::<u8>();
        if !found {
            std::ptr::write_bytes(base, 0, total);
            let header = base.cast::<Header>();
            (*header).lock = &raw mut (*pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr())).lock;
            (*header).capacity = capacity as u32;
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

/// The 64-bit FNV-1a hash of a name.
fn name_hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

struct Guard(*mut pg_sys::LWLock);

impl Drop for Guard {
    fn drop(&mut self) {
        unsafe { pg_sys::LWLockRelease(self.0) };
    }
}

impl Shared {
    fn header(&self) -> &Header {
        unsafe { &*self.header }
    }

    pub fn capacity(&self) -> usize {
        self.header().capacity as usize
    }

    fn slot_ptr(&self, i: usize) -> *mut Slot {
        let (slots, _, _) = layout(self.capacity());
        unsafe { self.header.cast::<u8>().add(slots).cast::<Slot>().add(i) }
    }

    fn index_ptr(&self) -> *mut i32 {
        let (_, index, _) = layout(self.capacity());
        unsafe { self.header.cast::<u8>().add(index).cast::<i32>() }
    }

    fn lock(&self, mode: pg_sys::LWLockMode::Type) -> Guard {
        unsafe { pg_sys::LWLockAcquire(self.header().lock, mode) };
        Guard(self.header().lock)
    }

    /// The slot holding `name`, under a lock held by the caller.
    fn find(&self, name: &str) -> Option<usize> {
        let buckets = 2 * self.capacity();
        let index = self.index_ptr();
        let mut at = (name_hash(name.as_bytes()) % buckets as u64) as usize;
        for _ in 0..buckets {
            let entry = unsafe { *index.add(at) };
            if entry == 0 {
                return None;
            }
            let slot = unsafe { &*self.slot_ptr(entry as usize - 1) };
            if slot.in_use && &slot.name[..slot.name_len as usize] == name.as_bytes() {
                return Some(entry as usize - 1);
            }
            at = (at + 1) % buckets;
        }
        None
    }

    /// Rebuilds the whole index from the slots in use (after a removal).
    fn reindex(&self) {
        let buckets = 2 * self.capacity();
        let index = self.index_ptr();
        unsafe { std::ptr::write_bytes(index, 0, buckets) };
        for i in 0..self.capacity() {
            let slot = unsafe { &*self.slot_ptr(i) };
            if slot.in_use {
                let mut at =
                    (name_hash(&slot.name[..slot.name_len as usize]) % buckets as u64) as usize;
                while unsafe { *index.add(at) } != 0 {
                    at = (at + 1) % buckets;
                }
                unsafe { *index.add(at) = i as i32 + 1 };
            }
        }
    }

    /// A copy of what shared memory holds for `name`, and its slot number.
    pub fn view(&self, name: &str) -> Option<(usize, CollectionView)> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        self.find(name)
            .map(|i| (i, unsafe { (*self.slot_ptr(i)).view }))
    }

    fn add(&self, name: &str, view: CollectionView) -> bool {
        debug_assert!(name.len() <= NAME_MAX);
        let Some(free) = (0..self.capacity()).find(|&i| unsafe { !(*self.slot_ptr(i)).in_use })
        else {
            return false;
        };
        let slot = unsafe { &mut *self.slot_ptr(free) };
        slot.name[..name.len()].copy_from_slice(name.as_bytes());
        slot.name_len = name.len() as u8;
        slot.view = view;
        slot.version += 1;
        slot.live_searches.store(0, Ordering::Relaxed);
        slot.in_use = true;
        self.reindex();
        true
    }

    /// A registration commits: a new slot for `name`. False when every slot is taken.
    pub fn insert(&self, name: &str, view: CollectionView) -> bool {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        match self.find(name) {
            Some(i) => {
                let slot = unsafe { &mut *self.slot_ptr(i) };
                slot.view = view;
                slot.version += 1;
                true
            }
            None => self.add(name, view),
        }
    }

    /// A policy or override commits: updates the slot of `name`, if any.
    pub fn update(&self, name: &str, change: impl FnOnce(&mut CollectionView)) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        if let Some(i) = self.find(name) {
            let slot = unsafe { &mut *self.slot_ptr(i) };
            change(&mut slot.view);
            slot.version += 1;
        }
    }

    /// An unregistration commits: frees the slot of `name`.
    pub fn remove(&self, name: &str) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        if let Some(i) = self.find(name) {
            unsafe { (*self.slot_ptr(i)).in_use = false };
            self.reindex();
        }
    }

    /// The version of every slot, taken before the worker reads the tables.
    pub fn versions(&self) -> HashMap<String, u64> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        (0..self.capacity())
            .filter_map(|i| {
                let slot = unsafe { &*self.slot_ptr(i) };
                slot.in_use.then(|| {
                    (
                        String::from_utf8_lossy(&slot.name[..slot.name_len as usize]).into_owned(),
                        slot.version,
                    )
                })
            })
            .collect()
    }

    /// The worker brings shared memory in line with the tables as they were
    /// when `seen` was taken: adds what is missing, drops what was unregistered,
    /// and rewrites a slot in full only if no backend changed it since.
    /// Returns the names it could not add for lack of slots.
    pub fn sync(
        &self,
        rows: Vec<(String, CollectionView)>,
        seen: &HashMap<String, u64>,
    ) -> Vec<String> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut full = Vec::new();
        for i in 0..self.capacity() {
            let slot = unsafe { &mut *self.slot_ptr(i) };
            let name = String::from_utf8_lossy(&slot.name[..slot.name_len as usize]).into_owned();
            if slot.in_use && seen.contains_key(&name) && !rows.iter().any(|(n, _)| *n == name) {
                slot.in_use = false;
                self.reindex();
            }
        }
        for (name, view) in rows {
            match (self.find(&name), seen.get(&name)) {
                (None, Some(_)) => {} // unregistered since the snapshot
                (None, None) => {
                    if !self.add(&name, view) {
                        full.push(name);
                    }
                }
                (Some(i), seen_version) => {
                    let slot = unsafe { &mut *self.slot_ptr(i) };
                    if seen_version == Some(&slot.version) {
                        slot.view = view;
                    } else {
                        record(&mut slot.view, &view);
                    }
                }
            }
        }
        full
    }

    /// The worker records a sample: state, λ and time, nothing a backend owns.
    pub fn record_sample(&self, name: &str, sample: &CollectionView) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        if let Some(i) = self.find(name) {
            record(unsafe { &mut (*self.slot_ptr(i)).view }, sample);
        }
    }

    /// Asks the worker to sample `name` on its next tick.
    pub fn request_sample(&self, name: &str) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        if let Some(i) = self.find(name) {
            unsafe {
                (*self.slot_ptr(i))
                    .sample_requested
                    .store(true, Ordering::Release)
            };
        }
    }

    /// The collections whose sample was requested, clearing the requests.
    pub fn take_sample_requests(&self) -> Vec<i32> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        (0..self.capacity())
            .filter_map(|i| {
                let slot = unsafe { &*self.slot_ptr(i) };
                (slot.in_use && slot.sample_requested.swap(false, Ordering::AcqRel))
                    .then_some(slot.view.collection_id)
            })
            .collect()
    }

    /// The live search counter of slot `i`, if it still holds `collection_id`.
    pub fn live_searches(&self, i: usize, collection_id: i32) -> Option<&AtomicU32> {
        let slot = unsafe { &*self.slot_ptr(i) };
        (slot.in_use && slot.view.collection_id == collection_id).then_some(&slot.live_searches)
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
}

/// Copies the fields the worker owns.
fn record(view: &mut CollectionView, sample: &CollectionView) {
    view.state = sample.state;
    view.last_sample_at = sample.last_sample_at;
    view.lambda_cut = sample.lambda_cut;
    view.lambda_norm = sample.lambda_norm;
}

/// Called by the worker on exit so that no backend signals a latch it left.
pub unsafe extern "C-unwind" fn forget_worker(_code: i32, _arg: pg_sys::Datum) {
    if let Ok(shared) = shared() {
        shared.set_worker(0, std::ptr::null_mut());
    }
}
