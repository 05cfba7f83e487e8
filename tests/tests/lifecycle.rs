//! A collection's life under the worker: first sample, a real degradation the
//! graph builder sees, recovery after the hold, and operator overrides that
//! every session and every listener sees.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use ruvector_tests::*;

#[test]
fn registered_collection_reaches_normal_with_a_signed_first_event() {
    let cluster = Cluster::start("first-sample", &[]);
    let mut db = cluster.client();
    collection(&mut db, "docs", 100);
    wait_for_state(&mut db, "docs", "normal", 30);
    let status = json(&mut db, "SELECT ruvector_integrity_status('docs')");
    assert_eq!(status["lambda_norm"], 1.0);
    assert_eq!(status["stale"], false);
    let first = db
        .query_one(
            "SELECT event_type, previous_state, new_state, is_signed, is_verified
             FROM ruvector_integrity_history('docs', 'state_change') ORDER BY id LIMIT 1",
            &[],
        )
        .unwrap();
    assert_eq!(first.get::<_, String>(0), "state_change");
    assert_eq!(
        first.get::<_, Option<String>>(1).as_deref(),
        Some("unknown")
    );
    assert_eq!(first.get::<_, Option<String>>(2).as_deref(), Some("normal"));
    assert!(first.get::<_, bool>(3));
    assert_eq!(first.get::<_, Option<bool>>(4), Some(true));
    assert_eq!(
        json(&mut db, "SELECT ruvector_verify_audit_chain()")["ok"],
        true
    );
}

