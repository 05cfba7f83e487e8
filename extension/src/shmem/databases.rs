//! One entry per database that has the extension and a worker (or had one
//! since the server started): its pid and latch, heartbeat and signing note,
//! whether its relation map was filled since the server started, and until
//! when the launcher must leave it without a worker. A database without the
//! extension has no entry.
//!
//! Two mailboxes in the header carry what the launcher must learn: the
//! databases whose CREATE EXTENSION committed (`wanted`), and those where a
//! worker found no extension (`absent`). The launcher's own pid and latch are
//! in the header too.
//!
//! Entries are found by a linear scan (there are at most
//! `ruvector.max_databases`), under the segment's lock; the fields that
//! backends read on their way (pid, latch, `synced`) are atomics.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicPtr, AtomicU32, Ordering};

use pgrx::pg_sys;
use ruvector_integrity::Micros;

use super::{database, Shared};

/// Room for a worker's signing state.
const SIGNING_NOTE_MAX: usize = 1024;

/// Databases a mailbox holds until the launcher reads it.
pub(super) const MAILBOX: usize = 64;

/// A set of database OIDs (0: an empty place), written and emptied under the
/// exclusive lock; `overflowed` when one did not fit.
#[repr(C)]
pub(super) struct Mailbox {
    databases: [u32; MAILBOX],
    overflowed: bool,
}

thread_local! {
    /// This backend filled its database's relation map while no entry could
    /// note it (every entry in use): it need not do it again.
    static SYNCED_HERE: Cell<bool> = const { Cell::new(false) };
}

#[repr(C)]
pub(super) struct DatabaseEntry {
    /// The database's OID; 0 when the entry is free. Written under the
    /// exclusive lock.
    database: AtomicU32,
    worker_pid: AtomicI32,
    worker_latch: AtomicPtr<pg_sys::Latch>,
    /// When the worker's last loop began.
    heartbeat: AtomicI64,
    /// Set once this database's relation map was filled from its tables
    /// since the server started (by the worker, or a backend that could not
    /// wait for it).
    synced: AtomicBool,
    /// Until when the launcher must not start a worker for the database
    /// (a statement that needs it without connections is running).
    held_off_until: AtomicI64,
    /// The worker's signing state, as JSON text (under the lock).
    signing_note_len: u32,
    signing_note: [u8; SIGNING_NOTE_MAX],
}

/// What the launcher reads of one entry.
pub struct DatabaseWorker {
    pub database: pg_sys::Oid,
    pub pid: i32,
    pub held_off_until: Micros,
}

/// What the launcher learns from its mailboxes.
pub struct Mail {
    /// Databases whose CREATE EXTENSION committed.
    pub wanted: Vec<pg_sys::Oid>,
    /// More did than the mailbox held: look everywhere again.
    pub wanted_overflowed: bool,
    /// Databases where a worker found no extension.
    pub absent: Vec<pg_sys::Oid>,
}

/// Why a worker may not take its database's entry.
pub enum Claim {
    Taken,
    /// Another worker of this database is alive (pid).
    Duplicate(i32),
    /// Every entry is in use.
    Full,
    /// An owner's statement needs the database without connections.
    HeldOff,
}

impl Mailbox {
    fn post(&mut self, database: pg_sys::Oid) {
        let oid = u32::from(database);
        if self.databases.contains(&oid) {
            return;
        }
        match self.databases.iter_mut().find(|d| **d == 0) {
            Some(place) => *place = oid,
            None => self.overflowed = true,
        }
    }

    fn take(&mut self) -> (Vec<pg_sys::Oid>, bool) {
        let taken = self
            .databases
            .iter()
            .filter(|&&d| d != 0)
            .map(|&d| pg_sys::Oid::from(d))
            .collect();
        self.databases = [0; MAILBOX];
        (taken, std::mem::take(&mut self.overflowed))
    }
}

impl Shared {
    pub fn database_capacity(&self) -> usize {
        self.header().database_capacity as usize
    }

    fn database_entry(&self, i: usize) -> &DatabaseEntry {
        debug_assert!(i < self.database_capacity());
        // SAFETY: `i` is below the capacity the array was laid out for; the
        // entry's plain fields are changed only under the exclusive lock.
        unsafe { &*self.at::<DatabaseEntry>(self.layout().databases).add(i) }
    }

    #[allow(clippy::mut_from_ref)]
    fn database_entry_mut(&self, i: usize) -> &mut DatabaseEntry {
        // SAFETY: as `database_entry`; exclusivity is the caller's lock.
        unsafe { &mut *self.at::<DatabaseEntry>(self.layout().databases).add(i) }
    }

    /// Entries in use (under a lock held by the caller).
    pub(super) fn databases_used(&self) -> usize {
        (0..self.database_capacity())
            .filter(|&i| self.database_entry(i).database.load(Ordering::Acquire) != 0)
            .count()
    }

