//! The signed, hash-chained audit trail.
//!
//! - [`Event`] is what happened. It is encoded into a versioned, length-prefixed
//!   binary payload ([`Event::encode`]): floats by their bits after non-finite
//!   values are refused, times in microseconds, metadata as canonical JSON text.
//!   The exact payload bytes are stored, so verification never re-serializes.
//! - Entries form one chain: gapless `seq` from 1, `prev_hash` the previous
//!   entry's hash (zeros for the first), and
//!   `entry_hash = SHA-256("ruvector.audit.entry.v2\0" ‖ seq ‖ prev_hash ‖ signed_at ‖
//!   system_identifier ‖ timeline ‖ len ‖ payload)`: each entry is bound to the
//!   cluster and timeline that signed it, so forks of a restored backup differ.
//! - The signature is Ed25519 over `entry_hash`.
//! - The chain carries its own keys ([`keys`]): its first entry introduces the
//!   root key, signed by itself; every later key is introduced by an entry
//!   signed by the key it replaces. A verifier that knows the root's
//!   fingerprint needs nothing else: no key table, which whoever can write the
//!   tables could rewrite.
//! - A [`Checkpoint`] signs the head (seq and hash, cluster, timeline, root) so
//!   that a copy kept outside the table reveals tail truncation and forks,
//!   which no per-row check can.
//! - [`chain::ChainVerifier`] names the first bad seq and why.
//!
//! Key files and tables belong to the extension; this module only sees key
//! bytes, and never prints a secret.

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
const ENTRY_DOMAIN: &[u8] = b"ruvector.audit.entry.v2\0";
const CHECKPOINT_DOMAIN: &[u8] = b"ruvector.audit.checkpoint.v2\0";

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
    /// state_change, policy_update, manual_override, recovery, alert, audit,
    /// gate_bypass, key_rotation (see [`keys::KeyEvent`]).
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

/// Where an entry was signed: the cluster (`pg_control`'s system identifier)
/// and its timeline. A base backup restored twice, or a promoted standby,
/// signs on another timeline or cluster than its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Context {
    #[serde(with = "decimal")]
    pub system_identifier: u64,
    pub timeline: u32,
}

/// `system_identifier` as decimal text in JSON (it exceeds JavaScript's safe
/// integers), as PostgreSQL prints it.
mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "system {} timeline {}",
            self.system_identifier, self.timeline
        )
    }
}

/// `entry_hash` of an entry.
pub fn entry_hash(
    seq: u64,
    prev_hash: &Hash,
    signed_at: Micros,
    context: Context,
    payload: &[u8],
) -> Hash {
    let mut h = Sha256::new();
    h.update(ENTRY_DOMAIN);
    h.update(seq.to_be_bytes());
    h.update(prev_hash);
    h.update(signed_at.to_be_bytes());
    h.update(context.system_identifier.to_be_bytes());
    h.update(context.timeline.to_be_bytes());
    h.update((payload.len() as u64).to_be_bytes());
    h.update(payload);
    h.finalize().into()
}

fn checkpoint_digest(
    seq: u64,
    head: &Hash,
    signed_at: Micros,
    context: Context,
    root: &Fingerprint,
) -> Hash {
    let mut h = Sha256::new();
    h.update(CHECKPOINT_DOMAIN);
    h.update(seq.to_be_bytes());
    h.update(head);
    h.update(signed_at.to_be_bytes());
    h.update(context.system_identifier.to_be_bytes());
    h.update(context.timeline.to_be_bytes());
    h.update(root);
    h.finalize().into()
}

/// The full SHA-256 of a public key: what a verifier keeps aside for the root.
pub type Fingerprint = [u8; 32];

pub fn fingerprint(public_key: &[u8; 32]) -> Fingerprint {
    Sha256::digest(public_key).into()
}

/// The id under which a public key is known: `ed25519:` and the first 16 hex
/// digits of its fingerprint.
pub fn key_id(public_key: &[u8; 32]) -> String {
    format!("ed25519:{}", &hex(&fingerprint(public_key))[..16])
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex; `None` if the text is not hex of even length.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Exactly `N` bytes from hex.
pub fn from_hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    from_hex(text)?.try_into().ok()
}

/// One entry of the chain as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedEntry {
    pub seq: u64,
    pub prev_hash: Hash,
    pub entry_hash: Hash,
    pub signed_at: Micros,
    pub context: Context,
    pub payload: Vec<u8>,
    pub signer_id: String,
    pub signature: Vec<u8>,
}

impl SignedEntry {
    /// Whether the entry's contents hash to its `entry_hash`.
    pub fn hashes_right(&self) -> bool {
        entry_hash(
            self.seq,
            &self.prev_hash,
            self.signed_at,
            self.context,
            &self.payload,
        ) == self.entry_hash
    }
}

