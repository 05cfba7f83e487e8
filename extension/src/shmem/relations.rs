//! The relation map: every relation of every collection (its table, each
//! partition at every level), by database and OID, to the collection's slot.
//!
//! The hooks ask it about each relation a statement touches; a relation that
//! is not here is not ours, and the hook does nothing more for it; one that
//! is comes back with its collection's slot and view, under one lock.
//! Backends change the map when their registrations, new partitions and
//! detaches commit; the worker brings it in line with the catalog on every
//! tick (adding only, when a backend changed it since the worker's snapshot).

use pgrx::pg_sys;

use super::{cache, database, hash, CollectionView, Shared, SlotRef};

#[derive(Clone, Copy)]
#[repr(C)]
pub(super) struct RelationEntry {
    pub(super) database: pg_sys::Oid,
    relid: pg_sys::Oid,
    pub(super) slot: u32,
    generation: u64,
}

impl RelationEntry {
    fn slot_ref(&self) -> SlotRef {
        SlotRef {
            index: self.slot as usize,
            generation: self.generation,
        }
    }
}

impl Shared {
    fn relation_capacity(&self) -> usize {
        self.header().relation_capacity as usize
    }

    pub(super) fn relation_count(&self) -> usize {
        self.header().relation_count as usize
    }

    /// The entries in use, under a lock held by the caller (exclusively to
    /// change them).
    #[allow(clippy::mut_from_ref)]
    fn entries(&self) -> &mut [RelationEntry] {
        let start = self.at::<RelationEntry>(self.layout().relations);
        // SAFETY: the first `relation_count` entries of the array laid out
        // for `relation_capacity` (the count never exceeds it).
        unsafe { std::slice::from_raw_parts_mut(start, self.relation_count()) }
    }

    fn relation_hash(database: pg_sys::Oid, relid: pg_sys::Oid) -> u64 {
        hash(database, &u32::from(relid).to_le_bytes())
    }

    /// The index, `2 · relation_capacity` buckets of entry + 1 (0: empty),
    /// under a lock held by the caller (exclusively to change it).
    #[allow(clippy::mut_from_ref)]
    fn relation_index(&self) -> &mut [i32] {
        let index = self.at::<i32>(self.layout().relation_index);
        // SAFETY: the index array laid out after the entries, of that length.
        unsafe { std::slice::from_raw_parts_mut(index, 2 * self.relation_capacity()) }
    }

    /// Puts entry `i` into the index (which never fills: twice as many
    /// buckets as entries).
    fn index_relation(&self, i: usize) {
        let index = self.relation_index();
        let entry = &self.entries()[i];
        let mut at =
            (Self::relation_hash(entry.database, entry.relid) % index.len() as u64) as usize;
        while index[at] != 0 {
            at = (at + 1) % index.len();
        }
        index[at] = i as i32 + 1;
    }

    /// Rebuilds the index over the entries in use (after a removal).
    fn reindex_relations(&self) {
        self.relation_index().fill(0);
        for i in 0..self.relation_count() {
            self.index_relation(i);
        }
    }

    /// The entry of `relid` in this database, under a lock held by the caller.
    fn find_relation(&self, relid: pg_sys::Oid) -> Option<usize> {
        let db = database();
        let index = self.relation_index();
        if index.is_empty() {
            return None;
        }
        let entries = self.entries();
        let mut at = (Self::relation_hash(db, relid) % index.len() as u64) as usize;
        for _ in 0..index.len() {
            let entry = index[at];
            if entry == 0 {
                return None;
            }
            let e = &entries[entry as usize - 1];
            if e.database == db && e.relid == relid {
                return Some(entry as usize - 1);
            }
            at = (at + 1) % index.len();
        }
        None
    }

    /// The collection `relid` belongs to, if any: its slot and a copy of its
    /// view, from this backend's copy when nothing changed since it was read
    /// (see [`cache`]), else under one shared lock.
    pub fn relation(&self, relid: pg_sys::Oid) -> Option<(SlotRef, CollectionView)> {
        if let Some(found) = cache::relation(self.changes(), relid) {
            return found;
        }
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let found = self.find_relation(relid).and_then(|i| {
            let slot = self.entries()[i].slot_ref();
            Some((slot, self.live_slot(slot)?.view))
        });
        cache::keep_relation(self.changes(), relid, found);
        found
    }

