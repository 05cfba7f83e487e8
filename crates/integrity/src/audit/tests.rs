use super::chain::{verify_chain, Trust, Verdict};
use super::keys::{KeyAction, KeyEvent};
use super::*;
use serde_json::json;

fn event(i: i64) -> Event {
    Event {
        collection_id: Some(7),
        collection: "embeddings".into(),
        event_type: "state_change".into(),
        previous_state: Some("normal".into()),
        new_state: Some("stress".into()),
        lambda_cut: Some(0.5),
        lambda_norm: Some(0.5),
        lambda2: None,
        witness_edges: vec![WitnessEdge {
            source: "shard:primary".into(),
            target: "maintenance_dep:wal_archiving".into(),
            kind: "dependency".into(),
            capacity: 0.5,
        }],
        metadata: canonical_json(&json!({"sample": i, "reason": "archiver failing"})),
        created_at: 1_700_000_000_000_000 + i,
    }
}

fn signer(seed: u8) -> Signer {
    Signer::from_secret(&[seed; 32])
}

const HERE: Context = Context {
    system_identifier: 7_000_000_000_000_000_001,
    timeline: 1,
};

/// A chain of `len` entries: the root key's introduction, then events.
fn chain(signer: &Signer, len: usize) -> Vec<SignedEntry> {
    let mut entries = vec![signer.seal(None, 1_000, HERE, root_event(signer, 1_000))];
    for i in 1..len {
        append(&mut entries, signer, event(i as i64).encode().unwrap());
    }
    entries
}

fn root_event(signer: &Signer, at: i64) -> Vec<u8> {
    KeyEvent::new(KeyAction::Root, &signer.public_key(), None, "first key")
        .to_event(at)
        .encode()
        .unwrap()
}

/// Appends a payload signed by `signer`, a microsecond after the last entry.
fn append(entries: &mut Vec<SignedEntry>, signer: &Signer, payload: Vec<u8>) {
    let last = entries.last().unwrap();
    let entry = signer.seal(
        Some((last.seq, last.entry_hash)),
        last.signed_at + 1,
        HERE,
        payload,
    );
    entries.push(entry);
}

/// A key event introducing `new`, signed by `by`.
fn introduce(
    entries: &mut Vec<SignedEntry>,
    by: &Signer,
    new: &Signer,
    action: KeyAction,
    revoked: Option<&Signer>,
) {
    let mut k = KeyEvent::new(action, &new.public_key(), Some(by.id()), "test");
    k.revoked_key = revoked.map(|r| r.id().to_owned());
    append(entries, by, k.to_event(0).encode().unwrap());
}

fn verify(entries: &[SignedEntry]) -> Result<Verdict, ChainFault> {
    verify_chain(entries, Trust::default())
}

fn fault_of(result: Result<Verdict, ChainFault>) -> (u64, Fault) {
    let f = result.expect_err("the chain should fail");
    (f.seq, f.fault)
}

#[test]
fn event_round_trips_through_its_payload() {
    let e = event(3);
    assert_eq!(Event::decode(&e.encode().unwrap()).unwrap(), e);
    let bare = Event {
        collection_id: None,
        previous_state: None,
        lambda_cut: None,
        witness_edges: vec![],
        ..event(0)
    };
    assert_eq!(Event::decode(&bare.encode().unwrap()).unwrap(), bare);
}

#[test]
fn non_finite_numbers_cannot_be_signed() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let e = Event {
            lambda_norm: Some(bad),
            ..event(0)
        };
        assert!(matches!(e.encode(), Err(Error::Audit(_))));
    }
}

#[test]
fn payload_decoding_refuses_other_versions_and_trailing_bytes() {
    let mut payload = event(0).encode().unwrap();
    payload.push(0);
    assert!(Event::decode(&payload).is_err());
    payload.pop();
    payload[4] = 2;
    assert!(Event::decode(&payload)
        .unwrap_err()
        .to_string()
        .contains("unsupported payload version 2"));
    assert!(Event::decode(&payload[..10]).is_err());
}

#[test]
fn canonical_json_sorts_keys_at_every_level() {
    let a = json!({"b": 1, "a": {"y": [1, {"k": 2, "j": 1}], "x": 0.5}});
    assert_eq!(
        canonical_json(&a),
        r#"{"a":{"x":0.5,"y":[1,{"j":1,"k":2}]},"b":1}"#
    );
}

