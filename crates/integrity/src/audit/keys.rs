//! The keys a chain carries: every key that may sign is introduced by an
//! entry of the chain itself, a `key_rotation` event whose metadata is a
//! [`KeyEvent`].
//!
//! - `root`: the first entry of a chain introduces the root key, signed by
//!   itself. Its fingerprint is what a verifier keeps aside.
//! - `rotate`: a new key, signed by the key it replaces; the old key signs
//!   nothing after it.
//! - `revoke`: the same, and the key named in `revoked_key` (the current one,
//!   or an older one) is revoked from this seq on. Revoking the current key
//!   rotates at once: the rotation is its last valid signature.
//! - `reroot`: a new root signed by itself, when no valid key is left (a
//!   restore from before a rotation, a promoted standby without the key). A
//!   verifier must be told to trust the new root, as for a new chain.
//! - `successor`: the key a promoted standby may take over with, signed by
//!   the current key, which stays current. The extension keeps its secret
//!   where the WAL carries it to standbys; it signs nothing but a `failover`,
//!   and the next `successor` (after every other key event) replaces it.
//! - `failover`: a promoted standby's new key, signed by the successor key,
//!   in the first entry of a later timeline of the same cluster. It replaces
//!   the current key and uses the successor up. The old primary, if it signs
//!   on, is a fork of the chain.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{from_hex_array, key_id, usable_key, Context, Event};
use crate::{Error, Micros};

/// The event type of key events.
pub const KEY_EVENT: &str = "key_rotation";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAction {
    Root,
    Rotate,
    Revoke,
    Reroot,
    Successor,
    Failover,
}

impl KeyAction {
    /// Whether the introduced key signs its own introduction.
    pub fn self_signed(self) -> bool {
        matches!(self, KeyAction::Root | KeyAction::Reroot)
    }
}

/// What a `key_rotation` event says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyEvent {
    pub action: KeyAction,
    /// The id of the key introduced.
    pub key: String,
    /// Its public key, hex.
    pub public_key: String,
    /// The key it replaces (none for a first root).
    pub previous_key: Option<String>,
    /// The key revoked from this entry on (`revoke` only).
    pub revoked_key: Option<String>,
    /// Why, in words.
    pub why: String,
    /// Anything else worth recording (who, which cluster...), not checked.
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

impl KeyEvent {
    /// Introduces `public_key` by `action`.
    pub fn new(
        action: KeyAction,
        public_key: &[u8; 32],
        previous_key: Option<&str>,
        why: &str,
    ) -> KeyEvent {
        KeyEvent {
            action,
            key: key_id(public_key),
            public_key: super::hex(public_key),
            previous_key: previous_key.map(str::to_owned),
            revoked_key: None,
            why: why.to_owned(),
            details: Map::new(),
        }
    }

    /// The event that records it.
    pub fn to_event(&self, created_at: Micros) -> Event {
        let metadata = serde_json::to_value(self).unwrap_or(Value::Null);
        Event::new(None, "", KEY_EVENT, None, None, &metadata, created_at)
    }

    /// The key event an event records, if it is one; an error if it claims
    /// to be one and does not say what a key event must.
    pub fn of(event: &Event) -> Result<Option<KeyEvent>, Error> {
        if event.event_type != KEY_EVENT {
            return Ok(None);
        }
        let parsed: KeyEvent = serde_json::from_str(&event.metadata)
            .map_err(|e| Error::Audit(format!("a key event that does not parse: {e}")))?;
        let public_key = parsed.public_key_bytes()?;
        if key_id(&public_key) != parsed.key {
            return Err(Error::Audit(format!(
                "key event: public key is {}, not {}",
                key_id(&public_key),
                parsed.key
            )));
        }
        usable_key(&public_key).map_err(|why| Error::Audit(format!("key {} {why}", parsed.key)))?;
        Ok(Some(parsed))
    }