    /// The entry of `db`, read without the lock: its fields read are atomics.
    fn entry_of(&self, db: pg_sys::Oid) -> Option<&DatabaseEntry> {
        let db = u32::from(db);
        (0..self.database_capacity())
            .map(|i| self.database_entry(i))
            .find(|e| db != 0 && e.database.load(Ordering::Acquire) == db)
    }

    /// The entry of `db`, made if there is none, under the exclusive lock
    /// held by the caller; `None` when every entry is in use.
    fn entry_for(&self, db: pg_sys::Oid) -> Option<usize> {
        let wanted = u32::from(db);
        let entries = 0..self.database_capacity();
        let found = entries
            .clone()
            .find(|&i| self.database_entry(i).database.load(Ordering::Acquire) == wanted);
        found.or_else(|| {
            let free = entries
                .into_iter()
                .find(|&i| self.database_entry(i).database.load(Ordering::Acquire) == 0)?;
            let entry = self.database_entry_mut(free);
            entry.worker_pid.store(0, Ordering::Release);
            entry
                .worker_latch
                .store(std::ptr::null_mut(), Ordering::Release);
            entry.heartbeat.store(0, Ordering::Release);
            entry.synced.store(false, Ordering::Release);
            entry.held_off_until.store(0, Ordering::Release);
            entry.signing_note_len = 0;
            entry.database.store(wanted, Ordering::Release);
            Some(free)
        })
    }

    /// The worker of this database takes its entry.
    pub fn claim_worker(&self, pid: i32, latch: *mut pg_sys::Latch, now: Micros) -> Claim {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let Some(i) = self.entry_for(database()) else {
            return Claim::Full;
        };
        let entry = self.database_entry(i);
        if entry.held_off_until.load(Ordering::Acquire) > now {
            return Claim::HeldOff;
        }
        let other = entry.worker_pid.load(Ordering::Acquire);
        // SAFETY: kill with signal 0 only asks whether the process exists.
        if other != 0 && other != pid && unsafe { libc::kill(other, 0) } == 0 {
            return Claim::Duplicate(other);
        }
        entry.worker_latch.store(latch, Ordering::Release);
        entry.worker_pid.store(pid, Ordering::Release);
        Claim::Taken
    }

