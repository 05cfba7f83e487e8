//! Every database: the launcher keeps one integrity worker per database that
//! has the extension, picks up CREATE and DROP EXTENSION and new databases
//! without a restart, stays within `max_worker_processes`, and steps aside
//! for an owner's DROP DATABASE. Each database's collections, shared memory,
//! signing key and chain are its own.

use ruvector_tests::*;

/// The pid of the integrity worker connected to `database`, if one runs.
fn worker_pid(db: &mut Client, database: &str) -> Option<i32> {
    db.query_opt(
        "SELECT pid FROM pg_stat_activity
         WHERE backend_type = 'ruvector integrity worker' AND datname = $1",
        &[&database],
    )
    .unwrap()
    .map(|r| r.get(0))
}

fn wait_worker(db: &mut Client, database: &str) -> i32 {
    wait_for(30, &format!("a worker on {database}"), || {
        worker_pid(db, database)
    })
}

fn wait_no_worker(db: &mut Client, database: &str) {
    wait_for(30, &format!("no worker on {database}"), || {
        worker_pid(db, database).is_none().then_some(())
    });
}

/// 3,000 8-dimensional vectors in 8 clusters, registered as `docs` with an
/// IVF index of 16 lists trained on them, and a policy quick to recover.
fn ivf_collection(db: &mut Client) {
    execute_each(
        db,
        "CREATE TABLE docs (id bigserial PRIMARY KEY, embedding real[]);
         INSERT INTO docs (embedding)
             SELECT array(SELECT (random() + (g % 8) * 3)::real FROM generate_series(1, 8) WHERE g > 0)
             FROM generate_series(1, 3000) g;
         SELECT ruvector_register_collection('docs', 'docs', 'embedding', dimensions => 8);
         SELECT ruvector_integrity_policy_set('docs', 'fast', '{\"hysteresis\": {\"restore_hold_seconds\": 2, \"cooldown_after_transition_seconds\": 1}}');
         SELECT ruvector_ivf_train('docs', 16);",
    );
}

