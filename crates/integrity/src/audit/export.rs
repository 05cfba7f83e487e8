//! The audit log as exported by `ruvector_audit_export()`, and its verification
//! outside the database that might have been tampered with (the
//! `ruvector-audit` command). Keys and checkpoints may come from elsewhere than
//! the export: an attacker who rewrote the tables could rewrite the key table
//! in the export too, but not the keys and checkpoints a DBA kept aside.

use serde::{Deserialize, Serialize};

use super::{
    from_hex, verify_chain, ChainFault, ChainHead, Checkpoint, Event, Fault, KeyRing, SignedEntry,
    TrustedKey,
};
use crate::{Error, Micros};

/// The name and version of the export format.
pub const FORMAT: &str = "ruvector-audit-export-v1";

/// One chain entry, bytes in hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedEntry {
    pub seq: u64,
    pub prev_hash: String,
    pub entry_hash: String,
    pub signed_at: Micros,
    pub payload: String,
    pub signer_id: String,
    pub signature: String,
}

/// One public key, in hex, with its validity (Unix µs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedKey {
    pub id: String,
    pub public_key: String,
    pub expires_at: Option<Micros>,
    pub revoked_at: Option<Micros>,
}

impl From<&ExportedKey> for TrustedKey {
    fn from(k: &ExportedKey) -> Self {
        TrustedKey {
            id: k.id.clone(),
            public_key: from_hex(&k.public_key).unwrap_or_default(),
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// An exported log: the entries in seq order, the keys, the latest checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Export {
    pub format: String,
    pub entries: Vec<ExportedEntry>,
    pub keys: Vec<ExportedKey>,
    pub checkpoint: Option<Checkpoint>,
}

fn bytes(seq: u64, what: &str, hex: &str) -> Result<Vec<u8>, ChainFault> {
    from_hex(hex).ok_or_else(|| ChainFault {
        seq,
        fault: Fault::Modified,
        detail: format!("{what} is not hex"),
    })
}

fn hash(seq: u64, what: &str, hex: &str) -> Result<[u8; 32], ChainFault> {
    bytes(seq, what, hex)?.try_into().map_err(|_| ChainFault {
        seq,
        fault: Fault::Modified,
        detail: format!("{what} is not 32 bytes"),
    })
}

impl Export {
    /// Reads an export, refusing other formats.
    pub fn parse(text: &str) -> Result<Export, Error> {
        let export: Export = serde_json::from_str(text)
            .map_err(|e| Error::Audit(format!("not an audit export: {e}")))?;
        if export.format != FORMAT {
            return Err(Error::Audit(format!(
                "format \"{}\" is not {FORMAT}",
                export.format
            )));
        }
        Ok(export)
    }

    /// The entries as the verifier takes them.
    pub fn signed_entries(&self) -> Result<Vec<SignedEntry>, ChainFault> {
        self.entries
            .iter()
            .map(|e| {
                Ok(SignedEntry {
                    seq: e.seq,
                    prev_hash: hash(e.seq, "prev_hash", &e.prev_hash)?,
                    entry_hash: hash(e.seq, "entry_hash", &e.entry_hash)?,
                    signed_at: e.signed_at,
                    payload: bytes(e.seq, "payload", &e.payload)?,
                    signer_id: e.signer_id.clone(),
                    signature: bytes(e.seq, "signature", &e.signature)?,
                })
            })
            .collect()
    }

    /// Verifies the chain against `keys` (the export's own keys when `None`)
    /// and against the export's checkpoint and every one in `checkpoints`.
    pub fn verify(
        &self,
        keys: Option<&[TrustedKey]>,
        checkpoints: &[Checkpoint],
    ) -> Result<ChainHead, ChainFault> {
        let ring = match keys {
            Some(keys) => KeyRing::new(keys.iter().cloned()),
            None => KeyRing::new(self.keys.iter().map(TrustedKey::from)),
        };
        let mut all: Vec<Checkpoint> = self.checkpoint.iter().cloned().collect();
        all.extend(checkpoints.iter().cloned());
        verify_chain(&self.signed_entries()?, &ring, &all)
    }

    /// The events, decoded from their signed payloads.
    pub fn events(&self) -> Result<Vec<(u64, Event)>, Error> {
        self.entries
            .iter()
            .map(|e| {
                let payload = from_hex(&e.payload)
                    .ok_or_else(|| Error::Audit(format!("seq {}: payload is not hex", e.seq)))?;
                Ok((e.seq, Event::decode(&payload)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{hex, Signer};

    fn export(signer: &Signer, events: usize) -> Export {
        let mut entries: Vec<SignedEntry> = Vec::new();
        for i in 0..events {
            let event = Event::new(
                Some(1),
                "docs",
                "audit",
                None,
                None,
                &serde_json::json!({"i": i}),
                i as i64,
            );
            let previous = entries.last().map(|e| (e.seq, e.entry_hash));
            entries.push(signer.seal(previous, 100 + i as i64, event.encode().unwrap()));
        }
        let head = entries.last().map(|e| (e.seq, e.entry_hash)).unwrap();
        Export {
            format: FORMAT.into(),
            entries: entries
                .iter()
                .map(|e| ExportedEntry {
                    seq: e.seq,
                    prev_hash: hex(&e.prev_hash),
                    entry_hash: hex(&e.entry_hash),
                    signed_at: e.signed_at,
                    payload: hex(&e.payload),
                    signer_id: e.signer_id.clone(),
                    signature: hex(&e.signature),
                })
                .collect(),
            keys: vec![ExportedKey {
                id: signer.id().into(),
                public_key: hex(&signer.public_key()),
                expires_at: None,
                revoked_at: None,
            }],
            checkpoint: Some(signer.checkpoint(head.0, head.1, 1_000)),
        }
    }

    #[test]
    fn an_export_round_trips_and_verifies() {
        let signer = Signer::from_secret(&[3; 32]);
        let original = export(&signer, 4);
        let parsed = Export::parse(&serde_json::to_string(&original).unwrap()).unwrap();
        assert_eq!(parsed, original);
        assert_eq!(parsed.verify(None, &[]).unwrap().seq, 4);
        assert_eq!(parsed.events().unwrap()[2].1.metadata, "{\"i\":2}");
    }

    #[test]
    fn keys_kept_aside_override_the_exported_ones() {
        let ours = Signer::from_secret(&[3; 32]);
        let forger = Signer::from_secret(&[4; 32]);
        // A forger rebuilds the whole log and its key table with their own key.
        let forged = export(&forger, 4);
        assert!(
            forged.verify(None, &[]).is_ok(),
            "self-consistent on its own terms"
        );
        let trusted = [TrustedKey {
            id: ours.id().into(),
            public_key: ours.public_key().to_vec(),
            expires_at: None,
            revoked_at: None,
        }];
        assert_eq!(
            forged.verify(Some(&trusted), &[]).unwrap_err().fault,
            Fault::UnknownKey
        );
    }

    #[test]
    fn a_checkpoint_kept_aside_reveals_an_export_cut_short() {
        let signer = Signer::from_secret(&[3; 32]);
        let full = export(&signer, 5);
        let kept = full.checkpoint.clone().unwrap();
        let mut cut = full;
        cut.entries.truncate(3);
        cut.checkpoint = None;
        assert!(cut.verify(None, &[]).is_ok());
        assert_eq!(
            cut.verify(None, &[kept]).unwrap_err().fault,
            Fault::Truncated
        );
    }

    #[test]
    fn other_formats_and_bad_hex_are_refused() {
        assert!(Export::parse(
            r#"{"format": "v0", "entries": [], "keys": [], "checkpoint": null}"#
        )
        .is_err());
        let signer = Signer::from_secret(&[3; 32]);
        let mut bad = export(&signer, 2);
        bad.entries[1].payload.push('z');
        assert_eq!(bad.verify(None, &[]).unwrap_err().seq, 2);
    }

    mod fuzz {
        //! The parser and everything after it on arbitrary and mutated text:
        //! errors, never panics.
        use super::*;
        use proptest::prelude::*;

        /// Parses `text`; if it is an export, verifies it and decodes its events.
        fn examine(text: &str) {
            if let Ok(export) = Export::parse(text) {
                let _ = export.verify(None, &[]);
                let _ = export.events();
                let _ = export.signed_entries();
                let keys: Vec<TrustedKey> = export.keys.iter().map(TrustedKey::from).collect();
                let _ = export.verify(Some(&keys), export.checkpoint.as_slice());
            }
        }

        fn hex_or_not() -> impl Strategy<Value = String> {
            prop_oneof![
                "[0-9a-f]{0,130}",
                "[0-9a-fA-Fxz]{0,70}",
                Just(String::new())
            ]
        }

        fn entries() -> impl Strategy<Value = ExportedEntry> {
            (
                any::<u64>(),
                hex_or_not(),
                hex_or_not(),
                any::<i64>(),
                hex_or_not(),
                "[a-z0-9]{0,16}",
                hex_or_not(),
            )
                .prop_map(
                    |(seq, prev_hash, entry_hash, signed_at, payload, signer_id, signature)| {
                        ExportedEntry {
                            seq,
                            prev_hash,
                            entry_hash,
                            signed_at,
                            payload,
                            signer_id,
                            signature,
                        }
                    },
                )
        }

        fn keys() -> impl Strategy<Value = ExportedKey> {
            (
                "[a-z0-9]{0,16}",
                hex_or_not(),
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<i64>()),
            )
                .prop_map(|(id, public_key, expires_at, revoked_at)| ExportedKey {
                    id,
                    public_key,
                    expires_at,
                    revoked_at,
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            #[test]
            fn arbitrary_text_never_panics(text in ".{0,300}") {
                examine(&text);
            }

            /// Well-formed JSON with garbage in every field.
            #[test]
            fn arbitrary_fields_never_panic(
                entries in prop::collection::vec(entries(), 0..5),
                keys in prop::collection::vec(keys(), 0..3),
                seq in any::<u64>(),
            ) {
                let signer = Signer::from_secret(&[3; 32]);
                let export = Export {
                    format: FORMAT.into(),
                    entries,
                    keys,
                    checkpoint: Some(signer.checkpoint(seq, [7; 32], 5)),
                };
                examine(&serde_json::to_string(&export).unwrap());
            }

            /// A valid export with characters flipped, cut or inserted.
            #[test]
            fn mutated_exports_never_panic(
                edits in prop::collection::vec((any::<usize>(), any::<char>(), 0..3u8), 1..6)
            ) {
                let signer = Signer::from_secret(&[3; 32]);
                let mut text: Vec<char> = serde_json::to_string(&export(&signer, 3)).unwrap().chars().collect();
                for (at, c, kind) in edits {
                    let at = at % (text.len() + 1);
                    match kind {
                        0 if at < text.len() => text[at] = c,
                        1 if at < text.len() => { text.remove(at); }
                        _ => text.insert(at, c),
                    }
                }
                examine(&text.into_iter().collect::<String>());
            }
        }
    }
}