    /// The worker `pid` of this database is leaving (a newer one's entry is
    /// left alone). With `for_good` (the extension is not installed here)
    /// its entry goes too, and the launcher is told.
    pub fn release_worker(&self, pid: i32, for_good: bool) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        if let Some(entry) = self.entry_of(database()) {
            if entry.worker_pid.load(Ordering::Acquire) == pid {
                entry
                    .worker_latch
                    .store(std::ptr::null_mut(), Ordering::Release);
                entry.worker_pid.store(0, Ordering::Release);
                if for_good {
                    entry.database.store(0, Ordering::Release);
                }
            }
        }
        if for_good {
            self.header_mut().absent.post(database());
        }
    }

    /// A worker found no extension here before taking an entry: the
    /// launcher is told.
    pub fn report_absent(&self) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        self.header_mut().absent.post(database());
    }

    /// The pid of this database's worker (0: none).
    pub fn worker_pid(&self) -> i32 {
        self.entry_of(database())
            .map_or(0, |e| e.worker_pid.load(Ordering::Acquire))
    }

    pub fn beat(&self, now: Micros) {
        if let Some(entry) = self.entry_of(database()) {
            entry.heartbeat.store(now, Ordering::Release);
        }
    }

    /// When this database's worker's last loop began (`None`: it never ran).
    pub fn heartbeat(&self) -> Option<Micros> {
        self.entry_of(database())
            .map(|e| e.heartbeat.load(Ordering::Acquire))
            .filter(|&b| b != 0)
    }

    /// Wakes this database's worker so that it acts before its next tick.
    pub fn wake_worker(&self) {
        if let Some(entry) = self.entry_of(database()) {
            let latch = entry.worker_latch.load(Ordering::Acquire);
            if !latch.is_null() && entry.worker_pid.load(Ordering::Acquire) != 0 {
                // SAFETY: the worker's own latch, published while it lives
                // and cleared (by `release_worker`) before it exits.
                unsafe { pg_sys::SetLatch(latch) };
            }
        }
    }

    /// The worker publishes its signing state (JSON text, cut to fit).
    pub fn set_signing_note(&self, note: &str) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let Some(i) = self.entry_for(database()) else {
            return;
        };
        let mut len = note.len().min(SIGNING_NOTE_MAX);
        while !note.is_char_boundary(len) {
            len -= 1;
        }
        let entry = self.database_entry_mut(i);
        entry.signing_note[..len].copy_from_slice(&note.as_bytes()[..len]);
        entry.signing_note_len = len as u32;
    }

    pub fn signing_note(&self) -> String {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        self.entry_of(database()).map_or_else(String::new, |e| {
            String::from_utf8_lossy(&e.signing_note[..e.signing_note_len as usize]).into_owned()
        })
    }

    /// Whether this database's relation map has been filled from its tables
    /// since the server started.
    pub fn synced(&self) -> bool {
        SYNCED_HERE.with(Cell::get)
            || self
                .entry_of(database())
                .is_some_and(|e| e.synced.load(Ordering::Acquire))
    }

    /// Notes that this database's relation map was filled (in this backend
    /// alone when every entry is in use).
    pub fn mark_synced(&self) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        match self.entry_for(database()) {
            Some(i) => self.database_entry(i).synced.store(true, Ordering::Release),
            None => SYNCED_HERE.with(|s| s.set(true)),
        }
    }

    /// Forgets that this database's relation map was filled, under the
    /// exclusive lock held by the caller.
    pub(super) fn unmark_synced(&self) {
        SYNCED_HERE.with(|s| s.set(false));
        if let Some(entry) = self.entry_of(database()) {
            entry.synced.store(false, Ordering::Release);
        }
    }

    /// CREATE EXTENSION committed here: tells the launcher.
    pub fn want_worker(&self) {
        {
            let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
            self.header_mut().wanted.post(database());
        }
        self.wake_launcher();
    }

    /// Stops the worker of `db` and keeps the launcher from starting another
    /// before `until`; returns the pid it stopped (0: there was none).
    pub fn hold_off_worker(&self, db: pg_sys::Oid, until: Micros) -> i32 {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        let Some(entry) = self.entry_of(db) else {
            return 0;
        };
        entry.held_off_until.store(until, Ordering::Release);
        let pid = entry.worker_pid.load(Ordering::Acquire);
        if pid != 0 {
            // SAFETY: SIGTERM asks a worker of this server to finish its tick
            // and exit; the pid is the one it published while alive.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        pid
    }

    /// Whether `db`'s worker `pid` has left its entry.
    pub fn worker_gone(&self, db: pg_sys::Oid, pid: i32) -> bool {
        self.entry_of(db)
            .is_none_or(|e| e.worker_pid.load(Ordering::Acquire) != pid)
    }

    /// For the launcher: every entry in use.
    pub fn database_workers(&self) -> Vec<DatabaseWorker> {
        let _guard = self.lock(pg_sys::LWLockMode::LW_SHARED);
        (0..self.database_capacity())
            .map(|i| self.database_entry(i))
            .filter(|e| e.database.load(Ordering::Acquire) != 0)
            .map(|e| DatabaseWorker {
                database: pg_sys::Oid::from(e.database.load(Ordering::Acquire)),
                pid: e.worker_pid.load(Ordering::Acquire),
                held_off_until: e.held_off_until.load(Ordering::Acquire),
            })
            .collect()
    }

    /// For the launcher: what its mailboxes hold, emptied.
    pub fn take_mail(&self) -> Mail {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let header = self.header_mut();
        let (wanted, wanted_overflowed) = header.wanted.take();
        let (absent, _) = header.absent.take();
        Mail {
            wanted,
            wanted_overflowed,
            absent,
        }
    }

    /// For the launcher: `db` is gone (or has no extension); its entry goes
    /// unless a worker still holds it.
    pub fn forget_database(&self, db: pg_sys::Oid) {
        let _guard = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        if let Some(entry) = self.entry_of(db) {
            if entry.worker_pid.load(Ordering::Acquire) == 0 {
                entry.database.store(0, Ordering::Release);
            }
        }
    }

    pub fn set_launcher(&self, pid: i32, latch: *mut pg_sys::Latch) {
        let header = self.header();
        header.launcher_latch.store(latch, Ordering::Release);
        header.launcher_pid.store(pid, Ordering::Release);
    }

    /// Wakes the launcher so that it looks at the databases now.
    pub fn wake_launcher(&self) {
        let header = self.header();
        let latch = header.launcher_latch.load(Ordering::Acquire);
        if !latch.is_null() && header.launcher_pid.load(Ordering::Acquire) != 0 {
            // SAFETY: the launcher's latch, published while it lives and
            // cleared (by `forget_launcher`) before it exits.
            unsafe { pg_sys::SetLatch(latch) };
        }
    }
}

/// Called by a worker on exit so that no backend signals a latch it left.
pub extern "C-unwind" fn forget_worker(_code: i32, _arg: pg_sys::Datum) {
    if let Ok(shared) = super::shared() {
        // SAFETY: this process's pid.
        shared.release_worker(unsafe { pg_sys::MyProcPid }, false);
    }
}

/// Called by the launcher on exit.
pub extern "C-unwind" fn forget_launcher(_code: i32, _arg: pg_sys::Datum) {
    if let Ok(shared) = super::shared() {
        shared.set_launcher(0, std::ptr::null_mut());
    }
}
