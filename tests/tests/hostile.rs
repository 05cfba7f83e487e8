//! Hostile roles, round three: each test replays an attack an attacker's review
//! of the relation map, the executor gate and the key chain found, with the
//! role it needs, and shows it fails: no ungated write, no silent gap in the
//! trail, no denial of service from a small role. (The solvers' memory attack
//! is in solver.rs, a checkpoint's root in the core's tests/cli.rs.)

use ruvector_tests::*;

/// The gate's counters of `collection`: (operation, decision, count).
fn stats(db: &mut Client, collection: &str) -> Vec<(String, String, i64)> {
    db.query(
        "SELECT operation, decision, count FROM ruvector.integrity_gate_stats
         WHERE collection = $1 ORDER BY 1, 2",
        &[&collection],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// What shared memory says of itself (`ruvector._shared_memory()`).
fn shared_memory(db: &mut Client) -> Value {
    json(db, "SELECT ruvector._shared_memory()")
}

/// The signed audit events of type `event_type`, their metadata, oldest first.
fn events(db: &mut Client, event_type: &str) -> Vec<Value> {
    db.query(
        "SELECT metadata FROM ruvector.integrity_events WHERE event_type = $1 ORDER BY seq",
        &[&event_type],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// A role `owner` (a ruvector_admin) owning a 3-dimensional collection
/// `docs` of two range partitions, sampled to normal; and a client as it.
fn owned_docs(cluster: &Cluster) -> Client {
    cluster
        .client()
        .batch_execute(&format!(
            "CREATE ROLE owner LOGIN IN ROLE ruvector_admin;
             GRANT CREATE ON SCHEMA public TO owner;
             GRANT CREATE ON DATABASE {DATABASE} TO owner;"
        ))
        .unwrap();
    let mut owner = cluster.client_as("owner");
    owner
        .batch_execute(
            "CREATE TABLE docs (id int, embedding real[]) PARTITION BY RANGE (id);
             CREATE TABLE docs_a PARTITION OF docs FOR VALUES FROM (0) TO (100);
             CREATE TABLE docs_b PARTITION OF docs FOR VALUES FROM (100) TO (200);
             INSERT INTO docs SELECT i, ARRAY[i, i + 1, i + 2]::real[] FROM generate_series(0, 199) i;
             SELECT ruvector_register_collection('docs', 'docs', 'embedding', 3);",
        )
        .unwrap();
    wait_for_state(&mut owner, "docs", "normal", 30);
    owner
}

/// Item 2: a table registered while another session's ATTACH PARTITION puts
/// it under a parent. Before, both committed, and COPY, VACUUM FULL, CLUSTER,
/// REINDEX and CREATE INDEX on the parent reached the collection ungated.
#[test]
fn a_registration_waits_for_a_concurrent_attach_and_sees_what_it_did() {
    let cluster = Cluster::start("register-race", &[]);
    let mut db = cluster.client();
    db.batch_execute(
        "CREATE TABLE hub (id int, embedding real[]) PARTITION BY RANGE (id);
         CREATE TABLE vecs (id int, embedding real[]);
         INSERT INTO vecs SELECT i, '{1,2,3}' FROM generate_series(1, 10) i;",
    )
    .unwrap();
    let mut attacher = cluster.client();
    attacher
        .batch_execute("BEGIN; ALTER TABLE hub ATTACH PARTITION vecs FOR VALUES FROM (0) TO (100);")
        .unwrap();
    let mut registrar = cluster.client();
    let pid: i32 = registrar
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let registration = std::thread::spawn(move || {
        registrar
            .batch_execute("SELECT ruvector_register_collection('vecs', 'vecs', 'embedding', 3)")
            .map_err(|e| {
                e.as_db_error()
                    .map(|d| (d.code().code().to_owned(), d.message().to_owned()))
            })
    });
    wait_blocked_on_lock(&mut db, pid);
    attacher.batch_execute("COMMIT").unwrap();
    let (code, message) = registration.join().unwrap().unwrap_err().unwrap();
    assert_eq!(code, "42809", "{message}");
    assert!(message.contains("is a partition"), "{message}");

    // The other way round, the ATTACH waits for the registration and is then
    // refused: the table is a collection's now.
    db.batch_execute(
        "CREATE TABLE vecs2 (id int, embedding real[]);
         CREATE ROLE keeper LOGIN IN ROLE ruvector_admin;
         ALTER TABLE hub OWNER TO keeper; ALTER TABLE vecs2 OWNER TO keeper;",
    )
    .unwrap();
    let mut keeper = cluster.client_as("keeper");
    keeper
        .batch_execute(
            "BEGIN; SELECT ruvector_register_collection('vecs2', 'vecs2', 'embedding', 3);",
        )
        .unwrap();
    let mut attacher = cluster.client_as("keeper");
    let pid: i32 = attacher
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let attach = std::thread::spawn(move || {
        attacher
            .batch_execute("ALTER TABLE hub ATTACH PARTITION vecs2 FOR VALUES FROM (100) TO (200)")
            .map_err(|e| e.as_db_error().map(|d| d.code().code().to_owned()))
    });
    wait_blocked_on_lock(&mut db, pid);
    keeper.batch_execute("COMMIT").unwrap();
    assert_eq!(attach.join().unwrap(), Err(Some("42501".to_owned())));

    // A partition that joins a collection registered before is gated in the
    // transaction that makes it, before that commits. (A review of the
    // three-floor restructuring found it ungated until then.)
    db.batch_execute(
        "CREATE TABLE late (id int, embedding real[]) PARTITION BY RANGE (id);
         CREATE TABLE late_a PARTITION OF late FOR VALUES FROM (0) TO (100);
         SELECT ruvector_register_collection('late', 'late', 'embedding', 3);
         SELECT ruvector_integrity_override('late', 'critical', '1 hour', 'a new partition');",
    )
    .unwrap();
    db.batch_execute(
        "BEGIN; CREATE TABLE late_b PARTITION OF late FOR VALUES FROM (100) TO (200);",
    )
    .unwrap();
    let (code, message) = error(
        &mut db,
        "INSERT INTO late_b SELECT 100 + i, '{1,2,3}' FROM generate_series(1, 50) i",
    );
    assert_eq!(code, "55000", "{message}");
    assert!(message.contains("\"late\""), "{message}");
    db.batch_execute("ROLLBACK").unwrap();
}

/// Item 3: two transactions at the last free entry of shared memory. Before,
/// both passed the check; the loser committed with a WARNING and its
/// collection (or partition) was never gated.
#[test]
fn the_last_free_entry_of_shared_memory_goes_to_one_transaction() {
    let cluster = Cluster::start(
        "capacity",
        &[
            "ruvector.max_collections = 2",
            "ruvector.max_relations = 16",
        ],
    );
    let mut db = cluster.client();
    db.batch_execute(
        "CREATE TABLE a (id int, embedding real[]);
         CREATE TABLE b (id int, embedding real[]);
         CREATE TABLE c (id int, embedding real[]);
         SELECT ruvector_register_collection('a', 'a', 'embedding', 3);",
    )
    .unwrap();
    let mut first = cluster.client();
    first
        .batch_execute("BEGIN; SELECT ruvector_register_collection('b', 'b', 'embedding', 3);")
        .unwrap();
    let (code, message) = error(
        &mut db,
        "SELECT ruvector_register_collection('c', 'c', 'embedding', 3)",
    );
    assert_eq!(code, "53400", "{message}");
    assert!(message.contains("ruvector.max_collections"), "{message}");
    assert_eq!(shared_memory(&mut db)["collections"]["reserved"], 1);
    // A rollback gives the entry back.
    first.batch_execute("ROLLBACK").unwrap();
    assert_eq!(shared_memory(&mut db)["collections"]["reserved"], 0);
    db.batch_execute("SELECT ruvector_register_collection('c', 'c', 'embedding', 3)")
        .unwrap();

    // Relations: two collections' new partitions racing for the last entry.
    db.batch_execute(
        "SELECT ruvector_unregister_collection('a'); SELECT ruvector_unregister_collection('c');
         CREATE TABLE p (id int, embedding real[]) PARTITION BY RANGE (id);
         CREATE TABLE q (id int, embedding real[]) PARTITION BY RANGE (id);",
    )
    .unwrap();
    for i in 0..6 {
        db.batch_execute(&format!(
            "CREATE TABLE p_{i} PARTITION OF p FOR VALUES FROM ({}) TO ({});
             CREATE TABLE q_{i} PARTITION OF q FOR VALUES FROM ({}) TO ({});",
            i * 10,
            i * 10 + 10,
            i * 10,
            i * 10 + 10
        ))
        .unwrap();
    }
    db.batch_execute(
        "SELECT ruvector_register_collection('p', 'p', 'embedding', 3);
         SELECT ruvector_register_collection('q', 'q', 'embedding', 3);",
    )
    .unwrap();
    let used = shared_memory(&mut db)["relations"]["used"]
        .as_i64()
        .unwrap();
    assert_eq!(used, 14, "two roots and twelve partitions");
    execute_each(
        &mut db,
        "CREATE TABLE p_6 PARTITION OF p FOR VALUES FROM (60) TO (70);",
    );
    let mut first = cluster.client();
    first
        .batch_execute("BEGIN; CREATE TABLE p_7 PARTITION OF p FOR VALUES FROM (70) TO (80);")
        .unwrap();
    let (code, message) = error(
        &mut db,
        "CREATE TABLE q_6 PARTITION OF q FOR VALUES FROM (60) TO (70)",
    );
    assert_eq!(code, "53400", "{message}");
    assert!(message.contains("ruvector.max_relations"), "{message}");
    first.batch_execute("COMMIT").unwrap();
    assert_eq!(shared_memory(&mut db)["relations"]["used"], 16);
    assert_eq!(shared_memory(&mut db)["relations"]["reserved"], 0);
    assert!(!cluster.log().contains("relation map is full"));
}

/// Item 4: a foreign partition re-pointed through statements whose keyword is
/// not FOREIGN TABLE. Before, each went through with no refusal and no event.
#[test]
fn a_foreign_partition_is_not_repointed_by_any_keyword() {
    let cluster = Cluster::start("repoint", &[]);
    let mut db = cluster.client();
    db.batch_execute(&format!(
        "CREATE EXTENSION postgres_fdw;
         CREATE ROLE owner LOGIN IN ROLE ruvector_admin;
         GRANT CREATE ON DATABASE {DATABASE} TO owner;
         CREATE SERVER shard FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '1', dbname 'x');
         GRANT USAGE ON FOREIGN SERVER shard TO owner;"
    ))
    .unwrap();
    let mut owner = cluster.client_as("owner");
    owner
        .batch_execute(
            "CREATE SCHEMA far;
             CREATE TABLE far.docs (id int, embedding real[]) PARTITION BY RANGE (id);
             CREATE TABLE far.docs_local PARTITION OF far.docs FOR VALUES FROM (0) TO (100);
             CREATE FOREIGN TABLE far.docs_far PARTITION OF far.docs FOR VALUES FROM (100) TO (200)
                 SERVER shard OPTIONS (table_name 'remote');
             SELECT ruvector_register_collection('docs', 'far.docs', 'embedding', 3);",
        )
        .unwrap();
    for sql in [
        "ALTER TABLE far.docs_far OPTIONS (SET table_name 'elsewhere')",
        "ALTER TABLE far.docs_far ALTER COLUMN embedding OPTIONS (ADD column_name 'other')",
        "ALTER INDEX far.docs_far RENAME TO docs_far2",
        "ALTER SCHEMA far RENAME TO near",
    ] {
        let (code, message) = error(&mut owner, sql);
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(
            message.contains("past its integrity gate"),
            "{sql}: {message}"
        );
    }
    // A superuser's is let through, and written to the trail.
    execute_each(&mut db, "ALTER SCHEMA far RENAME TO near;");
    wait_signed(&mut db);
    let bypasses = events(&mut db, "gate_bypass");
    assert_eq!(
        bypasses.last().unwrap()["action"],
        "ALTER SCHEMA ... RENAME (of a foreign partition's schema)",
        "{bypasses:?}"
    );
}

/// Item 5: rows the gate cannot count. Before, a COPY inside a SQL function
/// (no completion to count), a data-modifying WITH and an attached filled
/// table skipped the batch limit, and a bypassed COPY there was counted as
/// allowed, with no event.
#[test]
fn rows_that_cannot_be_counted_meet_the_strictest_batch_rule() {
    let (cluster, mut db) = cluster_with_docs("uncounted", &[]);
    db.execute(
        "SELECT ruvector_integrity_policy_set('docs', 'default', '{\"normal_actions\": {\"max_insert_batch_size\": 5}}')",
        &[],
    )
    .unwrap();
    let file = cluster.dir.join("rows.csv");
    std::fs::write(&file, "{1,2,3}\n{4,5,6}\n").unwrap();
    db.batch_execute(&format!(
        "CREATE FUNCTION load() RETURNS void LANGUAGE sql AS $$ COPY docs (embedding) FROM '{}' $$;
         CREATE TABLE spare (id bigint NOT NULL, embedding real[]);",
        file.display()
    ))
    .unwrap();
    let before = count_rows(&mut db);
    for sql in [
        "SELECT load()",
        "WITH moved AS (INSERT INTO docs (embedding) VALUES ('{1,2,3}') RETURNING id) SELECT count(*) FROM moved",
    ] {
        let (code, message) = error(&mut db, sql);
        assert_eq!(code, "55000", "{sql}: {message}");
        assert!(message.contains("cannot be counted"), "{sql}: {message}");
    }
    assert_eq!(count_rows(&mut db), before, "nothing half done");
    // Through the bypass: let through, counted as bypassed, and audited.
    db.batch_execute(
        "SET ruvector.integrity_bypass = on; SELECT load(); RESET ruvector.integrity_bypass;",
    )
    .unwrap();
    let counted = stats(&mut db, "docs");
    assert!(
        counted
            .iter()
            .any(|(o, d, n)| o == "bulk_insert" && d == "bypassed" && *n == 1),
        "{counted:?}"
    );
    assert!(
        !counted
            .iter()
            .any(|(o, d, _)| o == "bulk_insert" && d == "allowed"),
        "{counted:?}"
    );
    wait_signed(&mut db);
    assert!(events(&mut db, "gate_bypass")
        .iter()
        .any(|m| m["operations"]["bulk_insert"] == 1));
}

fn count_rows(db: &mut Client) -> i64 {
    db.query_one("SELECT count(*) FROM docs", &[])
        .unwrap()
        .get(0)
}

/// Item 6: a role with no privilege on a collection's table. Before, the
/// hooks decided first: the error named the collection and its state, and
/// the gate's counters counted the attempt.
#[test]
fn a_role_without_privileges_meets_postgresql_not_the_gate() {
    let cluster = Cluster::start("permission-first", &[]);
    let mut owner = owned_docs(&cluster);
    owner
        .batch_execute("SELECT ruvector_integrity_override('docs', 'critical', '1 hour', 'test')")
        .unwrap();
    cluster
        .client()
        .batch_execute(
            "CREATE ROLE nobody LOGIN; SELECT ruvector_integrity_gate_stats_reset('docs');",
        )
        .unwrap();
    let mut nobody = cluster.client_as("nobody");
    for sql in [
        "CREATE INDEX ON docs (id)",
        "REINDEX TABLE docs",
        "CLUSTER docs_a USING docs_a_pkey",
        "TRUNCATE docs",
        "ALTER TABLE docs DETACH PARTITION docs_b",
        "ALTER TABLE docs_a ADD COLUMN extra int DEFAULT random()",
        "DROP TABLE docs_b",
    ] {
        let (code, message) = error(&mut nobody, sql);
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(
            !message.contains("ruvector") && !message.contains("critical"),
            "{sql}: {message}"
        );
    }
    // COPY from the client, and VACUUM FULL (skipped with a WARNING).
    let (code, message) = match nobody.copy_in("COPY docs (id, embedding) FROM STDIN") {
        Err(e) => {
            let d = e.as_db_error().unwrap();
            (d.code().code().to_owned(), d.message().to_owned())
        }
        Ok(_) => panic!("COPY was accepted"),
    };
    assert_eq!(code, "42501", "{message}");
    assert!(!message.contains("ruvector"), "{message}");
    // (A fresh session: the failed COPY left that one's protocol state behind.)
    cluster
        .client_as("nobody")
        .batch_execute("VACUUM FULL docs_a")
        .unwrap();
    assert_eq!(stats(&mut owner, "docs"), Vec::new(), "nothing was counted");
}

/// Item 7: the database's owner sets what the worker's next start applies.
/// Before, `role` made the worker run as a role of the owner's choosing (and
/// every step failed), and `exit_on_error` ended it at its first error.
#[test]
fn the_database_owners_settings_do_not_change_who_the_worker_is() {
    let (cluster, mut db) = cluster_with_docs("worker-identity", &[]);
    db.batch_execute(&format!(
        "CREATE ROLE mallory LOGIN; ALTER DATABASE {DATABASE} OWNER TO mallory;"
    ))
    .unwrap();
    let mut mallory = cluster.client_as("mallory");
    mallory
        .batch_execute(&format!(
            "ALTER DATABASE {DATABASE} SET role = 'mallory';
             ALTER DATABASE {DATABASE} SET exit_on_error = on;"
        ))
        .unwrap();
    // (Sessions opened from now on are mallory's too: `db`, opened before,
    // is the superuser's.)
    let worker =
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'ruvector integrity worker'";
    let old: i32 = db.query_one(worker, &[]).unwrap().get(0);
    db.execute("SELECT pg_terminate_backend($1)", &[&old])
        .unwrap();
    let pid: i32 = wait_for(30, "the worker to restart", || {
        db.query_opt(worker, &[])
            .unwrap()
            .map(|r| r.get::<_, i32>(0))
            .filter(|&p| p != old)
    });
    // It samples, as itself.
    let count = |db: &mut Client| -> i64 {
        json(db, "SELECT ruvector_integrity_status('docs')")["sample_count"]
            .as_i64()
            .unwrap()
    };
    let before = count(&mut db);
    wait_for(30, "samples under the owner's settings", || {
        (count(&mut db) > before + 1).then_some(())
    });
    // An error in one of its steps (a lock it gives up on) ends the step, not
    // the worker.
    let mut holder = cluster.client();
    holder
        .batch_execute(
            "SET ROLE NONE; SET exit_on_error = off;
             BEGIN; LOCK TABLE ruvector.integrity_state IN ACCESS EXCLUSIVE MODE;",
        )
        .unwrap();
    wait_for(30, "a step to fail on the lock", || {
        cluster
            .log()
            .contains("canceling statement due to lock timeout")
            .then_some(())
    });
    holder.batch_execute("COMMIT").unwrap();
    wait_worker_tick(&mut db, "docs");
    let now: i32 = db.query_one(worker, &[]).unwrap().get(0);
    assert_eq!(now, pid, "the worker survived its step's error");
    assert!(!cluster
        .log()
        .contains("permission denied for schema ruvector"));
}

/// Item 9: the gate switched off, and a pending event taken out of the
/// table before the worker signed it. Before, neither left an entry.
#[test]
fn switching_the_gate_off_and_deleting_a_pending_event_leave_entries() {
    let (cluster, mut db) = cluster_with_docs("gaps", &[]);
    wait_signed(&mut db);
    let started = events(&mut db, "audit");
    assert!(
        started.iter().any(|m| m["action"] == "worker_started"
            && m["settings"]["ruvector.integrity_enabled"] == "on"),
        "{started:?}"
    );
    execute_each(
        &mut db,
        "ALTER SYSTEM SET ruvector.integrity_enabled = off;
         SELECT pg_reload_conf();",
    );
    let changed = wait_for(30, "the settings change to be signed", || {
        events(&mut db, "audit")
            .into_iter()
            .find(|m| m["action"] == "settings")
    });
    assert_eq!(
        changed["changed"]["ruvector.integrity_enabled"],
        json!(["on", "off"]),
        "{changed}"
    );
    execute_each(
        &mut db,
        "ALTER SYSTEM RESET ruvector.integrity_enabled;
         SELECT pg_reload_conf();",
    );
    // A restart: the next start says when the worker was last alive.
    cluster.restart();
    let mut db = cluster.client();
    let restarted = wait_for(30, "the worker's start to be signed", || {
        let started: Vec<Value> = events(&mut db, "audit")
            .into_iter()
            .filter(|m| m["action"] == "worker_started")
            .collect();
        (started.len() >= 2).then(|| started.last().unwrap().clone())
    });
    assert!(restarted["last_alive_unix_us"].is_i64(), "{restarted}");

    // session_replication_role = replica no longer switches the append-only
    // trigger off...
    let (code, message) = error(
        &mut db,
        "BEGIN;
         SELECT ruvector_integrity_override('docs', 'stress', '1 hour', 'hidden');
         SET LOCAL session_replication_role = replica;
         DELETE FROM ruvector.pending_events WHERE metadata->>'reason' = 'hidden';",
    );
    assert_eq!(code, "42501", "{message}");
    db.batch_execute("ROLLBACK").unwrap();
    // ...and one taken out with the trigger switched off is recorded missing.
    let id: i64 = {
        let mut tx = db.transaction().unwrap();
        tx.batch_execute(
            "SELECT ruvector_integrity_override('docs', 'critical', '1 hour', 'covered up')",
        )
        .unwrap();
        let id: i64 = tx
            .query_one(
                "SELECT id FROM ruvector.pending_events WHERE metadata->>'reason' = 'covered up'",
                &[],
            )
            .unwrap()
            .get(0);
        tx.batch_execute(
            "ALTER TABLE ruvector.pending_events DISABLE TRIGGER append_only;
             DELETE FROM ruvector.pending_events WHERE metadata->>'reason' = 'covered up';
             ALTER TABLE ruvector.pending_events ENABLE ALWAYS TRIGGER append_only;",
        )
        .unwrap();
        tx.commit().unwrap();
        id
    };
    let alert = wait_for(30, "the vanished event to be recorded", || {
        events(&mut db, "alert")
            .into_iter()
            .find(|m| m["action"] == "pending_events_vanished")
    });
    assert_eq!(alert["ids"], json!([id]), "{alert}");
    assert_eq!(
        json(&mut db, "SELECT ruvector_verify_audit_chain()")["ok"],
        true
    );
}

/// Item 10: a collection's table renamed, and an object planted under its
/// old name. Before, IVF training read the stored name as the caller: the
/// planted view's function ran with the table owner's rights.
#[test]
fn ivf_training_reads_the_collection_by_oid_not_by_its_old_name() {
    let cluster = Cluster::start("stale-name", &[]);
    let mut db = cluster.client();
    db.batch_execute(
        "CREATE ROLE owner LOGIN IN ROLE ruvector_admin; CREATE ROLE mallory LOGIN;
         GRANT CREATE ON SCHEMA public TO owner, mallory;",
    )
    .unwrap();
    let mut owner = cluster.client_as("owner");
    owner
        .batch_execute(
            "CREATE TABLE docs (id int, embedding real[]);
             INSERT INTO docs SELECT i, ARRAY[i % 7, i % 5, i % 3]::real[] FROM generate_series(1, 200) i;
             SELECT ruvector_register_collection('docs', 'docs', 'embedding', 3);
             ALTER TABLE docs RENAME TO docs_renamed;",
        )
        .unwrap();
    // Mallory plants a view under the old name, over a function that leaves
    // a mark no rollback takes back (a sequence's next value) when it runs.
    let mut mallory = cluster.client_as("mallory");
    mallory
        .batch_execute(
            "CREATE SEQUENCE spied; GRANT USAGE ON SEQUENCE spied TO PUBLIC;
             CREATE FUNCTION spy() RETURNS real[] LANGUAGE sql AS
                 $$ SELECT ARRAY[nextval('public.spied'), 2, 3]::real[] $$;
             CREATE VIEW docs AS SELECT 1 AS id, public.spy() AS embedding FROM generate_series(1, 50);
             GRANT SELECT ON docs TO PUBLIC;",
        )
        .unwrap();
    let trained = owner.query_one("SELECT ruvector_ivf_train('docs', 2)", &[]);
    let ran: bool = mallory
        .query_one("SELECT is_called FROM spied", &[])
        .unwrap()
        .get(0);
    assert!(!ran, "the planted view ran with the owner's rights");
    let trained: Value = trained.unwrap().get(0);
    assert_eq!(trained["trained_rows"], 200, "{trained}");
}

/// Item 11: a reader's what-if in a transaction left open. Before, it kept
/// AccessShareLock on the partitions it sampled until the transaction ended,
/// and VACUUM FULL, TRUNCATE and ALTER waited behind it.
#[test]
fn a_what_if_in_an_idle_transaction_holds_no_lock_on_the_collection() {
    let cluster = Cluster::start("idle-what-if", &[]);
    let mut owner = owned_docs(&cluster);
    owner
        .batch_execute("ANALYZE docs; SELECT ruvector_ivf_train('docs', 4);")
        .unwrap();
    cluster
        .client()
        .batch_execute("CREATE ROLE watcher LOGIN IN ROLE ruvector_reader")
        .unwrap();
    let mut watcher = cluster.client_as("watcher");
    watcher
        .batch_execute(
            "BEGIN; SELECT ruvector_integrity_simulate('docs', '{\"shard:primary\": 0.5}');
             SELECT ruvector_integrity_explain('docs');",
        )
        .unwrap();
    let held: i64 = owner
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
             WHERE c.relname IN ('docs', 'docs_a', 'docs_b') AND l.pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(held, 0, "locks held on the collection's relations");
    execute_each(&mut owner, "SET lock_timeout = '5s';\nVACUUM FULL docs_a;");
    watcher.batch_execute("COMMIT").unwrap();
}

/// Items 12 and 13: the gate functions and the admin functions from roles
/// that may not touch the table. Before, a reader without SELECT held a
/// search place to the end of its transaction, and an admin who does not own
/// the table rebuilt its graph (locking its state row), sampled it, and reset
/// its counters.
#[test]
fn asking_the_gate_and_the_admin_functions_need_the_tables_privileges() {
    let cluster = Cluster::start("gate-privileges", &[]);
    let mut owner = owned_docs(&cluster);
    owner
        .batch_execute("SELECT ruvector_integrity_policy_set('docs', 'default', '{\"normal_actions\": {\"max_concurrent_searches\": 1}}')")
        .unwrap();
    cluster
        .client()
        .batch_execute(
            "CREATE ROLE reader LOGIN IN ROLE ruvector_reader;
             CREATE ROLE app LOGIN IN ROLE ruvector_reader; GRANT SELECT ON docs TO app;
             CREATE ROLE other LOGIN IN ROLE ruvector_admin;",
        )
        .unwrap();
    let mut reader = cluster.client_as("reader");
    reader.batch_execute("BEGIN").unwrap();
    for operation in ["search", "insert", "index_build"] {
        let (code, message) = error(
            &mut reader,
            &format!("SELECT ruvector_integrity_allowed('docs', '{operation}')"),
        );
        assert_eq!(code, "42501", "{operation}: {message}");
        reader.batch_execute("ROLLBACK; BEGIN").unwrap();
    }
    reader.batch_execute("ROLLBACK").unwrap();
    // The place the reader could not take is the app's.
    let mut app = cluster.client_as("app");
    app.batch_execute("BEGIN").unwrap();
    let allowed: bool = app
        .query_one("SELECT ruvector_integrity_allowed('docs', 'search')", &[])
        .unwrap()
        .get(0);
    assert!(allowed);
    app.batch_execute("COMMIT").unwrap();

    let mut other = cluster.client_as("other");
    for sql in [
        "SELECT ruvector_rebuild_contracted_graph('docs')",
        "SELECT ruvector_integrity_sample('docs')",
        "SELECT ruvector_integrity_gate_stats_reset('docs')",
    ] {
        let (code, message) = error(&mut other, sql);
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    let reset: i32 = other
        .query_one("SELECT ruvector_integrity_gate_stats_reset()", &[])
        .unwrap()
        .get(0);
    assert_eq!(reset, 0, "none of the collections is theirs");
}

/// Item 14: every DROP of any table, temporary ones too. Before, each took
/// ruvector's one shared-memory lock exclusively and bumped the relation
/// map's version, which also kept the worker from pruning it.
#[test]
fn dropping_tables_that_are_no_collections_leaves_shared_memory_alone() {
    let cluster = Cluster::start("drops", &[]);
    let mut owner = owned_docs(&cluster);
    let version = |db: &mut Client| shared_memory(db)["relations"]["map_version"].clone();
    let before = version(&mut owner);
    for i in 0..20 {
        owner
            .batch_execute(&format!(
                "CREATE TEMP TABLE t{i} (id int); DROP TABLE t{i};
                 CREATE TABLE u{i} (id int); DROP TABLE u{i};"
            ))
            .unwrap();
    }
    assert_eq!(version(&mut owner), before);
    // A collection's partition dropped does change it.
    owner.batch_execute("DROP TABLE docs_b").unwrap();
    assert_ne!(version(&mut owner), before);
}

/// Kilobytes free on the file system that holds `path`.
fn free_kb(path: &std::path::Path) -> u64 {
    let output = std::process::Command::new("df")
        .args(["-Pk"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

/// Item 8: any role fills the NOTIFY queue (a LISTEN held in an idle
/// transaction keeps it from draining). Before, the worker's commit failed
/// outside its error trap: it restarted every few seconds, rotating its key
/// each time, and never committed a state change. The queue holds 8 GB in
/// PostgreSQL 15: this test writes that much into its cluster, for about 40 s.
#[test]
fn a_full_notify_queue_costs_the_notification_not_the_state_change() {
    let (cluster, mut db) = cluster_with_docs("notify-flood", &["ruvector.startup_grace = 0"]);
    if free_kb(&cluster.dir) < 12 * 1024 * 1024 {
        eprintln!("SKIPPED: filling the NOTIFY queue needs 12 GB free next to the test clusters");
        return;
    }
    db.batch_execute("CREATE ROLE mallory LOGIN").unwrap();
    let mut listener = cluster.client_as("mallory");
    // (Each on its own: a LISTEN takes effect when its transaction commits.)
    execute_each(&mut listener, "LISTEN flood;\nBEGIN;\nSELECT 1;");
    let mut mallory = cluster.client_as("mallory");
    let full = (0..120).find_map(|_| {
        mallory
            .batch_execute(
                "SELECT count(pg_notify('flood', repeat('a', 7900) || g)) FROM generate_series(1, 10000) g",
            )
            .err()
    });
    let full = full.expect("the queue never filled");
    let message = full.as_db_error().map(|e| e.message().to_owned());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("too many notifications")),
        "{full:?}"
    );

    let worker =
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'ruvector integrity worker'";
    let pid: i32 = db.query_one(worker, &[]).unwrap().get(0);
    // A fault the worker must act on: an expected standby that is not there.
    execute_each(
        &mut db,
        "ALTER SYSTEM SET ruvector.expected_standbys = 'ghost';
         SELECT pg_reload_conf();",
    );
    wait_for_state(&mut db, "docs", "critical", 60);
    wait_signed(&mut db);
    let changes: i64 = db
        .query_one(
            "SELECT count(*) FROM ruvector.integrity_events WHERE event_type = 'state_change' AND new_state = 'critical'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(changes, 1);
    let now: i32 = db.query_one(worker, &[]).unwrap().get(0);
    assert_eq!(now, pid, "the worker never restarted");
    wait_for(30, "the lost notification to be logged", || {
        let log = cluster.log();
        (log.contains("notifying listeners") && log.contains("too many notifications"))
            .then_some(())
    });
    listener.batch_execute("COMMIT").unwrap();
}
