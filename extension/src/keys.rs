//! The audit signing key, held by the worker alone: a file of 32 raw bytes,
//! and the chain's record of which key may sign (key events, see the core's
//! `audit::keys`).
//!
//! - The first key of an installation signs the chain's root entry; its
//!   fingerprint is logged, and printed by `ruvector_audit_checkpoint()`.
//! - Each time the worker starts, it moves to a fresh key, introduced by the
//!   key it holds: a copy of the data directory (a restored backup, a promoted
//!   standby) that goes on signing does so under a key of its own, so forks of
//!   one chain are told apart.
//! - A worker whose key file is not the chain's current key, and that cannot
//!   take over with the successor (below), does not sign (a backup restored
//!   to before a later rotation on the same timeline, another cluster's
//!   dump): events wait, unsigned, and the status says why, until a superuser
//!   starts a new root (`ruvector_reroot_audit_chain`).
//! - Operators' requests (rotate, revoke, re-root) are pending events the
//!   worker acts on before it signs anything else; a revocation takes effect
//!   from the seq of the key event that records it, so a revocation in flight
//!   never invalidates what was signed before it.
//!
//! - A failover: after every key change the chain introduces a new successor
//!   key, whose secret is kept in `ruvector.successor_keys` (the last one's
//!   alone, readable by the extension's owner alone), so that the WAL carries
//!   it to every standby. A server promoted since (it writes on a later
//!   timeline of the cluster that signed the chain's last entry: a standby,
//!   or a point-in-time restore) whose key file is stale takes over: the
//!   successor signs a `failover` introducing its key.
//!
//! A new key is written beside the key file (`<file>.next`, synced) before the
//! key event that introduces it commits, and renamed over the key file after:
//! a crash in between leaves either the old key with no event, or the event
//! and the new key (found and renamed at the next start).
//!
//! The file is created with mode 0600 when missing and refused when anyone but
//! its owner (the server's user) could read it. Nothing here ever shows the
//! secret bytes.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use pgrx::prelude::*;
use ruvector_integrity::audit::keys::{self, KeyAction, KeyEvent, Request, Start};
use ruvector_integrity::audit::{fingerprint, hex, Fingerprint, Signer};
use serde_json::{json, Value};

use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::store::events::Pending;
use crate::{audit, catalog, clock, gucs, installation, privileges, server, store, xact};

/// Moves 0.2's key file (at `ruvector.signing_key_path` itself, one per
/// cluster) to `path`, this database's key file, when this is the database
/// 0.2 watched (`ruvector.integrity_database`), it has no key file of its own
/// yet, and that key (or the one a rotation left beside it, `.next`) is its
/// chain's current key (`current`). No other database takes it: a copy of
/// the watched database has the same chain, and must not sign as it.
fn adopt(path: &Path, current: Option<&str>) -> SqlResult<()> {
    let old = gucs::signing_key_path();
    if path.exists() || catalog::database_name() != gucs::integrity_database() {
        return Ok(());
    }
    for offered in [next_path(&old), old.clone()] {
        if !offered.exists() {
            continue;
        }
        match read_key(&offered) {
            Ok(key) if current == Some(key.id()) => {
                std::fs::rename(&offered, path)
                    .and_then(|()| sync_directory(path))
                    .map_err(|e| {
                        SqlError::internal(format!(
                            "cannot move the signing key {} to {}: {e}",
                            offered.display(),
                            path.display()
                        ))
                    })?;
                pgrx::log!(
                    "ruvector: 0.2's signing key {} moved from {} to {}, this database's key file",
                    key.id(),
                    offered.display(),
                    path.display()
                );
                return Ok(());
            }
            _ => continue,
        }
    }
    Ok(())
}

/// Removes the key files of a database that was just dropped: no secret
/// outlives its chain, nor is found by a later database given the same OID.
pub fn forget_database_key(database: pg_sys::Oid) {
    let path = gucs::database_key_path(database);
    for file in [next_path(&path), path] {
        match std::fs::remove_file(&file) {
            Ok(()) => pgrx::log!("ruvector: removed the signing key file {}", file.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => pgrx::warning!(
                "ruvector: cannot remove the signing key file {} of a dropped database: {e}",
                file.display()
            ),
        }
    }
}

/// Reads the key at `path`, or creates it there if there is none. The error is
/// a sentence for the server log.
pub fn load_or_create(path: &Path) -> Result<Signer, String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signer = Signer::generate().map_err(|e| e.to_string())?;
            write_key(path, &signer)
                .map_err(|e| format!("cannot create the signing key file {shown}: {e}"))?;
            pgrx::log!("ruvector: created signing key {} in {shown}", signer.id());
            Ok(signer)
        }
        Err(e) => Err(format!("cannot read the signing key file {shown}: {e}")),
        Ok(_) => read_key(path),
    }
}

