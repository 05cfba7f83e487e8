//! The signed, hash-chained audit trail.
//!
//! - [`Event`] is what happened. It is encoded into a versioned, length-prefixed
//!   binary payload ([`Event::encode`]): floats by their bits after non-finite
//!   values are refused, times in microseconds, metadata as canonical JSON text.
//!   The exact payload bytes are stored, so verification never re-serializes.
//! - Entries form one chain: gapless `seq` from 1, `prev_hash` the previous
//!   entry's hash (zeros for the first), and
//!   `entry_hash = SHA-256("ruvector.audit.entry.v1\0" ‖ seq ‖ prev_hash ‖ signed_at ‖ len ‖ payload)`.
//! - The signature is Ed25519 over `entry_hash`, checked with `verify_strict`;
//!   weak (small-order) public keys are refused.
//! - A [`Checkpoint`] signs the head (seq and hash) so that a copy kept outside
//!   the table reveals tail truncation, which no per-row check can.
//! - [`verify_chain`] names the first bad seq and why.
//!
//! Key management (files, tables) belongs to the extension; this module only
//! sees key bytes, and never prints a secret.

use std::collections::HashMap;
use std::fmt;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{Error, Micros};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// `prev_hash` of the first entry.
pub const GENESIS: Hash = [0; 32];

const PAYLOAD_MAGIC: &[u8; 4] = b"RVEV";
/// Version of the payload encoding; a new layout gets a new number.
pub const PAYLOAD_VERSION: u8 = 1;
const ENTRY_DOMAIN: &[u8] = b"ruvector.audit.entry.v1\0";
const CHECKPOINT_DOMAIN: &[u8] = b"ruvector.audit.checkpoint.v1\0";

/// One witness edge as recorded in an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WitnessEdge {
    pub source: String,
    pub target: String,
    pub kind: String,
    pub capacity: f64,
}

/// What happened, as signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `None` for events about the extension itself (key rotation).
    pub collection_id: Option<i32>,
    /// The collection's name when the event happened (events outlive it).
    pub collection: String,
    /// state_change, policy_update, manual_override, recovery, alert, audit.
    pub event_type: String,
    pub previous_state: Option<String>,
    pub new_state: Option<String>,
    pub lambda_cut: Option<f64>,
    pub lambda_norm: Option<f64>,
    pub lambda2: Option<f64>,
    pub witness_edges: Vec<WitnessEdge>,
    /// Canonical JSON text (see [`canonical_json`]).
    pub metadata: String,
    pub created_at: Micros,
}

struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
    }
    fn text(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn float(&mut self, what: &str, x: f64) -> Result<(), Error> {
        if !x.is_finite() {
            return Err(Error::Audit(format!(
                "{what} is {x}, which cannot be signed"
            )));
        }
        self.0.extend_from_slice(&x.to_bits().to_be_bytes());
        Ok(())
    }
    fn option<T>(
        &mut self,
        value: &Option<T>,
        mut put: impl FnMut(&mut Self, &T) -> Result<(), Error>,
    ) -> Result<(), Error> {
        match value {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                put(self, v)?;
            }
        }
        Ok(())
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.0.len() < n {
            return Err(Error::Audit("payload is truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }
    fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        self.take(len)
    }
    fn text(&mut self) -> Result<String, Error> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| Error::Audit("payload text is not UTF-8".into()))
    }
    /// A float as `encode` writes it: finite, or the payload is refused.
    fn float(&mut self, what: &str) -> Result<f64, Error> {
        let x = f64::from_bits(u64::from_be_bytes(self.array()?));
        if x.is_finite() {
            Ok(x)
        } else {
            Err(Error::Audit(format!("payload {what} is {x}")))
        }
    }
    fn option<T>(
        &mut self,
        get: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        match self.array::<1>()?[0] {
            0 => Ok(None),
            1 => get(self).map(Some),
            tag => Err(Error::Audit(format!("bad option tag {tag}"))),
        }
    }
}

impl Event {
    /// An event without measurements (no λ, no witness edges), with `metadata`
    /// stored as canonical JSON.
    pub fn new(
        collection_id: Option<i32>,
        collection: &str,
        event_type: &str,
        previous_state: Option<String>,
        new_state: Option<String>,
        metadata: &Value,
        created_at: Micros,
    ) -> Event {
        Event {
            collection_id,
            collection: collection.to_owned(),
            event_type: event_type.to_owned(),
            previous_state,
            new_state,
            lambda_cut: None,
            lambda_norm: None,
            lambda2: None,
            witness_edges: Vec::new(),
            metadata: canonical_json(metadata),
            created_at,
        }
    }

