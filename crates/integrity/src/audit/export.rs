//! The audit log as `ruvector_audit_export()` writes it, one JSON document per
//! line so that a log of any size streams (`COPY (SELECT
//! ruvector_audit_export()) TO STDOUT`, or `psql -Atc`): a header line with
//! the format and the latest checkpoint, then one line per entry in seq order.
//! Its verification outside the database that might have been tampered with
//! is the `ruvector-audit` command.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use super::chain::{ChainVerifier, Trust, Verdict};
use super::{from_hex, from_hex_array, ChainFault, Checkpoint, Context, Event, Fault, SignedEntry};
use crate::{Error, Micros};

/// The name and version of the export format.
pub const FORMAT: &str = "ruvector-audit-export-v2";

/// The first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    /// The latest checkpoint the database had, if any.
    pub checkpoint: Option<Checkpoint>,
}

/// One chain entry, bytes in hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedEntry {
    pub seq: u64,
    pub prev_hash: String,
    pub entry_hash: String,
    pub signed_at: Micros,
    #[serde(flatten)]
    pub context: Context,
    pub payload: String,
    pub signer_id: String,
    pub signature: String,
}

impl ExportedEntry {
    pub fn of(entry: &SignedEntry) -> ExportedEntry {
        use super::hex;
        ExportedEntry {
            seq: entry.seq,
            prev_hash: hex(&entry.prev_hash),
            entry_hash: hex(&entry.entry_hash),
            signed_at: entry.signed_at,
            context: entry.context,
            payload: hex(&entry.payload),
            signer_id: entry.signer_id.clone(),
            signature: hex(&entry.signature),
        }
    }

    /// The entry as the verifier takes it; a field that is not what it should
    /// be is a `modified` fault at its seq.
    pub fn signed_entry(&self) -> Result<SignedEntry, ChainFault> {
        let seq = self.seq;
        let bad = |what: &str| {
            ChainFault::new(
                seq,
                Fault::Modified,
                format!("{what} is not hex of the right length"),
            )
        };
        Ok(SignedEntry {
            seq,
            prev_hash: from_hex_array(&self.prev_hash).ok_or_else(|| bad("prev_hash"))?,
            entry_hash: from_hex_array(&self.entry_hash).ok_or_else(|| bad("entry_hash"))?,
            signed_at: self.signed_at,
            context: self.context,
            payload: from_hex(&self.payload).ok_or_else(|| bad("payload"))?,
            signer_id: self.signer_id.clone(),
            signature: from_hex(&self.signature).ok_or_else(|| bad("signature"))?,
        })
    }
}

/// Why an export could not be verified at all, or where it failed.
#[derive(Debug)]
pub enum Failure {
    /// Not an export (bad header, unreadable file): nothing was verified.
    Unreadable(Error),
    /// The first bad entry or checkpoint.
    Chain(ChainFault),
}

/// Reads the header line.
pub fn read_header(line: &str) -> Result<Header, Error> {
    let header: Header = serde_json::from_str(line)
        .map_err(|e| Error::Audit(format!("not an audit export header: {e}")))?;
    if header.format != FORMAT {
        return Err(Error::Audit(format!(
            "format \"{}\" is not {FORMAT}",
            header.format
        )));
    }
    Ok(header)
}

/// The seq a line that does not parse seems to be about, for the fault.
fn seq_of(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("seq")?
        .as_u64()
}

/// Verifies an export read line by line, against `trust` and the export's own
/// checkpoint.
pub fn verify(input: impl BufRead, mut trust: Trust) -> Result<Verdict, Failure> {
    let mut lines = input.lines();
    let first = lines
        .next()
        .ok_or_else(|| Failure::Unreadable(Error::Audit("the export is empty".into())))?
        .map_err(|e| Failure::Unreadable(Error::Audit(e.to_string())))?;
    let header = read_header(&first).map_err(Failure::Unreadable)?;
    trust.checkpoints.extend(header.checkpoint);
    let mut verifier = ChainVerifier::new(trust);
    let mut expected = 1;
    for line in lines {
        let line = line.map_err(|e| Failure::Unreadable(Error::Audit(e.to_string())))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = match serde_json::from_str::<ExportedEntry>(&line) {
            Ok(exported) => exported.signed_entry(),
            Err(e) => {
                let seq = seq_of(&line).unwrap_or(expected);
                Err(verifier.unreadable(seq, &format!("the line does not parse: {e}")))
            }
        };
        let entry = entry.map_err(Failure::Chain)?;
        expected = entry.seq + 1;
        verifier.push(&entry).map_err(Failure::Chain)?;
    }
    verifier.finish().map_err(Failure::Chain)
}

