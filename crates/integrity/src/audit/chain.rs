//! Verifying a chain, one entry at a time (a log of any size streams
//! through), against what the verifier trusts: the root key's fingerprint and
//! checkpoints kept aside.
//!
//! Per entry: its seq follows, its contents hash to its `entry_hash`, it links
//! to the previous entry, its `signed_at` does not go back, its payload
//! decodes, and it is signed by the key the chain says is current at that seq
//! (a retired, revoked or never introduced key fails). Key events change which
//! key is current (see [`super::keys`]).
//!
//! Signatures are checked in batches (ed25519-dalek's randomized batch
//! equation, a few times faster than one by one) on a thread of their own,
//! while the next entries are read; a batch that fails is checked entry by
//! entry with `verify_strict` to name the first bad seq. Weak keys are
//! refused when they are introduced. (The thread does nothing but
//! arithmetic on the bytes it is given.)

use std::collections::HashMap;
use std::sync::mpsc::{channel, Sender};
use std::thread::JoinHandle;

use ed25519_dalek::{Signature, VerifyingKey};

use super::keys::{KeyAction, KeyEvent};
use super::{
    fingerprint, hex, ChainFault, Checkpoint, Context, Event, Fault, Fingerprint, Hash,
    SignedEntry, GENESIS,
};
use crate::Micros;

/// What the verifier trusts, kept apart from the log.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Fingerprints of the root keys to trust. Empty: the log's own root is
    /// taken, and the verdict says so.
    pub roots: Vec<Fingerprint>,
    /// Checkpoints kept aside (from the server log, or
    /// `ruvector_audit_checkpoint()`), each of which the log must agree with.
    pub checkpoints: Vec<Checkpoint>,
}

/// The head of a chain that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// 0 for an empty chain.
    pub seq: u64,
    pub entry_hash: Hash,
}

/// What a verification established.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub head: ChainHead,
    pub entries: u64,
    /// The roots of the chain, with the seq that introduced each (a first root
    /// at seq 1, then any re-root).
    pub roots: Vec<(u64, Fingerprint)>,
    /// Whether every root was one the verifier was told to trust (rather than
    /// taken from the log itself).
    pub root_pinned: bool,
    /// The key that signs next.
    pub current_key: Option<String>,
    /// Checkpoints the log agrees with.
    pub checkpoints: usize,
}

struct KnownKey {
    key: VerifyingKey,
    /// The seq from which it no longer signs.
    retired_after: Option<u64>,
    revoked_after: Option<u64>,
}

/// Signatures are checked this many at a time.
const BATCH: usize = 4096;

/// A signature to check: seq, signed hash, signature, key.
type Unchecked = (u64, Hash, Signature, VerifyingKey);

/// Where a checker thread takes its batches, and what it ends with.
type CheckerThread = (Sender<Vec<Unchecked>>, JoinHandle<Option<ChainFault>>);

/// The threads that check signatures (one per core, at most 4), batches
/// dealt in turn; each stops at its first bad signature, and the earliest of
/// those is the chain's. Without threads (none could be started), batches are
/// checked as they come.
struct SignatureChecker {
    threads: Vec<CheckerThread>,
    next: usize,
    inline: Option<ChainFault>,
}

impl SignatureChecker {
    fn start() -> SignatureChecker {
        let cores = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let threads = (0..cores)
            .filter_map(|_| {
                let (batches, incoming) = channel::<Vec<Unchecked>>();
                let work = move || {
                    for batch in incoming {
                        if let Err(f) = check_batch(&batch) {
                            return Some(f);
                        }
                    }
                    None
                };
                spawn_without_signals(work).map(|thread| (batches, thread))
            })
            .collect();
        SignatureChecker {
            threads,
            next: 0,
            inline: None,
        }
    }

