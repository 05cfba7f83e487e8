//! Who may do what, and the answers to bad input, seen from real sessions.

use ruvector_tests::*;

#[test]
fn a_reader_reads_and_gates_but_is_refused_admin_functions() {
    let cluster = Cluster::start("roles", &[]);
    let mut db = cluster.client();
    collection(&mut db, "docs", 10);
    db.batch_execute(
        "CREATE ROLE app LOGIN IN ROLE ruvector_reader;
         GRANT SELECT ON docs TO app;
         CREATE ROLE ops LOGIN IN ROLE ruvector_admin;
         CREATE ROLE nobody LOGIN;",
    )
    .unwrap();
    wait_for_state(&mut db, "docs", "normal", 30);

    let mut app = cluster.client_as("app");
    assert_eq!(
        json(&mut app, "SELECT ruvector_integrity_gate('docs', 'search')")["allowed"],
        true
    );
    assert_eq!(
        json(&mut app, "SELECT ruvector_integrity_status('docs')")["state"],
        "normal"
    );
    assert_eq!(
        json(&mut app, "SELECT ruvector_verify_audit_chain()")["ok"],
        true
    );
    let row = json(
        &mut app,
        "SELECT to_jsonb(s) FROM ruvector.collections_status s WHERE collection = 'docs'",
    );
    assert_eq!(
        (
            &row["state"],
            &row["sampled_state"],
            &row["stale"],
            &row["enforced"]
        ),
        (
            &json!("normal"),
            &json!("normal"),
            &json!(false),
            &json!(true)
        ),
        "{row}"
    );
    assert_eq!(row["lambda_norm"], 1.0, "{row}");
    assert_eq!(row["policy"], "default", "{row}");
    app.query("SELECT * FROM ruvector_integrity_policy_list('docs')", &[])
        .unwrap();
    app.query("SELECT * FROM ruvector_integrity_history('docs')", &[])
        .unwrap();
    app.query("SELECT * FROM ruvector.integrity_events", &[])
        .unwrap();
    for sql in [
        "SELECT ruvector_integrity_policy_set('docs', 'custom', '{\"threshold_high\": 0.5}')",
        "SELECT ruvector_integrity_override('docs', 'critical', '1 hour', 'mine')",
        "SELECT ruvector_register_collection('x', 'docs', 'embedding')",
        "SELECT ruvector_unregister_collection('docs')",
        "SELECT ruvector._policy_set('docs', 'custom', '{}')",
        "INSERT INTO ruvector.pending_events (collection_name, event_type) VALUES ('docs', 'audit')",
        "UPDATE ruvector.integrity_state SET state = 'normal'",
    ] {
        let (state, message) = error(&mut app, sql);
        assert_eq!(state, "42501", "{sql}: {message}");
    }

    // An admin changes how a collection is gated only if it owns the table.
    let mut ops = cluster.client_as("ops");
    assert_eq!(
        error(
            &mut ops,
            "SELECT ruvector_integrity_policy_set('docs', 'custom', '{\"threshold_high\": 0.7}')"
        )
        .0,
        "42501"
    );
    db.batch_execute("ALTER TABLE docs OWNER TO ops").unwrap();
    let set = json(
        &mut ops,
        "SELECT ruvector_integrity_policy_set('docs', 'custom', '{\"threshold_high\": 0.7}')",
    );
    assert_eq!(set["in_force"], true);
    assert_eq!(
        error(&mut ops, "SELECT ruvector_rotate_signing_key()").0,
        "42501"
    );
    let by: String = db
        .query_one("SELECT metadata->>'by' FROM ruvector.pending_events WHERE event_type = 'policy_update' UNION ALL SELECT metadata->>'by' FROM ruvector.integrity_events WHERE event_type = 'policy_update'", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        by, "ops",
        "the audit trail names the caller, not the definer"
    );

    let mut nobody = cluster.client_as("nobody");
    for sql in [
        "SELECT ruvector_integrity_gate('docs', 'search')",
        "SELECT * FROM ruvector.collections_status",
        "SELECT * FROM ruvector_integrity_policy_list('docs')",
    ] {
        assert_eq!(error(&mut nobody, sql).0, "42501", "{sql}");
    }
    // The solvers are pure functions anyone may call.
    assert_eq!(
        json(
            &mut nobody,
            "SELECT ruvector_mincut('[{\"source\": 1, \"target\": 2, \"capacity\": 4}]')"
        )["lambda"],
        4.0
    );
}