    /// Every relation of every collection of this database, with its
    /// collection's slot.
    pub fn relations_of_database(&self) -> Vec<(pg_sys::Oid, SlotRef)> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let db = database();
        self.entries()
            .iter()
            .filter(|e| e.database == db && self.live_slot(e.slot_ref()).is_some())
            .map(|e| (e.relid, e.slot_ref()))
            .collect()
    }

    /// Adds (or re-points) relations of the collection in `slot`, from the
    /// entries the committing transaction reserved. False when the map is
    /// full; what fitted stays.
    pub fn add_relations(&self, slot: SlotRef, relations: &[pg_sys::Oid]) -> bool {
        let _guard = self.lock_to_change();
        self.header_mut().relations_version += 1;
        self.put_relations(slot, relations, true)
    }

    /// Under the exclusive lock held by the caller. `reserved`: the entries
    /// were reserved by the caller's transaction; anyone else leaves the
    /// reserved entries alone.
    fn put_relations(&self, slot: SlotRef, relations: &[pg_sys::Oid], reserved: bool) -> bool {
        if self.live_slot(slot).is_none() {
            return true;
        }
        let others = if reserved {
            0
        } else {
            self.reserved_relations()
        };
        let room = self.relation_capacity().saturating_sub(others);
        let mut fitted = true;
        for &relid in relations {
            let entry = RelationEntry {
                database: database(),
                relid,
                slot: slot.index as u32,
                generation: slot.generation,
            };
            match self.find_relation(relid) {
                Some(i) => self.entries()[i] = entry,
                None if self.relation_count() < room => {
                    let n = self.relation_count();
                    self.header_mut().relation_count += 1;
                    self.entries()[n] = entry;
                    self.index_relation(n);
                }
                None => fitted = false,
            }
        }
        fitted
    }

    /// Forgets relations of this database (a detach or a drop committed).
    pub fn remove_relations(&self, relids: &[pg_sys::Oid]) {
        let _guard = self.lock_to_change();
        self.header_mut().relations_version += 1;
        let db = database();
        self.remove_relations_where(|e| e.database == db && relids.contains(&e.relid));
    }

    /// Drops the entries `drop` picks (of any database), under the exclusive
    /// lock held by the caller.
    pub(super) fn remove_relations_where(&self, mut drop: impl FnMut(&RelationEntry) -> bool) {
        let entries = self.entries();
        let mut kept = 0;
        for i in 0..entries.len() {
            if !drop(&entries[i]) {
                entries[kept] = entries[i];
                kept += 1;
            }
        }
        if kept != entries.len() {
            self.header_mut().relation_count = kept as u32;
            self.reindex_relations();
        }
    }

    /// The version of the relation map, taken before the worker reads the catalog.
    pub fn relations_version(&self) -> u64 {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        self.header().relations_version
    }

    /// The worker brings the map in line with the catalog as it was when
    /// `seen` was taken: `sets` holds every relation of every collection of
    /// this database by name. Entries it does not list are dropped only if no
    /// backend changed the map since. Returns false when the map is full.
    pub fn sync_relations(&self, sets: &[(String, Vec<pg_sys::Oid>)], seen: u64) -> bool {
        let _guard = self.lock_to_change();
        let db = database();
        if self.header().relations_version == seen {
            let listed = |relid: pg_sys::Oid| sets.iter().any(|(_, rels)| rels.contains(&relid));
            self.remove_relations_where(|e| e.database == db && !listed(e.relid));
        }
        let mut fitted = true;
        for (name, relations) in sets {
            if let Some(i) = self.find(name) {
                let slot = SlotRef {
                    index: i,
                    generation: self.slot(i).generation,
                };
                fitted &= self.put_relations(slot, relations, false);
            }
        }
        fitted
    }
}
