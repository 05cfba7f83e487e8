//! Collection slots, found by database and name through an open-addressing
//! index. A slot's `generation` changes each time it takes a collection, so
//! that a search held on an earlier occupant is never released against (or
//! counted for) a new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use pgrx::pg_sys;
use ruvector_integrity::gate::{Operation, Outcome};
use ruvector_integrity::registration::NAME_MAX;
use ruvector_integrity::Micros;

use super::{cache, database, hash, CollectionView, Shared};

#[repr(C)]
pub(super) struct Slot {
    in_use: bool,
    name_len: u8,
    name: [u8; NAME_MAX],
    database: pg_sys::Oid,
    pub(super) generation: u64,
    pub(super) view: CollectionView,
    /// Bumped by every change a backend commits (registration, policy,
    /// override), so the worker's refresh from an older snapshot can tell it
    /// must not overwrite them.
    version: u64,
    /// What every decision writes, on cache lines of their own: the fields
    /// above change only under the exclusive lock, and stay in every core's
    /// cache meanwhile.
    counters: Counters,
}

#[repr(C, align(64))]
struct Counters {
    /// Search places counted here (the rest are announced in backends' rows,
    /// [`super::places`]): the slot's generation (its low 32 bits) in the high
    /// half, the count in the low half, so that a place is taken or given back
    /// only while the slot holds the collection it was meant for. First, on the
    /// line of the count of allowed searches: a search counted here writes both.
    searches: AtomicU64,
    /// Set by `ruvector_integrity_sample`: the worker samples it on its next tick.
    sample_requested: AtomicBool,
    /// The gate's decisions, by operation and outcome.
    tallies: [[Tally; Outcome::ALL.len()]; Operation::ALL.len()],
}

/// How often one operation had one outcome, and when last.
#[repr(C)]
struct Tally {
    count: AtomicU64,
    last_at: AtomicI64,
}

/// One row of the gate's statistics.
pub struct GateStat {
    pub collection: String,
    pub operation: Operation,
    pub outcome: Outcome,
    pub count: u64,
    pub last_at: Micros,
}

impl Slot {
    fn name(&self) -> &[u8] {
        &self.name[..self.name_len as usize]
    }

    pub(super) fn in_use(&self) -> bool {
        self.in_use
    }

    fn holds(&self, database: pg_sys::Oid, name: &[u8]) -> bool {
        self.in_use && self.database == database && self.name() == name
    }

    pub(super) fn name_string(&self) -> String {
        String::from_utf8_lossy(self.name()).into_owned()
    }

    fn reset_tallies(&self) {
        for tally in self.counters.tallies.iter().flatten() {
            tally.count.store(0, Ordering::Relaxed);
            tally.last_at.store(0, Ordering::Relaxed);
        }
    }
}

/// A slot and the generation of the collection it held when it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRef {
    pub index: usize,
    pub generation: u64,
}

impl Shared {
    pub fn slot_capacity(&self) -> usize {
        self.header().slot_capacity as usize
    }

    fn slot_ptr(&self, i: usize) -> *mut Slot {
        debug_assert!(i < self.slot_capacity());
        // SAFETY: `i` is below the capacity the slot array was laid out for.
        unsafe { self.at::<Slot>(self.layout().slots).add(i) }
    }

    /// Slot `i`: its plain fields are read under the lock, its atomics any time.
    pub(super) fn slot(&self, i: usize) -> &Slot {
        // SAFETY: a slot of the live segment (see `slot_ptr`).
        unsafe { &*self.slot_ptr(i) }
    }

    /// Slot `i`, to change under the exclusive lock held by the caller.
    #[allow(clippy::mut_from_ref)]
    fn slot_mut(&self, i: usize) -> &mut Slot {
        // SAFETY: as `slot`; exclusivity is the caller's lock.
        unsafe { &mut *self.slot_ptr(i) }
    }