#[test]
fn an_untouched_chain_verifies_to_its_head_and_root() {
    let s = signer(1);
    let entries = chain(&s, 5);
    let verdict = verify(&entries).unwrap();
    assert_eq!(verdict.head.seq, 5);
    assert_eq!(verdict.head.entry_hash, entries[4].entry_hash);
    assert_eq!(verdict.roots, vec![(1, s.fingerprint())]);
    assert!(!verdict.root_pinned, "the root came from the log itself");
    let pinned = verify_chain(
        &entries,
        Trust {
            roots: vec![s.fingerprint()],
            checkpoints: vec![],
        },
    )
    .unwrap();
    assert!(pinned.root_pinned);
    assert_eq!(verify(&[]).unwrap().head.seq, 0);
}

#[test]
fn a_flipped_payload_byte_is_modified() {
    let s = signer(1);
    let mut entries = chain(&s, 5);
    entries[2].payload[20] ^= 1;
    assert_eq!(fault_of(verify(&entries)), (3, Fault::Modified));
}

#[test]
fn the_cluster_and_timeline_are_signed() {
    let s = signer(1);
    let mut entries = chain(&s, 3);
    entries[1].context.timeline = 2;
    assert_eq!(fault_of(verify(&entries)), (2, Fault::Modified));
}

#[test]
fn a_flipped_signature_byte_is_a_bad_signature() {
    let s = signer(1);
    let mut entries = chain(&s, 5);
    entries[3].signature[0] ^= 1;
    assert_eq!(fault_of(verify(&entries)), (4, Fault::BadSignature));
    entries[3].signature.truncate(10);
    assert_eq!(fault_of(verify(&entries)), (4, Fault::BadSignature));
}

#[test]
fn a_bad_signature_is_named_before_a_later_fault() {
    let s = signer(1);
    let mut entries = chain(&s, 6);
    entries[1].signature[3] ^= 1;
    entries[4].payload[20] ^= 1;
    assert_eq!(fault_of(verify(&entries)), (2, Fault::BadSignature));
}

#[test]
fn a_flipped_prev_hash_is_modified_and_a_rehashed_one_is_a_broken_link() {
    let s = signer(1);
    let mut entries = chain(&s, 5);
    entries[1].prev_hash[0] ^= 1;
    assert_eq!(fault_of(verify(&entries)), (2, Fault::Modified));
    let e = &mut entries[1];
    e.entry_hash = entry_hash(e.seq, &e.prev_hash, e.signed_at, e.context, &e.payload);
    assert_eq!(fault_of(verify(&entries)), (2, Fault::BrokenLink));
}

#[test]
fn swapped_rows_are_reordered() {
    let s = signer(1);
    let mut entries = chain(&s, 5);
    entries.swap(1, 2);
    assert_eq!(fault_of(verify(&entries)), (3, Fault::Reordered));
}

#[test]
fn a_deleted_middle_row_is_a_gap() {
    let s = signer(1);
    let mut entries = chain(&s, 5);
    entries.remove(2);
    let f = verify(&entries).unwrap_err();
    assert_eq!((f.seq, f.fault), (4, Fault::Gap));
    assert_eq!(f.to_string(), "seq 4: gap: seq 3 to 3 are missing");
}

#[test]
fn a_deleted_row_with_renumbered_successors_breaks_the_hash() {
    let s = signer(1);
    let mut entries = chain(&s, 5);
    entries.remove(2);
    entries[2].seq = 3;
    entries[3].seq = 4;
    assert_eq!(fault_of(verify(&entries)), (3, Fault::Modified));
}

#[test]
fn an_entry_signed_by_a_key_the_chain_never_introduced_is_refused() {
    let (ours, theirs) = (signer(1), signer(2));
    let mut entries = chain(&ours, 3);
    // Whoever can write the tables adds a key of their own and signs with it...
    let forged = theirs.seal(
        Some((2, entries[1].entry_hash)),
        5_000,
        HERE,
        entries[2].payload.clone(),
    );
    entries[2] = forged;
    let f = verify(&entries).unwrap_err();
    assert_eq!((f.seq, f.fault), (3, Fault::UnintroducedKey));
    assert_eq!(f.fault.as_str(), "unintroduced_key");
    // ...or claims our id.
    entries[2].signer_id = ours.id().to_owned();
    assert_eq!(fault_of(verify(&entries)), (3, Fault::BadSignature));
}

