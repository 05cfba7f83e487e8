//! Crashes, restarts, failing collections, failing archivers, and reloads.

use ruvector_tests::*;

#[test]
fn a_crash_loses_nothing_committed_and_shared_memory_is_refilled() {
    let (cluster, mut db) = cluster_with_docs("crash", &[]);
    pin(&mut db, "critical");
    wait_signed(&mut db);
    let events: i64 = db
        .query_one("SELECT count(*) FROM ruvector.integrity_events", &[])
        .unwrap()
        .get(0);

    // SIGKILL a backend: the postmaster resets shared memory and every process.
    let mut victim = cluster.client();
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    drop(victim);
    cluster.wait_ready(2);
    let mut db = cluster.client();
    assert!(cluster.log().contains("terminated by signal 9"));
    // The worker refills shared memory from the tables: the pin is back.
    wait_for_state(&mut db, "docs", "critical", 30);
    assert_eq!(error(&mut db, "DELETE FROM docs").0, "55000");
    let after: i64 = db
        .query_one("SELECT count(*) FROM ruvector.integrity_events", &[])
        .unwrap()
        .get(0);
    assert!(after >= events);
    assert_eq!(
        json(&mut db, "SELECT ruvector_verify_audit_chain()")["ok"],
        true
    );
}

#[test]
fn an_error_in_one_collection_does_not_stop_the_others() {
    let cluster = Cluster::start("isolation", &[]);
    let mut db = cluster.client();
    collection(&mut db, "healthy", 10);
    collection(&mut db, "doomed", 10);
    wait_for_state(&mut db, "doomed", "normal", 30);
    // Dropping a registered table unregisters it (an event trigger); with the
    // event trigger switched off, the collection is left without a table.
    db.batch_execute(
        "ALTER EVENT TRIGGER ruvector_sql_drop DISABLE; DROP TABLE doomed; ALTER EVENT TRIGGER ruvector_sql_drop ENABLE;",
    )
    .unwrap();
    let status = wait_for(15, "the error to be recorded", || {
        let s = json(&mut db, "SELECT ruvector_integrity_status('doomed')");
        s["last_error"].is_string().then_some(s)
    });
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("no longer exists"),
        "{status}"
    );
    // A hand-edited row that does not decode: its defaults stand in, the
    // worker says so once, and everything else goes on (before, one such row
    // stopped the worker for every collection).
    collection(&mut db, "garbled", 10);
    db.batch_execute(
        "UPDATE ruvector.integrity_state SET controller = '{\"below_high\": \"many\"}'
             WHERE collection_id = (SELECT id FROM ruvector.collections WHERE name = 'garbled');
         UPDATE ruvector.integrity_policies SET hysteresis = '\"none\"'
             WHERE collection_id = (SELECT id FROM ruvector.collections WHERE name = 'garbled');",
    )
    .unwrap();
    // The policy stays broken until it is set again; the controller is
    // rewritten by the next sample, which may come before the worker reads it.
    wait_for(15, "the worker to say what it replaced", || {
        let log = cluster.log();
        let controller = log
            .contains("collection \"garbled\": the stored hysteresis controller does not decode")
            || json(
                &mut db,
                "SELECT controller FROM ruvector.integrity_state s
                    JOIN ruvector.collections c ON c.id = s.collection_id WHERE c.name = 'garbled'",
            )
            .get("below_high")
            .is_some_and(Value::is_u64);
        (controller && log.contains("the stored policy in force does not decode")).then_some(())
    });
    let garbled = json(&mut db, "SELECT ruvector_integrity_status('garbled')");
    assert_eq!(garbled["policy"]["threshold_high"], 0.8, "{garbled}");
    assert_eq!(garbled["enforced"], true, "{garbled}");
    let before = sample_count(&mut db, "healthy");
    wait_for(15, "the healthy collection to keep being sampled", || {
        (sample_count(&mut db, "healthy") >= before + 3).then_some(())
    });
    // Without samples the doomed collection goes stale: high-risk work waits.
    assert!(cluster.log().contains("collection \"doomed\""));
    db.batch_execute("SELECT ruvector_unregister_collection('garbled')")
        .unwrap();
}