    /// The payload bytes that are hashed and signed.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut w = Writer(Vec::with_capacity(256));
        w.0.extend_from_slice(PAYLOAD_MAGIC);
        w.0.push(PAYLOAD_VERSION);
        w.option(&self.collection_id, |w, id| {
            w.0.extend_from_slice(&id.to_be_bytes());
            Ok(())
        })?;
        w.text(&self.collection);
        w.text(&self.event_type);
        w.option(&self.previous_state, |w, s| {
            w.text(s);
            Ok(())
        })?;
        w.option(&self.new_state, |w, s| {
            w.text(s);
            Ok(())
        })?;
        w.option(&self.lambda_cut, |w, &x| w.float("lambda_cut", x))?;
        w.option(&self.lambda_norm, |w, &x| w.float("lambda_norm", x))?;
        w.option(&self.lambda2, |w, &x| w.float("lambda2", x))?;
        w.0.extend_from_slice(&(self.witness_edges.len() as u32).to_be_bytes());
        for e in &self.witness_edges {
            w.text(&e.source);
            w.text(&e.target);
            w.text(&e.kind);
            w.float("a witness edge capacity", e.capacity)?;
        }
        w.text(&self.metadata);
        w.0.extend_from_slice(&self.created_at.to_be_bytes());
        Ok(w.0)
    }

    /// The event a payload encodes; refuses unknown versions, non-finite
    /// numbers and trailing bytes, so that a decoded event encodes back to the
    /// same bytes.
    pub fn decode(payload: &[u8]) -> Result<Event, Error> {
        let mut r = Reader(payload);
        if r.take(4)? != PAYLOAD_MAGIC {
            return Err(Error::Audit("not a ruvector event payload".into()));
        }
        let version = r.array::<1>()?[0];
        if version != PAYLOAD_VERSION {
            return Err(Error::Audit(format!(
                "unsupported payload version {version}"
            )));
        }
        let event = Event {
            collection_id: r.option(|r| Ok(i32::from_be_bytes(r.array()?)))?,
            collection: r.text()?,
            event_type: r.text()?,
            previous_state: r.option(Reader::text)?,
            new_state: r.option(Reader::text)?,
            lambda_cut: r.option(|r| r.float("lambda_cut"))?,
            lambda_norm: r.option(|r| r.float("lambda_norm"))?,
            lambda2: r.option(|r| r.float("lambda2"))?,
            witness_edges: {
                let count = u32::from_be_bytes(r.array()?);
                (0..count)
                    .map(|_| {
                        Ok(WitnessEdge {
                            source: r.text()?,
                            target: r.text()?,
                            kind: r.text()?,
                            capacity: r.float("witness edge capacity")?,
                        })
                    })
                    .collect::<Result<_, Error>>()?
            },
            metadata: r.text()?,
            created_at: i64::from_be_bytes(r.array()?),
        };
        if !r.0.is_empty() {
            return Err(Error::Audit(format!(
                "{} trailing bytes after the event",
                r.0.len()
            )));
        }
        Ok(event)
    }
}

impl Event {
    /// The first field in which a stored copy of an event differs from the
    /// signed one, if any. Metadata compares as JSON (jsonb reorders keys and
    /// respells numbers), everything else exactly.
    pub fn first_difference(&self, stored: &Event) -> Option<&'static str> {
        let json = |text: &str| {
            serde_json::from_str::<Value>(text)
                .map(|v| canonical_json(&v))
                .ok()
        };
        [
            ("collection_id", self.collection_id == stored.collection_id),
            ("collection_name", self.collection == stored.collection),
            ("event_type", self.event_type == stored.event_type),
            (
                "previous_state",
                self.previous_state == stored.previous_state,
            ),
            ("new_state", self.new_state == stored.new_state),
            ("lambda_cut", same_bits(self.lambda_cut, stored.lambda_cut)),
            (
                "lambda_norm",
                same_bits(self.lambda_norm, stored.lambda_norm),
            ),
            ("lambda2", same_bits(self.lambda2, stored.lambda2)),
            ("witness_edges", self.witness_edges == stored.witness_edges),
            (
                "metadata",
                json(&self.metadata).is_some() && json(&self.metadata) == json(&stored.metadata),
            ),
            ("created_at", self.created_at == stored.created_at),
        ]
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(field, _)| field)
    }
}