    fn send(&mut self, batch: Vec<Unchecked>) {
        if self.threads.is_empty() {
            if self.inline.is_none() {
                self.inline = check_batch(&batch).err();
            }
            return;
        }
        let (batches, _) = &self.threads[self.next % self.threads.len()];
        self.next += 1;
        // A closed channel: that thread stopped at a bad signature, which
        // `finish` reports.
        drop(batches.send(batch));
    }

    /// Waits for every batch sent; the first bad signature, if any.
    fn finish(self) -> Option<ChainFault> {
        let mut found = self.inline;
        for (batches, thread) in self.threads {
            drop(batches);
            let fault = thread.join().unwrap_or_else(|_| {
                Some(fault(
                    0,
                    Fault::BadSignature,
                    "the signature checker failed",
                ))
            });
            if let Some(f) = fault {
                if found.as_ref().is_none_or(|g| f.seq < g.seq) {
                    found = Some(f);
                }
            }
        }
        found
    }
}

/// Starts `work` on a thread that receives no signals (the host process, a
/// PostgreSQL backend, handles them on its own thread); `None` if no thread
/// could be started.
fn spawn_without_signals<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<JoinHandle<T>> {
    // The new thread inherits the mask in force when it is created: block
    // everything for that moment (signals arriving meanwhile wait, none is lost).
    // SAFETY: the sets are initialised by sigfillset and pthread_sigmask
    // before they are read; the calling thread's mask is restored below.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut before);
        let thread = std::thread::Builder::new()
            .name("ruvector-signatures".into())
            .spawn(work)
            .ok();
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        thread
    }
}

fn check_batch(batch: &[Unchecked]) -> Result<(), ChainFault> {
    let messages: Vec<&[u8]> = batch.iter().map(|(_, hash, _, _)| &hash[..]).collect();
    let signatures: Vec<Signature> = batch.iter().map(|(_, _, s, _)| *s).collect();
    let keys: Vec<VerifyingKey> = batch.iter().map(|(_, _, _, k)| *k).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        return Ok(());
    }
    for (seq, hash, signature, key) in batch {
        if key.verify_strict(hash, signature).is_err() {
            return Err(fault(
                *seq,
                Fault::BadSignature,
                format!("the signature does not verify under key {}", key_id_of(key)),
            ));
        }
    }
    Ok(())
}

pub struct ChainVerifier {
    trust: Trust,
    head: ChainHead,
    entries: u64,
    last_signed_at: Micros,
    current: Option<String>,
    /// The key a promoted standby may take over with (see [`KeyAction`]).
    successor: Option<String>,
    /// Where the last entry was signed.
    last_context: Option<Context>,
    keys: HashMap<String, KnownKey>,
    roots: Vec<(u64, Fingerprint)>,
    /// Signatures not sent to the checker yet.
    unchecked: Vec<Unchecked>,
    /// The checker; taken when the verification ends.
    checker: Option<SignatureChecker>,
    /// What the log says at each seq a checkpoint names.
    at_checkpoints: HashMap<u64, (Hash, Context, String)>,
    /// A missing seq seen at this entry: a gap, unless the seq turns up next
    /// (then the rows were reordered).
    missing: Option<(u64, u64)>,
}

fn fault(seq: u64, fault: Fault, detail: impl Into<String>) -> ChainFault {
    ChainFault::new(seq, fault, detail)
}

impl ChainVerifier {
    pub fn new(trust: Trust) -> ChainVerifier {
        let at_checkpoints = HashMap::with_capacity(trust.checkpoints.len());
        ChainVerifier {
            trust,
            head: ChainHead {
                seq: 0,
                entry_hash: GENESIS,
            },
            entries: 0,
            last_signed_at: Micros::MIN,
            current: None,
            successor: None,
            last_context: None,
            keys: HashMap::new(),
            roots: Vec::new(),
            unchecked: Vec::new(),
            checker: None,
            at_checkpoints,
            missing: None,
        }
    }

