//! The relation map: every relation of every collection (its table, each
//! partition at every level), by database and OID, to the collection's slot.
//!
//! The utility hook asks it about each relation a statement touches; a
//! relation that is not here is not ours, and the hook does nothing more for
//! it. Backends change the map when their registrations, new partitions and
//! detaches commit; the worker brings it in line with the catalog on every
//! tick (adding only, when a backend changed it since the worker's snapshot).

use pgrx::pg_sys;

use super::{database, hash, Shared, SlotRef};

/// What a relation is to its collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RelationFlags {
    /// The collection's registered table (not a partition of it).
    pub root: bool,
}

impl RelationFlags {
    fn bits(self) -> u32 {
        u32::from(self.root)
    }

    fn from_bits(bits: u32) -> Self {
        RelationFlags {
            root: bits & 1 != 0,
        }
    }
}

#[derive(Clone, Copy)]
#[repr(C)]
pub(super) struct RelationEntry {
    pub(super) database: pg_sys::Oid,
    relid: pg_sys::Oid,
    pub(super) slot: u32,
    flags: u32,
    generation: u64,
}

/// A relation of a collection, as the hook needs it.
#[derive(Clone, Debug)]
pub struct GatedRelation {
    pub collection: String,
}

impl Shared {
    fn relation_capacity(&self) -> usize {
        self.header().relation_capacity as usize
    }

    fn relation_count(&self) -> usize {
        self.header().relation_count as usize
    }

    #[allow(clippy::mut_from_ref)]
    fn entries(&self) -> &mut [RelationEntry] {
        let start = self.at::<RelationEntry>(self.layout().relations);
        unsafe { std::slice::from_raw_parts_mut(start, self.relation_count()) }
    }

    fn relation_hash(database: pg_sys::Oid, relid: pg_sys::Oid) -> u64 {
        hash(database, &u32::from(relid).to_le_bytes())
    }

    /// Puts entry `i` into the index.
    fn index_relation(&self, i: usize) {
        let buckets = 2 * self.relation_capacity();
        let index = self.at::<i32>(self.layout().relation_index);
        let entry = &self.entries()[i];
        let mut at = (Self::relation_hash(entry.database, entry.relid) % buckets as u64) as usize;
        while unsafe { *index.add(at) } != 0 {
            at = (at + 1) % buckets;
        }
        unsafe { *index.add(at) = i as i32 + 1 };
    }

    /// Rebuilds the index over the entries in use (after a removal).
    fn reindex_relations(&self) {
        let index = self.at::<i32>(self.layout().relation_index);
        unsafe { std::ptr::write_bytes(index, 0, 2 * self.relation_capacity()) };
        for i in 0..self.relation_count() {
            self.index_relation(i);
        }
    }

    /// The entry of `relid` in this database, under a lock held by the caller.
    fn find_relation(&self, relid: pg_sys::Oid) -> Option<usize> {
        let db = database();
        let buckets = 2 * self.relation_capacity();
        if buckets == 0 {
            return None;
        }
        let index = self.at::<i32>(self.layout().relation_index);
        let entries = self.entries();
        let mut at = (Self::relation_hash(db, relid) % buckets as u64) as usize;
        for _ in 0..buckets {
            let entry = unsafe { *index.add(at) };
            if entry == 0 {
                return None;
            }
            let e = &entries[entry as usize - 1];
            if e.database == db && e.relid == relid {
                return Some(entry as usize - 1);
            }
            at = (at + 1) % buckets;
        }
        None
    }

    /// The collection `relid` belongs to, if any. No allocation unless it is one.
    pub fn relation(&self, relid: pg_sys::Oid) -> Option<GatedRelation> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let entry = self.entries()[self.find_relation(relid)?];
        let slot = SlotRef {
            index: entry.slot as usize,
            generation: entry.generation,
        };
        let live = self.live_slot(slot)?;
        Some(GatedRelation {
            collection: live.name_string(),
        })
    }

    /// Every relation of every collection of this database: its OID, whether
    /// it is the registered table itself, and its collection.
    pub fn relations_of_database(&self) -> Vec<(pg_sys::Oid, bool, GatedRelation)> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let db = database();
        self.entries()
            .iter()
            .filter(|e| e.database == db)
            .filter_map(|e| {
                let slot = SlotRef {
                    index: e.slot as usize,
                    generation: e.generation,
                };
                let live = self.live_slot(slot)?;
                Some((
                    e.relid,
                    RelationFlags::from_bits(e.flags).root,
                    GatedRelation {
                        collection: live.name_string(),
                    },
                ))
            })
            .collect()
    }

    /// Adds (or re-points) relations of the collection in `slot`, from the
    /// entries the committing transaction reserved. False when the map is
    /// full; what fitted stays.
    pub fn add_relations(&self, slot: SlotRef, relations: &[(pg_sys::Oid, RelationFlags)]) -> bool {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        self.header_mut().relations_version += 1;
        self.put_relations(slot, relations, true)
    }

    /// `reserved`: the entries were reserved by the caller's transaction;
    /// anyone else leaves the reserved entries alone.
    fn put_relations(
        &self,
        slot: SlotRef,
        relations: &[(pg_sys::Oid, RelationFlags)],
        reserved: bool,
    ) -> bool {
        if self.live_slot(slot).is_none() {
            return true;
        }
        let mut fitted = true;
        for &(relid, flags) in relations {
            let entry = RelationEntry {
                database: database(),
                relid,
                slot: slot.index as u32,
                flags: flags.bits(),
                generation: slot.generation,
            };
            match self.find_relation(relid) {
                Some(i) => self.entries()[i] = entry,
                None if self.relation_count()
                    + if reserved {
                        0
                    } else {
                        self.header().reserved_relations as usize
                    }
                    < self.relation_capacity() =>
                {
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
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
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
    pub fn sync_relations(
        &self,
        sets: &[(String, Vec<(pg_sys::Oid, RelationFlags)>)],
        seen: u64,
    ) -> bool {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let db = database();
        if self.header().relations_version == seen {
            let listed = |relid: pg_sys::Oid| {
                sets.iter()
                    .any(|(_, rels)| rels.iter().any(|r| r.0 == relid))
            };
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