    /// The slot still holding the collection `at` referred to, under a lock
    /// held by the caller.
    pub(super) fn live_slot(&self, at: SlotRef) -> Option<&Slot> {
        let slot = self.slot(at.index);
        (slot.in_use && slot.generation == at.generation).then_some(slot)
    }

    /// The slot of `name` in this database, under a lock held by the caller.
    pub(super) fn find(&self, name: &str) -> Option<usize> {
        let (db, name) = (database(), name.as_bytes());
        let buckets = 2 * self.slot_capacity();
        let index = self.at::<i32>(self.layout().slot_index);
        let mut at = (hash(db, name) % buckets as u64) as usize;
        for _ in 0..buckets {
            // SAFETY: `at` < buckets, the index's length; read under the lock.
            let entry = unsafe { *index.add(at) };
            if entry == 0 {
                return None;
            }
            if self.slot(entry as usize - 1).holds(db, name) {
                return Some(entry as usize - 1);
            }
            at = (at + 1) % buckets;
        }
        None
    }

    /// Rebuilds the whole index from the slots in use (after a removal).
    fn reindex_slots(&self) {
        let buckets = 2 * self.slot_capacity();
        let index = self.at::<i32>(self.layout().slot_index);
        // SAFETY: the index has `buckets` entries, rewritten under the
        // exclusive lock held by the caller; it never fills (twice as many
        // buckets as slots), so each probe ends.
        unsafe {
            std::ptr::write_bytes(index, 0, buckets);
            for i in 0..self.slot_capacity() {
                let slot = self.slot(i);
                if slot.in_use {
                    let mut at = (hash(slot.database, slot.name()) % buckets as u64) as usize;
                    while *index.add(at) != 0 {
                        at = (at + 1) % buckets;
                    }
                    *index.add(at) = i as i32 + 1;
                }
            }
        }
    }

    fn slot_ref(&self, i: usize) -> SlotRef {
        SlotRef {
            index: i,
            generation: self.slot(i).generation,
        }
    }

    /// A copy of what shared memory holds for `name`, and where.
    /// From this backend's copy when nothing changed since it was read
    /// (see [`cache`](super::cache)), else under one shared lock.
    pub fn view(&self, name: &str) -> Option<(SlotRef, CollectionView)> {
        if let Some(found) = cache::name(self.changes(), name) {
            return found;
        }
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let found = self
            .find(name)
            .map(|i| (self.slot_ref(i), self.slot(i).view));
        cache::keep_name(self.changes(), name, found);
        found
    }