#[test]
fn bad_policy_json_names_the_key_and_leaves_the_policy_in_force() {
    let (cluster, mut db) = cluster_with_docs("bad-policy", &[]);
    pin(&mut db, "stress");
    let before = json(&mut db, "SELECT ruvector_integrity_gate('docs', 'insert')");
    assert_eq!(before["throttle_pct"], 50);
    let stored = json(
        &mut db,
        "SELECT jsonb_agg(to_jsonb(p) - 'updated_at') FROM ruvector.integrity_policies p",
    );

    for (patch, key) in [
        (
            r#"{"stress_actions": {"throttle_inserts_pct": 90, "throttle_everything": true}}"#,
            "stress_actions.throttle_everything",
        ),
        (
            r#"{"stress_actions": {"throttle_inserts_pct": 190}}"#,
            "stress_actions.throttle_inserts_pct",
        ),
        (r#"{"threshold_high": "high"}"#, "threshold_high"),
        (
            r#"{"hysteresis": {"degrade_samples": -1}}"#,
            "hysteresis.degrade_samples",
        ),
    ] {
        let (state, message) = error(
            &mut db,
            &format!("SELECT ruvector_integrity_policy_set('docs', 'default', '{patch}')"),
        );
        assert_eq!(state, "22023");
        assert!(
            message.starts_with(&format!("invalid policy key \"{key}\"")),
            "{message}"
        );
    }
    assert_eq!(
        json(
            &mut db,
            "SELECT jsonb_agg(to_jsonb(p) - 'updated_at') FROM ruvector.integrity_policies p"
        ),
        stored
    );
    let after = json(&mut db, "SELECT ruvector_integrity_gate('docs', 'insert')");
    assert_eq!(
        after["throttle_pct"], 50,
        "shared memory kept the policy too"
    );

    // Another policy, then the default put back in force: every session's
    // gate follows at commit.
    let throttle = |cluster: &Cluster| {
        json(
            &mut cluster.client(),
            "SELECT ruvector_integrity_gate('docs', 'insert')",
        )["throttle_pct"]
            .clone()
    };
    db.batch_execute(
        "SELECT ruvector_integrity_policy_set('docs', 'gentle', '{\"stress_actions\": {\"throttle_inserts_pct\": 10}}')",
    )
    .unwrap();
    assert_eq!(throttle(&cluster), 10);
    db.batch_execute("SELECT ruvector_integrity_policy_activate('docs', 'default')")
        .unwrap();
    assert_eq!(throttle(&cluster), 50);
    db.batch_execute("SELECT ruvector_integrity_policy_drop('docs', 'gentle')")
        .unwrap();
    assert_eq!(throttle(&cluster), 50);

    // A drop waits for an activation in flight, then refuses the policy that
    // activation put in force.
    db.batch_execute(
        "SELECT ruvector_integrity_policy_set('docs', 'gentle', '{}');
         SELECT ruvector_integrity_policy_activate('docs', 'default');",
    )
    .unwrap();
    let mut first = cluster.client();
    first
        .batch_execute("BEGIN; SELECT ruvector_integrity_policy_activate('docs', 'gentle')")
        .unwrap();
    let mut second = cluster.client();
    let pid: i32 = second
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let dropping = std::thread::spawn(move || {
        error(
            &mut second,
            "SELECT ruvector_integrity_policy_drop('docs', 'gentle')",
        )
    });
    wait_blocked_on_lock(&mut db, pid);
    first.batch_execute("COMMIT").unwrap();
    let (state, message) = dropping.join().unwrap();
    assert_eq!(state, "55000", "{message}");
    assert_eq!(
        json(
            &mut db,
            "SELECT to_jsonb(policy_name) FROM ruvector_integrity_policy_list('docs') WHERE in_force"
        ),
        "gentle"
    );
}

#[test]
fn unknown_collections_and_operations_get_the_documented_answers() {
    let cluster = Cluster::start("unknown", &[]);
    let mut db = cluster.client();
    collection(&mut db, "docs", 10);
    let (state, message) = error(&mut db, "SELECT ruvector_integrity_gate('nope', 'search')");
    assert_eq!(
        (state.as_str(), message.as_str()),
        ("42704", "collection \"nope\" is not registered")
    );
    let (state, message) = error(
        &mut db,
        "SELECT ruvector_integrity_allowed('docs', 'teleport')",
    );
    assert_eq!(
        (state.as_str(), message.as_str()),
        ("22023", "unknown operation \"teleport\"")
    );
    for sql in [
        "SELECT ruvector_integrity_status('nope')",
        "SELECT ruvector_contracted_graph('nope')",
        "SELECT ruvector_integrity_policy_set('nope', 'p', '{}')",
        "SELECT ruvector_integrity_override('nope', 'normal', '1 hour', 'x')",
    ] {
        assert_eq!(error(&mut db, sql).0, "42704", "{sql}");
    }
}

#[test]
fn without_preloading_the_library_refuses_to_load() {
    let cluster = Cluster::init("no-preload", &["shared_preload_libraries = ''"]);
    cluster.pg_ctl_start();
    let mut db = Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            cluster.port
        ),
        NoTls,
    )
    .unwrap();
    for sql in ["LOAD 'ruvector'", "CREATE EXTENSION ruvector"] {
        let e = db.batch_execute(sql).unwrap_err();
        let e = e.as_db_error().unwrap();
        assert_eq!(e.code().code(), "55000", "{sql}");
        assert_eq!(
            e.message(),
            "ruvector must be loaded via shared_preload_libraries"
        );
        assert!(e.hint().unwrap().contains("shared_preload_libraries"));
    }
}
