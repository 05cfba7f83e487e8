//! The gate enforced on real statements: what each state refuses, with which
//! SQLSTATE, and that a refused statement leaves nothing behind.

use ruvector_tests::*;

/// Rows in docs (a search: in critical, throttled at 20% by default).
fn count(db: &mut Client) -> i64 {
    query_one_retrying(db, "SELECT count(*) FROM docs").get(0)
}

#[test]
fn each_state_refuses_what_its_policy_forbids_and_nothing_is_half_done() {
    let cluster = Cluster::start("enforce", &[]);
    let mut db = cluster.client();
    collection(&mut db, "docs", 100);
    wait_for_state(&mut db, "docs", "normal", 30);

    // Normal: everything goes.
    for sql in [
        "INSERT INTO docs (embedding) SELECT '{1,2,3}' FROM generate_series(1, 50)",
        "CREATE INDEX docs_first ON docs ((embedding[1]))",
        "VACUUM FULL docs",
    ] {
        db.batch_execute(sql).unwrap();
    }
    let mut copy = db.copy_in("COPY docs (embedding) FROM STDIN").unwrap();
    std::io::Write::write_all(&mut copy, b"{4,5,6}\n{7,8,9}\n").unwrap();
    copy.finish().unwrap();
    assert_eq!(count(&mut db), 152);

    // Stress: bulk inserts are refused whole; single inserts are throttled.
    pin(&mut db, "stress");
    let (state, message) = error(
        &mut db,
        "INSERT INTO docs (embedding) SELECT '{1,2,3}' FROM generate_series(1, 10)",
    );
    assert_eq!(state, "55000");
    assert!(
        message.starts_with("ruvector refused bulk_insert on collection \"docs\" in state stress"),
        "{message}"
    );
    // COPY is refused before a byte is read.
    // (On its own connection: the client cannot be reused after a refused COPY.)
    match cluster.client().copy_in("COPY docs (embedding) FROM STDIN") {
        Ok(_) => panic!("COPY should be refused in stress"),
        Err(e) => assert_eq!(e.as_db_error().unwrap().code().code(), "55000"),
    }
    assert_eq!(count(&mut db), 152);
    let mut admitted = 0;
    for _ in 0..200 {
        if db
            .batch_execute("INSERT INTO docs (embedding) VALUES ('{1,1,1}')")
            .is_ok()
        {
            admitted += 1;
        }
    }
    assert!(
        (60..=140).contains(&admitted),
        "a 50% throttle admitted {admitted} of 200"
    );
    assert_eq!(count(&mut db), 152 + admitted);
    // Reads and updates are still fine; GNN training waits.
    db.batch_execute("UPDATE docs SET embedding = embedding WHERE id < 5")
        .unwrap();
    let gnn = json(
        &mut db,
        "SELECT ruvector_integrity_gate('docs', 'gnn_train')",
    );
    assert_eq!(
        (gnn["decision"].as_str(), gnn["retry_after_secs"].as_i64()),
        (Some("defer"), Some(300))
    );

    // Critical: writes and maintenance are refused; reads, replication, backup go on.
    pin(&mut db, "critical");
    let before = count(&mut db);
    for sql in [
        "INSERT INTO docs (embedding) VALUES ('{1,2,3}')",
        "UPDATE docs SET embedding = embedding WHERE id = 1",
        "DELETE FROM docs WHERE id = 1",
        "DELETE FROM docs",
        "TRUNCATE docs",
        "CREATE INDEX ON docs (id)",
        "REINDEX TABLE docs",
        "VACUUM FULL docs",
        "CLUSTER docs USING docs_pkey",
    ] {
        let (state, message) = error(&mut db, sql);
        assert_eq!(state, "55000", "{sql}: {message}");
        assert!(message.contains("in state critical"), "{message}");
    }
    assert_eq!(count(&mut db), before);
    for op in ["replication", "backup"] {
        assert_eq!(
            json(
                &mut db,
                &format!("SELECT ruvector_integrity_gate('docs', '{op}')")
            )["decision"],
            "allow"
        );
    }
    let e = db.batch_execute("CREATE INDEX ON docs (id)").unwrap_err();
    let hint = e.as_db_error().unwrap().hint().unwrap().to_owned();
    assert!(hint.contains("ruvector_integrity_status('docs')"), "{hint}");
}

#[test]
fn a_deferred_statement_is_retryable_and_its_hint_says_when() {
    let (_cluster, mut db) = cluster_with_docs("defer", &[]);
    db.execute(
        "SELECT ruvector_integrity_policy_set('docs', 'careful', '{\"stress_actions\": {\"allow_index_rewire\": false}, \"defer_retry_secs\": 120}')",
        &[],
    )
    .unwrap();
    pin(&mut db, "stress");
    let e = db.batch_execute("CREATE INDEX ON docs (id)").unwrap_err();
    let e = e.as_db_error().unwrap();
    assert_eq!(e.code().code(), "53000");
    assert_eq!(e.hint(), Some("Retry after 120 seconds."));
    assert!(e.detail().unwrap().contains("decision: defer"));
}