fn read_key(path: &Path) -> Result<Signer, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the signing key file {shown}: {e}"))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "refusing the signing key file {shown}: its mode is {:04o}, readable by others; run chmod 600 on it",
            meta.mode() & 0o7777
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(format!(
            "refusing the signing key file {shown}: it belongs to uid {}, not to the server's uid {euid}",
            meta.uid()
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the signing key file {shown}: {e}"))?;
    let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "refusing the signing key file {shown}: it holds {} bytes, not 32",
            bytes.len()
        )
    })?;
    Ok(Signer::from_secret(&secret))
}

/// Writes a key file: created exclusively, mode 0600, synced with its directory.
fn write_key(path: &Path, signer: &Signer) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&signer.secret())?;
    file.sync_all()?;
    sync_directory(path)
}

fn sync_directory(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(directory) => std::fs::File::open(directory)?.sync_all(),
        None => Ok(()),
    }
}

fn next_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

/// The worker's signing state.
pub struct KeyHolder {
    path: PathBuf,
    /// The key it signs with, as of the last commit; `None` while it may not sign.
    signer: Option<Signer>,
    /// The chain's current root, as of the last commit.
    root: Option<Fingerprint>,
    /// Why it does not sign, when it does not.
    stopped: Option<String>,
    /// A key introduced in the open transaction, the new root if it is one,
    /// and whether it waits in `<file>.next` to be moved over the key file.
    next: Option<(Signer, Option<Fingerprint>, bool)>,
    /// The installation (extension OID) the start-up check ran for: a
    /// re-created extension starts a new chain, checked anew.
    prepared: Option<pg_sys::Oid>,
    /// The successor key, while it signs a failover in the open transaction.
    taking_over: Option<Signer>,
    /// The chain's successor (its id), and one introduced in the open
    /// transaction.
    successor: Option<String>,
    next_successor: Option<String>,
}

impl KeyHolder {
    pub fn new(path: PathBuf) -> KeyHolder {
        KeyHolder {
            path,
            signer: None,
            root: None,
            stopped: None,
            next: None,
            prepared: None,
            taking_over: None,
            successor: None,
            next_successor: None,
        }
    }

    /// The key to sign with now: one introduced in the open transaction, else
    /// the committed one.
    pub fn signer(&self) -> Option<&Signer> {
        self.next
            .as_ref()
            .map(|(k, _, _)| k)
            .or(self.signer.as_ref())
    }

    pub fn root(&self) -> Option<Fingerprint> {
        self.next.as_ref().and_then(|(_, r, _)| *r).or(self.root)
    }

    /// A sentence for the status: who signs, or why nobody does.
    pub fn note(&self) -> Value {
        match (&self.signer, &self.stopped) {
            (Some(signer), _) => json!({
                "signing": true, "key": signer.id(), "root_fingerprint": self.root.map(|r| hex(&r)),
                "successor": self.successor,
            }),
            (None, why) => json!({
                "signing": false, "reason": why.clone().unwrap_or_else(|| "the worker has not loaded its key yet".into()),
                "root_fingerprint": self.root.map(|r| hex(&r)), "successor": self.successor,
            }),
        }
    }

    fn stop(&mut self, why: String) {
        if self.stopped.as_ref() != Some(&why) {
            pgrx::warning!("ruvector: not signing audit events: {why}");
        }
        self.signer = None;
        self.stopped = Some(why);
    }