#[test]
fn a_chain_must_start_with_its_root_and_a_root_kept_aside_is_enforced() {
    let (ours, theirs) = (signer(1), signer(2));
    let entries = chain(&ours, 3);
    let mut rootless = vec![ours.seal(None, 1, HERE, event(0).encode().unwrap())];
    append(&mut rootless, &ours, event(1).encode().unwrap());
    assert_eq!(fault_of(verify(&rootless)), (1, Fault::UntrustedRoot));
    let wrong = Trust {
        roots: vec![theirs.fingerprint()],
        checkpoints: vec![],
    };
    assert_eq!(
        fault_of(verify_chain(&entries, wrong)),
        (1, Fault::UntrustedRoot)
    );
}

#[test]
fn rotation_retires_the_old_key_and_revocation_holds_from_its_seq() {
    let (k1, k2, k3) = (signer(1), signer(2), signer(3));
    let mut entries = chain(&k1, 3);
    introduce(&mut entries, &k1, &k2, KeyAction::Rotate, None); // seq 4
    append(&mut entries, &k2, event(5).encode().unwrap()); // seq 5
    let verdict = verify(&entries).unwrap();
    assert_eq!(verdict.current_key.as_deref(), Some(k2.id()));
    // The retired key signs nothing after its rotation.
    let mut stale = entries.clone();
    append(&mut stale, &k1, event(6).encode().unwrap());
    assert_eq!(fault_of(verify(&stale)), (6, Fault::ExpiredKey));
    // Revoking the current key rotates at once; the revoked key is refused
    // from there on, whatever time its holder writes into an entry.
    introduce(&mut entries, &k2, &k3, KeyAction::Revoke, Some(&k2)); // seq 6
    append(&mut entries, &k3, event(7).encode().unwrap());
    assert!(verify(&entries).is_ok());
    let mut leaked = entries.clone();
    append(&mut leaked, &k2, event(8).encode().unwrap());
    assert_eq!(fault_of(verify(&leaked)), (8, Fault::RevokedKey));
    let mut backdated = entries.clone();
    let last = backdated.last().unwrap().clone();
    backdated.push(k2.seal(
        Some((last.seq, last.entry_hash)),
        0,
        HERE,
        event(8).encode().unwrap(),
    ));
    assert_eq!(fault_of(verify(&backdated)), (8, Fault::Backdated));
}

#[test]
fn a_rotation_signed_by_anyone_but_the_current_key_is_refused() {
    let (k1, k2, mallory) = (signer(1), signer(2), signer(9));
    let mut entries = chain(&k1, 2);
    introduce(&mut entries, &mallory, &k2, KeyAction::Rotate, None);
    assert_eq!(fault_of(verify(&entries)), (3, Fault::UnintroducedKey));
}

#[test]
fn a_reroot_needs_the_new_root_to_be_trusted() {
    let (k1, k2) = (signer(1), signer(2));
    let mut entries = chain(&k1, 3);
    let reroot = KeyEvent::new(
        KeyAction::Reroot,
        &k2.public_key(),
        Some(k1.id()),
        "restored without the key",
    );
    append(&mut entries, &k2, reroot.to_event(0).encode().unwrap());
    append(&mut entries, &k2, event(5).encode().unwrap());
    let verdict = verify(&entries).unwrap();
    assert_eq!(
        verdict.roots,
        vec![(1, k1.fingerprint()), (4, k2.fingerprint())]
    );
    let old_only = Trust {
        roots: vec![k1.fingerprint()],
        checkpoints: vec![],
    };
    assert_eq!(
        fault_of(verify_chain(&entries, old_only)),
        (4, Fault::UntrustedRoot)
    );
    let both = Trust {
        roots: vec![k1.fingerprint(), k2.fingerprint()],
        checkpoints: vec![],
    };
    assert!(verify_chain(&entries, both).unwrap().root_pinned);
    // The old key signs nothing after the re-root.
    append(&mut entries, &k1, event(6).encode().unwrap());
    assert_eq!(fault_of(verify(&entries)), (6, Fault::ExpiredKey));
}

