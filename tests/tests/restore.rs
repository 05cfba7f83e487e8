//! Dump and restore: a database's collections, policies, states and audit
//! trail go with it, and the cluster it lands in carries on.

use ruvector_integrity::audit::chain::Trust;
use ruvector_integrity::audit::export::{self, Failure};
use ruvector_integrity::audit::{from_hex_array, Checkpoint, Fault};
use ruvector_tests::*;

/// Copies the signing key file of `from`'s database (`db` is connected to
/// it) to the key file of `to`'s database (`to_db` is connected to it: mode
/// 0600, owned by the server's user), as a DBA moving a database would.
fn copy_key(from: &Cluster, db: &mut Client, to: &Cluster, to_db: &mut Client) {
    let key = to.key_path(to_db);
    std::fs::copy(from.key_path(db), &key).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(to.data_dir()).unwrap());
    std::os::unix::fs::chown(&key, Some(owner), None).unwrap();
}

fn events(db: &mut Client) -> i64 {
    db.query_one("SELECT count(*) FROM ruvector.integrity_events", &[])
        .unwrap()
        .get(0)
}

#[test]
fn a_dump_restored_into_another_cluster_keeps_collections_enforcement_and_the_chain() {
    let source = Cluster::start("dump-source", &[]);
    let mut db = source.client();
    // The demo's collection: 20,000 vectors of 64 dimensions in 4 partitions.
    execute_each(
        &mut db,
        "CREATE TABLE docs (id bigint PRIMARY KEY, embedding real[] NOT NULL) PARTITION BY HASH (id);
         CREATE TABLE docs_p0 PARTITION OF docs FOR VALUES WITH (MODULUS 4, REMAINDER 0);
         CREATE TABLE docs_p1 PARTITION OF docs FOR VALUES WITH (MODULUS 4, REMAINDER 1);
         CREATE TABLE docs_p2 PARTITION OF docs FOR VALUES WITH (MODULUS 4, REMAINDER 2);
         CREATE TABLE docs_p3 PARTITION OF docs FOR VALUES WITH (MODULUS 4, REMAINDER 3);
         INSERT INTO docs SELECT i, array(SELECT random()::real FROM generate_series(1, 64) WHERE i > 0)
             FROM generate_series(1, 20000) i;
         SELECT ruvector_register_collection('docs', 'docs', 'embedding', dimensions => 64);
         SELECT ruvector_integrity_policy_set('docs', 'strict', '{\"threshold_high\": 0.9}');",
    );
    wait_for_state(&mut db, "docs", "normal", 30);
    pin(&mut db, "stress");
    wait_signed(&mut db);
    let dumped_events = events(&mut db);
    let dump = source.dir.join("dump.sql");
    source.client_program("pg_dump", &["-f", dump.to_str().unwrap()]);

    // The private key is not in the dump: the DBA copies the key file, so the
    // new cluster's worker can introduce a key of its own with it.
    let target = Cluster::start_without_extension("dump-target", &[]);
    copy_key(&source, &mut db, &target, &mut target.client());
    target.client_program(
        "psql",
        &[
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-f",
            dump.to_str().unwrap(),
        ],
    );
    let mut db = target.client();

    // The collection, its policy and the operator's pin are back, and enforced
    // from the new cluster's worker's first tick on.
    let samples = |db: &mut Client| {
        json(db, "SELECT ruvector_integrity_status('docs')")["sample_count"]
            .as_i64()
            .unwrap()
    };
    let restored = samples(&mut db);
    wait_for(30, "the new cluster's worker to sample", || {
        (samples(&mut db) > restored).then_some(())
    });
    assert_eq!(state(&mut db, "docs"), "stress");
    let status = json(&mut db, "SELECT ruvector_integrity_status('docs')");
    assert_eq!(status["policy"]["name"], "strict");
    let relid: i64 = db
        .query_one(
            "SELECT table_oid::oid::bigint FROM ruvector.collections WHERE name = 'docs'",
            &[],
        )
        .unwrap()
        .get(0);
    let docs: i64 = db
        .query_one("SELECT 'docs'::regclass::oid::bigint", &[])
        .unwrap()
        .get(0);
    assert_eq!(relid, docs, "the registry points at the restored table");
    let (state, _) = error(
        &mut db,
        "INSERT INTO docs SELECT 100000 + i, array_fill(0.5::real, ARRAY[64]) FROM generate_series(1, 10) i",
    );
    assert_eq!(state, "55000");
    let rows: i64 = query_one_retrying(&mut db, "SELECT count(*) FROM docs").get(0);
    assert_eq!(rows, 20000);

    // The restored chain verifies, and this cluster's worker carries it on
    // under a new key, introduced by an audited key event on this cluster.
    assert!(events(&mut db) > dumped_events);
    let row = db
        .query_one(
            "SELECT metadata->>'action', metadata->>'system_identifier' FROM ruvector.integrity_events
             WHERE event_type = 'key_rotation' AND metadata->>'action' <> 'successor'
             ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .unwrap();
    let (action, introduced_on): (String, String) = (row.get(0), row.get(1));
    assert_eq!(action, "rotate");
    let here: String = db
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(introduced_on, here);
    assert_eq!(
        json(&mut db, "SELECT ruvector_verify_audit_chain()")["ok"],
        true
    );
    db.execute(
        "SELECT ruvector_integrity_override('docs', NULL, reason => 'restored')",
        &[],
    )
    .unwrap();
    wait_signed(&mut db);
    assert!(events(&mut db) > dumped_events);
    let verdict = json(&mut db, "SELECT ruvector_verify_audit_chain()");
    assert_eq!(verdict["ok"], true, "{verdict}");
}

fn audit_note(db: &mut Client) -> Value {
    json(db, "SELECT ruvector_integrity_status('docs')")["worker"]["audit"].clone()
}

#[test]
fn a_standby_promoted_after_the_primary_rotated_without_the_successor_does_not_sign() {
    let (primary, mut db) = cluster_with_docs("stale-primary", &[]);
    wait_signed(&mut db);
    let standby = primary.base_backup("stale-standby", &[]);
    standby.pg_ctl_start();
    // The primary moves to a new key after the backup.
    db.execute(
        "SELECT ruvector_rotate_signing_key('after the backup')",
        &[],
    )
    .unwrap();
    wait_signed(&mut db);
    let rotated: i64 = db
        .query_one("SELECT max(seq) FROM ruvector.integrity_events", &[])
        .unwrap()
        .get(0);
    wait_for(30, "the standby to replay the rotation", || {
        let mut s = standby.client();
        let seq: Option<i64> = s
            .query_one("SELECT max(seq) FROM ruvector.integrity_events", &[])
            .ok()?
            .get(0);
        (seq == Some(rotated)).then_some(())
    });
    // Without a successor's secret (deleted by a superuser here), a promoted
    // standby cannot take over (tests/tests/failover.rs).
    db.batch_execute("DELETE FROM ruvector.successor_keys")
        .unwrap();
    wait_for(30, "the standby to replay the deletion", || {
        let kept: i64 = standby
            .client()
            .query_one("SELECT count(*) FROM ruvector.successor_keys", &[])
            .ok()?
            .get(0);
        (kept == 0).then_some(())
    });
    // A hot standby's reads are not searches (nor do they need a transaction id).
    let rows: i64 = standby
        .client()
        .query_one("SELECT count(*) FROM docs", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 10);
    primary.stop();
    standby.promote();
    let mut db = standby.client();
    // Its key file is the one from before the rotation: it does not sign.
    let note = wait_for(30, "the promoted worker to refuse its key", || {
        let note = audit_note(&mut db);
        (note["signing"] == false && note["reason"].is_string()).then_some(note)
    });
    assert!(
        note["reason"]
            .as_str()
            .unwrap()
            .contains("ruvector_reroot_audit_chain"),
        "{note}"
    );
    pin(&mut db, "stress");
    wait_worker_tick(&mut db, "docs");
    let signed_after: i64 = db
        .query_one(
            "SELECT count(*) FROM ruvector.integrity_events WHERE seq > $1",
            &[&rotated],
        )
        .unwrap()
        .get(0);
    assert_eq!(signed_after, 0, "nothing is signed with the stale key");
    // A superuser starts a new root: signing resumes, the chain verifies, and
    // a verifier that kept only the old root is told.
    let old_root: String = json(&mut db, "SELECT ruvector_verify_audit_chain()")
        ["root_fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    db.execute(
        "SELECT ruvector_reroot_audit_chain('promoted after a rotation')",
        &[],
    )
    .unwrap();
    wait_signed(&mut db);
    let verdict = json(&mut db, "SELECT ruvector_verify_audit_chain()");
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(verdict["roots"].as_array().unwrap().len(), 2);
    let new_root = verdict["root_fingerprint"].as_str().unwrap().to_owned();
    let log = exported(&mut db);
    let trust = |roots: &[&str]| Trust {
        roots: roots.iter().map(|r| from_hex_array(r).unwrap()).collect(),
        checkpoints: Vec::new(),
    };
    match export::verify(log.as_bytes(), trust(&[&old_root])) {
        Err(Failure::Chain(f)) => assert_eq!(f.fault, Fault::UntrustedRoot),
        other => panic!("{other:?}"),
    }
    assert!(export::verify(log.as_bytes(), trust(&[&old_root, &new_root])).is_ok());
}

#[test]
fn two_copies_of_one_backup_sign_forks_that_a_verifier_tells_apart() {
    let (primary, mut db) = cluster_with_docs("fork-primary", &[]);
    wait_signed(&mut db);
    let copies = [
        primary.base_backup("fork-a", &[]),
        primary.base_backup("fork-b", &[]),
    ];
    primary.stop();
    let mut checkpoints = Vec::new();
    let mut logs = Vec::new();
    for copy in &copies {
        copy.pg_ctl_start();
        copy.promote();
        let mut db = copy.client();
        pin(&mut db, "critical");
        wait_signed(&mut db);
        let checkpoint: Checkpoint =
            serde_json::from_value(json(&mut db, "SELECT ruvector_audit_checkpoint()")).unwrap();
        checkpoints.push(checkpoint);
        logs.push(exported(&mut db));
    }
    // Each copy went on under a key of its own.
    assert_ne!(checkpoints[0].signer_id, checkpoints[1].signer_id);
    let kept = |i: usize| Trust {
        roots: Vec::new(),
        checkpoints: vec![checkpoints[i].clone()],
    };
    assert!(export::verify(logs[0].as_bytes(), kept(0)).is_ok());
    match export::verify(logs[0].as_bytes(), kept(1)) {
        Err(Failure::Chain(f)) => {
            assert_eq!(f.fault, Fault::Forked, "{f}");
            assert!(f.detail.contains(&checkpoints[1].signer_id), "{f}");
        }
        other => panic!("{other:?}"),
    }
}