    /// Introduces `new` by `event`, signed by the key in force (by `new`
    /// itself for a root or re-root), writing `new` beside the key file first
    /// unless it is the key file already; it is the key in force for the rest
    /// of the transaction, and for good when it commits.
    fn introduce(&mut self, new: Signer, mut event: KeyEvent, on_file: bool) -> SqlResult<()> {
        describe(&mut event);
        if !on_file {
            let next = next_path(&self.path);
            let _ = std::fs::remove_file(&next);
            write_key(&next, &new).map_err(|e| {
                SqlError::internal(format!(
                    "cannot write the new signing key to {}: {e}",
                    next.display()
                ))
            })?;
        }
        let record = event.to_event(clock::now());
        let seq = if event.action.self_signed() {
            audit::append_signed(&new, &record)?
        } else if event.action == KeyAction::Failover {
            let by = self
                .taking_over
                .as_ref()
                .ok_or_else(|| SqlError::internal("no successor key to take over with"))?;
            audit::append_signed(by, &record)?
        } else {
            let by = self
                .signer()
                .ok_or_else(|| SqlError::internal("no key to sign a rotation with"))?;
            audit::append_signed(by, &record)?
        };
        store::events::register_key(&new, seq, &event.why)?;
        let root = event.action.self_signed().then(|| new.fingerprint());
        self.next = Some((new, root.or(self.root()), !on_file));
        // Every key change brings a new successor: one that leaked with an
        // earlier key is worth nothing after it. (Before `ALTER EXTENSION
        // ruvector UPDATE` to 0.3.0 there is no table to keep it in.)
        if store::events::keeps_successors() {
            self.introduce_successor()?;
        }
        Ok(())
    }

    /// Introduces a new successor key, signed by the key in force (which
    /// stays in force), its secret kept in the same transaction.
    fn introduce_successor(&mut self) -> SqlResult<()> {
        let by = self
            .signer()
            .ok_or_else(|| SqlError::internal("no key to introduce a successor with"))?;
        let successor = Signer::generate()?;
        let mut event = KeyEvent::new(
            KeyAction::Successor,
            &successor.public_key(),
            Some(by.id()),
            "the key a standby of this server takes over with once promoted",
        );
        describe(&mut event);
        let seq = audit::append_signed(by, &event.to_event(clock::now()))?;
        store::events::register_key(&successor, seq, &event.why)?;
        store::events::keep_successor(&successor)?;
        self.next_successor = Some(successor.id().to_owned());
        Ok(())
    }

    /// The chain's successor key, if the chain may be taken over with it
    /// now: its secret is here, and this server writes on a later timeline
    /// than the chain's last entry (it was promoted since).
    fn successor_to_take_over(&self, events: &[(u64, KeyEvent)]) -> SqlResult<Option<Signer>> {
        let Some(successor) = keys::successor(events).filter(|_| store::events::keeps_successors())
        else {
            return Ok(None);
        };
        let (Some(held), Some(head)) = (
            store::events::successor(&successor.key)?,
            store::events::head_context()?,
        ) else {
            return Ok(None);
        };
        Ok(keys::may_take_over(held.id(), events, head, server::context()).then_some(held))
    }

    /// The transaction that introduced a key committed: it is the key now.
    pub fn committed(&mut self) {
        self.taking_over = None;
        if let Some(successor) = self.next_successor.take() {
            self.successor = Some(successor);
        }
        let Some((new, root, move_file)) = self.next.take() else {
            return;
        };
        let moved = if move_file {
            std::fs::rename(next_path(&self.path), &self.path)
                .and_then(|()| sync_directory(&self.path))
        } else {
            Ok(())
        };
        self.root = root;
        match moved {
            Ok(()) => {
                pgrx::log!("ruvector: signing audit events with key {}", new.id());
                self.signer = Some(new);
                self.stopped = None;
            }
            Err(e) => self.stop(format!(
                "cannot move the new key {} from {} into place: {e} (it is found there at the next start)",
                new.id(),
                next_path(&self.path).display()
            )),
        }
    }

    /// The transaction that introduced a key rolled back (a start-up check
    /// that found no key is tried again).
    pub fn aborted(&mut self) {
        self.taking_over = None;
        self.next_successor = None;
        if let Some((_, _, true)) = self.next.take() {
            let _ = std::fs::remove_file(next_path(&self.path));
        }
        if self.signer.is_none() && self.stopped.is_none() {
            self.prepared = None;
        }
    }