#[test]
fn weak_keys_cannot_be_introduced() {
    let s = signer(1);
    // The identity point: a small-order key that anyone can "sign" for.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut entries = chain(&s, 2);
    let weak = KeyEvent::new(KeyAction::Rotate, &identity, Some(s.id()), "weak");
    append(&mut entries, &s, weak.to_event(0).encode().unwrap());
    let f = verify(&entries).unwrap_err();
    assert_eq!(f.seq, 3);
    assert!(f.detail.contains("weak"), "{}", f.detail);
}

#[test]
fn a_checkpoint_reveals_tail_truncation() {
    let s = signer(1);
    let entries = chain(&s, 5);
    let checkpoint = s.checkpoint(5, entries[4].entry_hash, 9_000, HERE, &s.fingerprint());
    let kept = |c: &Checkpoint| Trust {
        roots: vec![],
        checkpoints: vec![c.clone()],
    };
    assert_eq!(
        verify_chain(&entries, kept(&checkpoint))
            .unwrap()
            .checkpoints,
        1
    );
    // Without the checkpoint, dropping the last two rows is undetectable...
    assert!(verify(&entries[..3]).is_ok());
    // ...with it, it is named.
    assert_eq!(
        fault_of(verify_chain(&entries[..3], kept(&checkpoint))),
        (5, Fault::Truncated)
    );
}

#[test]
fn a_checkpoint_reveals_a_rewritten_history_and_tells_forks_apart() {
    let s = signer(1);
    let entries = chain(&s, 3);
    let checkpoint = s.checkpoint(2, entries[1].entry_hash, 9_000, HERE, &s.fingerprint());
    let kept = |c: &Checkpoint| Trust {
        roots: vec![],
        checkpoints: vec![c.clone()],
    };
    // The key holder rewrites history from seq 2 on; the old checkpoint disagrees.
    let mut rewritten = entries[..1].to_vec();
    append(&mut rewritten, &s, event(42).encode().unwrap());
    assert_eq!(
        fault_of(verify_chain(&rewritten, kept(&checkpoint))),
        (2, Fault::CheckpointMismatch)
    );
    // Two restores of one backup: each went on with a key of its own on its
    // own timeline. Each fork's checkpoint says which is which.
    let (a, b) = (signer(2), signer(3));
    let fork = |key: &Signer, timeline: u32| {
        let mut log = entries.clone();
        introduce(&mut log, &s, key, KeyAction::Rotate, None);
        let last = log.last().unwrap().clone();
        let context = Context { timeline, ..HERE };
        log.push(key.seal(
            Some((last.seq, last.entry_hash)),
            last.signed_at + 1,
            context,
            event(9).encode().unwrap(),
        ));
        let head = log.last().unwrap();
        let checkpoint =
            key.checkpoint(head.seq, head.entry_hash, 9_999, context, &s.fingerprint());
        (log, checkpoint)
    };
    let ((log_a, cp_a), (_, cp_b)) = (fork(&a, 2), fork(&b, 3));
    assert!(verify_chain(&log_a, kept(&cp_a)).is_ok());
    let f = verify_chain(&log_a, kept(&cp_b)).unwrap_err();
    assert_eq!((f.seq, f.fault), (5, Fault::Forked));
    assert!(
        f.detail.contains("timeline 3") && f.detail.contains("timeline 2"),
        "{}",
        f.detail
    );
    let mut bad = checkpoint;
    bad.signature[5] ^= 1;
    assert_eq!(
        verify_chain(&entries, kept(&bad)).unwrap_err().fault,
        Fault::BadCheckpoint
    );
}

#[test]
fn checkpoints_round_trip_through_json() {
    let s = signer(1);
    let c = s.checkpoint(3, [7; 32], 42, HERE, &s.fingerprint());
    let text = serde_json::to_string(&c).unwrap();
    assert!(text.contains(&hex(&[7; 32])));
    assert!(
        text.contains("\"system_identifier\":\"7000000000000000001\""),
        "{text}"
    );
    assert_eq!(serde_json::from_str::<Checkpoint>(&text).unwrap(), c);
    assert!(c.verify_signature().is_ok());
}