/// The database named in the root key event of `db`'s chain.
fn root_database(db: &mut Client) -> String {
    db.query_one(
        "SELECT metadata->>'database' FROM ruvector.integrity_events
         WHERE event_type = 'key_rotation' ORDER BY seq LIMIT 1",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn two_databases_each_have_a_worker_and_a_fault_in_one_leaves_the_other_alone() {
    let cluster = Cluster::start("databases", &[]);
    let mut first = cluster.client();
    ivf_collection(&mut first);
    wait_for_state(&mut first, "docs", "normal", 30);

    // A second database, and the extension in it, without a restart.
    first.batch_execute("CREATE DATABASE second").unwrap();
    let mut second = cluster.connect("postgres", "second");
    second.batch_execute("CREATE EXTENSION ruvector").unwrap();
    let second_worker = wait_worker(&mut first, "second");
    let first_worker = wait_worker(&mut first, DATABASE);
    assert_ne!(first_worker, second_worker);
    // Shared memory has an entry for each of them, none for `postgres`
    // (whose worker found no extension and left).
    wait_for(30, "two database entries", || {
        let memory = json(&mut first, "SELECT ruvector._shared_memory()");
        (memory["databases"]["used"] == 2).then_some(())
    });
    assert_eq!(worker_pid(&mut first, "postgres"), None);
    // The same collection name in both: shared memory keeps them apart.
    ivf_collection(&mut second);
    wait_for_state(&mut second, "docs", "normal", 30);

    // The first database's IVF lists drift: stress there, and only there.
    execute_each(
        &mut first,
        "INSERT INTO docs (embedding)
             SELECT array(SELECT (random() + 100)::real FROM generate_series(1, 8) WHERE g > 0)
             FROM generate_series(1, 450) g",
    );
    wait_for_state(&mut first, "docs", "stress", 30);
    let before = sample_count(&mut second, "docs");
    wait_for(30, "two more samples in the second database", || {
        (sample_count(&mut second, "docs") >= before + 2).then_some(())
    });
    assert_eq!(state(&mut second, "docs"), "normal");
    assert_eq!(status(&mut second, "docs")["lambda_norm"], 1.0);

    // Its worker is killed: the other one runs on, and the launcher starts
    // the first one again.
    first
        .execute("SELECT pg_terminate_backend($1)", &[&first_worker])
        .unwrap();
    let restarted = wait_for(30, "the first database's worker back", || {
        worker_pid(&mut first, DATABASE).filter(|&p| p != first_worker)
    });
    assert_ne!(restarted, first_worker);
    assert_eq!(worker_pid(&mut first, "second"), Some(second_worker));

    // Each chain is its own, signed with its own key, and says whose it is.
    wait_signed(&mut first);
    wait_signed(&mut second);
    for (db, name) in [(&mut first, DATABASE), (&mut second, "second")] {
        let verdict = json(db, "SELECT ruvector_verify_audit_chain()");
        assert_eq!(verdict["ok"], true, "{verdict}");
        assert_eq!(root_database(db), name);
    }
    let (first_key, second_key) = (cluster.key_path(&mut first), cluster.key_path(&mut second));
    assert_ne!(first_key, second_key);
    assert!(first_key.exists() && second_key.exists());
    let signer = |db: &mut Client| -> String {
        db.query_one(
            "SELECT signer_id FROM ruvector.integrity_events ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert_ne!(signer(&mut first), signer(&mut second));

    // DROP EXTENSION: the worker leaves; CREATE EXTENSION: it is back.
    second
        .batch_execute("SET ruvector.allow_unexported_drop = on; DROP EXTENSION ruvector CASCADE")
        .unwrap();
    wait_no_worker(&mut first, "second");
    second.batch_execute("CREATE EXTENSION ruvector").unwrap();
    wait_worker(&mut first, "second");
    second
        .batch_execute(
            "SELECT ruvector_register_collection('docs', 'docs', 'embedding', dimensions => 8)",
        )
        .unwrap();

    // A copy of a database with the extension gets its worker too. The
    // copied chain is a fork: its worker does not sign under a key of its
    // own until a superuser starts a new root.
    drop(second);
    first
        .batch_execute("CREATE DATABASE third TEMPLATE second")
        .unwrap();
    wait_worker(&mut first, "third");
    let mut third = cluster.connect("postgres", "third");
    let note = wait_for(30, "the copy's worker to check its key", || {
        Some(
            json(&mut third, "SELECT ruvector_integrity_status('docs')")["worker"]["audit"].clone(),
        )
        .filter(|n| n["signing"] == false && n["reason"].is_string())
    });
    assert!(
        note["reason"]
            .as_str()
            .unwrap()
            .contains("ruvector_reroot_audit_chain"),
        "{note}"
    );
    drop(third);

    // DROP DATABASE by its owner is not kept waiting by the worker.
    wait_worker(&mut first, "second");
    first.batch_execute("DROP DATABASE second").unwrap();
    first.batch_execute("DROP DATABASE third").unwrap();
    // No key outlives its database.
    assert!(!second_key.exists());
    assert_eq!(worker_pid(&mut first, DATABASE), Some(restarted));
}

#[test]
fn workers_stay_within_max_worker_processes_and_say_when_one_cannot_start() {
    // The launcher and one worker: nothing else takes a slot.
    let cluster = Cluster::start(
        "worker-slots",
        &[
            "max_worker_processes = 2",
            "max_logical_replication_workers = 0",
            "max_parallel_workers = 0",
        ],
    );
    let mut first = cluster.client();
    wait_worker(&mut first, DATABASE);
    first.batch_execute("CREATE DATABASE second").unwrap();
    let mut second = cluster.connect("postgres", "second");
    second.batch_execute("CREATE EXTENSION ruvector").unwrap();
    wait_for(30, "the log line", || {
        cluster.log().contains(
            "cannot start the integrity worker of database \"second\": no background worker slot is free (max_worker_processes = 2)",
        ).then_some(())
    });
    assert_eq!(worker_pid(&mut first, "second"), None);

    // A slot frees: the waiting database gets its worker.
    first
        .batch_execute("SET ruvector.allow_unexported_drop = on; DROP EXTENSION ruvector")
        .unwrap();
    wait_worker(&mut second, "second");
    assert_eq!(worker_pid(&mut second, DATABASE), None);
}

#[test]
fn a_role_that_may_not_drop_a_database_cannot_stop_its_worker() {
    let cluster = Cluster::start("vacate", &[]);
    let mut db = cluster.client();
    let worker = wait_worker(&mut db, DATABASE);
    db.batch_execute("CREATE ROLE stranger LOGIN").unwrap();
    let mut stranger = cluster.connect("stranger", "postgres");
    for sql in [
        format!("DROP DATABASE {DATABASE}"),
        format!("ALTER DATABASE {DATABASE} RENAME TO elsewhere"),
        format!("CREATE DATABASE copy TEMPLATE {DATABASE}"),
    ] {
        let (state, _) = error(&mut stranger, &sql);
        assert_eq!(state, "42501", "{sql}");
    }
    // Nor can its owner with a statement PostgreSQL refuses: in a transaction
    // block, in a function, without CREATEDB, or of the database it is in.
    db.batch_execute(&format!(
        "CREATE ROLE owner LOGIN; ALTER DATABASE {DATABASE} OWNER TO owner"
    ))
    .unwrap();
    let mut owner = cluster.connect("owner", "postgres");
    for (sql, expected) in [
        (format!("BEGIN; DROP DATABASE {DATABASE}"), "25001"),
        (
            format!("DO $$ BEGIN EXECUTE 'DROP DATABASE {DATABASE}'; END $$"),
            "25001",
        ),
        (
            format!("ALTER DATABASE {DATABASE} RENAME TO elsewhere"),
            "42501",
        ),
        (format!("CREATE DATABASE copy TEMPLATE {DATABASE}"), "42501"),
    ] {
        let (state, _) = error(&mut owner, &sql);
        assert_eq!(state, expected, "{sql}");
        owner.batch_execute("ROLLBACK").unwrap();
    }
    let mut inside = cluster.connect("owner", DATABASE);
    let (state, _) = error(&mut inside, &format!("DROP DATABASE {DATABASE}"));
    assert_eq!(state, "55006");
    assert_eq!(worker_pid(&mut db, DATABASE), Some(worker));
    assert!(!cluster.log().contains("stopping the integrity worker"));
}

#[test]
fn a_0_2_key_file_goes_to_the_database_0_2_watched_and_to_no_copy() {
    let cluster = Cluster::start("adopt", &["ruvector.integrity_database = 'ruvector_test'"]);
    let mut db = cluster.client();
    collection(&mut db, "docs", 10);
    wait_for_state(&mut db, "docs", "normal", 30);
    wait_signed(&mut db);
    let key = cluster.key_path(&mut db);
    drop(db);
    let mut admin = cluster.connect("postgres", "postgres");
    admin
        .batch_execute(&format!("CREATE DATABASE copy TEMPLATE {DATABASE}"))
        .unwrap();
    let copy_key = cluster.key_path(&mut cluster.connect("postgres", "copy"));

    // 0.2's layout: one key file, named by ruvector.signing_key_path itself,
    // and no other.
    cluster.stop();
    let old = cluster.data_dir().join("ruvector_signing.key");
    std::fs::rename(&key, &old).unwrap();
    let _ = std::fs::remove_file(&copy_key);
    cluster.pg_ctl_start();
    let mut db = cluster.client();
    wait_for(30, "the watched database to take the key", || {
        (key.exists() && !old.exists()).then_some(())
    });
    // Its chain goes on under it, with no new root.
    pin(&mut db, "stress");
    wait_signed(&mut db);
    let verdict = json(&mut db, "SELECT ruvector_verify_audit_chain()");
    assert_eq!(verdict["ok"], true, "{verdict}");
    let reroots: i64 = db
        .query_one(
            "SELECT count(*) FROM ruvector.integrity_events WHERE metadata->>'action' = 'reroot'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(reroots, 0);
    // The copy, whose chain had the same current key, did not take it.
    let mut copy = cluster.connect("postgres", "copy");
    let note = wait_for(30, "the copy's worker to check its key", || {
        Some(json(&mut copy, "SELECT ruvector_integrity_status('docs')")["worker"]["audit"].clone())
            .filter(|n| n["signing"] == false && n["reason"].is_string())
    });
    assert!(
        note["reason"]
            .as_str()
            .unwrap()
            .contains("ruvector_reroot_audit_chain"),
        "{note}"
    );
}