fn same_bits(a: Option<f64>, b: Option<f64>) -> bool {
    a.map(f64::to_bits) == b.map(f64::to_bits)
}

/// JSON text with object keys sorted at every level, so equal documents have
/// equal text however they were stored (jsonb reorders keys).
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // serde_json may be built with key order preserved; rebuilding in sorted
    // order makes the text canonical either way.
    sorted(value).to_string()
}

/// `entry_hash` of an entry.
pub fn entry_hash(seq: u64, prev_hash: &Hash, signed_at: Micros, payload: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(ENTRY_DOMAIN);
    h.update(seq.to_be_bytes());
    h.update(prev_hash);
    h.update(signed_at.to_be_bytes());
    h.update((payload.len() as u64).to_be_bytes());
    h.update(payload);
    h.finalize().into()
}

fn checkpoint_digest(seq: u64, head: &Hash, signed_at: Micros) -> Hash {
    let mut h = Sha256::new();
    h.update(CHECKPOINT_DOMAIN);
    h.update(seq.to_be_bytes());
    h.update(head);
    h.update(signed_at.to_be_bytes());
    h.finalize().into()
}

/// The id under which a public key is known: `ed25519:` and the first 16 hex
/// digits of the SHA-256 of the key.
pub fn key_id(public_key: &[u8; 32]) -> String {
    format!("ed25519:{}", &hex(&Sha256::digest(public_key))[..16])
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex; `None` if the text is not hex of even length.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One entry of the chain as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedEntry {
    pub seq: u64,
    pub prev_hash: Hash,
    pub entry_hash: Hash,
    pub signed_at: Micros,
    pub payload: Vec<u8>,
    pub signer_id: String,
    pub signature: Vec<u8>,
}

/// A signed statement of the chain's head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    #[serde(with = "hex_bytes")]
    pub entry_hash: Vec<u8>,
    pub signed_at: Micros,
    pub signer_id: String,
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(bytes))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected hex"))
    }
}

/// The worker's signing key. Its `Debug` shows the id only.
pub struct Signer {
    key: SigningKey,
    id: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a 32-byte secret seed.
    pub fn from_secret(secret: &[u8; 32]) -> Signer {
        let key = SigningKey::from_bytes(secret);
        let id = key_id(&key.verifying_key().to_bytes());
        Signer { key, id }
    }

    /// A new signer from the operating system's random source.
    pub fn generate() -> Result<Signer, Error> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret)
            .map_err(|e| Error::Audit(format!("no randomness for a new key: {e}")))?;
        let signer = Signer::from_secret(&secret);
        secret.fill(0);
        Ok(signer)
    }

    /// The secret seed, for writing the key file. Handle with care.
    pub fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Chains and signs a payload after the entry `previous` (`None` for the first).
    pub fn seal(
        &self,
        previous: Option<(u64, Hash)>,
        signed_at: Micros,
        payload: Vec<u8>,
    ) -> SignedEntry {
        let (seq, prev_hash) = previous.map_or((1, GENESIS), |(seq, hash)| (seq + 1, hash));
        let hash = entry_hash(seq, &prev_hash, signed_at, &payload);
        SignedEntry {
            seq,
            prev_hash,
            entry_hash: hash,
            signed_at,
            payload,
            signer_id: self.id.clone(),
            signature: self.key.sign(&hash).to_bytes().to_vec(),
        }
    }

    /// Signs the chain head.
    pub fn checkpoint(&self, seq: u64, head: Hash, signed_at: Micros) -> Checkpoint {
        let digest = checkpoint_digest(seq, &head, signed_at);
        Checkpoint {
            seq,
            entry_hash: head.to_vec(),
            signed_at,
            signer_id: self.id.clone(),
            signature: self.key.sign(&digest).to_bytes().to_vec(),
        }
    }
}

/// A public key the verifier trusts, with its validity.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustedKey {
    pub id: String,
    pub public_key: Vec<u8>,
    /// Signatures made after this are refused (the key was retired).
    pub expires_at: Option<Micros>,
    /// Signatures made at or after this are refused (the key was compromised).
    pub revoked_at: Option<Micros>,
}