    /// Checks the next entry. After an error, the verifier must not be used.
    pub fn push(&mut self, entry: &SignedEntry) -> Result<(), ChainFault> {
        match self.check(entry) {
            Ok(()) => {
                if self.unchecked.len() >= BATCH {
                    self.send();
                }
                Ok(())
            }
            // A bad signature earlier in the log comes first.
            Err(f) => self.flush().and(Err(f)),
        }
    }

    /// A fault at `seq` for an entry whose row could not even be read.
    pub fn unreadable(&mut self, seq: u64, detail: &str) -> ChainFault {
        let f = fault(seq, Fault::Modified, detail);
        self.flush().err().unwrap_or(f)
    }

    /// Hands the signatures collected so far to the checker.
    fn send(&mut self) {
        let batch = std::mem::take(&mut self.unchecked);
        if batch.is_empty() {
            return;
        }
        self.checker
            .get_or_insert_with(SignatureChecker::start)
            .send(batch);
    }

    fn check(&mut self, entry: &SignedEntry) -> Result<(), ChainFault> {
        let seq = entry.seq;
        let expected = self.head.seq + 1;
        if let Some((missing, at)) = self.missing.take() {
            return Err(if seq == missing {
                fault(
                    at,
                    Fault::Reordered,
                    format!("expected seq {missing} here, found {at}"),
                )
            } else {
                fault(
                    at,
                    Fault::Gap,
                    format!("seq {missing} to {} are missing", at - 1),
                )
            });
        }
        if seq != expected {
            if seq < expected {
                return Err(fault(
                    seq,
                    Fault::Reordered,
                    format!("expected seq {expected} here, found {seq}"),
                ));
            }
            self.missing = Some((expected, seq));
            return Ok(());
        }
        if !entry.hashes_right() {
            return Err(fault(
                seq,
                Fault::Modified,
                "the entry does not hash to its entry_hash",
            ));
        }
        if entry.prev_hash != self.head.entry_hash {
            return Err(fault(
                seq,
                Fault::BrokenLink,
                format!("prev_hash is not the hash of seq {}", self.head.seq),
            ));
        }
        if entry.signed_at < self.last_signed_at {
            return Err(fault(
                seq,
                Fault::Backdated,
                format!(
                    "signed at {}, before the previous entry ({})",
                    entry.signed_at, self.last_signed_at
                ),
            ));
        }
        let event = Event::decode(&entry.payload).map_err(|e| {
            fault(
                seq,
                Fault::Modified,
                format!("the payload does not decode: {e}"),
            )
        })?;
        let introduced =
            KeyEvent::of(&event).map_err(|e| fault(seq, Fault::Modified, e.to_string()))?;
        let signer = match &introduced {
            Some(k) if k.action.self_signed() => self.introduce_root(seq, k)?,
            Some(k) if k.action == KeyAction::Failover => self.successor_signer(seq, entry)?,
            _ => self.current_signer(seq, &entry.signer_id)?,
        };
        if entry.signer_id != key_id_of(&signer) {
            return Err(fault(
                seq,
                Fault::UnintroducedKey,
                format!(
                    "signed by {}, but this entry can only be signed by {}",
                    entry.signer_id,
                    key_id_of(&signer)
                ),
            ));
        }
        let signature = Signature::from_slice(&entry.signature).map_err(|_| {
            fault(
                seq,
                Fault::BadSignature,
                format!("the signature is {} bytes, not 64", entry.signature.len()),
            )
        })?;
        self.unchecked
            .push((seq, entry.entry_hash, signature, signer));
        match &introduced {
            Some(k) if k.action == KeyAction::Successor => self.set_successor(seq, k)?,
            Some(k) if k.action == KeyAction::Failover => {
                if let Some(used) = self.successor.take() {
                    if let Some(used) = self.keys.get_mut(&used) {
                        used.retired_after = Some(seq);
                    }
                }
                self.rotate(seq, k)?
            }
            Some(k) if !k.action.self_signed() => self.rotate(seq, k)?,
            _ => {}
        }
        self.last_context = Some(entry.context);
        if self.trust.checkpoints.iter().any(|c| c.seq == seq) {
            self.at_checkpoints.insert(
                seq,
                (entry.entry_hash, entry.context, entry.signer_id.clone()),
            );
        }
        self.head = ChainHead {
            seq,
            entry_hash: entry.entry_hash,
        };
        self.entries += 1;
        self.last_signed_at = entry.signed_at;
        Ok(())
    }