    /// A copy of the view of the collection `at` refers to, if the slot
    /// still holds it.
    pub fn view_at(&self, at: SlotRef) -> Option<CollectionView> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        self.live_slot(at).map(|slot| slot.view)
    }

    /// The name of the collection `at` refers to, if the slot still holds it.
    pub fn name(&self, at: SlotRef) -> Option<String> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        self.live_slot(at).map(Slot::name_string)
    }

    /// A new slot for `name`, under the exclusive lock held by the caller.
    /// `reserved`: the caller's transaction reserved it (a commit); anyone
    /// else (the worker's refresh) leaves the reserved slots alone.
    fn add(&self, name: &str, view: CollectionView, reserved: bool) -> Option<SlotRef> {
        debug_assert!(name.len() <= NAME_MAX);
        let used = (0..self.slot_capacity())
            .filter(|&i| self.slot(i).in_use)
            .count();
        if !reserved && used + self.reserved_slots() >= self.slot_capacity() {
            return None;
        }
        let free = (0..self.slot_capacity()).find(|&i| !self.slot(i).in_use)?;
        let slot = self.slot_mut(free);
        slot.name[..name.len()].copy_from_slice(name.as_bytes());
        slot.name_len = name.len() as u8;
        slot.database = database();
        slot.generation += 1;
        slot.view = view;
        slot.version += 1;
        slot.counters
            .searches
            .store(generation_tag(slot.generation), Ordering::Release);
        slot.counters
            .sample_requested
            .store(false, Ordering::Relaxed);
        slot.reset_tallies();
        slot.in_use = true;
        self.reindex_slots();
        Some(self.slot_ref(free))
    }

    /// A registration commits: a new slot for `name` (a fresh one, even if a
    /// collection of that name is still there), from the slot its transaction
    /// reserved. `None` when every slot is taken.
    pub fn insert(&self, name: &str, view: CollectionView) -> Option<SlotRef> {
        let _guard = self.lock_to_change();
        if let Some(i) = self.find(name) {
            self.free_slot(i);
        }
        self.add(name, view, true)
    }

    /// A policy or override commits: updates the slot of `name`, if any.
    pub fn update(&self, name: &str, change: impl FnOnce(&mut CollectionView)) {
        let _guard = self.lock_to_change();
        if let Some(i) = self.find(name) {
            let slot = self.slot_mut(i);
            change(&mut slot.view);
            slot.version += 1;
        }
    }

    fn free_slot(&self, i: usize) {
        self.slot_mut(i).in_use = false;
        self.remove_relations_where(|entry| entry.slot as usize == i);
        self.reindex_slots();
    }

    /// An unregistration commits: frees the slot of `name` and its relations.
    pub fn remove(&self, name: &str) {
        let _guard = self.lock_to_change();
        if let Some(i) = self.find(name) {
            self.free_slot(i);
        }
    }

    /// Frees every slot of this database for which `drop` says so, under the
    /// exclusive lock held by the caller.
    pub(super) fn remove_slots_where(&self, mut drop: impl FnMut(&str) -> bool) {
        let db = database();
        let mut changed = false;
        for i in 0..self.slot_capacity() {
            let slot = self.slot_mut(i);
            if slot.in_use && slot.database == db && drop(&slot.name_string()) {
                slot.in_use = false;
                changed = true;
            }
        }
        if changed {
            self.reindex_slots();
        }
    }

    /// The version of every slot of this database, taken before the worker
    /// reads the tables.
    pub fn versions(&self) -> HashMap<String, u64> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let db = database();
        (0..self.slot_capacity())
            .map(|i| self.slot(i))
            .filter(|slot| slot.in_use && slot.database == db)
            .map(|slot| (slot.name_string(), slot.version))
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
        let _guard = self.lock_to_change();
        let gone: Vec<usize> = (0..self.slot_capacity())
            .filter(|&i| {
                let slot = self.slot(i);
                slot.in_use
                    && slot.database == database()
                    && seen.contains_key(&slot.name_string())
                    && !rows.iter().any(|(n, _)| *n == slot.name_string())
            })
            .collect();
        for i in gone {
            self.free_slot(i);
        }
        let mut full = Vec::new();
        for (name, view) in rows {
            match (self.find(&name), seen.get(&name)) {
                (None, Some(_)) => {} // unregistered since the snapshot
                (None, None) => {
                    if self.add(&name, view, false).is_none() {
                        full.push(name);
                    }
                }
                (Some(i), seen_version) => {
                    let slot = self.slot_mut(i);
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
        let _guard = self.lock_to_change();
        if let Some(i) = self.find(name) {
            record(&mut self.slot_mut(i).view, sample);
        }
    }

    /// Asks the worker to sample `name` on its next tick.
    pub fn request_sample(&self, name: &str) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        if let Some(i) = self.find(name) {
            self.slot(i)
                .counters
                .sample_requested
                .store(true, Ordering::Release);
        }
    }

    /// The collections of this database whose sample was requested, clearing
    /// the requests.
    pub fn take_sample_requests(&self) -> Vec<i32> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let db = database();
        (0..self.slot_capacity())
            .map(|i| self.slot(i))
            .filter(|slot| slot.in_use && slot.database == db)
            .filter(|slot| slot.counters.sample_requested.swap(false, Ordering::AcqRel))
            .map(|slot| slot.view.collection_id)
            .collect()
    }

    fn search_counter(&self, at: SlotRef) -> &AtomicU64 {
        // SAFETY: a slot of the segment, mapped for the process's life; the
        // counter is an atomic.
        unsafe { &(*self.slot_ptr(at.index)).counters.searches }
    }

    /// The search places counted on `at`'s slot (0 if it holds another
    /// collection now).
    pub(super) fn counted(&self, at: SlotRef) -> u32 {
        let value = self.search_counter(at).load(Ordering::Acquire);
        if value & !u64::from(u32::MAX) == generation_tag(at.generation) {
            value as u32
        } else {
            0
        }
    }

    /// Changes the places counted on `at`'s slot to `change(count)`, while
    /// the slot holds `at`'s collection. False only when `change` refused (a
    /// slot that holds another collection now changes nothing, and says true).
    pub(super) fn change_counted(&self, at: SlotRef, change: impl Fn(u32) -> Option<u32>) -> bool {
        let tag = generation_tag(at.generation);
        let counter = self.search_counter(at);
        let changed = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |value| {
            if value & !u64::from(u32::MAX) != tag {
                return None;
            }
            change(value as u32).map(|count| tag | u64::from(count))
        });
        match changed {
            Ok(_) => true,
            Err(value) => value & !u64::from(u32::MAX) != tag,
        }
    }
}

