//! Searches gated in the executor, the operators' bypass, the gate's
//! statistics, and the gate under 32 concurrent clients.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use postgres::error::DbError;
use ruvector_tests::*;

/// The error `sql` raises, whole (SQLSTATE, message, DETAIL, HINT).
fn refusal(db: &mut Client, sql: &str) -> DbError {
    let e = db
        .batch_execute(sql)
        .expect_err(&format!("expected {sql} to be refused"));
    e.as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {e}"))
        .clone()
}

fn count(db: &mut Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).unwrap().get(0)
}

fn policy(db: &mut Client, collection: &str, policy: &str) {
    db.execute(
        "SELECT ruvector_integrity_policy_set($1, 'default', $2::text::jsonb)",
        &[&collection, &policy],
    )
    .unwrap();
}

fn pin_to(db: &mut Client, collection: &str, state: Option<&str>) {
    db.execute(
        "SELECT ruvector_integrity_override($1, $2, '1 hour', 'test')",
        &[&collection, &state],
    )
    .unwrap();
}

/// Searches holding a place in `collection`'s live count, as status shows it.
fn live(db: &mut Client, collection: &str) -> i64 {
    json(
        db,
        &format!("SELECT ruvector_integrity_status('{collection}')"),
    )["gate"]["live_searches"]
        .as_i64()
        .unwrap()
}

/// The gate's counters of `collection`, by operation and decision.
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

fn count_of(stats: &[(String, String, i64)], operation: &str, decision: &str) -> i64 {
    stats
        .iter()
        .filter(|(o, d, _)| o == operation && (decision == "*" || d == decision))
        .map(|(_, _, n)| n)
        .sum()
}

