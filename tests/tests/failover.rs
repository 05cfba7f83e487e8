//! Failover: a standby promoted with `pg_ctl promote` becomes the primary the
//! integrity plane runs on. Its worker signs on the new timeline under a key
//! the chain's successor introduces (the WAL carries the successor's secret),
//! the root kept aside verifies the chain across both timelines, and an old
//! primary that signs on is a fork a verifier tells apart.

use ruvector_integrity::audit::chain::Trust;
use ruvector_integrity::audit::export::{self, Failure};
use ruvector_integrity::audit::{from_hex_array, Checkpoint, Fault};
use ruvector_tests::*;

fn head(db: &mut Client) -> i64 {
    db.query_one("SELECT max(seq) FROM ruvector.integrity_events", &[])
        .unwrap()
        .get(0)
}

fn audit_note(db: &mut Client) -> Value {
    json(db, "SELECT ruvector_integrity_status('docs')")["worker"]["audit"].clone()
}

fn trusting(root: [u8; 32], checkpoints: Vec<Checkpoint>) -> Trust {
    Trust {
        roots: vec![root],
        checkpoints,
    }
}

/// A primary with collection `docs` and a streaming standby of it, made
/// before the extension exists (the standby has no key file at all) or after
/// (its copy of the key file goes stale at the primary's next rotation).
fn failover(name: &str, kill_the_primary: bool, standby_before_the_extension: bool) {
    let primary =
        Cluster::start_without_extension(&format!("{name}-primary"), &["wal_keep_size = '256MB'"]);
    let standby_of = |primary: &Cluster| {
        let standby = primary.base_backup(&format!("{name}-standby"), &[]);
        standby.pg_ctl_start();
        standby
    };
    let early = standby_before_the_extension.then(|| standby_of(&primary));
    let mut db = primary.client();
    db.batch_execute("CREATE EXTENSION ruvector").unwrap();
    collection(&mut db, "docs", 10);
    wait_for_state(&mut db, "docs", "normal", 30);
    wait_signed(&mut db);
    let standby = early.unwrap_or_else(|| standby_of(&primary));
    let verdict = json(&mut db, "SELECT ruvector_verify_audit_chain()");
    let root = from_hex_array(verdict["root_fingerprint"].as_str().unwrap()).unwrap();
    // The primary goes on after the backup: a new key, and an override.
    db.execute(
        "SELECT ruvector_rotate_signing_key('after the backup')",
        &[],
    )
    .unwrap();
    pin(&mut db, "stress");
    wait_signed(&mut db);
    let before = head(&mut db);
    wait_for(30, "the standby to replay the primary's head", || {
        let mut s = standby.client();
        let seq: Option<i64> = s
            .query_one("SELECT max(seq) FROM ruvector.integrity_events", &[])
            .ok()?
            .get(0);
        (seq == Some(before)).then_some(())
    });

    if kill_the_primary {
        let pid = std::fs::read_to_string(primary.data_dir().join("postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap();
        assert!(std::process::Command::new("kill")
            .args(["-9", pid])
            .status()
            .unwrap()
            .success());
    }
    standby.promote();
    let mut new = standby.client();

    // It takes over: the first entry of timeline 2 is a failover signed by
    // the successor, and its worker signs from there on.
    let note = wait_for(30, "the promoted worker to sign", || {
        Some(audit_note(&mut new)).filter(|n| n["signing"] == true)
    });
    let (timeline, signer): (i32, String) = {
        let row = new
            .query_one(
                "SELECT timeline, signer_id FROM ruvector.integrity_events
                 WHERE event_type = 'key_rotation' AND metadata->>'action' = 'failover'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(timeline, 2, "{note}");
    let successor: String = new
        .query_one(
            "SELECT metadata->>'key' FROM ruvector.integrity_events
             WHERE event_type = 'key_rotation' AND metadata->>'action' = 'successor' AND seq < $1
             ORDER BY seq DESC LIMIT 1",
            &[&before],
        )
        .unwrap()
        .get(0);
    assert_eq!(signer, successor);

    // It samples and gates: the operator's pin ends, the state follows the
    // samples again, and a write goes through.
    new.execute(
        "SELECT ruvector_integrity_override('docs', NULL, reason => 'failed over')",
        &[],
    )
    .unwrap();
    wait_signed(&mut new);
    wait_for_state(&mut new, "docs", "normal", 30);
    new.batch_execute("INSERT INTO docs (embedding) VALUES (ARRAY[1, 2, 3]::real[])")
        .unwrap();

    // The root kept aside verifies the whole chain, across both timelines.
    let timelines: i64 = new
        .query_one(
            "SELECT count(DISTINCT timeline) FROM ruvector.integrity_events",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(timelines, 2);
    let in_database = json(&mut new, "SELECT ruvector_verify_audit_chain()");
    assert_eq!(in_database["ok"], true, "{in_database}");
    let promoted_log = exported(&mut new);
    export::verify(promoted_log.as_bytes(), trusting(root, Vec::new()))
        .unwrap_or_else(|f| panic!("{f:?}"));

    // The successor's secret is for the worker alone: a role that reads all
    // data sees no row of it, a reader is refused.
    new.batch_execute(
        "CREATE ROLE backup LOGIN IN ROLE pg_read_all_data;
         CREATE ROLE watcher LOGIN IN ROLE ruvector_reader;",
    )
    .unwrap();
    let kept: i64 = new
        .query_one("SELECT count(*) FROM ruvector.successor_keys", &[])
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
    let mut backup = standby.client_as("backup");
    let seen: i64 = backup
        .query_one("SELECT count(*) FROM ruvector.successor_keys", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);
    let (state, _) = error(
        &mut standby.client_as("watcher"),
        "SELECT secret FROM ruvector.successor_keys",
    );
    assert_eq!(state, "42501");

    if !kill_the_primary {
        // The old primary signs on: it is a fork, and a verifier given both
        // tells them apart.
        pin(&mut db, "critical");
        wait_signed(&mut db);
        let old: Checkpoint = wait_for(30, "the old primary's checkpoint past the fork", || {
            serde_json::from_value::<Checkpoint>(json(
                &mut db,
                "SELECT ruvector_audit_checkpoint()",
            ))
            .ok()
            .filter(|c| c.seq as i64 > before)
        });
        let old_log = exported(&mut db);
        export::verify(old_log.as_bytes(), trusting(root, Vec::new()))
            .unwrap_or_else(|f| panic!("{f:?}"));
        match export::verify(promoted_log.as_bytes(), trusting(root, vec![old])) {
            Err(Failure::Chain(f)) => assert_eq!(f.fault, Fault::Forked, "{f}"),
            other => panic!("the fork went unseen: {other:?}"),
        }
    }
}

#[test]
fn a_standby_promoted_while_its_primary_runs_on_takes_over_and_the_primary_is_a_fork() {
    failover("failover", false, false);
}

#[test]
fn a_standby_made_before_the_extension_promoted_after_its_primary_was_killed_takes_over() {
    failover("failover-kill", true, true);
}
