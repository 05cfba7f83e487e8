//! Installing ruvector in a database other roles use: no privilege escalation
//! through the hooks or the worker, nothing broken for roles without grants,
//! no way for a table owner to move rows past the gate, maintenance that
//! always runs. Each test plays the attacker or the DBA.

use ruvector_tests::*;

fn is_superuser(db: &mut Client, role: &str) -> bool {
    db.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role])
        .unwrap()
        .get(0)
}

fn count(db: &mut Client, sql: &str) -> i64 {
    query_one_retrying(db, sql).get(0)
}

#[test]
fn a_schema_planted_in_another_database_never_runs_as_the_superuser() {
    let cluster = Cluster::start("planted-schema", &[]);
    let mut admin = cluster.client();
    for sql in [
        "CREATE ROLE mallory LOGIN",
        "CREATE DATABASE plain OWNER mallory",
        "CREATE DATABASE early OWNER mallory",
    ] {
        admin.batch_execute(sql).unwrap();
    }
    // The owner of a database without ruvector plants what the old hook looked
    // up by name: a view ruvector.collections over a function that makes its
    // owner superuser when a superuser runs it.
    let mut mallory = cluster.connect("mallory", "plain");
    mallory
        .batch_execute(
            r#"
            CREATE TABLE public.stolen (who name);
            GRANT INSERT ON public.stolen TO PUBLIC;
            CREATE SCHEMA ruvector;
            CREATE FUNCTION ruvector.f() RETURNS TABLE (name text, table_oid oid) LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO public.stolen VALUES (current_user);
                IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
                    ALTER ROLE mallory SUPERUSER;
                END IF;
                RETURN;
            END $$;
            CREATE VIEW ruvector.collections AS SELECT * FROM ruvector.f();
            CREATE FUNCTION ruvector._install_gate_triggers(integer, text, oid) RETURNS void
                LANGUAGE sql AS $$ INSERT INTO public.stolen VALUES (current_user) $$;
            "#,
        )
        .unwrap();
    // A superuser then does ordinary maintenance there.
    let mut su = cluster.connect("postgres", "plain");
    execute_each(
        &mut su,
        "CREATE TABLE t (id int, v real[]);
         INSERT INTO t SELECT i, '{1}' FROM generate_series(1, 10) i;
         CREATE INDEX t_id ON t (id);
         VACUUM FULL t;
         CLUSTER t USING t_id;
         REINDEX TABLE t;
         ALTER TABLE t ADD PRIMARY KEY (id);
         ALTER TABLE t ALTER COLUMN id TYPE bigint;
         CREATE TABLE p (id int) PARTITION BY RANGE (id);
         CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);
         CREATE TABLE p2 (id int);
         ALTER TABLE p ATTACH PARTITION p2 FOR VALUES FROM (10) TO (20);
         TRUNCATE t;
         DROP TABLE p;",
    );
    let mut copy = su.copy_in("COPY t (id) FROM STDIN").unwrap();
    std::io::Write::write_all(&mut copy, b"1\n2\n").unwrap();
    copy.finish().unwrap();
    assert_eq!(count(&mut su, "SELECT count(*) FROM public.stolen"), 0);
    assert!(!is_superuser(&mut admin, "mallory"));

    // A schema named ruvector made before CREATE EXTENSION is not taken over.
    let mut early = cluster.connect("mallory", "early");
    early.batch_execute("CREATE SCHEMA ruvector").unwrap();
    let mut su = cluster.connect("postgres", "early");
    assert!(su.batch_execute("CREATE EXTENSION ruvector").is_err());
}

#[test]
fn a_planted_operator_and_search_path_never_run_in_the_worker() {
    let (cluster, mut db) = cluster_with_docs("planted-operator", &[]);
    db.batch_execute(&format!(
        "CREATE ROLE mallory LOGIN; ALTER DATABASE {DATABASE} OWNER TO mallory;"
    ))
    .unwrap();
    // The database's owner makes `bigint * interval` (which the worker's
    // queries use) resolve to a function of hers, first in the search path.
    let mut mallory = cluster.client_as("mallory");
    mallory
        .batch_execute(&format!(
            r#"
            CREATE TABLE public.stolen (who name);
            GRANT INSERT ON public.stolen TO PUBLIC;
            CREATE FUNCTION public.times(bigint, interval) RETURNS interval LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO public.stolen VALUES (current_user);
                IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
                    ALTER ROLE mallory SUPERUSER;
                END IF;
                RETURN $2 OPERATOR(pg_catalog.*) $1::float8;
            END $$;
            CREATE OPERATOR public.* (FUNCTION = public.times, LEFTARG = bigint, RIGHTARG = interval);
            ALTER DATABASE {DATABASE} SET search_path = public, pg_catalog;
            "#
        ))
        .unwrap();
    // The worker picks the database's settings up when it (re)connects.
    let worker = |db: &mut Client| -> Option<i32> {
        db.query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'ruvector integrity worker'",
            &[],
        )
        .unwrap()
        .map(|r| r.get(0))
    };
    let old = worker(&mut db).unwrap();
    db.execute("SELECT pg_terminate_backend($1)", &[&old])
        .unwrap();
    wait_for(30, "the worker to come back", || {
        worker(&mut db).filter(|&p| p != old)
    });
    let samples = |db: &mut Client| {
        json(db, "SELECT ruvector_integrity_status('docs')")["sample_count"]
            .as_i64()
            .unwrap()
    };
    let before = samples(&mut db);
    wait_for(30, "three samples by the new worker", || {
        (samples(&mut db) >= before + 3).then_some(())
    });
    pin(&mut db, "stress");
    wait_signed(&mut db);
    assert_eq!(count(&mut db, "SELECT count(*) FROM public.stolen"), 0);
    assert!(!is_superuser(&mut db, "mallory"));
}