#[test]
fn concurrent_searches_are_counted_until_their_transactions_end() {
    let (cluster, mut db) = cluster_with_docs("searches", &[]);
    db.execute(
        "SELECT ruvector_integrity_policy_set('docs', 'two', '{\"critical_actions\": {\"max_concurrent_searches\": 2, \"throttle_searches_pct\": 0}}')",
        &[],
    )
    .unwrap();
    pin(&mut db, "critical");
    let mut sessions: Vec<Client> = (0..3).map(|_| cluster.client()).collect();
    for s in sessions.iter_mut().take(2) {
        s.batch_execute("BEGIN").unwrap();
        assert_eq!(
            json(s, "SELECT ruvector_integrity_gate('docs', 'search')")["allowed"],
            true
        );
        // Asking again in the same transaction does not count twice.
        assert_eq!(
            json(s, "SELECT ruvector_integrity_gate('docs', 'search')")["allowed"],
            true
        );
    }
    let third = json(
        &mut sessions[2],
        "SELECT ruvector_integrity_gate('docs', 'search')",
    );
    assert_eq!(
        (third["allowed"].as_bool(), third["decision"].as_str()),
        (Some(false), Some("throttle"))
    );
    assert!(third["reason"]
        .as_str()
        .unwrap()
        .contains("limit of 2 concurrent searches"));
    sessions[0].batch_execute("COMMIT").unwrap();
    sessions[1].batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        json(
            &mut sessions[2],
            "SELECT ruvector_integrity_gate('docs', 'search')"
        )["allowed"],
        true
    );
}

/// Without a limit, a backend announces its place in its own row of shared
/// memory instead of the collection's counter: those places still count the
/// moment a limit comes into force.
#[test]
fn searches_admitted_without_a_limit_count_when_a_limit_comes() {
    let (cluster, mut db) = cluster_with_docs("announced", &[]);
    db.execute(
        "SELECT ruvector_integrity_policy_set('docs', 'two', '{\"critical_actions\": {\"max_concurrent_searches\": 2, \"throttle_searches_pct\": 0}}')",
        &[],
    )
    .unwrap();
    let live = |db: &mut Client| {
        json(db, "SELECT ruvector_integrity_status('docs')")["gate"]["live_searches"].as_i64()
    };
    let search = "SELECT ruvector_integrity_gate('docs', 'search')";
    let mut sessions: Vec<Client> = (0..4).map(|_| cluster.client()).collect();
    for s in sessions.iter_mut().take(3) {
        s.batch_execute("BEGIN").unwrap();
        assert_eq!(json(s, search)["allowed"], true);
    }
    assert_eq!(live(&mut db), Some(3));
    pin(&mut db, "critical");
    let fourth = json(&mut sessions[3], search);
    assert_eq!(fourth["allowed"], false, "{fourth}");
    assert!(fourth["reason"]
        .as_str()
        .unwrap()
        .contains("limit of 2 concurrent searches"));
    sessions[0].batch_execute("COMMIT").unwrap();
    sessions[1].batch_execute("ROLLBACK").unwrap();
    assert_eq!(live(&mut db), Some(1));
    sessions[3].batch_execute("BEGIN").unwrap();
    assert_eq!(json(&mut sessions[3], search)["allowed"], true);
    // One place announced before the limit, one counted under it: full.
    assert_eq!(json(&mut sessions[0], search)["allowed"], false);
    drop(sessions);
    wait_for(10, "the places of closed sessions to be given back", || {
        (live(&mut db) == Some(0)).then_some(())
    });
}

#[test]
fn a_switched_off_gate_allows_everything() {
    let (cluster, mut db) = cluster_with_docs("disabled", &[]);
    pin(&mut db, "critical");
    assert_eq!(error(&mut db, "DELETE FROM docs").0, "55000");
    db.batch_execute("ALTER SYSTEM SET ruvector.integrity_enabled = off")
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    let mut fresh = wait_for(10, "the reload", || {
        let mut c = cluster.client();
        let off: String = c
            .query_one("SHOW ruvector.integrity_enabled", &[])
            .unwrap()
            .get(0);
        (off == "off").then_some(c)
    });
    fresh.batch_execute("DELETE FROM docs").unwrap();
    let gate = json(
        &mut fresh,
        "SELECT ruvector_integrity_gate('docs', 'insert')",
    );
    assert_eq!(gate["allowed"], true);
    assert!(gate["reason"]
        .as_str()
        .unwrap()
        .contains("integrity_enabled is off"));
}