#[test]
fn a_query_reading_a_collection_is_a_search_for_every_role() {
    let (cluster, mut db) = cluster_with_docs("search-gate", &[]);
    db.batch_execute(
        "CREATE ROLE app LOGIN;
         GRANT SELECT, INSERT ON docs TO app;
         CREATE VIEW recent AS SELECT * FROM docs;
         GRANT SELECT ON recent TO app;
         CREATE TABLE parted (id int, embedding real[]) PARTITION BY HASH (id);
         CREATE TABLE parted_0 PARTITION OF parted FOR VALUES WITH (MODULUS 2, REMAINDER 0);
         CREATE TABLE parted_1 PARTITION OF parted FOR VALUES WITH (MODULUS 2, REMAINDER 1);
         INSERT INTO parted SELECT i, ARRAY[i, i, i]::real[] FROM generate_series(1, 100) i;
         SELECT ruvector_register_collection('parted', 'parted', 'embedding');
         CREATE TABLE plain (id int);
         CREATE TABLE child (doc_id bigint REFERENCES docs (id));
         CREATE TABLE loot (id bigint);
         GRANT INSERT ON child TO app;
         CREATE ROLE nobody LOGIN;
         CREATE FUNCTION leak(r docs) RETURNS bool LANGUAGE plpgsql AS
             'BEGIN INSERT INTO loot VALUES (r.id); RETURN false; END';",
    )
    .unwrap();
    wait_for_state(&mut db, "parted", "normal", 30);
    db.execute("SELECT ruvector_ivf_train('docs', 2)", &[])
        .unwrap();
    let no_reads = r#"{"critical_actions": {"allow_reads": false}}"#;
    policy(&mut db, "docs", no_reads);
    policy(&mut db, "parted", no_reads);
    pin_to(&mut db, "docs", Some("critical"));
    pin_to(&mut db, "parted", Some("critical"));

    let mut app = cluster.client_as("app");
    for (as_app, sql) in [
        (false, "SELECT count(*) FROM docs"),
        (true, "SELECT count(*) FROM docs"),
        (true, "SELECT * FROM recent LIMIT 1"),
        (false, "SELECT * FROM parted_1 LIMIT 1"),
        (false, "SELECT count(*) FROM parted"),
        (false, "INSERT INTO plain SELECT id FROM docs"),
        (false, "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM docs"),
        // A DELETE that deletes nothing still read every row.
        (false, "DELETE FROM docs WHERE leak(docs)"),
    ] {
        let client = if as_app { &mut app } else { &mut db };
        let e = refusal(client, sql);
        assert_eq!(e.code().code(), "55000", "{sql}: {}", e.message());
        assert!(
            e.message()
                .starts_with("ruvector refused search on collection")
                && e.message().contains("in state critical"),
            "{}",
            e.message()
        );
        assert!(
            e.detail().unwrap().contains("decision: reject"),
            "{:?}",
            e.detail()
        );
        assert!(e.hint().unwrap().contains("Retry once"), "{:?}", e.hint());
    }

    assert_eq!(count(&mut db, "SELECT count(*) FROM loot"), 0);
    // A role that may not read the table learns nothing from the gate.
    let (state, message) = error(&mut cluster.client_as("nobody"), "SELECT 1 FROM docs");
    assert_eq!(state, "42501", "{message}");
    // Not searches: a foreign key's check, plans only explained, ANALYZE,
    // pg_dump (COPY), the extension's own reads (a sample reads the IVF
    // lists' drift sample), and reads of anything else.
    app.batch_execute("INSERT INTO child SELECT 1 FROM generate_series(1, 50)")
        .unwrap();
    for sql in [
        "EXPLAIN SELECT count(*) FROM docs",
        "ANALYZE docs",
        "SELECT ruvector_integrity_sample('docs')",
        "SELECT count(*) FROM plain",
    ] {
        db.batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let dump = cluster.client_program("pg_dump", &["-t", "docs", "-t", "parted*"]);
    assert!(dump.contains("COPY public.docs"), "{dump}");

    // The setting is the superuser's: off, searches pass again.
    let (state, message) = error(&mut app, "SET ruvector.gate_searches = off");
    assert_eq!(state, "42501", "{message}");
    db.batch_execute(
        "SET ruvector.gate_searches = off; SELECT count(*) FROM docs; RESET ruvector.gate_searches",
    )
    .unwrap();

    // A throttle of 100% refuses every search, with a retry hint.
    policy(
        &mut db,
        "docs",
        r#"{"stress_actions": {"throttle_searches_pct": 100}}"#,
    );
    pin_to(&mut db, "docs", Some("stress"));
    let e = refusal(&mut app, "SELECT count(*) FROM docs");
    assert_eq!(e.code().code(), "53000", "{}", e.message());
    assert!(
        e.hint().unwrap().starts_with("Retry after"),
        "{:?}",
        e.hint()
    );
    pin_to(&mut db, "docs", Some("normal"));
    app.batch_execute("SELECT count(*) FROM docs").unwrap();
    assert_eq!(live(&mut db, "docs"), 0);
}

#[test]
fn a_search_gives_its_place_back_however_it_ends() {
    let (cluster, mut db) =
        cluster_with_docs("search-places", &["ruvector.integrity_sample_interval = 1"]);
    policy(
        &mut db,
        "docs",
        r#"{"normal_actions": {"max_concurrent_searches": 1}}"#,
    );
    db.batch_execute(
        "CREATE FUNCTION nearest() RETURNS bigint LANGUAGE sql AS 'SELECT min(id) FROM docs'",
    )
    .unwrap();
    let mut a = cluster.client();
    let mut b = cluster.client();
    let search = "SELECT id FROM docs ORDER BY embedding[1] LIMIT 1";

    // Held while the executor runs (an open cursor), released when it ends.
    a.batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT * FROM docs")
        .unwrap();
    assert_eq!(live(&mut db, "docs"), 1);
    let e = refusal(&mut b, search);
    assert_eq!(e.code().code(), "53000", "{}", e.message());
    assert!(
        e.message()
            .contains("the limit of 1 concurrent searches in state normal is reached"),
        "{}",
        e.message()
    );
    a.batch_execute("CLOSE c").unwrap();
    assert_eq!(live(&mut db, "docs"), 0);
    b.batch_execute(search).unwrap();
    a.batch_execute("COMMIT").unwrap();

    // A backend holds one place, however many of its cursors read: the
    // place stays until the last one closes.
    a.batch_execute(
        "BEGIN; DECLARE c1 CURSOR FOR SELECT * FROM docs; DECLARE c2 CURSOR FOR SELECT * FROM docs; CLOSE c1",
    )
    .unwrap();
    assert_eq!(live(&mut db, "docs"), 1);
    let (state, _) = error(&mut b, search);
    assert_eq!(state, "53000");
    a.batch_execute("FETCH 5 FROM c2; CLOSE c2").unwrap();
    assert_eq!(live(&mut db, "docs"), 0);
    a.batch_execute("COMMIT").unwrap();
    // A nested read of the same collection is part of its search, not another.
    a.batch_execute("SELECT nearest() FROM docs LIMIT 3")
        .unwrap();
    // At the end of the transaction (a cursor never closed), at an error, at
    // the rollback of a savepoint, and for a gate call at the transaction's end.
    a.batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT * FROM docs; COMMIT")
        .unwrap();
    assert_eq!(live(&mut db, "docs"), 0);
    let (state, _) = error(&mut a, "SELECT 1 / (id - id) FROM docs");
    assert_eq!(state, "22012");
    assert_eq!(live(&mut db, "docs"), 0);
    a.batch_execute(
        "BEGIN; SAVEPOINT s; DECLARE c CURSOR FOR SELECT * FROM docs; ROLLBACK TO SAVEPOINT s",
    )
    .unwrap();
    assert_eq!(live(&mut db, "docs"), 0);
    a.batch_execute("SELECT ruvector_integrity_allowed('docs', 'search')")
        .unwrap();
    assert_eq!(live(&mut db, "docs"), 1);
    a.batch_execute("COMMIT").unwrap();
    assert_eq!(live(&mut db, "docs"), 0);

    // When the backend is terminated.
    a.batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT * FROM docs")
        .unwrap();
    assert_eq!(live(&mut db, "docs"), 1);
    let pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    db.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    wait_for(10, "the terminated backend's search to be released", || {
        (live(&mut db, "docs") == 0).then_some(())
    });

    // When a backend crashes: the server restarts with fresh shared memory.
    let mut c = cluster.client();
    c.batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT * FROM docs")
        .unwrap();
    assert_eq!(live(&mut db, "docs"), 1);
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    cluster.wait_ready(2);
    let mut after = cluster.client();
    wait_for(30, "docs to be back in shared memory", || {
        json(&mut after, "SELECT ruvector_integrity_status('docs')")["enforced"]
            .as_bool()
            .filter(|&e| e)
    });
    assert_eq!(live(&mut after, "docs"), 0);
    after.batch_execute(search).unwrap();
}

#[test]
fn the_bypass_is_an_operators_and_leaves_one_audit_event_per_transaction() {
    let (cluster, mut db) = cluster_with_docs("search-bypass", &[]);
    db.batch_execute(
        "CREATE ROLE op LOGIN IN ROLE ruvector_admin;
         CREATE ROLE app LOGIN;
         GRANT SELECT, INSERT ON docs TO op, app;
         GRANT USAGE ON SEQUENCE docs_id_seq TO op, app;
         GRANT app TO op;",
    )
    .unwrap();
    policy(
        &mut db,
        "docs",
        r#"{"critical_actions": {"allow_reads": false}}"#,
    );
    pin(&mut db, "critical");

    // Not for anyone else: not by SET, not from the server's configuration,
    // not from the connection's options, not by a SET ROLE after the SET.
    let mut app = cluster.client_as("app");
    let (state, message) = error(&mut app, "SET ruvector.integrity_bypass = on");
    assert_eq!(state, "42501", "{message}");
    let (state, message) = error(&mut db, "ALTER SYSTEM SET ruvector.integrity_bypass = on");
    assert_eq!(state, "42501", "{message}");
    let with_option = format!(
        "host=127.0.0.1 port={} user=app dbname={DATABASE} options='-c ruvector.integrity_bypass=on'",
        cluster.port
    );
    // The setting is refused when the connection starts, or the role is
    // checked again when the gate would use it: either way, no bypass.
    match Client::connect(&with_option, NoTls) {
        Ok(mut sneaky) => {
            let (state, message) = error(&mut sneaky, "SELECT count(*) FROM docs");
            assert_eq!(state, "55000", "{message}");
        }
        Err(e) => assert_eq!(
            e.as_db_error().map(|d| d.code().code()),
            Some("42501"),
            "{e}"
        ),
    }
    let mut op = cluster.client_as("op");
    op.batch_execute("SET ruvector.integrity_bypass = on; SET ROLE app")
        .unwrap();
    let (state, message) = error(&mut op, "SELECT count(*) FROM docs");
    assert_eq!(state, "55000", "{message}");
    op.batch_execute("RESET ROLE").unwrap();

    db.execute("SELECT ruvector_integrity_gate_stats_reset('docs')", &[])
        .unwrap();
    let events = |db: &mut Client| -> Vec<Value> {
        db.query(
            "SELECT metadata FROM ruvector.pending_events WHERE event_type = 'gate_bypass'
             UNION ALL
             SELECT metadata FROM ruvector.integrity_events WHERE event_type = 'gate_bypass'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    // An operator's transaction: three refused statements let through, one event.
    op.batch_execute(
        "BEGIN;
         SELECT count(*) FROM docs;
         INSERT INTO docs (embedding) VALUES ('{1,2,3}');
         INSERT INTO docs (embedding) VALUES ('{1,2,3}'), ('{4,5,6}');
         COMMIT;",
    )
    .unwrap();
    let written = events(&mut db);
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0]["statements"], 3);
    assert_eq!(
        written[0]["operations"],
        json!({"search": 1, "insert": 1, "bulk_insert": 1})
    );
    assert_eq!(written[0]["by"], "op");
    // Recorded as the role that ran the statement, not the one at commit; a
    // COPY counted and recorded once.
    op.batch_execute(
        "BEGIN; INSERT INTO docs (embedding) VALUES ('{1,2,3}'); SET ROLE app; COMMIT; RESET ROLE;",
    )
    .unwrap();
    let mut copy = op.copy_in("COPY docs (embedding) FROM STDIN").unwrap();
    std::io::Write::write_all(&mut copy, b"{4,5,6}\n{7,8,9}\n").unwrap();
    copy.finish().unwrap();
    let written = events(&mut db);
    assert_eq!(written.len(), 3, "{written:?}");
    assert!(written.iter().all(|e| e["by"] == "op"), "{written:?}");
    assert!(written
        .iter()
        .any(|e| e["operations"] == json!({"bulk_insert": 1})));
    // A read-only transaction cannot write the event: still refused.
    let (state, message) = error(&mut op, "BEGIN READ ONLY; SELECT count(*) FROM docs");
    assert_eq!(state, "55000", "{message}");
    op.batch_execute("ROLLBACK").unwrap();
    // Rolled back: no event. A savepoint rolled back takes its statements along.
    op.batch_execute("BEGIN; INSERT INTO docs (embedding) VALUES ('{1,2,3}'); ROLLBACK;")
        .unwrap();
    op.batch_execute(
        "BEGIN; SAVEPOINT s; INSERT INTO docs (embedding) VALUES ('{1,2,3}');
         ROLLBACK TO SAVEPOINT s; SELECT count(*) FROM docs; COMMIT;",
    )
    .unwrap();
    let written = events(&mut db);
    assert_eq!(written.len(), 4, "{written:?}");
    assert!(written
        .iter()
        .any(|e| e["operations"] == json!({"search": 1})));
    // The counters count every statement the bypass let through.
    let counted = stats(&mut db, "docs");
    let bypassed: i64 = counted
        .iter()
        .filter(|(_, d, _)| d == "bypassed")
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(bypassed, 8, "{counted:?}");
    wait_signed(&mut db);
    assert_eq!(
        json(&mut db, "SELECT ruvector_verify_audit_chain()")["ok"],
        true
    );
}

#[test]
fn the_gate_statistics_add_up_and_only_the_tables_owner_resets_them() {
    let (cluster, mut db) = cluster_with_docs("gate-stats", &[]);
    db.batch_execute(
        "CREATE ROLE watcher LOGIN IN ROLE ruvector_reader;
         CREATE ROLE op LOGIN IN ROLE ruvector_admin;",
    )
    .unwrap();
    db.execute("SELECT ruvector_integrity_gate_stats_reset()", &[])
        .unwrap();
    let mut statements = 0;
    for _ in 0..20 {
        db.batch_execute("SELECT count(*) FROM docs").unwrap();
        statements += 1;
    }
    db.batch_execute("INSERT INTO docs (embedding) VALUES ('{1,2,3}')")
        .unwrap();
    // Critical, by default: a search is throttled at 20%, an insert rejected.
    pin(&mut db, "critical");
    let (mut allowed, mut throttled) = (0, 0);
    for _ in 0..200 {
        match db.batch_execute("SELECT count(*) FROM docs") {
            Ok(()) => allowed += 1,
            Err(e) => {
                assert_eq!(e.code().unwrap().code(), "53000", "{e}");
                throttled += 1;
            }
        }
    }
    assert!(
        (10..=80).contains(&throttled),
        "{throttled} of 200 throttled"
    );
    let (state, _) = error(&mut db, "INSERT INTO docs (embedding) VALUES ('{1,2,3}')");
    assert_eq!(state, "55000");
    // An advisory gate call is a decision too.
    assert!(!db
        .query_one(
            "SELECT ruvector_integrity_allowed('docs', 'bulk_insert')",
            &[]
        )
        .unwrap()
        .get::<_, bool>(0));

    let mut watcher = cluster.client_as("watcher");
    let counted = stats(&mut watcher, "docs");
    assert_eq!(
        count_of(&counted, "search", "allowed"),
        statements + allowed
    );
    assert_eq!(count_of(&counted, "search", "throttled"), throttled);
    assert_eq!(count_of(&counted, "insert", "allowed"), 1);
    assert_eq!(count_of(&counted, "insert", "rejected"), 1);
    assert_eq!(count_of(&counted, "bulk_insert", "rejected"), 1);
    assert_eq!(
        counted.iter().map(|(_, _, n)| n).sum::<i64>(),
        statements + 200 + 3
    );
    let last_at: bool = watcher
        .query_one(
            "SELECT bool_and(last_at BETWEEN now() - interval '5 minutes' AND now() + interval '1 second')
             FROM ruvector.integrity_gate_stats",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(last_at);
    let status = json(&mut watcher, "SELECT ruvector_integrity_status('docs')");
    assert_eq!(
        status["gate"]["decisions"]["search"]["throttled"],
        json!(throttled)
    );

    let (state, message) = error(
        &mut watcher,
        "SELECT ruvector_integrity_gate_stats_reset('docs')",
    );
    assert_eq!(state, "42501", "{message}");
    let mut op = cluster.client_as("op");
    let (state, message) = error(
        &mut op,
        "SELECT ruvector_integrity_gate_stats_reset('nope')",
    );
    assert_eq!(state, "42704", "{message}");
    // An admin who does not own the table may not; its owner may.
    let (state, message) = error(
        &mut op,
        "SELECT ruvector_integrity_gate_stats_reset('docs')",
    );
    assert_eq!(state, "42501", "{message}");
    db.batch_execute("ALTER TABLE docs OWNER TO op").unwrap();
    let reset: i32 = op
        .query_one("SELECT ruvector_integrity_gate_stats_reset('docs')", &[])
        .unwrap()
        .get(0);
    assert_eq!(reset, 1);
    assert!(stats(&mut watcher, "docs").is_empty());
}

/// A small deterministic generator (xorshift), one per client.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Default)]
struct Tally {
    searches: i64,
    inserts: i64,
    bulk_inserts: i64,
    refused: i64,
}

#[test]
fn thirty_two_clients_while_the_state_flips_fifty_times() {
    let cluster = Cluster::start("gate-load", &["max_connections = 60"]);
    let mut db = cluster.client();
    db.batch_execute(
        "CREATE TABLE items (id bigserial, embedding real[]) PARTITION BY HASH (id);
         CREATE TABLE items_0 PARTITION OF items FOR VALUES WITH (MODULUS 4, REMAINDER 0);
         CREATE TABLE items_1 PARTITION OF items FOR VALUES WITH (MODULUS 4, REMAINDER 1);
         CREATE TABLE items_2 PARTITION OF items FOR VALUES WITH (MODULUS 4, REMAINDER 2);
         CREATE TABLE items_3 PARTITION OF items FOR VALUES WITH (MODULUS 4, REMAINDER 3);
         INSERT INTO items (embedding)
             SELECT ARRAY[random(), random(), random(), random()]::real[] FROM generate_series(1, 2000);
         SELECT ruvector_register_collection('items', 'items', 'embedding', 4);",
    )
    .unwrap();
    wait_for_state(&mut db, "items", "normal", 30);
    policy(
        &mut db,
        "items",
        r#"{"stress_actions": {"max_concurrent_searches": 8, "throttle_searches_pct": 10},
            "critical_actions": {"max_concurrent_searches": 4, "throttle_searches_pct": 30}}"#,
    );
    db.execute("SELECT ruvector_integrity_gate_stats_reset('items')", &[])
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let statements = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..32u64)
        .map(|i| {
            let mut client = cluster.client();
            let done = done.clone();
            let statements = statements.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i + 1));
                let mut tally = Tally::default();
                while !done.load(Ordering::Relaxed) {
                    let roll = rng.below(100);
                    let sql = if roll < 60 {
                        tally.searches += 1;
                        "SELECT id FROM items ORDER BY (embedding[1] - 0.5)^2 + (embedding[2] - 0.5)^2 LIMIT 10"
                    } else if roll < 85 {
                        tally.inserts += 1;
                        "INSERT INTO items (embedding) VALUES (ARRAY[random(), random(), random(), random()]::real[])"
                    } else {
                        tally.bulk_inserts += 1;
                        "INSERT INTO items (embedding)
                             SELECT ARRAY[random(), random(), random(), random()]::real[] FROM generate_series(1, 20)"
                    };
                    if let Err(e) = client.batch_execute(sql) {
                        let code = e.code().map(|c| c.code().to_owned());
                        assert!(
                            matches!(code.as_deref(), Some("53000" | "55000")),
                            "not a gate error: {e:?}"
                        );
                        tally.refused += 1;
                    }
                    statements.fetch_add(1, Ordering::Relaxed);
                }
                tally
            })
        })
        .collect();

    // Each state holds until the clients have run 32 statements under it.
    let states = ["stress", "critical", "normal"];
    let run_a_while = || {
        let start = statements.load(Ordering::Relaxed);
        wait_for(60, "the clients to run statements", || {
            (statements.load(Ordering::Relaxed) >= start + 32).then_some(())
        });
    };
    for flip in 0..50 {
        run_a_while();
        pin_to(&mut db, "items", Some(states[flip % 3]));
    }
    run_a_while();
    done.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for client in clients {
        let t = client.join().expect("a client failed");
        total.searches += t.searches;
        total.inserts += t.inserts;
        total.bulk_inserts += t.bulk_inserts;
        total.refused += t.refused;
    }
    println!(
        "load: {} searches, {} inserts, {} bulk inserts, {} refused",
        total.searches, total.inserts, total.bulk_inserts, total.refused
    );

    // Every statement was decided once; the refusals are the gate's.
    let counted = stats(&mut db, "items");
    assert_eq!(
        count_of(&counted, "search", "*"),
        total.searches,
        "{counted:?}"
    );
    assert_eq!(
        count_of(&counted, "insert", "*"),
        total.inserts,
        "{counted:?}"
    );
    assert_eq!(
        count_of(&counted, "bulk_insert", "*"),
        total.bulk_inserts,
        "{counted:?}"
    );
    let refused: i64 = counted
        .iter()
        .filter(|(_, d, _)| d != "allowed")
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(refused, total.refused, "{counted:?}");
    assert!(
        total.refused > 0 && total.searches > 1000,
        "too little load"
    );
    assert_eq!(live(&mut db, "items"), 0);
    let log = cluster.log();
    assert!(
        !log.contains("terminated by signal") && !log.contains("PANIC"),
        "{log}"
    );
    wait_signed(&mut db);
    assert_eq!(
        json(&mut db, "SELECT ruvector_verify_audit_chain()")["ok"],
        true
    );
}