/// A generation as the search counter's high half holds it.
fn generation_tag(generation: u64) -> u64 {
    (generation & u64::from(u32::MAX)) << 32
}

impl Shared {
    /// Counts one gate decision on the collection `at` refers to (nothing if
    /// the slot holds another collection since). Lock-free.
    pub fn tally(&self, at: SlotRef, op: Operation, outcome: Outcome, now: Micros) {
        let slot = self.slot(at.index);
        if slot.in_use && slot.generation == at.generation {
            let tally = &slot.counters.tallies[op as usize][outcome as usize];
            tally.count.fetch_add(1, Ordering::Relaxed);
            // (Most decisions come within the clock's tick of the last one:
            // then nothing is written.)
            if now > tally.last_at.load(Ordering::Relaxed) {
                tally.last_at.fetch_max(now, Ordering::Relaxed);
            }
        }
    }

    /// Every non-zero counter of this database's collections (of `name` only,
    /// if given).
    pub fn gate_stats(&self, name: Option<&str>) -> Vec<GateStat> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let db = database();
        let mut stats = Vec::new();
        for slot in (0..self.slot_capacity()).map(|i| self.slot(i)) {
            if !slot.in_use || slot.database != db {
                continue;
            }
            let collection = slot.name_string();
            if name.is_some_and(|n| n != collection) {
                continue;
            }
            for (op, row) in Operation::ALL.iter().zip(&slot.counters.tallies) {
                for (outcome, tally) in Outcome::ALL.iter().zip(row) {
                    let count = tally.count.load(Ordering::Relaxed);
                    if count > 0 {
                        stats.push(GateStat {
                            collection: collection.clone(),
                            operation: *op,
                            outcome: *outcome,
                            count,
                            last_at: tally.last_at.load(Ordering::Relaxed),
                        });
                    }
                }
            }
        }
        stats
    }

    /// Sets the counters of `name` (every collection of this database if
    /// `None`) back to zero. Returns how many collections it reset.
    pub fn reset_gate_stats(&self, name: Option<&str>) -> usize {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let db = database();
        let mut reset = 0;
        for slot in (0..self.slot_capacity()).map(|i| self.slot(i)) {
            if slot.in_use && slot.database == db && name.is_none_or(|n| n == slot.name_string()) {
                slot.reset_tallies();
                reset += 1;
            }
        }
        reset
    }

    /// The searches running on `name` right now.
    pub fn live_search_count(&self, name: &str) -> Option<u32> {
        let at = {
            let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
            self.find(name).map(|i| self.slot_ref(i))?
        };
        let (counted, announced) = self.live_searches(at);
        Some(counted + announced)
    }
}

/// Copies the fields the worker owns.
fn record(view: &mut CollectionView, sample: &CollectionView) {
    view.state = sample.state;
    view.last_sample = sample.last_sample;
    view.lambda_cut = sample.lambda_cut;
    view.lambda_norm = sample.lambda_norm;
}
