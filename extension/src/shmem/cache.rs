//! A backend's copies of what it last found in the slots and the relation
//! map, good for as long as the segment's change counter stays where it was
//! when they were read (every change is made under the exclusive lock, which
//! moves the counter first). The gate's hot path then reads one counter, and
//! neither takes the lock nor writes to shared memory: no cache line moves
//! between the cores that run statements on collections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use pgrx::pg_sys;

use super::{CollectionView, SlotRef};

/// A collection found: its slot, and a copy of its view.
pub(super) type Found = Option<(SlotRef, CollectionView)>;

/// Copies kept at most, of each kind (then they are all forgotten): about
/// 100 kB of a backend's memory.
const MOST: usize = 512;

/// FNV-1a: the keys are short and this backend's own.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        let seed = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        self.0 = bytes
            .iter()
            .fold(seed, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Map<K> = HashMap<K, Found, BuildHasherDefault<Fnv>>;

#[derive(Default)]
struct Copies {
    /// The change counter they were read at.
    at: u64,
    relations: Map<pg_sys::Oid>,
    names: Map<String>,
}

impl Copies {
    /// Forgets everything read before `now`.
    fn at(&mut self, now: u64) -> &mut Copies {
        if self.at != now {
            self.relations.clear();
            self.names.clear();
            self.at = now;
        }
        self
    }
}

thread_local! {
    static COPIES: RefCell<Copies> = RefCell::new(Copies::default());
}

/// What was found for `relid`, if it was read since the counter was `now`.
pub(super) fn relation(now: u64, relid: pg_sys::Oid) -> Option<Found> {
    COPIES.with(|c| c.borrow_mut().at(now).relations.get(&relid).copied())
}

/// Keeps what was found for `relid`, read at counter `at`.
pub(super) fn keep_relation(at: u64, relid: pg_sys::Oid, found: Found) {
    COPIES.with(|c| {
        let copies = &mut *c.borrow_mut();
        let relations = &mut copies.at(at).relations;
        if relations.len() >= MOST {
            relations.clear();
        }
        relations.insert(relid, found);
    });
}

/// What was found for `name`, if it was read since the counter was `now`.
pub(super) fn name(now: u64, name: &str) -> Option<Found> {
    COPIES.with(|c| c.borrow_mut().at(now).names.get(name).copied())
}

/// Keeps what was found for `name`, read at counter `at`.
pub(super) fn keep_name(at: u64, name: &str, found: Found) {
    COPIES.with(|c| {
        let copies = &mut *c.borrow_mut();
        let names = &mut copies.at(at).names;
        if names.len() >= MOST {
            names.clear();
        }
        names.insert(name.to_owned(), found);
    });
}
