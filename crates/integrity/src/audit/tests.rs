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

fn trusted(signer: &Signer) -> TrustedKey {
    TrustedKey {
        id: signer.id().to_owned(),
        public_key: signer.public_key().to_vec(),
        expires_at: None,
        revoked_at: None,
    }
}

fn chain(signer: &Signer, len: usize) -> Vec<SignedEntry> {
    let mut entries: Vec<SignedEntry> = Vec::new();
    for i in 0..len {
        let previous = entries.last().map(|e| (e.seq, e.entry_hash));
        entries.push(signer.seal(
            previous,
            1_000 + i as i64,
            event(i as i64).encode().unwrap(),
        ));
    }
    entries
}

fn verify(entries: &[SignedEntry], keys: &[TrustedKey]) -> Result<ChainHead, ChainFault> {
    verify_chain(entries, &KeyRing::new(keys.iter().cloned()), &[])
}

fn fault_of(result: Result<ChainHead, ChainFault>) -> (u64, Fault) {
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
fn an_untouched_chain_verifies_to_its_head() {
    let s = signer(1);
    let entries = chain(&s, 5);
    let head = verify(&entries, &[trusted(&s)]).unwrap();
    assert_eq!(head.seq, 5);
    assert_eq!(head.entry_hash, entries[4].entry_hash);
    assert_eq!(verify(&[], &[]).unwrap().seq, 0);
}

#[test]
fn a_flipped_payload_byte_is_modified() {
    let s = signer(1);
    let mut entries = chain(&s, 5);
    entries[2].payload[20] ^= 1;
    assert_eq!(
        fault_of(verify(&entries, &[trusted(&s)])),
        (3, Fault::Modified)
    );
}

#[test]
fn a_flipped_signature_byte_is_a_bad_signature() {
    let s = signer(1);
    let mut entries = chain(&s, 5);
    entries[3].signature[0] ^= 1;
    assert_eq!(
        fault_of(verify(&entries, &[trusted(&s)])),
        (4, Fault::BadSignature)
    );
    entries[3].signature.truncate(10);
    assert_eq!(
        fault_of(verify(&entries, &[trusted(&s)])),
        (4, Fault::BadSignature)
    );
}

#[test]
fn a_flipped_prev_hash_is_modified_and_a_rehashed_one_is_a_broken_link() {
    let s = signer(1);
    let mut entries = chain(&s, 5);
    entries[1].prev_hash[0] ^= 1;
    assert_eq!(
        fault_of(verify(&entries, &[trusted(&s)])),
        (2, Fault::Modified)
    );
    let e = &mut entries[1];
    e.entry_hash = entry_hash(e.seq, &e.prev_hash, e.signed_at, &e.payload);
    assert_eq!(
        fault_of(verify(&entries, &[trusted(&s)])),
        (2, Fault::BrokenLink)
    );
}

#[test]
fn swapped_rows_are_reordered() {
    let s = signer(1);
    let mut entries = chain(&s, 5);
    entries.swap(1, 2);
    assert_eq!(
        fault_of(verify(&entries, &[trusted(&s)])),
        (3, Fault::Reordered)
    );
}

#[test]
fn a_deleted_middle_row_is_a_gap() {
    let s = signer(1);
    let mut entries = chain(&s, 5);
    entries.remove(2);
    let f = verify(&entries, &[trusted(&s)]).unwrap_err();
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
    assert_eq!(
        fault_of(verify(&entries, &[trusted(&s)])),
        (3, Fault::Modified)
    );
}

#[test]
fn an_entry_signed_by_a_foreign_key_is_refused() {
    let (ours, theirs) = (signer(1), signer(2));
    let mut entries = chain(&ours, 3);
    // A forger re-signs seq 3 with their own key under their own id...
    let forged = theirs.seal(
        Some((2, entries[1].entry_hash)),
        5_000,
        entries[2].payload.clone(),
    );
    entries[2] = forged.clone();
    assert_eq!(
        fault_of(verify(&entries, &[trusted(&ours)])),
        (3, Fault::UnknownKey)
    );
    // ...or claims our id.
    entries[2].signer_id = ours.id().to_owned();
    assert_eq!(
        fault_of(verify(&entries, &[trusted(&ours)])),
        (3, Fault::BadSignature)
    );
}

#[test]
fn weak_and_mismatched_keys_are_unusable() {
    let s = signer(1);
    let entries = chain(&s, 2);
    // The identity point: a small-order key that verify_strict would never trust.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = TrustedKey {
        public_key: identity.to_vec(),
        ..trusted(&s)
    };
    let f = verify(&entries, &[weak]).unwrap_err();
    assert_eq!((f.seq, f.fault), (1, Fault::UnusableKey));
    assert!(f.detail.contains("weak"), "{}", f.detail);
    let other = TrustedKey {
        public_key: signer(9).public_key().to_vec(),
        ..trusted(&s)
    };
    assert!(verify(&entries, &[other])
        .unwrap_err()
        .detail
        .contains("does not match its id"));
}

