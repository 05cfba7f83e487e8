//! Dump and restore: a database's collections, policies, states and audit
//! trail go with it, and the cluster it lands in carries on.

use ruvector_tests::*;

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

    let target = Cluster::start_without_extension("dump-target", &[]);
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
    let rows: i64 = db
        .query_one("SELECT count(*) FROM docs", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 20000);

    // The restored chain verifies, and this cluster's worker carries it on.
    assert_eq!(events(&mut db), dumped_events);
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