    pub fn public_key_bytes(&self) -> Result<[u8; 32], Error> {
        from_hex_array(&self.public_key).ok_or_else(|| {
            Error::Audit(format!(
                "key {}: public key is not 32 bytes of hex",
                self.key
            ))
        })
    }
}

/// The key that must sign entry `seq`, given the key events of the chain up
/// to it (seq, event), in order: the key a root or re-root at `seq`
/// introduces, the successor for a failover at `seq`, else the key current
/// before `seq`. `None` before any root.
pub fn signer_at(events: &[(u64, KeyEvent)], seq: u64) -> Option<&KeyEvent> {
    let before = &events[..events.partition_point(|(at, _)| *at < seq)];
    match events.get(before.len()).filter(|(at, _)| *at == seq) {
        Some((_, k)) if k.action.self_signed() => Some(k),
        Some((_, k)) if k.action == KeyAction::Failover => successor(before),
        _ => current(before),
    }
}

/// The chain's current key, from its key events in order: the last one
/// introduced by anything but `successor`.
pub fn current(events: &[(u64, KeyEvent)]) -> Option<&KeyEvent> {
    events
        .iter()
        .map(|(_, k)| k)
        .rfind(|k| k.action != KeyAction::Successor)
}

/// The chain's successor key, if it has one that may still take over: the
/// last `successor`, unless a later failover used it up, a re-root ended
/// its chain, or a revocation named it.
pub fn successor(events: &[(u64, KeyEvent)]) -> Option<&KeyEvent> {
    let (at, found) = events
        .iter()
        .enumerate()
        .rfind(|(_, (_, k))| k.action == KeyAction::Successor)
        .map(|(i, (_, k))| (i, k))?;
    let ended = events[at + 1..].iter().any(|(_, k)| {
        matches!(k.action, KeyAction::Failover | KeyAction::Reroot)
            || k.revoked_key.as_deref() == Some(&found.key)
    });
    (!ended).then_some(found)
}

/// Whether a worker holding the successor key `held` may take over the
/// chain: it is the chain's successor, and this server (`here`) writes on a
/// later timeline of the cluster that signed the chain's last entry
/// (`head`): it was promoted, or recovered to a new timeline, since.
pub fn may_take_over(held: &str, events: &[(u64, KeyEvent)], head: Context, here: Context) -> bool {
    successor(events).is_some_and(|s| s.key == held)
        && here.system_identifier == head.system_identifier
        && here.timeline > head.timeline
}

/// An operator's request about keys, recorded as a pending `audit` event the
/// worker acts on (writing the key event it asks for) before it signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Rotate,
    Revoke(String),
    Reroot,
}

impl Request {
    fn action(&self) -> &'static str {
        match self {
            Request::Rotate => "rotate_signing_key",
            Request::Revoke(_) => "revoke_signing_key",
            Request::Reroot => "reroot_audit_chain",
        }
    }

    /// The event that records the request: who asked, and why.
    pub fn to_event(&self, reason: Option<&str>, by: &str, created_at: Micros) -> Event {
        let mut metadata = serde_json::json!({"action": self.action(), "reason": reason, "by": by});
        if let Request::Revoke(key) = self {
            metadata["key"] = Value::String(key.clone());
        }
        Event::new(None, "", "audit", None, None, &metadata, created_at)
    }

    /// The request `event` records, if it is one.
    pub fn of(event: &Event) -> Option<Request> {
        if event.event_type != "audit" {
            return None;
        }
        let metadata: Value = serde_json::from_str(&event.metadata).ok()?;
        match metadata["action"].as_str()? {
            "rotate_signing_key" => Some(Request::Rotate),
            "revoke_signing_key" => Some(Request::Revoke(metadata["key"].as_str()?.to_owned())),
            "reroot_audit_chain" => Some(Request::Reroot),
            _ => None,
        }
    }
}

/// What a worker may do with the key in its key file when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The chain has no entry yet: the file's key becomes its root.
    Root,
    /// The file's key is the chain's current key: the worker signs, under a
    /// fresh key it introduces first.
    Carry,
    /// It signs nothing, for this reason.
    Stop(String),
}