enum KeyStatus {
    Usable(VerifyingKey),
    Unusable(String),
}

/// The public keys a verifier accepts, by id.
pub struct KeyRing {
    keys: HashMap<String, (KeyStatus, Option<Micros>, Option<Micros>)>,
}

impl KeyRing {
    /// Accepts every key; malformed or weak ones are kept as unusable so that an
    /// entry signed by one is reported as such.
    pub fn new(keys: impl IntoIterator<Item = TrustedKey>) -> KeyRing {
        let keys = keys
            .into_iter()
            .map(|k| {
                let status = match <[u8; 32]>::try_from(k.public_key.as_slice()) {
                    Err(_) => {
                        KeyStatus::Unusable(format!("is {} bytes, not 32", k.public_key.len()))
                    }
                    Ok(bytes) => match VerifyingKey::from_bytes(&bytes) {
                        Err(_) => KeyStatus::Unusable("is not a valid Ed25519 point".into()),
                        Ok(key) if key.is_weak() => {
                            KeyStatus::Unusable("is a weak (small-order) key".into())
                        }
                        Ok(_) if key_id(&bytes) != k.id => KeyStatus::Unusable(format!(
                            "does not match its id (it is {})",
                            key_id(&bytes)
                        )),
                        Ok(key) => KeyStatus::Usable(key),
                    },
                };
                (k.id, (status, k.expires_at, k.revoked_at))
            })
            .collect();
        KeyRing { keys }
    }

    /// Checks a signature over `message` made at `signed_at` by key `id`.
    fn check(
        &self,
        id: &str,
        signed_at: Micros,
        message: &Hash,
        signature: &[u8],
    ) -> Result<(), (Fault, String)> {
        let (status, expires_at, revoked_at) = self
            .keys
            .get(id)
            .ok_or_else(|| (Fault::UnknownKey, format!("no trusted key has id {id}")))?;
        let key = match status {
            KeyStatus::Usable(key) => key,
            KeyStatus::Unusable(why) => {
                return Err((Fault::UnusableKey, format!("key {id} {why}")))
            }
        };
        if let Some(revoked) = revoked_at.filter(|&r| signed_at >= r) {
            return Err((
                Fault::RevokedKey,
                format!("key {id} was revoked at {revoked}, before this signature at {signed_at}"),
            ));
        }
        if let Some(expired) = expires_at.filter(|&e| signed_at > e) {
            return Err((
                Fault::ExpiredKey,
                format!("key {id} expired at {expired}, before this signature at {signed_at}"),
            ));
        }
        let signature = Signature::from_slice(signature).map_err(|_| {
            (
                Fault::BadSignature,
                format!("the signature is {} bytes, not 64", signature.len()),
            )
        })?;
        key.verify_strict(message, &signature).map_err(|_| {
            (
                Fault::BadSignature,
                format!("the signature does not verify under key {id}"),
            )
        })
    }
}

/// What is wrong with an entry or the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The entry's contents do not hash to its `entry_hash`.
    Modified,
    /// Entries are missing before this seq.
    Gap,
    /// This seq is out of order (a later entry holds the expected seq, or this
    /// seq repeats or goes back).
    Reordered,
    /// `prev_hash` is not the previous entry's hash.
    BrokenLink,
    BadSignature,
    UnknownKey,
    RevokedKey,
    ExpiredKey,
    /// The key is malformed, weak, or does not match its id.
    UnusableKey,
    /// A checkpoint names a seq beyond the last entry: the tail was cut off.
    Truncated,
    /// The entry at a checkpoint's seq does not have the checkpoint's hash.
    CheckpointMismatch,
    /// A checkpoint's own signature fails.
    BadCheckpoint,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Modified => "modified",
            Fault::Gap => "gap",
            Fault::Reordered => "reordered",
            Fault::BrokenLink => "broken_link",
            Fault::BadSignature => "bad_signature",
            Fault::UnknownKey => "unknown_key",
            Fault::RevokedKey => "revoked_key",
            Fault::ExpiredKey => "expired_key",
            Fault::UnusableKey => "unusable_key",
            Fault::Truncated => "truncated",
            Fault::CheckpointMismatch => "checkpoint_mismatch",
            Fault::BadCheckpoint => "bad_checkpoint",
        }
    }
}