/// (sampled_at in µs, lambda_norm, state) of every sample of `name`, oldest first.
fn samples(db: &mut Client, name: &str) -> Vec<(i64, f64, String)> {
    db.query(
        "SELECT (extract(epoch FROM s.sampled_at) * 1000000)::bigint, s.lambda_norm, s.state
         FROM ruvector.integrity_samples s JOIN ruvector.collections c ON c.id = s.collection_id
         WHERE c.name = $1 ORDER BY s.sampled_at",
        &[&name],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[test]
fn dead_tuples_move_the_state_with_exactly_the_policy_sample_counts_and_back_after_the_hold() {
    let cluster = Cluster::start("dead-tuples", &[]);
    let mut db = cluster.client();
    db.batch_execute(
        "CREATE TABLE docs (id bigserial PRIMARY KEY, embedding real[]) WITH (autovacuum_enabled = false);
         INSERT INTO docs (embedding) SELECT ARRAY[i, i, i]::real[] FROM generate_series(1, 5000) i;
         SELECT ruvector_register_collection('docs', 'docs', 'embedding');
         SELECT ruvector_integrity_policy_set('docs', 'fast', '{\"hysteresis\": {\"restore_hold_seconds\": 3, \"cooldown_after_transition_seconds\": 2}}');",
    )
    .unwrap();
    wait_for_state(&mut db, "docs", "normal", 30);
    // Past the cooldown (2 s) of the first transition, by the database's clock.
    wait_for(30, "the first transition's cooldown to pass", || {
        db.query_opt(
            "SELECT 1 FROM ruvector.integrity_state
             WHERE (extract(epoch FROM clock_timestamp()) * 1e6)::bigint - (controller->>'last_transition')::bigint > 2000000",
            &[],
        )
        .unwrap()
    });

    // Two full-table updates leave two dead tuples per live one: bloat.
    db.batch_execute(
        "UPDATE docs SET embedding = embedding; UPDATE docs SET embedding = embedding;",
    )
    .unwrap();
    wait_for_state(&mut db, "docs", "stress", 30);
    let history = samples(&mut db, "docs");
    let first_stress = history.iter().position(|s| s.2 == "stress").unwrap();
    let below: Vec<bool> = history[..=first_stress].iter().map(|s| s.1 < 0.8).collect();
    assert_eq!(
        &below[below.len() - 3..],
        &[true, true, true],
        "{history:?}"
    );
    assert!(
        !below[below.len() - 4],
        "stress after exactly degrade_samples = 3 samples: {history:?}"
    );
    let lambda_norm = history[first_stress].1;
    assert!(
        (0.5..0.8).contains(&lambda_norm),
        "bloat alone is stress, never critical: {lambda_norm}"
    );

    // VACUUM clears the bloat; normal comes back once it has held for 3 s.
    db.batch_execute("VACUUM docs").unwrap();
    wait_for_state(&mut db, "docs", "normal", 30);
    let history = samples(&mut db, "docs");
    let back = history.iter().rposition(|s| s.2 == "stress").unwrap() + 1;
    let healthy_since = history[..back].iter().rposition(|s| s.1 < 0.9).unwrap() + 1;
    let held = history[back].0 - history[healthy_since].0;
    assert!(
        held >= 3_000_000,
        "recovered after holding {held} µs: {history:?}"
    );
    assert!(
        history[back - 1].0 - history[healthy_since].0 < 3_000_000,
        "{history:?}"
    );

    let changes: Vec<(String, String)> = db
        .query(
            "SELECT previous_state, new_state FROM ruvector_integrity_history('docs', 'state_change') ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = [
        ("unknown", "normal"),
        ("normal", "stress"),
        ("stress", "normal"),
    ];
    assert_eq!(changes, expected.map(|(a, b)| (a.to_owned(), b.to_owned())));
    assert_eq!(
        json(&mut db, "SELECT ruvector_verify_audit_chain()")["ok"],
        true
    );
}

#[test]
fn overrides_reach_every_session_and_every_listener() {
    let cluster = Cluster::start("override", &[]);
    let mut admin = cluster.client();
    let mut other = cluster.client();
    let mut listener = cluster.client();
    collection(&mut admin, "docs", 10);
    wait_for_state(&mut admin, "docs", "normal", 30);
    listener.batch_execute("LISTEN ruvector_integrity").unwrap();

    for state in ["stress", "critical"] {
        pin(&mut admin, state);
        // Another session sees it at once: shared memory is updated at commit.
        assert_eq!(ruvector_tests::state(&mut other, "docs"), state);
    }
    admin
        .execute(
            "SELECT ruvector_integrity_override('docs', NULL, reason => 'drill over')",
            &[],
        )
        .unwrap();
    assert_eq!(ruvector_tests::state(&mut other, "docs"), "normal");

    let mut received = Vec::new();
    let mut notifications = listener.notifications();
    let mut iter = notifications.timeout_iter(Duration::from_secs(15));
    while received.len() < 3 {
        let note = iter
            .next()
            .unwrap()
            .expect("three notifications within 15 s");
        received.push(serde_json::from_str::<Value>(note.payload()).unwrap());
    }
    let states: Vec<(&str, &str)> = received
        .iter()
        .map(|n| {
            (
                n["previous_state"].as_str().unwrap(),
                n["new_state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("normal", "stress"),
            ("stress", "critical"),
            ("critical", "normal")
        ]
    );
    for n in &received {
        assert_eq!(n["collection"], "docs");
        assert_eq!(n["event_type"], "manual_override");
        assert!(n["event_seq"].as_i64().unwrap() > 0);
    }
}

#[test]
fn an_override_expires_on_time_and_the_expiry_is_audited() {
    let (_cluster, mut db) = cluster_with_docs("override-ttl", &[]);
    db.execute(
        "SELECT ruvector_integrity_override('docs', 'critical', '2 seconds', 'short drill')",
        &[],
    )
    .unwrap();
    assert_eq!(state(&mut db, "docs"), "critical");
    wait_for_state(&mut db, "docs", "normal", 10);
    let expired = wait_for(10, "the expiry event", || {
        db.query_opt(
            "SELECT metadata->>'state' FROM ruvector.integrity_events WHERE metadata->>'action' = 'expired'",
            &[],
        )
        .unwrap()
        .map(|r| r.get::<_, String>(0))
    });
    assert_eq!(expired, "critical");
}