/// The decision at a worker's start, from the key in its file, the chain's
/// current key (the last key event's), and whether the chain has entries.
pub fn at_start(file_key: &str, chain_current: Option<&str>, has_entries: bool) -> Start {
    match chain_current {
        None if has_entries => Start::Stop("the audit chain has entries but no root key event".into()),
        None => Start::Root,
        Some(current) if current != file_key => Start::Stop(format!(
            "the key file holds key {file_key}, but the chain's current key is {current} and no successor key may take over (a backup restored to before a later rotation, a standby promoted without a usable successor, or another cluster's data): a superuser can start a new root with ruvector_reroot_audit_chain()"
        )),
        Some(_) => Start::Carry,
    }
}

/// What a checkpoint ahead of the chain says: the chain lost entries (an OS
/// crash before they were durable, or rows cut off the end).
pub fn checkpoint_anomaly(checkpoint_seq: Option<u64>, head_seq: u64) -> Option<String> {
    let seq = checkpoint_seq.filter(|&seq| seq > head_seq)?;
    Some(format!(
        "the checkpoint on disk covers seq {seq} but the chain ends at seq {head_seq}: entries are missing"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Signer;

    #[test]
    fn the_signer_of_an_entry_follows_the_key_events_before_it() {
        let (a, b, c) = (
            Signer::from_secret(&[1; 32]),
            Signer::from_secret(&[2; 32]),
            Signer::from_secret(&[3; 32]),
        );
        let events = vec![
            (1, KeyEvent::new(KeyAction::Root, &a.public_key(), None, "")),
            (
                4,
                KeyEvent::new(KeyAction::Rotate, &b.public_key(), Some(a.id()), ""),
            ),
            (
                7,
                KeyEvent::new(KeyAction::Reroot, &c.public_key(), Some(b.id()), ""),
            ),
        ];
        let id = |seq| signer_at(&events, seq).map(|k| k.key.clone());
        assert_eq!(id(1).as_deref(), Some(a.id()));
        assert_eq!(
            id(4).as_deref(),
            Some(a.id()),
            "a rotation is signed by the key it replaces"
        );
        assert_eq!(id(5).as_deref(), Some(b.id()));
        assert_eq!(id(7).as_deref(), Some(c.id()), "a re-root signs itself");
        assert_eq!(signer_at(&events[1..], 2), None);
    }

    #[test]
    fn a_worker_signs_at_start_only_with_the_chains_current_key() {
        assert_eq!(at_start("k1", None, false), Start::Root);
        assert!(matches!(at_start("k1", None, true), Start::Stop(why) if why.contains("no root")));
        assert_eq!(at_start("k1", Some("k1"), true), Start::Carry);
        assert!(matches!(at_start("k1", Some("k2"), true),
            Start::Stop(why) if why.contains("holds key k1") && why.contains("ruvector_reroot_audit_chain")));
        assert_eq!(checkpoint_anomaly(None, 3), None);
        assert_eq!(checkpoint_anomaly(Some(3), 3), None);
        assert!(checkpoint_anomaly(Some(5), 3)
            .unwrap()
            .contains("covers seq 5 but the chain ends at seq 3"));
    }

    #[test]
    fn requests_round_trip_through_their_events() {
        for request in [
            Request::Rotate,
            Request::Reroot,
            Request::Revoke("ed25519:ab".into()),
        ] {
            let event = request.to_event(Some("drill"), "alice", 7);
            assert_eq!(Request::of(&event), Some(request));
        }
        let other = Event::new(
            None,
            "",
            "audit",
            None,
            None,
            &serde_json::json!({"action": "register"}),
            1,
        );
        assert_eq!(Request::of(&other), None);
        let not_audit = Event::new(
            None,
            "",
            "gate_bypass",
            None,
            None,
            &serde_json::json!({"action": "rotate_signing_key"}),
            1,
        );
        assert_eq!(Request::of(&not_audit), None);
    }
}