    /// The current key, if `signer` is it; why not otherwise.
    fn current_signer(&self, seq: u64, signer: &str) -> Result<VerifyingKey, ChainFault> {
        let Some(current) = &self.current else {
            return Err(fault(
                seq,
                Fault::UntrustedRoot,
                "the chain does not start with its root key",
            ));
        };
        if signer == current {
            return Ok(self.keys[current].key);
        }
        let revoked = self
            .keys
            .get(signer)
            .is_some_and(|k| k.revoked_after.is_some());
        if self.successor.as_deref() == Some(signer) && !revoked {
            return Err(fault(
                seq,
                Fault::UnintroducedKey,
                format!("key {signer} is the chain's successor: it may sign a failover and nothing else"),
            ));
        }
        match self.keys.get(signer) {
            Some(KnownKey {
                revoked_after: Some(at),
                ..
            }) => Err(fault(
                seq,
                Fault::RevokedKey,
                format!("key {signer} was revoked at seq {at}"),
            )),
            Some(KnownKey {
                retired_after: Some(at),
                ..
            }) => Err(fault(
                seq,
                Fault::ExpiredKey,
                format!("key {signer} was replaced at seq {at}"),
            )),
            _ => Err(fault(
                seq,
                Fault::UnintroducedKey,
                format!("no entry of the chain introduced key {signer}"),
            )),
        }
    }

    /// The successor key, for a failover entry: it must be the chain's
    /// successor, unrevoked, and the entry the first of a later timeline of
    /// the same cluster.
    fn successor_signer(&self, seq: u64, entry: &SignedEntry) -> Result<VerifyingKey, ChainFault> {
        let Some(successor) = &self.successor else {
            return Err(fault(
                seq,
                Fault::UnintroducedKey,
                "a failover, but the chain has no successor key to take over with",
            ));
        };
        if entry.signer_id != *successor {
            return Err(fault(
                seq,
                Fault::UnintroducedKey,
                format!(
                    "a failover signed by {}, but only the successor key {successor} may sign one",
                    entry.signer_id
                ),
            ));
        }
        let known = &self.keys[successor];
        if let Some(at) = known.revoked_after {
            return Err(fault(
                seq,
                Fault::RevokedKey,
                format!("successor key {successor} was revoked at seq {at}"),
            ));
        }
        let later = self.last_context.is_some_and(|c| {
            c.system_identifier == entry.context.system_identifier
                && entry.context.timeline > c.timeline
        });
        if !later {
            return Err(fault(
                seq,
                Fault::UnintroducedKey,
                format!(
                    "a failover signed on {}, not on a later timeline of the cluster that signed the entry before it",
                    entry.context
                ),
            ));
        }
        Ok(known.key)
    }

    /// A successor, signed (already checked) by the current key, which stays
    /// current; it replaces the successor before it.
    fn set_successor(&mut self, seq: u64, k: &KeyEvent) -> Result<(), ChainFault> {
        let key = self.new_key(seq, k)?;
        if let Some(previous) = self.successor.take() {
            if let Some(old) = self.keys.get_mut(&previous) {
                old.retired_after.get_or_insert(seq);
            }
        }
        self.know(k, key);
        self.successor = Some(k.key.clone());
        Ok(())
    }