/// A reader asks for an explanation with a planted `text = text` first in its
/// search path: the SECURITY DEFINER wrappers run with theirs pinned, so the
/// collection's lookup never calls it as the extension's owner. (With the
/// wrappers' `SET search_path` removed it is called, and makes her superuser.)
#[test]
fn a_readers_planted_operator_never_runs_in_explain() {
    let (cluster, mut db) = cluster_with_docs("planted-explain", &[]);
    db.batch_execute(
        "CREATE ROLE peeker LOGIN IN ROLE ruvector_reader;
         CREATE SCHEMA peeker AUTHORIZATION peeker;",
    )
    .unwrap();
    let mut peeker = cluster.client_as("peeker");
    peeker
        .batch_execute(
            r#"
            CREATE TABLE peeker.stolen (who name);
            GRANT INSERT ON peeker.stolen TO PUBLIC;
            GRANT USAGE ON SCHEMA peeker TO PUBLIC;
            CREATE FUNCTION peeker.eq(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO peeker.stolen VALUES (current_user);
                IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
                    ALTER ROLE peeker SUPERUSER;
                END IF;
                RETURN $1 OPERATOR(pg_catalog.=) $2;
            END $$;
            CREATE OPERATOR peeker.= (FUNCTION = peeker.eq, LEFTARG = text, RIGHTARG = text);
            SET search_path = peeker, public, pg_catalog;
            "#,
        )
        .unwrap();
    let e = json(&mut peeker, "SELECT ruvector_integrity_explain('docs')");
    assert_eq!(e["collection"], "docs", "{e}");
    peeker
        .query_one("SELECT ruvector_integrity_explain_text('docs')", &[])
        .unwrap();
    assert_eq!(count(&mut db, "SELECT count(*) FROM peeker.stolen"), 0);
    assert!(!is_superuser(&mut db, "peeker"));
    // A role that is not a reader is refused, wrapper and function alike.
    db.batch_execute("CREATE ROLE stranger LOGIN").unwrap();
    let mut stranger = cluster.client_as("stranger");
    for sql in [
        "SELECT ruvector_integrity_explain('docs')",
        "SELECT ruvector_integrity_explain_text('docs')",
        "SELECT ruvector._integrity_explain('docs')",
        "SELECT ruvector._integrity_explain_text('docs')",
    ] {
        assert_eq!(error(&mut stranger, sql).0, "42501", "{sql}");
    }
}

#[test]
fn a_role_without_grants_keeps_using_the_database() {
    let (cluster, mut db) = cluster_with_docs("no-grants", &[]);
    pin(&mut db, "critical");
    db.batch_execute("CREATE ROLE plain LOGIN; GRANT CREATE ON SCHEMA public TO plain;")
        .unwrap();
    let mut plain = cluster.client_as("plain");
    execute_each(
        &mut plain,
        "CREATE TABLE mine (id int, v real[]);
             INSERT INTO mine SELECT i, '{1,2}' FROM generate_series(1, 100) i;
             CREATE INDEX mine_id ON mine (id);
             VACUUM FULL mine;
             CLUSTER mine USING mine_id;
             REINDEX TABLE mine;
             ALTER TABLE mine ADD PRIMARY KEY (id);
             ALTER TABLE mine ALTER COLUMN v TYPE double precision[];
             CREATE TABLE parts (id int) PARTITION BY RANGE (id);
             CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (10);
             CREATE TABLE parts_2 (id int);
             ALTER TABLE parts ATTACH PARTITION parts_2 FOR VALUES FROM (10) TO (20);
             ALTER TABLE parts DETACH PARTITION parts_2;
             ALTER TABLE mine DISABLE TRIGGER USER;
             UPDATE mine SET v = v;
             DELETE FROM mine WHERE id < 10;
             TRUNCATE mine;
             CREATE UNIQUE INDEX CONCURRENTLY mine_id2 ON mine (id);
             DROP TABLE parts;",
    );
    let mut copy = plain.copy_in("COPY mine (id) FROM STDIN").unwrap();
    std::io::Write::write_all(&mut copy, b"1\n2\n").unwrap();
    copy.finish().unwrap();
    assert_eq!(count(&mut plain, "SELECT count(*) FROM mine"), 2);
    // PostgreSQL's own errors pass through the hooks whole: names, position.
    execute_each(
        &mut plain,
        "CREATE TABLE parent_row (id int PRIMARY KEY);
         CREATE TABLE child_row (id int REFERENCES parent_row);",
    );
    let e = plain
        .batch_execute("INSERT INTO child_row VALUES (1)")
        .unwrap_err();
    let e = e.as_db_error().unwrap();
    assert_eq!(e.code().code(), "23503");
    assert_eq!(e.table(), Some("child_row"));
    assert_eq!(e.constraint(), Some("child_row_id_fkey"));
    let e = plain
        .batch_execute("CREATE TABLE y (a nonexistent_type)")
        .unwrap_err();
    assert!(e.as_db_error().unwrap().position().is_some(), "{e:?}");
}

/// Collections owned by `owner` (a ruvector_admin who is not a superuser):
/// `docs`, partitioned, and `flat`, a plain table; and tables `loose` and
/// `spare` of the same shape.
fn owned_collection(cluster: &Cluster) -> Client {
    let mut db = cluster.client();
    db.batch_execute(&format!(
        "CREATE ROLE owner LOGIN IN ROLE ruvector_admin; GRANT CREATE ON SCHEMA public TO owner;
         GRANT CREATE ON DATABASE {DATABASE} TO owner;"
    ))
    .unwrap();
    let mut owner = cluster.client_as("owner");
    owner
        .batch_execute(
            "CREATE TABLE docs (id int, embedding real[]) PARTITION BY RANGE (id);
             CREATE TABLE docs_a PARTITION OF docs FOR VALUES FROM (0) TO (100);
             CREATE TABLE docs_b PARTITION OF docs FOR VALUES FROM (100) TO (200);
             INSERT INTO docs SELECT i, '{1,2,3}' FROM generate_series(0, 199) i;
             CREATE TABLE loose (id int, embedding real[]);
             CREATE TABLE spare (id int, embedding real[]);
             CREATE TABLE flat (id int, embedding real[]);
             SELECT ruvector_register_collection('docs', 'docs', 'embedding', 3);
             SELECT ruvector_register_collection('flat', 'flat', 'embedding', 3);",
        )
        .unwrap();
    wait_for_state(&mut owner, "docs", "normal", 30);
    owner
}

#[test]
fn a_table_owner_cannot_move_rows_past_the_gate_and_a_superusers_bypass_is_audited() {
    let cluster = Cluster::start("bypass", &[]);
    let mut owner = owned_collection(&cluster);
    let mut db = cluster.client();
    owner
        .batch_execute(
            "CREATE INDEX docs_a_id ON docs_a (id); ALTER TABLE docs_a CLUSTER ON docs_a_id;",
        )
        .unwrap();
    pin(&mut db, "critical");

    // There are no triggers to switch off: the gate is a hook.
    owner
        .batch_execute(
            "ALTER TABLE docs DISABLE TRIGGER USER; ALTER TABLE docs_a DISABLE TRIGGER ALL",
        )
        .unwrap();
    let (state, _) = error(
        &mut owner,
        "INSERT INTO docs SELECT i, '{1,2,3}' FROM generate_series(0, 9) i",
    );
    assert_eq!(state, "55000");
    let (state, _) = error(&mut owner, "INSERT INTO docs_a VALUES (5, '{1,2,3}')");
    assert_eq!(state, "55000");

    // Moving rows in or out past the gate: a superuser's business.
    for (sql, collection) in [
        ("ALTER TABLE docs DETACH PARTITION docs_b", "docs"),
        ("ALTER TABLE loose INHERIT flat", "flat"),
        ("CREATE TABLE sneaky () INHERITS (flat)", "flat"),
    ] {
        let (state, message) = error(&mut owner, sql);
        assert_eq!(state, "42501", "{sql}: {message}");
        assert!(
            message.contains(&format!("collection \"{collection}\"")),
            "{message}"
        );
    }
    // Nor may a collection's table go under another parent, or turn into a
    // view, or its foreign partitions be re-pointed.
    for sql in [
        "CREATE TABLE outer_p (LIKE flat) PARTITION BY RANGE (id)",
        "CREATE TABLE t_fk (id int PRIMARY KEY)",
        "ALTER TABLE flat ADD COLUMN k int",
    ] {
        owner.batch_execute(sql).unwrap();
    }
    for sql in [
        "ALTER TABLE outer_p ATTACH PARTITION flat FOR VALUES FROM (0) TO (1000)",
        "CREATE RULE \"_RETURN\" AS ON SELECT TO flat DO INSTEAD SELECT * FROM loose",
        // The collection's column swapped or dropped.
        "ALTER TABLE flat RENAME COLUMN embedding TO old_embedding",
        "ALTER TABLE flat DROP COLUMN embedding",
        // Made part of an extension: it would leave pg_dump.
        "CREATE EXTENSION hstore; ALTER EXTENSION hstore ADD TABLE flat",
    ] {
        let (state, message) = error(&mut owner, sql);
        assert_eq!(state, "42501", "{sql}: {message}");
    }
    // Index builds, rewrites and drops of a partition are the gate's to decide.
    for (sql, op) in [
        ("ALTER TABLE docs_a ADD PRIMARY KEY (id)", "index_build"),
        (
            "ALTER TABLE docs ADD CONSTRAINT docs_u UNIQUE (id)",
            "index_build",
        ),
        (
            "ALTER TABLE docs_a ADD COLUMN k serial UNIQUE",
            "index_build",
        ),
        (
            "ALTER TABLE docs_a ALTER COLUMN id TYPE bigint",
            "compaction",
        ),
        ("ALTER TABLE docs_a SET ACCESS METHOD heap", "compaction"),
        ("ALTER TABLE docs_a SET TABLESPACE pg_default", "compaction"),
        ("ALTER TABLE docs_a SET UNLOGGED", "compaction"),
        ("ALTER TABLE docs_a ADD COLUMN r float8 DEFAULT random()", "compaction"),
        ("ALTER TABLE docs_a ADD COLUMN g int GENERATED ALWAYS AS IDENTITY", "compaction"),
        ("ALTER TABLE docs ADD COLUMN s serial", "compaction"),
        ("CLUSTER", "compaction"),
        ("VACUUM FULL", "compaction"),
        ("DROP TABLE docs_b", "bulk_delete"),
        ("DROP OWNED BY owner", "bulk_delete"),
        ("TRUNCATE docs_a", "bulk_delete"),
        ("TRUNCATE docs", "bulk_delete"),
        // Written past the statement's own target: a data-modifying WITH, a rule.
        ("WITH d AS (DELETE FROM docs RETURNING *) SELECT count(*) FROM d", "bulk_delete"),
        ("WITH i AS (INSERT INTO docs SELECT i, '{1,2,3}' FROM generate_series(500, 509) i RETURNING *) UPDATE loose SET id = id WHERE false", "bulk_insert"),
        ("CREATE RULE also_delete AS ON INSERT TO loose DO ALSO DELETE FROM docs WHERE id < 0; INSERT INTO loose VALUES (1, '{1}')", "bulk_delete"),
        (
            "ALTER TABLE docs ATTACH PARTITION spare FOR VALUES FROM (200) TO (300)",
            "bulk_insert",
        ),
    ] {
        let (state, message) = error(&mut owner, sql);
        assert_eq!(state, "55000", "{sql}: {message}");
        assert!(
            message.starts_with(&format!("ruvector refused {op} on collection \"docs\"")),
            "{sql}: {message}"
        );
    }
    assert_eq!(count(&mut owner, "SELECT count(*) FROM docs"), 200);
    // A foreign key's TRUNCATE ... CASCADE reaches the collection too.
    execute_each(
        &mut owner,
        "ALTER TABLE flat ADD CONSTRAINT flat_fk FOREIGN KEY (k) REFERENCES t_fk (id);
         INSERT INTO t_fk VALUES (1);",
    );
    pin_collection(&mut db, "flat", "critical");
    let (state, message) = error(&mut owner, "TRUNCATE t_fk CASCADE");
    assert_eq!(state, "55000", "{message}");

    // A superuser may; each such statement is signed into the audit trail.
    execute_each(
        &mut db,
        "ALTER TABLE docs DETACH PARTITION docs_b;
         CREATE TABLE heir (LIKE flat);
         ALTER TABLE heir OWNER TO owner;
         ALTER TABLE heir INHERIT flat;",
    );
    let (state, _) = error(&mut owner, "ALTER TABLE heir NO INHERIT flat");
    assert_eq!(state, "42501");
    wait_signed(&mut db);
    let bypasses: Vec<(String, String)> = db
        .query(
            "SELECT metadata->>'statement', metadata->>'action' FROM ruvector.integrity_events
             WHERE event_type = 'gate_bypass' AND metadata->>'by' = 'postgres' ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        bypasses,
        [
            (
                "ALTER TABLE".to_owned(),
                "ALTER TABLE ... DETACH PARTITION".to_owned()
            ),
            (
                "ALTER TABLE".to_owned(),
                "ALTER TABLE ... INHERIT".to_owned()
            ),
        ]
    );
    assert_eq!(
        json(&mut db, "SELECT ruvector_verify_audit_chain()")["ok"],
        true
    );
    // The detached partition has left the collection: its index builds are free.
    owner.batch_execute("CREATE INDEX ON docs_b (id)").unwrap();
}

#[test]
fn a_foreign_partition_on_another_cluster_is_registered_and_gated() {
    let remote = Cluster::start("fdw-remote", &[]);
    remote
        .client()
        .batch_execute("CREATE TABLE docs_remote (id int, embedding real[]); CREATE TABLE docs_later (id int, embedding real[]);")
        .unwrap();
    let cluster = Cluster::start("fdw-local", &[]);
    let mut db = cluster.client();
    db.batch_execute(&format!(
        "CREATE EXTENSION postgres_fdw;
         CREATE SERVER shard2 FOREIGN DATA WRAPPER postgres_fdw
             OPTIONS (host '127.0.0.1', port '{}', dbname '{DATABASE}');
         CREATE USER MAPPING FOR postgres SERVER shard2 OPTIONS (user 'postgres');
         CREATE TABLE docs (id int, embedding real[]) PARTITION BY RANGE (id);
         CREATE TABLE docs_local PARTITION OF docs FOR VALUES FROM (0) TO (100);
         CREATE FOREIGN TABLE docs_far PARTITION OF docs FOR VALUES FROM (100) TO (200)
             SERVER shard2 OPTIONS (table_name 'docs_remote');
         INSERT INTO docs SELECT i, '{{1,2,3}}' FROM generate_series(90, 109) i;
         SELECT ruvector_register_collection('docs', 'docs', 'embedding');",
        remote.port
    ))
    .unwrap();
    wait_for_state(&mut db, "docs", "normal", 30);
    // Rows routed through the parent to the foreign partition, and rows
    // written to it directly, are gated like any other.
    db.batch_execute("INSERT INTO docs VALUES (150, '{1,2,3}'); INSERT INTO docs_far SELECT i, '{1,2,3}' FROM generate_series(160, 169) i;")
        .unwrap();
    // A foreign table that joins later, created or attached, is gated at once.
    db.batch_execute(
        "CREATE FOREIGN TABLE docs_far2 PARTITION OF docs FOR VALUES FROM (200) TO (300)
             SERVER shard2 OPTIONS (table_name 'docs_later');",
    )
    .unwrap();
    pin(&mut db, "stress");
    for sql in [
        "INSERT INTO docs SELECT i, '{1,2,3}' FROM generate_series(170, 179) i",
        "INSERT INTO docs_far SELECT i, '{1,2,3}' FROM generate_series(180, 189) i",
    ] {
        assert_eq!(error(&mut db, sql).0, "55000", "{sql}");
    }
    assert_eq!(
        error(
            &mut db,
            "INSERT INTO docs_far2 SELECT i, '{1,2,3}' FROM generate_series(200, 209) i"
        )
        .0,
        "55000"
    );
    // A new foreign partition brings the remote table's rows: a bulk insert.
    let (state, message) = error(
        &mut db,
        "CREATE FOREIGN TABLE docs_far3 PARTITION OF docs FOR VALUES FROM (300) TO (400)
             SERVER shard2 OPTIONS (table_name 'docs_remote')",
    );
    assert_eq!(state, "55000", "{message}");
    // Re-pointing a foreign partition is a superuser's bypass, audited.
    execute_each(
        &mut db,
        "ALTER FOREIGN TABLE docs_far2 OPTIONS (SET table_name 'docs_remote');
         ALTER FOREIGN TABLE docs_far2 RENAME TO docs_far_renamed;",
    );
    wait_signed(&mut db);
    let bypasses: Vec<String> = db
        .query(
            "SELECT metadata->>'action' FROM ruvector.integrity_events WHERE event_type = 'gate_bypass' ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        bypasses,
        [
            "ALTER ... OPTIONS (of a foreign partition)",
            "ALTER ... RENAME (of a foreign partition)"
        ]
    );
    let mut remote_db = remote.client();
    assert_eq!(
        count(&mut remote_db, "SELECT count(*) FROM docs_remote"),
        21
    );
    assert_eq!(count(&mut remote_db, "SELECT count(*) FROM docs_later"), 0);
}

#[test]
fn catalog_repair_and_database_wide_sweeps_always_run() {
    let (cluster, mut db) = cluster_with_docs("maintenance", &[]);
    db.batch_execute("CREATE INDEX docs_emb ON docs ((embedding[1]))")
        .unwrap();
    pin(&mut db, "critical");
    assert_eq!(error(&mut db, "REINDEX TABLE docs").0, "55000");
    for sql in [
        format!("REINDEX SYSTEM {DATABASE}"),
        format!("REINDEX DATABASE {DATABASE}"),
        "VACUUM FULL".to_owned(),
        "CLUSTER".to_owned(),
    ] {
        db.batch_execute(&sql).unwrap();
    }
    // Single-user mode, the standard catalog repair: nothing is gated.
    drop(db);
    cluster.stop();
    let output = cluster.single_user(
        DATABASE,
        "REINDEX SYSTEM ruvector_test;\nREINDEX TABLE docs;\nVACUUM FULL docs;\n",
    );
    assert!(!output.contains("ERROR"), "{output}");
}

#[test]
fn the_workers_statement_timeout_ends_a_step_blocked_on_a_lock() {
    // The worker's lock_timeout (500 ms) would end it too, later: the
    // statement timeout must come first.
    let (cluster, _db) = cluster_with_docs(
        "worker-timeout",
        &["ruvector.worker_statement_timeout = 200"],
    );
    let mut holder = cluster.client();
    holder
        .batch_execute("BEGIN; LOCK TABLE ruvector.integrity_state IN ACCESS EXCLUSIVE MODE;")
        .unwrap();
    wait_for(30, "the worker's statement timeout", || {
        cluster
            .log()
            .contains("canceling statement due to statement timeout")
            .then_some(())
    });
    assert!(!cluster
        .log()
        .contains("canceling statement due to lock timeout"));
    holder.batch_execute("COMMIT").unwrap();
}

#[test]
fn prepared_transactions_savepoints_and_search_places_keep_shared_memory_right() {
    let (cluster, mut db) = cluster_with_docs("small-holes", &["max_prepared_transactions = 2"]);

    // A prepared transaction would never reach shared memory: refused whole.
    db.batch_execute("BEGIN").unwrap();
    db.execute(
        "SELECT ruvector_integrity_override('docs', 'critical', '1 hour', 'two-phase')",
        &[],
    )
    .unwrap();
    let (state, message) = error(&mut db, "PREPARE TRANSACTION 'p1'");
    assert_eq!(state, "0A000", "{message}");
    assert_eq!(state_of(&mut db), "normal");
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM ruvector.integrity_state WHERE override_state IS NOT NULL"
        ),
        0
    );

    // A COPY that failed in a savepoint leaves nothing behind: the next
    // single-row INSERT is an insert, not a bulk insert.
    db.execute(
        "SELECT ruvector_integrity_policy_set('docs', 'default', '{\"stress_actions\": {\"throttle_inserts_pct\": 0}}')",
        &[],
    )
    .unwrap();
    db.batch_execute("BEGIN; SAVEPOINT s;").unwrap();
    let mut copy = db.copy_in("COPY docs (embedding) FROM STDIN").unwrap();
    std::io::Write::write_all(&mut copy, b"{1,2,3}\nnot an array\n").unwrap();
    assert!(copy.finish().is_err());
    db.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    pin(&mut cluster.client(), "stress");
    db.batch_execute("INSERT INTO docs (embedding) VALUES ('{1,1,1}'); COMMIT;")
        .unwrap();

    // Searches take their place with one compare-and-swap: racing callers
    // never exceed max_concurrent_searches together.
    db.execute(
        "SELECT ruvector_integrity_policy_set('docs', 'default', '{\"stress_actions\": {\"max_concurrent_searches\": 3}}')",
        &[],
    )
    .unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(12));
    let admitted: usize = (0..12)
        .map(|_| {
            let (barrier, mut c) = (barrier.clone(), cluster.client());
            std::thread::spawn(move || {
                c.batch_execute("BEGIN").unwrap();
                barrier.wait();
                let allowed: bool = c
                    .query_one("SELECT ruvector_integrity_allowed('docs', 'search')", &[])
                    .unwrap()
                    .get(0);
                barrier.wait();
                c.batch_execute("COMMIT").unwrap();
                usize::from(allowed)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert_eq!(admitted, 3);

    // A collection registered again under the same name starts with no
    // searches, whatever its predecessor's sessions still hold.
    let mut holder = cluster.client();
    holder
        .batch_execute("BEGIN; SELECT ruvector_integrity_allowed('docs', 'search');")
        .unwrap();
    db.batch_execute(
        "SELECT ruvector_unregister_collection('docs');
         SELECT ruvector_register_collection('docs', 'docs', 'embedding');
         SELECT ruvector_integrity_policy_set('docs', 'default', '{\"normal_actions\": {\"max_concurrent_searches\": 1}}');",
    )
    .unwrap();
    wait_for_state(&mut db, "docs", "normal", 30);
    holder.batch_execute("COMMIT").unwrap();
    let mut a = cluster.client();
    a.batch_execute("BEGIN").unwrap();
    let first: bool = a
        .query_one("SELECT ruvector_integrity_allowed('docs', 'search')", &[])
        .unwrap()
        .get(0);
    let second: bool = cluster
        .client()
        .query_one("SELECT ruvector_integrity_allowed('docs', 'search')", &[])
        .unwrap()
        .get(0);
    assert_eq!((first, second), (true, false));
    a.batch_execute("COMMIT").unwrap();

    // Pending events are append-only for everyone but the worker (a pending
    // row made in the same transaction, so the worker cannot sign it first).
    for sql in [
        "UPDATE ruvector.pending_events SET event_type = 'alert'",
        "DELETE FROM ruvector.pending_events",
        "TRUNCATE ruvector.pending_events",
    ] {
        db.batch_execute("BEGIN").unwrap();
        db.execute(
            "SELECT ruvector_integrity_override('docs', 'stress', '1 hour', 'keep pending')",
            &[],
        )
        .unwrap();
        let (state, _) = error(&mut db, sql);
        assert_eq!(state, "42501", "{sql}");
        db.batch_execute("ROLLBACK").unwrap();
    }
}

fn pin_collection(db: &mut Client, collection: &str, state: &str) {
    db.execute(
        "SELECT ruvector_integrity_override($1, $2, '1 hour', 'test')",
        &[&collection, &state],
    )
    .unwrap();
}

#[test]
fn registration_never_runs_the_callers_code_as_the_owner_and_keeps_one_collection_per_table() {
    let cluster = Cluster::start("register-checks", &[]);
    let mut owner = owned_collection(&cluster);
    // A type that prints as "vector", with a cast to real[] that makes its
    // caller superuser when a superuser evaluates it. A type with such a cast
    // holds vectors (pgvector's is read the same way), and registration reads
    // the first one through the cast: as the caller, never as the extension's
    // owner, so the escalation fails with the caller's own rights.
    let (state, message) = error(
        &mut owner,
        r#"CREATE TYPE pg_temp.vector AS (a int);
           CREATE FUNCTION pg_temp.esc(v pg_temp.vector) RETURNS real[] LANGUAGE plpgsql AS
               $$BEGIN EXECUTE 'ALTER ROLE owner SUPERUSER'; RETURN '{1,2,3}'; END$$;
           CREATE CAST (pg_temp.vector AS real[]) WITH FUNCTION pg_temp.esc(pg_temp.vector);
           CREATE TABLE evil (id int, embedding pg_temp.vector);
           INSERT INTO evil VALUES (1, ROW(1));
           SELECT ruvector_register_collection('evil', 'evil', 'embedding');"#,
    );
    assert_eq!(state, "42501", "{message}");
    assert!(message.contains("must be superuser"), "{message}");
    let mut db = cluster.client();
    assert!(!is_superuser(&mut db, "owner"));
    // Nor when a superuser registers or trains the owner's table: the cast
    // runs as the table's owner, whoever asks (it would escalate as the
    // caller). Armed only while public.armed exists.
    owner
        .batch_execute(
        "CREATE TYPE lure_vector AS (a int);
         CREATE FUNCTION lure_values(lure_vector) RETURNS real[] LANGUAGE plpgsql AS
             $$BEGIN
                 IF to_regclass('public.armed') IS NOT NULL THEN EXECUTE 'ALTER ROLE owner SUPERUSER'; END IF;
                 RETURN ARRAY[($1).a, 1, 1]::real[];
             END$$;
         CREATE CAST (lure_vector AS real[]) WITH FUNCTION lure_values(lure_vector);
         CREATE TABLE lure (id int, embedding lure_vector);
         INSERT INTO lure SELECT i, ROW(i % 4 * 10)::lure_vector FROM generate_series(1, 40) i;
         CREATE TABLE armed ();",
        )
        .unwrap();
    let (state, message) = error(
        &mut db,
        "SELECT ruvector_register_collection('lure', 'lure', 'embedding')",
    );
    assert_eq!(state, "42501", "{message}");
    assert!(!is_superuser(&mut db, "owner"));
    execute_each(&mut owner, "DROP TABLE armed;");
    db.batch_execute("SELECT ruvector_register_collection('lure', 'lure', 'embedding')")
        .unwrap();
    execute_each(&mut owner, "CREATE TABLE armed ();");
    let (state, message) = error(&mut db, "SELECT ruvector_ivf_train('lure', 2)");
    assert_eq!(state, "42501", "{message}");
    assert!(!is_superuser(&mut db, "owner"));
    // Reading a real[] column to count its dimensions runs as its owner.
    execute_each(
        &mut owner,
        "CREATE TABLE own_vectors (id int, embedding real[]);
         INSERT INTO own_vectors VALUES (1, '{1,2,3,4}');",
    );
    let registered = json(
        &mut owner,
        "SELECT ruvector_register_collection('own', 'own_vectors', 'embedding')",
    );
    assert_eq!(registered["dimensions"], 4);
    // One collection per table; never a partition, a child or a parent of
    // inheritance, whose rows would reach the table past its gate.
    execute_each(
        &mut owner,
        "ALTER TABLE docs ADD COLUMN other real[];
         CREATE TABLE ih (id int, embedding real[]);
         CREATE TABLE ih_child () INHERITS (ih);",
    );
    for (sql, state) in [
        (
            "SELECT ruvector_register_collection('shadow', 'docs', 'other', 3)",
            "42710",
        ),
        (
            "SELECT ruvector_register_collection('leaf', 'docs_a', 'embedding', 3)",
            "42809",
        ),
        (
            "SELECT ruvector_register_collection('ih', 'ih', 'embedding', 3)",
            "42809",
        ),
        (
            "SELECT ruvector_register_collection('ihc', 'ih_child', 'embedding', 3)",
            "42809",
        ),
    ] {
        assert_eq!(error(&mut owner, sql).0, state, "{sql}");
    }
}

#[test]
fn dropping_the_extension_elsewhere_or_a_full_map_never_ungates_a_collection() {
    let (cluster, mut db) = cluster_with_docs(
        "clear-elsewhere",
        &[
            "ruvector.max_collections = 2",
            "ruvector.max_relations = 16",
        ],
    );
    pin(&mut db, "critical");
    db.batch_execute("CREATE ROLE bob LOGIN").unwrap();
    let mut bob = cluster.connect("bob", "template1");
    for _ in 0..20 {
        bob.batch_execute("DROP EXTENSION IF EXISTS ruvector")
            .unwrap();
    }
    assert_eq!(
        error(&mut db, "INSERT INTO docs (embedding) VALUES ('{1,2,3}')").0,
        "55000"
    );
    // A collection or a partition shared memory could not hold is refused,
    // not left ungated.
    execute_each(
        &mut db,
        "CREATE TABLE two (id int, embedding real[]) PARTITION BY RANGE (id);
         DO $$ BEGIN FOR i IN 1..14 LOOP EXECUTE format('CREATE TABLE two_%s PARTITION OF two FOR VALUES FROM (%s) TO (%s)', i, i * 10, i * 10 + 10); END LOOP; END $$;
         CREATE TABLE three (id int, embedding real[]);
         SELECT ruvector_register_collection('two', 'two', 'embedding', 3);",
    );
    let (state, message) = error(
        &mut db,
        "CREATE TABLE two_b PARTITION OF two FOR VALUES FROM (0) TO (10)",
    );
    assert_eq!(state, "53400", "{message}");
    assert!(message.contains("ruvector.max_relations"), "{message}");
    let (state, message) = error(
        &mut db,
        "SELECT ruvector_register_collection('three', 'three', 'embedding', 3)",
    );
    assert_eq!(state, "53400", "{message}");
    // CREATE TABLE IF NOT EXISTS ... PARTITION OF that created nothing does
    // not make an unrelated table part of a collection.
    execute_each(
        &mut db,
        "SELECT ruvector_unregister_collection('two');
         CREATE TABLE bystander (id int, embedding real[]);
         CREATE TABLE IF NOT EXISTS bystander PARTITION OF docs FOR VALUES FROM (0) TO (1);
         INSERT INTO bystander VALUES (1, '{1}');",
    );
}

#[test]
fn the_worker_is_not_stalled_by_a_locked_partition_or_a_read_only_database() {
    let cluster = Cluster::start("stall", &[]);
    let mut owner = owned_collection(&cluster);
    let mut db = cluster.client();
    let samples = |db: &mut Client, name: &str| {
        json(db, &format!("SELECT ruvector_integrity_status('{name}')"))["sample_count"]
            .as_i64()
            .unwrap()
    };
    owner
        .batch_execute("BEGIN; LOCK TABLE docs_a IN ACCESS EXCLUSIVE MODE;")
        .unwrap();
    let before = samples(&mut db, "docs");
    wait_for(20, "samples while a partition is locked", || {
        (samples(&mut db, "docs") >= before + 3).then_some(())
    });
    owner.batch_execute("COMMIT").unwrap();
    db.batch_execute(&format!(
        "ALTER DATABASE {DATABASE} SET default_transaction_read_only = on"
    ))
    .unwrap();
    let pid: i32 = db
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'ruvector integrity worker'",
            &[],
        )
        .unwrap()
        .get(0);
    db.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    let mut fresh = cluster.client();
    let before = samples(&mut fresh, "flat");
    wait_for(30, "samples with a read-only default", || {
        (samples(&mut fresh, "flat") >= before + 2).then_some(())
    });
}

#[test]
fn a_rename_race_cannot_point_a_checked_name_at_a_collection() {
    let cluster = Cluster::start("rename-race", &[]);
    let mut owner = owned_collection(&cluster);
    owner
        .batch_execute("CREATE TABLE decoy (id int, embedding real[])")
        .unwrap();
    pin(&mut cluster.client(), "critical");
    // One session renames the collection's partition to the name another is
    // about to index; the index build waits for the rename, then must find
    // the collection's partition under that name and be refused.
    let mut renamer = cluster.client_as("owner");
    renamer
        .batch_execute(
            "BEGIN; ALTER TABLE decoy RENAME TO decoy_old; ALTER TABLE docs_a RENAME TO decoy;",
        )
        .unwrap();
    let mut c = cluster.client_as("owner");
    let builder_pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let builder = std::thread::spawn(move || {
        c.batch_execute("CREATE INDEX raced ON decoy (id)")
            .map_err(|e| e.as_db_error().map(|d| d.code().code().to_owned()))
    });
    wait_blocked_on_lock(&mut cluster.client(), builder_pid);
    renamer.batch_execute("COMMIT").unwrap();
    let outcome = builder.join().unwrap();
    assert_eq!(outcome, Err(Some("55000".to_owned())));
}

#[test]
fn a_database_owners_sweeps_and_a_typed_table_go_through_the_gate() {
    let cluster = Cluster::start("owner-sweeps", &[]);
    let mut owner = owned_collection(&cluster);
    let mut db = cluster.client();
    execute_each(
        &mut owner,
        "CREATE SCHEMA side;
         CREATE TABLE side.docs_c PARTITION OF docs FOR VALUES FROM (200) TO (300);
         CREATE INDEX ON side.docs_c (id);
         CREATE TYPE doc_row AS (id int, embedding real[]);
         CREATE TABLE typed OF doc_row;
         SELECT ruvector_register_collection('typed', 'typed', 'embedding', 3);",
    );
    wait_for_state(&mut owner, "typed", "normal", 30);
    db.batch_execute(&format!("ALTER DATABASE {DATABASE} OWNER TO owner"))
        .unwrap();
    pin(&mut db, "critical");
    pin_collection(&mut db, "typed", "critical");
    for (sql, state) in [
        ("VACUUM FULL", "55000"),
        (&*format!("REINDEX DATABASE {DATABASE}"), "55000"),
        ("REINDEX SCHEMA side", "55000"),
        (
            "ALTER TYPE doc_row ALTER ATTRIBUTE embedding TYPE float8[] CASCADE",
            "42501",
        ),
        (
            "ALTER TYPE doc_row DROP ATTRIBUTE embedding CASCADE",
            "42501",
        ),
    ] {
        let (got, message) = error(&mut owner, sql);
        assert_eq!(got, state, "{sql}: {message}");
    }
    // A superuser's pin is not the table owner's to lift.
    let (state, _) = error(
        &mut owner,
        "SELECT ruvector_integrity_override('docs', NULL, reason => 'mine')",
    );
    assert_eq!(state, "42501");
    // Another owner's collection is not an admin's to unregister or re-pin.
    execute_each(
        &mut db,
        "CREATE TABLE pgs (id int, embedding real[]);
         SELECT ruvector_register_collection('pgs', 'pgs', 'embedding', 3);",
    );
    for sql in [
        "SELECT ruvector_unregister_collection('pgs')",
        "SELECT ruvector_integrity_override('pgs', 'critical', '1 hour', 'x')",
        "SELECT ruvector_integrity_policy_set('pgs', 'p', '{}')",
    ] {
        assert_eq!(error(&mut owner, sql).0, "42501", "{sql}");
    }
}

#[test]
fn a_backend_that_cannot_load_the_map_fails_its_statement_rather_than_pass_it() {
    let cluster = Cluster::start("no-worker", &[]);
    let mut owner = owned_collection(&cluster);
    owner
        .batch_execute("CREATE INDEX docs_b_id ON docs_b (id)")
        .unwrap();
    pin(&mut cluster.client(), "critical");
    drop(owner);
    cluster.stop();
    // No worker after the restart: backends fill the map themselves.
    let conf = cluster.data_dir().join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("max_worker_processes = 0\n");
    std::fs::write(&conf, text).unwrap();
    cluster.pg_ctl_start();
    let mut owner = cluster.client_as("owner");
    for timeout in ["1ms", "3ms", "0"] {
        // (On a busy machine the SET itself can outlast the previous 1 ms.)
        wait_for(10, "the SET to go through", || {
            owner
                .batch_execute(&format!("SET statement_timeout = '{timeout}'"))
                .ok()
        });
        assert!(
            owner
                .batch_execute("CREATE INDEX sneaky ON docs_a (id)")
                .is_err(),
            "statement_timeout {timeout}"
        );
    }
    assert_eq!(
        count(
            &mut owner,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'sneaky'"
        ),
        0
    );
}

fn state_of(db: &mut Client) -> String {
    state(db, "docs")
}
