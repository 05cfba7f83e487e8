//! Search places: how many searches run on a collection at once, for the
//! policy's `max_concurrent_searches`.
//!
//! A backend announces each place it takes in its own row, a cache line that
//! no other process writes: a search on a collection without a limit then
//! moves no cache line between cores (one shared counter did, twice per
//! search: 2–5% of a 32-client gate benchmark on 2 cores). Where a limit
//! applies, the count is the places announced plus the slot's counter, and a
//! place is taken on that counter by compare-and-swap, so that callers racing
//! for the last place never exceed the limit together. A backend whose row is
//! full, or a process without one, takes its places on the counter too.
//!
//! An announcement names the slot and its generation, and the counter holds
//! its slot's generation next to its count (changed only while they match),
//! so that a place held on an earlier occupant of a slot is never counted
//! for, or given back by, a new one.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use pgrx::pg_sys;
use ruvector_integrity::gate;

use super::{Shared, SlotRef};

/// Places one backend announces at once (one cache line).
const PER_ROW: usize = 8;

/// One backend's announced places: 0, or a slot and generation packed by
/// [`pack`]. Written by its backend only.
#[repr(C, align(64))]
pub(super) struct Row([AtomicU64; PER_ROW]);

/// A search place this backend holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub slot: SlotRef,
    /// Its entry in this backend's row; `None`: on the slot's counter.
    entry: Option<usize>,
}

/// A slot (below 2^20: `ruvector.max_collections` is at most 100,000) and its
/// generation, never 0.
fn pack(at: SlotRef) -> u64 {
    (at.generation << 20) | (at.index as u64 + 1)
}

impl Shared {
    /// Rows there are: one per backend PostgreSQL can run.
    fn row_capacity(&self) -> usize {
        self.header().row_capacity as usize
    }

    fn rows(&self) -> &[Row] {
        // SAFETY: the rows lie in the segment at the layout's offset, aligned
        // to their 64 bytes, `row_capacity` of them, mapped for the process's
        // life; they hold only atomics.
        unsafe {
            std::slice::from_raw_parts(self.at::<Row>(self.layout().rows), self.row_capacity())
        }
    }

    /// This backend's row, cleared the first time this process asks (a
    /// backend that exits gives its places back, but a row must not rely on
    /// its previous owner for that). `None` for a process without one.
    fn own_row(&self) -> Option<&Row> {
        thread_local! {
            static CLEARED: Cell<bool> = const { Cell::new(false) };
        }
        let row = self.rows().get(own_procno()?)?;
        if !CLEARED.replace(true) {
            row.0.iter().for_each(|e| e.store(0, Ordering::Release));
        }
        Some(row)
    }

    /// The places announced on `at`, by every backend: a read of every row.
    pub fn announced(&self, at: SlotRef) -> u32 {
        let wanted = pack(at);
        self.rows()
            .iter()
            .flat_map(|row| &row.0)
            .filter(|e| e.load(Ordering::Acquire) == wanted)
            .count() as u32
    }

    /// The searches running on the collection `at` refers to: those counted
    /// on its slot and those announced.
    pub fn live_searches(&self, at: SlotRef) -> (u32, u32) {
        (self.counted(at), self.announced(at))
    }

    /// Takes a search place on `at` for this backend, within `limit` searches
    /// at once (0: no limit) given `announced` (read by the caller since the
    /// limit came into force: announcements only go while it holds, so an
    /// older reading refuses too much, never too little); `None` when none is
    /// left.
    pub fn take_place(&self, at: SlotRef, limit: u32, announced: u32) -> Option<Place> {
        if limit == 0 {
            if let Some(row) = self.own_row() {
                if let Some(entry) = row.0.iter().position(|e| e.load(Ordering::Relaxed) == 0) {
                    row.0[entry].store(pack(at), Ordering::Release);
                    return Some(Place {
                        slot: at,
                        entry: Some(entry),
                    });
                }
            }
        }
        let admitted = self.change_counted(at, |n| {
            gate::under_search_limit(n + announced, limit).then_some(n + 1)
        });
        admitted.then_some(Place {
            slot: at,
            entry: None,
        })
    }

    /// Gives `place` back.
    pub fn give_back(&self, place: Place) {
        match place.entry {
            Some(entry) => {
                if let Some(row) = self.own_row() {
                    row.0[entry].store(0, Ordering::Release);
                }
            }
            // (Never below zero.)
            None => _ = self.change_counted(place.slot, |n| n.checked_sub(1)),
        }
    }
}

/// This process's PGPROC number, if it has one.
fn own_procno() -> Option<usize> {
    // SAFETY: MyProc is this process's own PGPROC, set before any statement
    // runs; null for a process without one.
    #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
    let procno = unsafe { pg_sys::MyProc.as_ref() }.map(|p| p.pgprocno)?;
    // SAFETY: MyProcNumber (PostgreSQL 17 on) is this process's own, set
    // before any statement runs; -1 for a process without one.
    #[cfg(any(feature = "pg17", feature = "pg18"))]
    let procno = unsafe { pg_sys::MyProcNumber };
    usize::try_from(procno).ok()
}
