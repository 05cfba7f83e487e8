//! The signed, hash-chained audit trail: verification in the database and
//! outside it, tamper detection, the trust model (keys introduced by the
//! chain itself, revocation from a seq, a revocation in flight), and the key
//! file.

use std::os::unix::fs::PermissionsExt;

use ruvector_integrity::audit::chain::{Trust, Verdict};
use ruvector_integrity::audit::export::{self, Failure};
use ruvector_integrity::audit::{from_hex_array, Fault, Signer};
use ruvector_tests::*;

fn chain(db: &mut Client) -> Value {
    json(db, "SELECT ruvector_verify_audit_chain()")
}

fn offline(text: &str, trust: Trust) -> Result<Verdict, (u64, Fault)> {
    export::verify(text.as_bytes(), trust).map_err(|f| match f {
        Failure::Chain(f) => (f.seq, f.fault),
        Failure::Unreadable(e) => panic!("unreadable export: {e}"),
    })
}

fn root_of(db: &mut Client) -> [u8; 32] {
    from_hex_array(chain(db)["root_fingerprint"].as_str().unwrap()).unwrap()
}

fn pinned(roots: &[[u8; 32]]) -> Trust {
    Trust {
        roots: roots.to_vec(),
        checkpoints: Vec::new(),
    }
}

/// The signing key the worker of `db`'s database holds now (read as the
/// server's owner would).
fn key_file(cluster: &Cluster, db: &mut Client) -> Signer {
    let bytes = std::fs::read(cluster.key_path(db)).unwrap();
    Signer::from_secret(&bytes.try_into().unwrap())
}