#[test]
fn a_failing_wal_archiver_is_stress_and_its_repair_is_recovery() {
    let cluster = Cluster::start(
        "archiver",
        &["archive_mode = on", "archive_command = 'false'"],
    );
    let mut db = cluster.client();
    collection(&mut db, "docs", 10);
    db.execute(
        "SELECT ruvector_integrity_policy_set('docs', 'fast', '{\"hysteresis\": {\"restore_hold_seconds\": 2, \"cooldown_after_transition_seconds\": 1}}')",
        &[],
    )
    .unwrap();
    wait_for_state(&mut db, "docs", "normal", 30);
    db.batch_execute("CREATE TABLE churn AS SELECT generate_series(1, 1000) AS i")
        .unwrap();
    db.batch_execute("SELECT pg_switch_wal()").unwrap();
    wait_for_state(&mut db, "docs", "stress", 40);
    let graph = json(&mut db, "SELECT ruvector_integrity_status('docs')");
    let witness = graph["witness_edges"].to_string();
    assert!(
        witness.contains("wal_archiving"),
        "the failing archiver is the cut: {witness}"
    );
    assert_eq!(graph["lambda_norm"], 0.5);

    db.batch_execute("ALTER SYSTEM SET archive_command = 'true'")
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    // (The archiver retries the failed segment with the new command when the
    // reload wakes it; a new segment is archived after it.)
    db.batch_execute("INSERT INTO churn SELECT generate_series(1, 1000)")
        .unwrap();
    db.batch_execute("SELECT pg_switch_wal()").unwrap();
    wait_for_state(&mut db, "docs", "normal", 60);
}

#[test]
fn a_reload_changes_the_sample_interval_and_a_killed_worker_comes_back() {
    let (cluster, mut db) = cluster_with_docs("reload", &[]);
    db.batch_execute("ALTER SYSTEM SET ruvector.integrity_sample_interval = 3600")
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    // Once a new session sees it, the postmaster has reloaded and signalled
    // the worker, which reloads before its next tick: a tick that began after
    // that runs with the new interval, and the one after it samples nothing.
    wait_for(30, "the reload", || {
        let mut fresh = cluster.client();
        (json(
            &mut fresh,
            "SELECT to_jsonb(current_setting('ruvector.integrity_sample_interval'))",
        ) == "1h")
            .then_some(())
    });
    wait_worker_tick(&mut db, "docs");
    let settled = sample_count(&mut db, "docs");
    wait_worker_tick(&mut db, "docs");
    assert_eq!(
        sample_count(&mut db, "docs"),
        settled,
        "one sample an hour now"
    );

    db.batch_execute("ALTER SYSTEM SET ruvector.integrity_sample_interval = 1")
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    let pid: i32 = db
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'ruvector integrity worker'",
            &[],
        )
        .unwrap()
        .get(0);
    db.batch_execute(&format!("SELECT pg_terminate_backend({pid})"))
        .unwrap();
    let restarted = wait_for(20, "the worker to restart", || {
        db.query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'ruvector integrity worker'",
            &[],
        )
        .unwrap()
        .map(|r| r.get::<_, i32>(0))
        .filter(|&p| p != pid)
    });
    assert_ne!(restarted, pid);
    let before = sample_count(&mut db, "docs");
    wait_for(15, "samples to resume", || {
        (sample_count(&mut db, "docs") > before).then_some(())
    });
}

#[test]
fn a_lock_held_on_its_tables_delays_the_worker_but_does_not_stop_it() {
    let (cluster, mut db) = cluster_with_docs("locked", &[]);
    let mut holder = cluster.client();
    holder
        .batch_execute("BEGIN; LOCK TABLE ruvector.integrity_state IN ACCESS EXCLUSIVE MODE;")
        .unwrap();
    wait_for(30, "the worker to give up on the lock", || {
        cluster
            .log()
            .contains("canceling statement due to lock timeout")
            .then_some(())
    });
    holder.batch_execute("COMMIT").unwrap();
    let before = sample_count(&mut db, "docs");
    wait_for(20, "samples to resume", || {
        (sample_count(&mut db, "docs") > before).then_some(())
    });
}