    fn new_key(&self, seq: u64, k: &KeyEvent) -> Result<VerifyingKey, ChainFault> {
        if self.keys.contains_key(&k.key) {
            return Err(fault(
                seq,
                Fault::UnusableKey,
                format!("key {} was introduced before", k.key),
            ));
        }
        let public_key = k
            .public_key_bytes()
            .map_err(|e| fault(seq, Fault::Modified, e.to_string()))?;
        super::usable_key(&public_key)
            .map_err(|why| fault(seq, Fault::UnusableKey, format!("key {} {why}", k.key)))
    }

    /// A root (or re-root): the key signs its own introduction.
    fn introduce_root(&mut self, seq: u64, k: &KeyEvent) -> Result<VerifyingKey, ChainFault> {
        match (k.action, seq) {
            (KeyAction::Root, 1) | (KeyAction::Reroot, 2..) => {}
            (KeyAction::Root, _) => {
                return Err(fault(
                    seq,
                    Fault::UntrustedRoot,
                    "a root key after the first entry (a re-root must say so)",
                ))
            }
            _ => {
                return Err(fault(
                    seq,
                    Fault::UntrustedRoot,
                    "the chain does not start with its root key",
                ))
            }
        }
        let key = self.new_key(seq, k)?;
        let print = fingerprint(&key.to_bytes());
        if !self.trust.roots.is_empty() && !self.trust.roots.contains(&print) {
            return Err(fault(
                seq,
                Fault::UntrustedRoot,
                format!(
                    "root key {} (fingerprint {}) is not one the verifier trusts",
                    k.key,
                    hex(&print)
                ),
            ));
        }
        for previous in [self.current.take(), self.successor.take()]
            .into_iter()
            .flatten()
        {
            if let Some(old) = self.keys.get_mut(&previous) {
                old.retired_after = Some(seq);
            }
        }
        self.make_current(k, key);
        self.roots.push((seq, print));
        Ok(key)
    }

    /// A rotation or revocation, signed (already checked) by the current key.
    fn rotate(&mut self, seq: u64, k: &KeyEvent) -> Result<(), ChainFault> {
        let key = self.new_key(seq, k)?;
        if let Some(revoked) = &k.revoked_key {
            let known = self.keys.get_mut(revoked).ok_or_else(|| {
                fault(
                    seq,
                    Fault::UnintroducedKey,
                    format!("revokes key {revoked}, which the chain never had"),
                )
            })?;
            known.revoked_after = Some(seq);
        }
        if let Some(previous) = self.current.take() {
            if let Some(old) = self.keys.get_mut(&previous) {
                old.retired_after.get_or_insert(seq);
            }
        }
        self.make_current(k, key);
        Ok(())
    }

    /// The key `k` introduces signs from now on.
    fn make_current(&mut self, k: &KeyEvent, key: VerifyingKey) {
        self.know(k, key);
        self.current = Some(k.key.clone());
    }

    /// The key `k` introduces is one of the chain's.
    fn know(&mut self, k: &KeyEvent, key: VerifyingKey) {
        self.keys.insert(
            k.key.clone(),
            KnownKey {
                key,
                retired_after: None,
                revoked_after: None,
            },
        );
    }