#[test]
fn the_signer_never_shows_its_secret() {
    let s = signer(0xAB);
    let shown = format!("{s:?}");
    assert!(shown.contains(s.id()));
    assert!(!shown.to_lowercase().contains("abab"));
    assert!(s.id().starts_with("ed25519:") && s.id().len() == 8 + 16);
}

#[test]
fn generated_keys_differ() {
    assert_ne!(
        Signer::generate().unwrap().public_key(),
        Signer::generate().unwrap().public_key()
    );
}

#[test]
fn a_stored_copy_is_compared_field_by_field() {
    let signed = event(1);
    assert_eq!(signed.first_difference(&signed.clone()), None);
    // jsonb reorders keys and respells numbers; that is not a difference.
    let respelled = Event {
        metadata: r#"{"sample": 1.0e0, "reason": "archiver failing"}"#.replace("1.0e0", "1"),
        ..signed.clone()
    };
    assert_eq!(signed.first_difference(&respelled), None);
    let changed = Event {
        metadata: r#"{"sample": 2, "reason": "archiver failing"}"#.into(),
        ..signed.clone()
    };
    assert_eq!(signed.first_difference(&changed), Some("metadata"));
    let moved = Event {
        lambda_norm: Some(0.5000000001),
        ..signed.clone()
    };
    assert_eq!(signed.first_difference(&moved), Some("lambda_norm"));
}

mod fuzz {
    //! `Event::decode` on arbitrary and mutated bytes: it never panics, and
    //! whatever it accepts encodes back to the very same bytes.
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z:_.]{1,12}", ".{0,6}"]
    }

    fn finite() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(1.0),
            -1e300..1e300,
            any::<u64>()
                .prop_map(f64::from_bits)
                .prop_filter("finite", |x| x.is_finite())
        ]
    }

    fn events() -> impl Strategy<Value = Event> {
        let edge =
            (text(), text(), text(), finite()).prop_map(|(source, target, kind, capacity)| {
                WitnessEdge {
                    source,
                    target,
                    kind,
                    capacity,
                }
            });
        (
            (
                proptest::option::of(any::<i32>()),
                text(),
                text(),
                proptest::option::of(text()),
                proptest::option::of(text()),
            ),
            (
                proptest::option::of(finite()),
                proptest::option::of(finite()),
                proptest::option::of(finite()),
                prop::collection::vec(edge, 0..4),
                text(),
                any::<i64>(),
            ),
        )
            .prop_map(
                |(
                    (collection_id, collection, event_type, previous_state, new_state),
                    (lambda_cut, lambda_norm, lambda2, witness_edges, metadata, created_at),
                )| Event {
                    collection_id,
                    collection,
                    event_type,
                    previous_state,
                    new_state,
                    lambda_cut,
                    lambda_norm,
                    lambda2,
                    witness_edges,
                    metadata,
                    created_at,
                },
            )
    }

    /// What a tamperer might do to a payload: flip, drop, insert or cut bytes.
    #[derive(Debug, Clone)]
    enum Mutation {
        Flip(usize, u8),
        Remove(usize),
        Insert(usize, u8),
        Truncate(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), 1..=255u8).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
            any::<usize>().prop_map(Mutation::Remove),
            (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
            any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip(at, bits) if !bytes.is_empty() => bytes[at % len] ^= bits,
            Mutation::Remove(at) if !bytes.is_empty() => {
                bytes.remove(at % len);
            }
            Mutation::Insert(at, b) => bytes.insert(at % (bytes.len() + 1), b),
            Mutation::Truncate(at) => bytes.truncate(at % len),
            _ => {}
        }
    }

    fn decodes_canonically(bytes: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(event) = Event::decode(bytes) {
            prop_assert_eq!(event.encode().unwrap(), bytes);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn every_event_round_trips(e in events()) {
            prop_assert_eq!(Event::decode(&e.encode().unwrap()).unwrap(), e);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            decodes_canonically(&bytes)?;
            let mut payload = b"RVEV\x01".to_vec();
            payload.extend(&bytes);
            decodes_canonically(&payload)?;
        }

        #[test]
        fn mutated_payloads_never_panic(e in events(), mutations in prop::collection::vec(mutation(), 1..4)) {
            let mut bytes = e.encode().unwrap();
            for m in &mutations {
                apply(&mut bytes, m);
            }
            decodes_canonically(&bytes)?;
        }
    }

    #[test]
    fn a_non_finite_number_in_a_payload_is_refused() {
        let mut bytes = event(1).encode().unwrap();
        let lambda_cut = 0.5f64.to_bits().to_be_bytes();
        let at = bytes
            .windows(8)
            .position(|w| w == lambda_cut)
            .expect("λ_cut is in the payload");
        bytes[at..at + 8].copy_from_slice(&f64::NAN.to_bits().to_be_bytes());
        assert_eq!(
            Event::decode(&bytes),
            Err(Error::Audit("payload lambda_cut is NaN".into()))
        );
    }
}

