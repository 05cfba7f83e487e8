//! The signed, hash-chained audit trail: verification in the database, tamper
//! detection, the signing key's file and its rotation and revocation.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use ruvector_integrity::audit::export::Export;
use ruvector_integrity::audit::Fault;
use ruvector_tests::*;

fn chain(db: &mut Client) -> Value {
    json(db, "SELECT ruvector_verify_audit_chain()")
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
    let intact =
        Export::parse(&json(&mut db, "SELECT ruvector_audit_export()").to_string()).unwrap();
    assert_eq!(
        intact.verify(None, &[]).unwrap().seq as i64,
        verified["head_seq"].as_i64().unwrap()
    );
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
    let exported = json(&mut db, "SELECT ruvector_audit_export()").to_string();
    let fault = Export::parse(&exported)
        .unwrap()
        .verify(None, &[])
        .unwrap_err();
    assert_eq!((fault.seq as i64, fault.fault), (target, Fault::Modified));
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
fn a_changed_column_and_a_cut_tail_are_caught() {
    let (_cluster, mut db) = cluster_with_docs("truncate", &[]);
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
}

#[test]
fn a_key_file_readable_by_others_is_refused_and_events_wait_unsigned() {
    let cluster = Cluster::start("key-mode", &[]);
    let key = cluster.data_dir().join("ruvector_signing.key");
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
    // Nothing is signed; the events wait, and the history says so.
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
    let signed: i64 = db
        .query_one("SELECT count(*) FROM ruvector.integrity_events", &[])
        .unwrap()
        .get(0);
    assert_eq!(signed, 0);
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
    let key = cluster.data_dir().join("ruvector_signing.key");
    wait_for(15, "the key file", || key.exists().then_some(()));
    let secret = std::fs::read(&key).unwrap();
    assert_eq!(secret.len(), 32);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut db = cluster.client();
    collection(&mut db, "docs", 10);
    wait_for_state(&mut db, "docs", "normal", 30);
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
fn rotation_and_revocation_keep_the_chain_verifiable() {
    let (_cluster, mut db) = cluster_with_docs("rotate", &[]);
    wait_signed(&mut db);
    let first: String = db
        .query_one("SELECT id FROM ruvector.signing_keys", &[])
        .unwrap()
        .get(0);

    db.execute("SELECT ruvector_rotate_signing_key('yearly rotation')", &[])
        .unwrap();
    let second = wait_for(15, "a second key", || {
        db.query_opt(
            "SELECT id FROM ruvector.signing_keys WHERE id <> $1",
            &[&first],
        )
        .unwrap()
        .map(|r| r.get::<_, String>(0))
    });
    let retired: bool = db
        .query_one(
            "SELECT expires_at IS NOT NULL FROM ruvector.signing_keys WHERE id = $1",
            &[&first],
        )
        .unwrap()
        .get(0);
    assert!(retired);
    pin(&mut db, "stress");
    wait_signed(&mut db);
    let signer: String = db
        .query_one(
            "SELECT signer_id FROM ruvector.integrity_events ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(signer, second);
    assert_eq!(chain(&mut db)["ok"], true);

    // Revoking the key in use: the worker moves to a new one before signing again.
    db.execute(
        "SELECT ruvector_revoke_signing_key($1, 'suspected leak')",
        &[&second],
    )
    .unwrap();
    wait_signed(&mut db);
    std::thread::sleep(Duration::from_millis(500));
    let keys: i64 = db
        .query_one("SELECT count(*) FROM ruvector.signing_keys", &[])
        .unwrap()
        .get(0);
    assert_eq!(keys, 3);
    let verified = chain(&mut db);
    assert_eq!(verified["ok"], true, "{verified}");
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