    /// Checks every signature collected so far; the first bad one, if any.
    fn flush(&mut self) -> Result<(), ChainFault> {
        self.send();
        match self.checker.take().and_then(SignatureChecker::finish) {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// Ends the verification: the last signatures, then every checkpoint.
    pub fn finish(mut self) -> Result<Verdict, ChainFault> {
        self.flush()?;
        if let Some((missing, at)) = self.missing.take() {
            return Err(fault(
                at,
                Fault::Gap,
                format!("seq {missing} to {} are missing", at - 1),
            ));
        }
        let checkpoints = std::mem::take(&mut self.trust.checkpoints);
        for checkpoint in &checkpoints {
            self.check_checkpoint(checkpoint)?;
        }
        Ok(Verdict {
            head: self.head,
            entries: self.entries,
            roots: self.roots,
            root_pinned: !self.trust.roots.is_empty(),
            current_key: self.current,
            checkpoints: checkpoints.len(),
        })
    }

    fn check_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), ChainFault> {
        let seq = checkpoint.seq;
        checkpoint.verify_signature().map_err(|why| {
            fault(
                seq,
                Fault::BadCheckpoint,
                format!("a checkpoint of seq {seq}: {why}"),
            )
        })?;
        let claimed: &[u8] = &checkpoint.entry_hash;
        if seq > self.head.seq {
            return Err(fault(
                seq,
                Fault::Truncated,
                format!(
                    "a checkpoint signed seq {seq}, but the chain ends at seq {}",
                    self.head.seq
                ),
            ));
        }
        let Some((hash, context, signer)) = self.at_checkpoints.get(&seq) else {
            return Ok(()); // the empty chain's checkpoint (seq 0)
        };
        if claimed != hash {
            let other = checkpoint.context != *context || checkpoint.signer_id != *signer;
            return Err(if other {
                fault(
                    seq,
                    Fault::Forked,
                    format!(
                        "the checkpoint of seq {seq} signed on {} by key {} is of another fork: this log's seq {seq} was signed on {context} by key {signer}",
                        checkpoint.context, checkpoint.signer_id
                    ),
                )
            } else {
                fault(
                    seq,
                    Fault::CheckpointMismatch,
                    "the entry differs from the one the checkpoint signed",
                )
            });
        }
        if !self.keys.contains_key(&checkpoint.signer_id) {
            return Err(fault(
                seq,
                Fault::BadCheckpoint,
                format!(
                    "signed by key {}, which the chain never had",
                    checkpoint.signer_id
                ),
            ));
        }
        let root_then = self
            .roots
            .iter()
            .rev()
            .find(|(at, _)| *at <= seq)
            .map(|(_, f)| hex(f));
        if root_then.as_deref() != Some(checkpoint.root.as_str()) {
            return Err(fault(
                seq,
                Fault::UntrustedRoot,
                "the checkpoint names another root than the chain's",
            ));
        }
        Ok(())
    }
}

fn key_id_of(key: &VerifyingKey) -> String {
    super::key_id(&key.to_bytes())
}

/// Checks one entry on its own: it hashes to its `entry_hash` and is signed
/// by `signer`, the key the chain says must sign it (see
/// [`super::keys::signer_at`]). Its place in the chain is not checked.
pub fn verify_alone(entry: &SignedEntry, signer: &KeyEvent) -> Result<(), ChainFault> {
    let seq = entry.seq;
    if !entry.hashes_right() {
        return Err(fault(
            seq,
            Fault::Modified,
            "the entry does not hash to its entry_hash",
        ));
    }
    if entry.signer_id != signer.key {
        return Err(fault(
            seq,
            Fault::UnintroducedKey,
            format!(
                "signed by {}, but the chain's key here is {}",
                entry.signer_id, signer.key
            ),
        ));
    }
    let public_key = signer
        .public_key_bytes()
        .map_err(|e| fault(seq, Fault::Modified, e.to_string()))?;
    let key = super::usable_key(&public_key).map_err(|why| fault(seq, Fault::UnusableKey, why))?;
    let signature = Signature::from_slice(&entry.signature)
        .map_err(|_| fault(seq, Fault::BadSignature, "the signature is not 64 bytes"))?;
    key.verify_strict(&entry.entry_hash, &signature)
        .map_err(|_| {
            fault(
                seq,
                Fault::BadSignature,
                format!("the signature does not verify under key {}", signer.key),
            )
        })
}

/// Verifies `entries` in the order given.
pub fn verify_chain(entries: &[SignedEntry], trust: Trust) -> Result<Verdict, ChainFault> {
    let mut verifier = ChainVerifier::new(trust);
    for entry in entries {
        verifier.push(entry)?;
    }
    verifier.finish()
}