/// A signed statement of the chain's head: which entry ends the chain, on
/// which cluster and timeline, under which root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    #[serde(with = "hex_bytes")]
    pub entry_hash: Vec<u8>,
    pub signed_at: Micros,
    #[serde(flatten)]
    pub context: Context,
    /// The fingerprint of the chain's root key, hex.
    pub root: String,
    pub signer_id: String,
    /// The signer's public key, hex, so the checkpoint can be checked even
    /// against a log that was cut before the key was introduced.
    pub public_key: String,
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// The checkpoint's signer, if its signature holds.
    pub fn verify_signature(&self) -> Result<VerifyingKey, String> {
        let public_key: [u8; 32] =
            from_hex_array(&self.public_key).ok_or("its public key is not 32 bytes of hex")?;
        if key_id(&public_key) != self.signer_id {
            return Err(format!("its public key is not key {}", self.signer_id));
        }
        let key = usable_key(&public_key)?;
        let head: Hash = self
            .entry_hash
            .as_slice()
            .try_into()
            .map_err(|_| "its hash is not 32 bytes")?;
        let root: Fingerprint =
            from_hex_array(&self.root).ok_or("its root is not a 32-byte fingerprint")?;
        let digest = checkpoint_digest(self.seq, &head, self.signed_at, self.context, &root);
        let signature =
            Signature::from_slice(&self.signature).map_err(|_| "its signature is not 64 bytes")?;
        key.verify_strict(&digest, &signature)
            .map_err(|_| format!("its signature does not verify under key {}", self.signer_id))?;
        Ok(key)
    }
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

/// A public key a verifier may use: a valid point that is not of small order
/// (a weak key would let anyone forge).
pub fn usable_key(public_key: &[u8; 32]) -> Result<VerifyingKey, String> {
    match VerifyingKey::from_bytes(public_key) {
        Err(_) => Err("is not a valid Ed25519 point".into()),
        Ok(key) if key.is_weak() => Err("is a weak (small-order) key".into()),
        Ok(key) => Ok(key),
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

    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint(&self.public_key())
    }

    /// Chains and signs a payload after the entry `previous` (`None` for the first).
    pub fn seal(
        &self,
        previous: Option<(u64, Hash)>,
        signed_at: Micros,
        context: Context,
        payload: Vec<u8>,
    ) -> SignedEntry {
        let (seq, prev_hash) = previous.map_or((1, GENESIS), |(seq, hash)| (seq + 1, hash));
        let hash = entry_hash(seq, &prev_hash, signed_at, context, &payload);
        SignedEntry {
            seq,
            prev_hash,
            entry_hash: hash,
            signed_at,
            context,
            payload,
            signer_id: self.id.clone(),
            signature: self.key.sign(&hash).to_bytes().to_vec(),
        }
    }

    /// Signs the chain head.
    pub fn checkpoint(
        &self,
        seq: u64,
        head: Hash,
        signed_at: Micros,
        context: Context,
        root: &Fingerprint,
    ) -> Checkpoint {
        let digest = checkpoint_digest(seq, &head, signed_at, context, root);
        Checkpoint {
            seq,
            entry_hash: head.to_vec(),
            signed_at,
            context,
            root: hex(root),
            signer_id: self.id.clone(),
            public_key: hex(&self.public_key()),
            signature: self.key.sign(&digest).to_bytes().to_vec(),
        }
    }
}

/// What is wrong with an entry or the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The entry's contents do not hash to its `entry_hash`, or a row does not
    /// say what its signed payload says, or does not parse.
    Modified,
    /// Entries are missing before this seq.
    Gap,
    /// This seq is out of order (a later entry holds the expected seq, or this
    /// seq repeats or goes back).
    Reordered,
    /// `prev_hash` is not the previous entry's hash.
    BrokenLink,
    /// `signed_at` is earlier than the previous entry's.
    Backdated,
    BadSignature,
    /// Signed by a key that no entry of the chain introduced.
    UnintroducedKey,
    /// Signed by a key the chain revoked at an earlier seq.
    RevokedKey,
    /// Signed by a key the chain had replaced at an earlier seq.
    ExpiredKey,
    /// A key is malformed or weak.
    UnusableKey,
    /// The chain does not start with a root key, or a root key that the
    /// verifier was not told to trust.
    UntrustedRoot,
    /// A checkpoint names a seq beyond the last entry: the tail was cut off.
    Truncated,
    /// The entry at a checkpoint's seq does not have the checkpoint's hash.
    CheckpointMismatch,
    /// A checkpoint comes from another fork of this chain: another cluster,
    /// timeline or key signed that seq.
    Forked,
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
            Fault::Backdated => "backdated",
            Fault::BadSignature => "bad_signature",
            Fault::UnintroducedKey => "unintroduced_key",
            Fault::RevokedKey => "revoked_key",
            Fault::ExpiredKey => "expired_key",
            Fault::UnusableKey => "unusable_key",
            Fault::UntrustedRoot => "untrusted_root",
            Fault::Truncated => "truncated",
            Fault::CheckpointMismatch => "checkpoint_mismatch",
            Fault::Forked => "forked",
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

impl ChainFault {
    pub fn new(seq: u64, fault: Fault, detail: impl Into<String>) -> ChainFault {
        ChainFault {
            seq,
            fault,
            detail: detail.into(),
        }
    }
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

pub mod chain;
pub mod export;
pub mod keys;

#[cfg(test)]
mod tests;