#[test]
fn witness_capacities_survive_a_round_trip_through_json_text_exactly() {
    // The database stores witness edges as jsonb and the verifier reads them
    // back as text: every capacity must parse to the very double it was (an
    // IVF list's share of a partition, 0.22822299651567945, did not).
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut capacities = vec![0.22822299651567945, 0.259581881533101, 1e-300, 1.0 / 3.0];
    for _ in 0..10_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        capacities.push((state >> 11) as f64 / (1u64 << 53) as f64);
    }
    for capacity in capacities {
        let edge = WitnessEdge {
            source: "centroid:10".into(),
            target: "partition:public.docs_p0".into(),
            kind: "routing_link".into(),
            capacity,
        };
        let text = serde_json::to_string(&edge).unwrap();
        let back: WitnessEdge = serde_json::from_str(&text).unwrap();
        assert_eq!(back.capacity.to_bits(), capacity.to_bits(), "{text}");
    }
}

/// Appends a payload signed by `signer` on `context`.
fn append_on(entries: &mut Vec<SignedEntry>, signer: &Signer, context: Context, payload: Vec<u8>) {
    let last = entries.last().unwrap();
    let entry = signer.seal(
        Some((last.seq, last.entry_hash)),
        last.signed_at + 1,
        context,
        payload,
    );
    entries.push(entry);
}

fn key_event(action: KeyAction, new: &Signer, previous: &Signer) -> Vec<u8> {
    KeyEvent::new(action, &new.public_key(), Some(previous.id()), "test")
        .to_event(0)
        .encode()
        .unwrap()
}

const PROMOTED: Context = Context {
    system_identifier: HERE.system_identifier,
    timeline: 2,
};