#[test]
fn a_revoked_key_invalidates_signatures_made_after_revocation_only() {
    let s = signer(1);
    let entries = chain(&s, 4);
    let revoked = |at| TrustedKey {
        revoked_at: Some(at),
        ..trusted(&s)
    };
    assert_eq!(
        fault_of(verify(&entries, &[revoked(1_002)])),
        (3, Fault::RevokedKey)
    );
    assert!(verify(&entries, &[revoked(5_000)]).is_ok());
    let expired = TrustedKey {
        expires_at: Some(1_000),
        ..trusted(&s)
    };
    assert_eq!(
        fault_of(verify(&entries, &[expired])),
        (2, Fault::ExpiredKey)
    );
}

#[test]
fn a_checkpoint_reveals_tail_truncation() {
    let s = signer(1);
    let entries = chain(&s, 5);
    let checkpoint = s.checkpoint(5, entries[4].entry_hash, 9_000);
    let ring = KeyRing::new([trusted(&s)]);
    assert!(verify_chain(&entries, &ring, std::slice::from_ref(&checkpoint)).is_ok());
    // Without the checkpoint, dropping the last two rows is undetectable...
    assert!(verify_chain(&entries[..3], &ring, &[]).is_ok());
    // ...with it, it is named.
    let f = verify_chain(&entries[..3], &ring, &[checkpoint]).unwrap_err();
    assert_eq!((f.seq, f.fault), (5, Fault::Truncated));
}

#[test]
fn a_checkpoint_reveals_a_rewritten_history() {
    let s = signer(1);
    let entries = chain(&s, 3);
    let checkpoint = s.checkpoint(2, entries[1].entry_hash, 9_000);
    // The key holder rewrites history from seq 2 on; the old checkpoint disagrees.
    let mut rewritten = entries[..1].to_vec();
    rewritten.push(s.seal(
        Some((1, entries[0].entry_hash)),
        1_001,
        event(42).encode().unwrap(),
    ));
    let ring = KeyRing::new([trusted(&s)]);
    assert_eq!(
        verify_chain(&rewritten, &ring, std::slice::from_ref(&checkpoint))
            .unwrap_err()
            .fault,
        Fault::CheckpointMismatch
    );
    let mut bad = checkpoint;
    bad.signature[5] ^= 1;
    assert_eq!(
        verify_chain(&entries, &ring, &[bad]).unwrap_err().fault,
        Fault::BadCheckpoint
    );
}

#[test]
fn checkpoints_round_trip_through_json() {
    let s = signer(1);
    let c = s.checkpoint(3, [7; 32], 42);
    let text = serde_json::to_string(&c).unwrap();
    assert!(text.contains(&hex(&[7; 32])));
    assert_eq!(serde_json::from_str::<Checkpoint>(&text).unwrap(), c);
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

#[test]
fn a_single_entry_verifies_on_its_own() {
    let s = signer(1);
    let mut entries = chain(&s, 3);
    let ring = KeyRing::new([trusted(&s)]);
    assert!(verify_entry(&entries[2], &ring).is_ok());
    entries[2].payload[9] ^= 4;
    assert_eq!(
        verify_entry(&entries[2], &ring).unwrap_err().fault,
        Fault::Modified
    );
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