    /// At start, and until it succeeds: loads the key file and decides, from
    /// the chain, whether it may sign (see the module's comment). Returns
    /// whether it wrote a key event. In the worker's transaction.
    pub fn prepare(&mut self) -> SqlResult<bool> {
        let installation = installation::installed()
            .ok_or_else(|| SqlError::internal("the ruvector extension is not installed"))?
            .extension;
        if self.prepared == Some(installation) {
            return Ok(false);
        }
        if self.prepared.is_some() {
            // The extension was dropped and created again: a new chain.
            self.stopped = None;
        }
        self.signer = None;
        self.root = None;
        let events = store::events::key_events(None)?;
        let current = keys::current(&events).map(|k| k.key.clone());
        adopt(&self.path, current.as_deref())?;
        let file = match load_or_create(&self.path) {
            Ok(file) => file,
            Err(problem) => {
                self.stop(format!(
                    "{problem}; audit events stay unsigned until this is fixed"
                ));
                return Ok(false);
            }
        };
        self.root = events
            .iter()
            .rev()
            .find(|(_, k)| k.action.self_signed())
            .and_then(|(_, k)| k.public_key_bytes().ok())
            .map(|pk| fingerprint(&pk));
        // A rotation that committed before the new key was moved into place.
        let file = match read_key(&next_path(&self.path)) {
            Ok(next) if current.as_deref() == Some(next.id()) => {
                std::fs::rename(next_path(&self.path), &self.path)
                    .and_then(|()| sync_directory(&self.path))
                    .map_err(|e| {
                        SqlError::internal(format!(
                            "cannot move the new signing key into place: {e}"
                        ))
                    })?;
                next
            }
            _ => {
                let _ = std::fs::remove_file(next_path(&self.path));
                file
            }
        };
        self.prepared = Some(installation);
        let head = store::events::head()?;
        self.successor = match keys::successor(&events) {
            Some(k) if store::events::keeps_successors() => {
                store::events::successor(&k.key)?.map(|held| held.id().to_owned())
            }
            _ => None,
        };
        match keys::at_start(file.id(), current.as_deref(), head.is_some()) {
            Start::Stop(why) => match self.successor_to_take_over(&events)? {
                Some(successor) => {
                    let timeline = server::context().timeline;
                    let new = Signer::generate()?;
                    let event = KeyEvent::new(
                        KeyAction::Failover,
                        &new.public_key(),
                        current.as_deref(),
                        &format!("this server was promoted: it signs on timeline {timeline}, under a key the chain's successor introduces"),
                    );
                    pgrx::log!(
                        "ruvector: promoted to timeline {timeline}: taking the audit chain over with its successor key {}",
                        successor.id()
                    );
                    self.taking_over = Some(successor);
                    self.introduce(new, event, false)?;
                    Ok(true)
                }
                None => {
                    self.stop(why);
                    Ok(false)
                }
            },
            Start::Root => {
                let root = KeyEvent::new(
                    KeyAction::Root,
                    &file.public_key(),
                    None,
                    "the first key of this installation",
                );
                pgrx::log!(
                    "ruvector: the audit chain's root key is {}, fingerprint {}: keep this fingerprint to verify the log (ruvector-audit verify --root {})",
                    file.id(),
                    hex(&file.fingerprint()),
                    hex(&file.fingerprint())
                );
                self.introduce(file, root, true)?;
                Ok(true)
            }
            Start::Carry => {
                let mut why = "the worker started: a fresh key for this run".to_owned();
                let checkpoint = audit::read_checkpoint()?.map(|c| c.seq);
                if let Some(anomaly) =
                    keys::checkpoint_anomaly(checkpoint, head.map_or(0, |h| h.seq))
                {
                    pgrx::warning!("ruvector: {anomaly}");
                    why = format!("{why}; {anomaly}");
                }
                self.signer = Some(file);
                self.rotate(KeyAction::Rotate, None, &why)?;
                Ok(true)
            }
        }
    }

    /// Introduces a fresh key signed by the key in force.
    fn rotate(&mut self, action: KeyAction, revoked: Option<String>, why: &str) -> SqlResult<()> {
        let current = self.signer().map(|s| s.id().to_owned());
        let new = Signer::generate()?;
        let mut event = KeyEvent::new(action, &new.public_key(), current.as_deref(), why);
        event.revoked_key = revoked;
        self.introduce(new, event, false)
    }