/// The events of an export, decoded from their signed payloads, in order.
pub fn events(input: impl BufRead) -> impl Iterator<Item = Result<(u64, Event), Error>> {
    input.lines().skip(1).filter_map(|line| {
        let line = match line {
            Ok(l) if l.trim().is_empty() => return None,
            Ok(l) => l,
            Err(e) => return Some(Err(Error::Audit(e.to_string()))),
        };
        Some(
            serde_json::from_str::<ExportedEntry>(&line)
                .map_err(|e| Error::Audit(format!("a line does not parse: {e}")))
                .and_then(|e| {
                    let payload = from_hex(&e.payload).ok_or_else(|| {
                        Error::Audit(format!("seq {}: payload is not hex", e.seq))
                    })?;
                    Ok((e.seq, Event::decode(&payload)?))
                }),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::keys::{KeyAction, KeyEvent};
    use crate::audit::Signer;

    fn lines(signer: &Signer, events: usize, checkpoint: bool) -> String {
        let context = Context {
            system_identifier: 7,
            timeline: 1,
        };
        let mut entries: Vec<SignedEntry> = Vec::new();
        let root = KeyEvent::new(KeyAction::Root, &signer.public_key(), None, "first key");
        entries.push(signer.seal(None, 100, context, root.to_event(100).encode().unwrap()));
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
            entries.push(signer.seal(previous, 101 + i as i64, context, event.encode().unwrap()));
        }
        let last = entries.last().unwrap();
        let header = Header {
            format: FORMAT.into(),
            checkpoint: checkpoint.then(|| {
                signer.checkpoint(
                    last.seq,
                    last.entry_hash,
                    1_000,
                    context,
                    &signer.fingerprint(),
                )
            }),
        };
        let mut text = serde_json::to_string(&header).unwrap();
        for e in &entries {
            text.push('\n');
            text.push_str(&serde_json::to_string(&ExportedEntry::of(e)).unwrap());
        }
        text
    }

    #[test]
    fn an_export_streams_through_the_verifier() {
        let signer = Signer::from_secret(&[3; 32]);
        let text = lines(&signer, 4, true);
        let verdict = verify(text.as_bytes(), Trust::default()).unwrap();
        assert_eq!(
            (verdict.head.seq, verdict.checkpoints, verdict.root_pinned),
            (5, 1, false)
        );
        let pinned = Trust {
            roots: vec![signer.fingerprint()],
            checkpoints: vec![],
        };
        assert!(verify(text.as_bytes(), pinned).unwrap().root_pinned);
        let events: Vec<_> = events(text.as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(events[3].1.metadata, "{\"i\":2}");
    }

    #[test]
    fn a_forged_log_fails_against_the_root_kept_aside() {
        let ours = Signer::from_secret(&[3; 32]);
        let forger = Signer::from_secret(&[4; 32]);
        // A forger rebuilds the whole log with a root of their own.
        let forged = lines(&forger, 4, true);
        assert!(
            verify(forged.as_bytes(), Trust::default()).is_ok(),
            "self-consistent on its own terms"
        );
        let trust = Trust {
            roots: vec![ours.fingerprint()],
            checkpoints: vec![],
        };
        match verify(forged.as_bytes(), trust) {
            Err(Failure::Chain(f)) => assert_eq!((f.seq, f.fault), (1, Fault::UntrustedRoot)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_checkpoint_kept_aside_reveals_an_export_cut_short() {
        let signer = Signer::from_secret(&[3; 32]);
        let full = lines(&signer, 5, true);
        let kept = read_header(full.lines().next().unwrap())
            .unwrap()
            .checkpoint
            .unwrap();
        let unchecked = lines(&signer, 5, false);
        let cut = unchecked.lines().take(4).collect::<Vec<_>>().join("\n");
        assert!(verify(cut.as_bytes(), Trust::default()).is_ok());
        let trust = Trust {
            roots: vec![],
            checkpoints: vec![kept],
        };
        match verify(cut.as_bytes(), trust) {
            Err(Failure::Chain(f)) => assert_eq!(f.fault, Fault::Truncated),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_lines_are_modified_at_their_seq_and_other_formats_are_refused() {
        assert!(matches!(
            verify(
                r#"{"format": "v0", "checkpoint": null}"#.as_bytes(),
                Trust::default()
            ),
            Err(Failure::Unreadable(_))
        ));
        let signer = Signer::from_secret(&[3; 32]);
        let text = lines(&signer, 3, false);
        let mut rows: Vec<String> = text.lines().map(str::to_owned).collect();
        rows[3] = rows[3].replace("\"payload\":\"", "\"payload\":\"zz");
        rows[4] = "{\"seq\": 4, \"oops\": true}".into();
        for (broken, seq) in [(3, 3), (4, 4)] {
            let mut copy = lines(&signer, 3, false)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>();
            copy[broken] = rows[broken].clone();
            match verify(copy.join("\n").as_bytes(), Trust::default()) {
                Err(Failure::Chain(f)) => assert_eq!((f.seq, f.fault), (seq, Fault::Modified)),
                other => panic!("{other:?}"),
            }
        }
    }

    mod fuzz {
        //! The parser and everything after it on arbitrary and mutated text:
        //! errors, never panics.
        use super::*;
        use proptest::prelude::*;

        /// Verifies `text` as an export and decodes its events.
        fn examine(text: &str) {
            let _ = verify(text.as_bytes(), Trust::default());
            let signer = Signer::from_secret(&[3; 32]);
            let pinned = Trust {
                roots: vec![signer.fingerprint()],
                checkpoints: vec![],
            };
            let _ = verify(text.as_bytes(), pinned);
            for _ in events(text.as_bytes()) {}
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
                (any::<u64>(), hex_or_not(), hex_or_not(), any::<i64>()),
                (
                    any::<u64>(),
                    any::<u32>(),
                    hex_or_not(),
                    "[a-z0-9]{0,16}",
                    hex_or_not(),
                ),
            )
                .prop_map(
                    |(
                        (seq, prev_hash, entry_hash, signed_at),
                        (system_identifier, timeline, payload, signer_id, signature),
                    )| ExportedEntry {
                        seq,
                        prev_hash,
                        entry_hash,
                        signed_at,
                        context: Context {
                            system_identifier,
                            timeline,
                        },
                        payload,
                        signer_id,
                        signature,
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            #[test]
            fn arbitrary_text_never_panics(text in ".{0,300}") {
                examine(&text);
                examine(&format!("{}\n{text}", lines(&Signer::from_secret(&[3; 32]), 0, false)));
            }

            /// Well-formed lines with garbage in every field.
            #[test]
            fn arbitrary_fields_never_panic(entries in prop::collection::vec(entries(), 0..5)) {
                let mut text = serde_json::to_string(&Header { format: FORMAT.into(), checkpoint: None }).unwrap();
                for e in &entries {
                    text.push('\n');
                    text.push_str(&serde_json::to_string(e).unwrap());
                }
                examine(&text);
            }

            /// A valid export with characters flipped, cut or inserted.
            #[test]
            fn mutated_exports_never_panic(
                edits in prop::collection::vec((any::<usize>(), any::<char>(), 0..3u8), 1..6)
            ) {
                let signer = Signer::from_secret(&[3; 32]);
                let mut text: Vec<char> = lines(&signer, 3, true).chars().collect();
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