#[test]
fn the_chain_verifies_and_names_the_seq_whose_payload_was_changed() {
    let (_cluster, mut db) = cluster_with_docs("tamper", &[]);
    for state in ["stress", "normal"] {
        pin(&mut db, state);
    }
    wait_signed(&mut db);
    let verified = chain(&mut db);
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(verified["entries"].as_i64().unwrap() >= 4);
    let root = root_of(&mut db);
    let intact = offline(&exported(&mut db), pinned(&[root])).unwrap();
    assert_eq!(
        intact.head.seq as i64,
        verified["head_seq"].as_i64().unwrap()
    );
    assert!(intact.root_pinned);
    let target: i64 = db
        .query_one("SELECT seq FROM ruvector.integrity_events WHERE event_type = 'manual_override' ORDER BY seq LIMIT 1", &[])
        .unwrap()
        .get(0);

    // Even the owner cannot change an event while the triggers stand...
    assert_eq!(
        error(
            &mut db,
            "UPDATE ruvector.integrity_events SET payload = payload"
        )
        .0,
        "42501"
    );
    // ...but the owner can disable them. One flipped payload byte is named.
    db.batch_execute(&format!(
        "ALTER TABLE ruvector.integrity_events DISABLE TRIGGER append_only;
         UPDATE ruvector.integrity_events SET payload = set_byte(payload, 20, get_byte(payload, 20) # 1) WHERE seq = {target};
         ALTER TABLE ruvector.integrity_events ENABLE TRIGGER append_only;"
    ))
    .unwrap();
    let broken = chain(&mut db);
    assert_eq!(broken["ok"], false);
    assert_eq!(broken["first_bad_seq"], target);
    assert_eq!(broken["fault"], "modified");
    // Outside the database, the exported log fails at the same seq.
    assert_eq!(
        offline(&exported(&mut db), pinned(&[root])).unwrap_err(),
        (target as u64, Fault::Modified)
    );
    let verified: Option<bool> = db
        .query_one("SELECT ruvector_verify_event_signature($1)", &[&target])
        .unwrap()
        .get(0);
    assert_eq!(verified, Some(false));
    let intact: Option<bool> = db
        .query_one(
            "SELECT ruvector_verify_event_signature($1)",
            &[&(target - 1)],
        )
        .unwrap()
        .get(0);
    assert_eq!(intact, Some(true));
}

#[test]
fn a_changed_column_a_malformed_row_a_cut_tail_and_a_lost_checkpoint_are_caught() {
    let (cluster, mut db) = cluster_with_docs("truncate", &[]);
    pin(&mut db, "critical");
    wait_signed(&mut db);
    let head: i64 = db
        .query_one("SELECT max(seq) FROM ruvector.integrity_events", &[])
        .unwrap()
        .get(0);
    db.batch_execute("ALTER TABLE ruvector.integrity_events DISABLE TRIGGER append_only")
        .unwrap();

    // A column rewritten without touching the signed bytes.
    db.execute(
        "UPDATE ruvector.integrity_events SET new_state = 'normal' WHERE seq = $1",
        &[&head],
    )
    .unwrap();
    let broken = chain(&mut db);
    assert_eq!(
        (broken["first_bad_seq"].as_i64(), broken["fault"].as_str()),
        (Some(head), Some("modified"))
    );
    assert!(
        broken["detail"].as_str().unwrap().contains("new_state"),
        "{broken}"
    );

    // A malformed row is that seq's fault, not a failure of the verifier (nor
    // of the export or the history).
    db.execute(
        "UPDATE ruvector.integrity_events SET new_state = 'critical', witness_edges = '{\"not\": \"an array\"}' WHERE seq = $1",
        &[&head],
    )
    .unwrap();
    let malformed = chain(&mut db);
    assert_eq!(
        (
            malformed["first_bad_seq"].as_i64(),
            malformed["fault"].as_str()
        ),
        (Some(head), Some("modified")),
        "{malformed}"
    );
    db.query("SELECT * FROM ruvector_integrity_history('docs')", &[])
        .unwrap();
    assert!(
        offline(&exported(&mut db), Trust::default()).is_ok(),
        "the signed bytes are intact"
    );

    // The last row deleted: every remaining row is intact, the checkpoint kept
    // outside the table says the chain was longer.
    db.execute(
        "DELETE FROM ruvector.integrity_events WHERE seq = $1",
        &[&head],
    )
    .unwrap();
    let truncated = chain(&mut db);
    assert_eq!(truncated["fault"], "truncated", "{truncated}");
    assert_eq!(truncated["first_bad_seq"], head);

    // No checkpoint file: the verdict warns that a cut tail would go unseen.
    for file in std::fs::read_dir(cluster.data_dir()).unwrap() {
        let path = file.unwrap().path();
        if path.to_string_lossy().contains("ruvector_audit_checkpoint") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let unwatched = chain(&mut db);
    assert_eq!(unwatched["ok"], true, "{unwatched}");
    assert!(
        unwatched["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("no checkpoint file"),
        "{unwatched}"
    );
}

#[test]
fn a_key_the_chain_never_introduced_fails_in_both_verifiers() {
    let (_cluster, mut db) = cluster_with_docs("rogue-key", &[]);
    wait_signed(&mut db);
    let root = root_of(&mut db);
    // Whoever can write the tables adds a key of their own to the key table
    // and signs an event with it.
    let rogue = Signer::from_secret(&[42; 32]);
    db.execute(
        "INSERT INTO ruvector.signing_keys (id, public_key, description) VALUES ($1, $2, 'mine now')",
        &[&rogue.id(), &rogue.public_key().to_vec()],
    )
    .unwrap();
    let seq = append_forged(&mut db, &rogue, None);
    let verdict = chain(&mut db);
    assert_eq!(
        (verdict["first_bad_seq"].as_i64(), verdict["fault"].as_str()),
        (Some(seq), Some("unintroduced_key")),
        "{verdict}"
    );
    assert_eq!(
        offline(&exported(&mut db), pinned(&[root])).unwrap_err(),
        (seq as u64, Fault::UnintroducedKey)
    );
}

#[test]
fn a_revoked_key_signs_nothing_that_verifies_whatever_its_date() {
    let (cluster, mut db) = cluster_with_docs("revoked", &[]);
    wait_signed(&mut db);
    // The key in use leaks; the operator revokes it.
    let leaked = key_file(&cluster, &mut db);
    let before: i64 = db
        .query_one("SELECT max(seq) FROM ruvector.integrity_events", &[])
        .unwrap()
        .get(0);
    db.execute(
        "SELECT ruvector_revoke_signing_key($1, 'leaked')",
        &[&leaked.id()],
    )
    .unwrap();
    wait_signed(&mut db);
    let row = db
        .query_one(
            "SELECT seq, metadata->>'action' FROM ruvector.integrity_events
             WHERE event_type = 'key_rotation' AND seq > $1 ORDER BY seq LIMIT 1",
            &[&before],
        )
        .unwrap();
    let (revoked_at, action): (i64, String) = (row.get(0), row.get(1));
    assert_eq!(action, "revoke");
    assert_eq!(chain(&mut db)["ok"], true);
    // Its holder appends an event dated before the revocation: refused.
    let seq = append_forged(&mut db, &leaked, Some(1));
    assert!(seq > revoked_at);
    let verdict = chain(&mut db);
    assert_eq!(verdict["first_bad_seq"].as_i64(), Some(seq), "{verdict}");
    assert!(
        ["revoked_key", "backdated"].contains(&verdict["fault"].as_str().unwrap()),
        "{verdict}"
    );
}

#[test]
fn a_revocation_held_open_never_invalidates_what_is_signed_meanwhile() {
    let (cluster, mut db) = cluster_with_docs("revoke-race", &[]);
    wait_signed(&mut db);
    let current = key_file(&cluster, &mut db);
    let mut revoker = cluster.client();
    revoker.batch_execute("BEGIN").unwrap();
    revoker
        .execute(
            "SELECT ruvector_revoke_signing_key($1, 'rotation drill')",
            &[&current.id()],
        )
        .unwrap();
    // States change, and the worker ticks through each, while the
    // revocation is in flight.
    for state in ["stress", "critical", "normal"] {
        pin(&mut db, state);
        wait_worker_tick(&mut db, "docs");
    }
    revoker.batch_execute("COMMIT").unwrap();
    wait_signed(&mut db);
    let verdict = chain(&mut db);
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_ne!(verdict["current_key"], current.id());
}

#[test]
fn a_key_file_readable_by_others_is_refused_and_events_wait_unsigned() {
    let cluster = Cluster::start("key-mode", &[]);
    let key = cluster.key_path(&mut cluster.client());
    wait_for(15, "the key file", || key.exists().then_some(()));
    cluster.stop();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    cluster.pg_ctl_start();
    let mut db = cluster.client();
    collection(&mut db, "docs", 10);
    wait_for_state(&mut db, "docs", "normal", 30);
    let log = wait_for(10, "the refusal in the log", || {
        let log = cluster.log();
        log.contains("refusing the signing key file").then_some(log)
    });
    assert!(
        log.contains("its mode is 0644, readable by others; run chmod 600 on it"),
        "{log}"
    );
    // Nothing more is signed; the events wait, and the history and the status
    // say so.
    let unsigned: i64 = db
        .query_one(
            "SELECT count(*) FROM ruvector_integrity_history('docs') WHERE NOT is_signed",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        unsigned >= 2,
        "register and the first state change wait: {unsigned}"
    );
    let audit = &json(&mut db, "SELECT ruvector_integrity_status('docs')")["worker"]["audit"];
    assert_eq!(audit["signing"], false, "{audit}");
    assert!(audit["reason"]
        .as_str()
        .unwrap()
        .contains("refusing the signing key file"));
    // Fixed and restarted, the worker signs what waited.
    cluster.stop();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    cluster.pg_ctl_start();
    let mut db = cluster.client();
    wait_signed(&mut db);
    assert_eq!(chain(&mut db)["ok"], true);
}

#[test]
fn no_sql_function_or_log_line_shows_the_private_key() {
    let cluster = Cluster::start("secret", &[]);
    let key = cluster.key_path(&mut cluster.client());
    wait_for(15, "the key file", || key.exists().then_some(()));
    let mut db = cluster.client();
    collection(&mut db, "docs", 10);
    wait_for_state(&mut db, "docs", "normal", 30);
    let secret = std::fs::read(&key).unwrap();
    assert_eq!(secret.len(), 32);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let everything: String = db
        .query_one(
            "SELECT concat_ws(' ', (SELECT string_agg(to_jsonb(e)::text, ' ') FROM ruvector.integrity_events e),
                                   (SELECT string_agg(to_jsonb(k)::text, ' ') FROM ruvector.signing_keys k),
                                   ruvector_audit_checkpoint()::text, ruvector_integrity_status('docs')::text,
                                   current_setting('ruvector.signing_key_path'))",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!everything.contains(&hex));
    assert!(!cluster.log().contains(&hex));
}

#[test]
fn rotation_and_restarts_introduce_each_key_in_the_chain() {
    let (cluster, mut db) = cluster_with_docs("rotate", &[]);
    wait_signed(&mut db);
    let root = root_of(&mut db);
    let first = key_file(&cluster, &mut db);
    db.execute("SELECT ruvector_rotate_signing_key('yearly rotation')", &[])
        .unwrap();
    wait_signed(&mut db);
    let second = key_file(&cluster, &mut db);
    assert_ne!(first.id(), second.id());
    pin(&mut db, "stress");
    wait_signed(&mut db);
    let signer: String = db
        .query_one(
            "SELECT signer_id FROM ruvector.integrity_events ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(signer, second.id());
    // A restart moves the worker to a fresh key, introduced by the old one.
    cluster.restart();
    let mut db = cluster.client();
    wait_for(20, "a key for the new run", || {
        (key_file(&cluster, &mut db).id() != second.id()).then_some(())
    });
    pin(&mut db, "normal");
    wait_signed(&mut db);
    let verified = chain(&mut db);
    assert_eq!(verified["ok"], true, "{verified}");
    let verdict = offline(&exported(&mut db), pinned(&[root])).unwrap();
    assert_eq!(
        verdict.current_key.as_deref(),
        Some(key_file(&cluster, &mut db).id())
    );
    let rotations: i64 = db
        .query_one(
            "SELECT count(*) FROM ruvector.integrity_events
             WHERE event_type = 'key_rotation' AND metadata->>'action' <> 'successor'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rotations, 3, "root, the operator's rotation, the restart's");
    let successors: i64 = db
        .query_one(
            "SELECT count(*) FROM ruvector.integrity_events WHERE metadata->>'action' = 'successor'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(successors, 3, "a new successor after each key change");
    let kept: i64 = db
        .query_one("SELECT count(*) FROM ruvector.successor_keys", &[])
        .unwrap()
        .get(0);
    assert_eq!(kept, 1, "the secret of the last one alone");
    let (state, _) = error(
        &mut db,
        "SELECT ruvector_revoke_signing_key('ed25519:0000000000000000', 'typo')",
    );
    assert_eq!(state, "42704");
}

#[test]
fn a_reinstalled_extension_starts_a_new_chain_without_a_false_alarm() {
    let (_cluster, mut db) = cluster_with_docs("reinstall", &[]);
    pin(&mut db, "stress");
    wait_signed(&mut db);
    // The old chain is exported first (DROP EXTENSION waits for that).
    assert!(exported(&mut db).lines().count() > 1);
    db.batch_execute("DROP EXTENSION ruvector CASCADE").unwrap();
    db.batch_execute("CREATE EXTENSION ruvector").unwrap();
    db.batch_execute("SELECT ruvector_register_collection('docs', 'docs', 'embedding')")
        .unwrap();
    wait_for_state(&mut db, "docs", "normal", 30);
    wait_signed(&mut db);
    let verified = chain(&mut db);
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["checkpoint"]["seq"], verified["head_seq"]);
}