#[test]
fn a_promoted_standby_takes_over_with_the_successor_on_a_later_timeline_only() {
    let (primary, successor, promoted, mallory) = (signer(1), signer(2), signer(3), signer(9));
    let mut entries = chain(&primary, 2);
    // The primary introduces its successor and signs on, under its own key.
    introduce(
        &mut entries,
        &primary,
        &successor,
        KeyAction::Successor,
        None,
    ); // seq 3
    append(&mut entries, &primary, event(4).encode().unwrap()); // seq 4
    let before = entries.clone();
    // Promoted: the successor signs the failover, first on timeline 2.
    let failover = key_event(KeyAction::Failover, &promoted, &primary);
    append_on(&mut entries, &successor, PROMOTED, failover.clone()); // seq 5
    append_on(
        &mut entries,
        &promoted,
        PROMOTED,
        event(6).encode().unwrap(),
    );
    let verdict = verify_chain(
        &entries,
        Trust {
            roots: vec![primary.fingerprint()],
            checkpoints: vec![],
        },
    )
    .unwrap();
    assert_eq!(verdict.current_key.as_deref(), Some(promoted.id()));
    assert_eq!(verdict.roots, vec![(1, primary.fingerprint())]);
    // The successor is used up, and the old key replaced.
    let mut again = entries.clone();
    append_on(&mut again, &successor, PROMOTED, event(7).encode().unwrap());
    assert_eq!(fault_of(verify(&again)), (7, Fault::ExpiredKey));
    let mut old = entries.clone();
    append_on(&mut old, &primary, PROMOTED, event(7).encode().unwrap());
    assert_eq!(fault_of(verify(&old)), (7, Fault::ExpiredKey));

    // Not on a later timeline: refused.
    let mut same = before.clone();
    append(&mut same, &successor, failover.clone());
    assert_eq!(fault_of(verify(&same)), (5, Fault::UnintroducedKey));
    // Another cluster's timeline 2: refused.
    let mut elsewhere = before.clone();
    let other = Context {
        system_identifier: 42,
        timeline: 2,
    };
    append_on(&mut elsewhere, &successor, other, failover.clone());
    assert_eq!(fault_of(verify(&elsewhere)), (5, Fault::UnintroducedKey));
    // Signed by anyone but the successor: refused.
    let mut forged = before.clone();
    append_on(&mut forged, &mallory, PROMOTED, failover.clone());
    assert_eq!(fault_of(verify(&forged)), (5, Fault::UnintroducedKey));
    // The successor signs nothing else.
    let mut misuse = before.clone();
    append(&mut misuse, &successor, event(5).encode().unwrap());
    assert_eq!(fault_of(verify(&misuse)), (5, Fault::UnintroducedKey));
    // A revoked successor takes over nothing.
    let mut revoked = before.clone();
    let rotation = signer(4);
    introduce(
        &mut revoked,
        &primary,
        &rotation,
        KeyAction::Revoke,
        Some(&successor),
    ); // seq 5
    let failover_then = key_event(KeyAction::Failover, &promoted, &rotation);
    append_on(&mut revoked, &successor, PROMOTED, failover_then);
    assert_eq!(fault_of(verify(&revoked)), (6, Fault::RevokedKey));
    // No successor at all.
    let mut none = chain(&primary, 2);
    append_on(&mut none, &successor, PROMOTED, failover.clone());
    assert_eq!(fault_of(verify(&none)), (3, Fault::UnintroducedKey));
    // A successor replaced by a later one takes over nothing.
    let mut replaced = before.clone();
    let next = signer(5);
    introduce(&mut replaced, &primary, &next, KeyAction::Successor, None); // seq 5
    append_on(&mut replaced, &successor, PROMOTED, failover.clone());
    assert_eq!(fault_of(verify(&replaced)), (6, Fault::UnintroducedKey));
    // Nor one whose chain was re-rooted since.
    let mut rerooted = before.clone();
    let root2 = signer(6);
    let reroot = KeyEvent::new(
        KeyAction::Reroot,
        &root2.public_key(),
        Some(primary.id()),
        "",
    );
    append(&mut rerooted, &root2, reroot.to_event(0).encode().unwrap()); // seq 5
    append_on(&mut rerooted, &successor, PROMOTED, failover);
    assert_eq!(fault_of(verify(&rerooted)), (6, Fault::UnintroducedKey));
    // The same successor twice is refused.
    let mut twice = before.clone();
    introduce(&mut twice, &primary, &successor, KeyAction::Successor, None);
    assert_eq!(fault_of(verify(&twice)), (5, Fault::UnusableKey));
}

#[test]
fn the_key_events_name_the_signer_of_a_failover_and_the_current_key() {
    use super::keys::{current, may_take_over, signer_at, successor};
    let (primary, next, promoted) = (signer(1), signer(2), signer(3));
    let k = |action, new: &Signer| KeyEvent::new(action, &new.public_key(), None, "");
    let events = vec![
        (1, k(KeyAction::Root, &primary)),
        (3, k(KeyAction::Successor, &next)),
        (5, k(KeyAction::Failover, &promoted)),
    ];
    assert_eq!(current(&events[..2]).unwrap().key, primary.id());
    assert_eq!(successor(&events[..2]).unwrap().key, next.id());
    assert!(may_take_over(next.id(), &events[..2], HERE, PROMOTED));
    assert!(!may_take_over(next.id(), &events[..2], PROMOTED, PROMOTED));
    assert!(!may_take_over(promoted.id(), &events[..2], HERE, PROMOTED));
    let elsewhere = Context {
        system_identifier: 42,
        timeline: 2,
    };
    assert!(!may_take_over(next.id(), &events[..2], HERE, elsewhere));
    assert_eq!(signer_at(&events, 4).unwrap().key, primary.id());
    assert_eq!(signer_at(&events, 5).unwrap().key, next.id());
    assert_eq!(signer_at(&events, 6).unwrap().key, promoted.id());
    assert!(successor(&events).is_none());
}