    /// Acts on the operators' requests among the pending events about to be
    /// signed: writes the key events they ask for, before those events are
    /// signed. Returns whether it wrote one.
    pub fn before_batch(&mut self, pending: &[Pending]) -> SqlResult<bool> {
        let mut wrote = false;
        for request in pending.iter().filter_map(|p| Request::of(&p.event)) {
            match request {
                Request::Reroot => {
                    let new = Signer::generate()?;
                    let events = store::events::key_events(None)?;
                    let previous = keys::current(&events).map(|k| k.key.clone());
                    let event = KeyEvent::new(
                        KeyAction::Reroot,
                        &new.public_key(),
                        previous.as_deref(),
                        "a superuser started a new root",
                    );
                    self.introduce(new, event, false)?;
                }
                _ if self.signer().is_none() => continue,
                Request::Rotate => {
                    self.rotate(KeyAction::Rotate, None, "an operator asked for a new key")?
                }
                Request::Revoke(key) => {
                    if !store::events::key_events(None)?
                        .iter()
                        .any(|(_, k)| k.key == key)
                    {
                        pgrx::warning!("ruvector: key {key} was never introduced by the chain: its revocation is not recorded in it");
                        continue;
                    }
                    self.rotate(
                        KeyAction::Revoke,
                        Some(key.clone()),
                        &format!("key {key} was revoked"),
                    )?;
                }
            }
            wrote = true;
        }
        Ok(wrote)
    }

    /// Locks the current key's row, waiting for a revocation in flight.
    pub fn lock_current(&self) -> SqlResult<()> {
        if let Some(signer) = self.signer() {
            store::events::lock_key(signer.id())?;
        }
        Ok(())
    }
}

/// Writes into a key event where it was made: the cluster, the timeline and
/// the database (the chain says which database it is: its root, and every
/// key after).
fn describe(event: &mut KeyEvent) {
    let context = server::context();
    let details = [
        (
            "system_identifier",
            json!(context.system_identifier.to_string()),
        ),
        ("timeline", json!(context.timeline)),
        ("database", json!(catalog::database_name())),
        ("database_oid", json!(u32::from(catalog::database()))),
    ];
    for (name, value) in details {
        event.details.insert(name.into(), value);
    }
}

/// Records an operator's key request for the worker, which acts on it and
/// signs it on its next tick.
fn ask(request: Request, reason: Option<&str>) -> SqlResult<()> {
    store::events::append_pending(&request.to_event(
        reason,
        &privileges::caller_name(),
        clock::now(),
    ))?;
    xact::wake_worker_at_commit();
    Ok(())
}

#[pg_extern(schema = "ruvector", name = "_rotate_signing_key")]
fn rotate_signing_key(reason: Option<&str>) -> pgrx::JsonB {
    ask(Request::Rotate, reason).or_raise();
    pgrx::JsonB(
        json!({"requested": true, "note": "the worker introduces a new key, signed by the current one, on its next tick"}),
    )
}

#[pg_extern(schema = "ruvector", name = "_reroot_audit_chain")]
fn reroot_audit_chain(reason: &str) -> pgrx::JsonB {
    if reason.trim().is_empty() {
        SqlError::invalid("a new root needs a reason").raise();
    }
    ask(Request::Reroot, Some(reason)).or_raise();
    pgrx::JsonB(json!({
        "requested": true,
        "note": "the worker starts a new root on its next tick; verifiers must be given its fingerprint (ruvector_audit_checkpoint()), as for a new installation",
    }))
}

#[pg_extern(schema = "ruvector", name = "_revoke_signing_key")]
fn revoke_signing_key(key_id: &str, reason: &str) -> pgrx::JsonB {
    revoke(key_id, reason).or_raise()
}

fn revoke(key_id: &str, reason: &str) -> SqlResult<pgrx::JsonB> {
    if reason.trim().is_empty() {
        return Err(SqlError::invalid("a revocation needs a reason"));
    }
    if !store::events::revoke_key(key_id, reason)? {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("no unrevoked signing key has id \"{key_id}\""),
        )
        .hint("SELECT id, revoked_at FROM ruvector.signing_keys;"));
    }
    ask(Request::Revoke(key_id.to_owned()), Some(reason))?;
    Ok(pgrx::JsonB(json!({
        "revoked": key_id,
        "note": "the worker records the revocation in the chain on its next tick, moving to a new key: the key signs nothing valid after that entry",
    })))
}