/// The first problem found: at which seq, what, and a sentence about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFault {
    pub seq: u64,
    pub fault: Fault,
    pub detail: String,
}

impl fmt::Display for ChainFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seq {}: {}: {}",
            self.seq,
            self.fault.as_str(),
            self.detail
        )
    }
}

/// The head of a chain that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// 0 for an empty chain.
    pub seq: u64,
    pub entry_hash: Hash,
}

/// Verifies one entry on its own: its hash and its signature (not its place in
/// the chain).
pub fn verify_entry(entry: &SignedEntry, keys: &KeyRing) -> Result<(), ChainFault> {
    let fault = |fault, detail: String| ChainFault {
        seq: entry.seq,
        fault,
        detail,
    };
    if entry_hash(entry.seq, &entry.prev_hash, entry.signed_at, &entry.payload) != entry.entry_hash
    {
        return Err(fault(
            Fault::Modified,
            "the entry does not hash to its entry_hash".into(),
        ));
    }
    keys.check(
        &entry.signer_id,
        entry.signed_at,
        &entry.entry_hash,
        &entry.signature,
    )
    .map_err(|(kind, detail)| fault(kind, detail))
}

/// Verifies entries in the order given, then each checkpoint against them.
pub fn verify_chain(
    entries: &[SignedEntry],
    keys: &KeyRing,
    checkpoints: &[Checkpoint],
) -> Result<ChainHead, ChainFault> {
    let fault = |seq, fault, detail: String| ChainFault { seq, fault, detail };
    let mut head = ChainHead {
        seq: 0,
        entry_hash: GENESIS,
    };
    let mut hashes: HashMap<u64, Hash> = HashMap::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let expected = head.seq + 1;
        if entry.seq != expected {
            let later = entries[i + 1..].iter().any(|e| e.seq == expected);
            return Err(if entry.seq < expected || later {
                fault(
                    entry.seq,
                    Fault::Reordered,
                    format!("expected seq {expected} here, found {}", entry.seq),
                )
            } else {
                fault(
                    entry.seq,
                    Fault::Gap,
                    format!("seq {expected} to {} are missing", entry.seq - 1),
                )
            });
        }
        if entry_hash(entry.seq, &entry.prev_hash, entry.signed_at, &entry.payload)
            != entry.entry_hash
        {
            return Err(fault(
                entry.seq,
                Fault::Modified,
                "the entry does not hash to its entry_hash".into(),
            ));
        }
        if entry.prev_hash != head.entry_hash {
            return Err(fault(
                entry.seq,
                Fault::BrokenLink,
                format!("prev_hash is not the hash of seq {}", head.seq),
            ));
        }
        keys.check(
            &entry.signer_id,
            entry.signed_at,
            &entry.entry_hash,
            &entry.signature,
        )
        .map_err(|(kind, detail)| fault(entry.seq, kind, detail))?;
        head = ChainHead {
            seq: entry.seq,
            entry_hash: entry.entry_hash,
        };
        hashes.insert(entry.seq, entry.entry_hash);
    }
    for checkpoint in checkpoints {
        let seq = checkpoint.seq;
        let Ok(claimed) = <Hash>::try_from(checkpoint.entry_hash.as_slice()) else {
            return Err(fault(
                seq,
                Fault::BadCheckpoint,
                "the checkpoint hash is not 32 bytes".into(),
            ));
        };
        let digest = checkpoint_digest(seq, &claimed, checkpoint.signed_at);
        keys.check(
            &checkpoint.signer_id,
            checkpoint.signed_at,
            &digest,
            &checkpoint.signature,
        )
        .map_err(|(_, detail)| fault(seq, Fault::BadCheckpoint, detail))?;
        match hashes.get(&seq) {
            _ if seq > head.seq => {
                return Err(fault(
                    seq,
                    Fault::Truncated,
                    format!(
                        "a checkpoint signed seq {seq}, but the chain ends at seq {}",
                        head.seq
                    ),
                ))
            }
            Some(hash) if *hash != claimed => {
                return Err(fault(
                    seq,
                    Fault::CheckpointMismatch,
                    "the entry differs from the one the checkpoint signed".into(),
                ))
            }
            _ => {}
        }
    }
    Ok(head)
}

pub mod export;

#[cfg(test)]
mod tests;
