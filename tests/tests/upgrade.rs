//! Upgrades: each earlier release's SQL (`extension/sql/releases/`, installed
//! by `make install`) filled with collections, policies and signed entries,
//! then `ALTER EXTENSION ruvector UPDATE`; and `DROP EXTENSION` refused while
//! the signed trail was not exported.

use ruvector_integrity::audit::chain::Trust;
use ruvector_integrity::audit::export;
use ruvector_integrity::audit::from_hex_array;
use ruvector_tests::*;

/// The earlier releases, each with its install script in
/// `extension/sql/releases/`.
const EARLIER: [&str; 3] = ["0.1.0", "0.2.0", "0.3.0"];

/// The signed entries of an export (its lines after the header).
fn entries(export: &str) -> Vec<&str> {
    export.lines().skip(1).collect()
}

/// An installation of ruvector as text, object by object, to compare two:
/// every member, each function's definition and grants, each column of its
/// relations (by name, not position), grants, views, constraints, triggers,
/// indexes and the tables pg_dump keeps.
const SCHEMA: &str = "
WITH ext AS (SELECT oid, extconfig FROM pg_extension WHERE extname = 'ruvector'),
members AS (
    SELECT d.classid, d.objid, d.objsubid FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
rels AS (SELECT objid AS oid FROM members WHERE classid = 'pg_class'::regclass)
SELECT pg_describe_object(classid, objid, objsubid) FROM members
UNION ALL
SELECT 'function ' || p.oid::regprocedure || ' ' || md5(pg_get_functiondef(p.oid))
       || ' acl ' || coalesce(p.proacl::text, '-')
FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
WHERE p.prokind <> 'a'
UNION ALL
SELECT 'column ' || a.attrelid::regclass || '.' || a.attname || ' '
       || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || ' ' || a.attgenerated::text
       || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-') || ' acl ' || coalesce(a.attacl::text, '-')
FROM pg_attribute a JOIN rels r ON r.oid = a.attrelid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'relation ' || c.oid::regclass || ' ' || c.relkind::text || ' acl ' || coalesce(c.relacl::text, '-')
       || coalesce(' view ' || md5(pg_get_viewdef(c.oid)), '')
FROM pg_class c JOIN rels r ON r.oid = c.oid
UNION ALL
SELECT 'constraint ' || k.conrelid::regclass || ' ' || pg_get_constraintdef(k.oid)
FROM pg_constraint k JOIN rels r ON r.oid = k.conrelid
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text
FROM pg_trigger t JOIN rels r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
UNION ALL
SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN rels r ON r.oid = i.indrelid
UNION ALL
SELECT 'kept by pg_dump ' || unnest(extconfig)::regclass FROM ext
ORDER BY 1";

fn schema(db: &mut Client) -> Vec<String> {
    db.query(SCHEMA, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn an_update_from_0_1_0_keeps_the_data_and_the_chain() {
    update_from(EARLIER[0]);
}

#[test]
fn an_update_from_0_2_0_keeps_the_data_and_the_chain() {
    update_from(EARLIER[1]);
}

#[test]
fn an_update_from_0_3_0_keeps_the_data_and_the_chain() {
    update_from(EARLIER[2]);
}

/// Installs release `previous`, fills it with a collection, policies, an
/// override and signed entries, updates it, and checks what was kept.
fn update_from(previous: &str) {
    let cluster = Cluster::start_without_extension(&format!("upgrade-{previous}"), &[]);
    let mut db = cluster.client();
    db.batch_execute(&format!("CREATE EXTENSION ruvector VERSION '{previous}'"))
        .unwrap();
    collection(&mut db, "docs", 10);
    wait_for_state(&mut db, "docs", "normal", 30);
    db.batch_execute(
        "SELECT ruvector_integrity_policy_set('docs', 'strict', '{\"threshold_high\": 0.9}');
         SELECT ruvector_integrity_override('docs', 'stress', '1 hour', 'before the update');",
    )
    .unwrap();
    wait_signed(&mut db);
    let root = from_hex_array(
        json(&mut db, "SELECT ruvector_verify_audit_chain()")["root_fingerprint"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let before = exported(&mut db);

    db.batch_execute("ALTER EXTENSION ruvector UPDATE").unwrap();
    let (version, default): (String, String) = {
        let row = db
            .query_one(
                "SELECT e.extversion, a.default_version FROM pg_extension e
                 JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'ruvector'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_ne!(version, previous);
    assert_eq!(version, default);

    // Everything is kept, and the new API works on it.
    let status = json(
        &mut db,
        "SELECT to_jsonb(s) FROM ruvector.collections_status s WHERE collection = 'docs'",
    );
    assert_eq!(status["state"], "stress", "{status}");
    assert_eq!(status["policy"], "strict", "{status}");
    json(
        &mut db,
        "SELECT ruvector_integrity_policy_activate('docs', 'default')",
    );
    wait_signed(&mut db);

    // The chain goes on across the update: every entry signed before is
    // still there, unchanged, and the whole chain verifies in the database
    // and outside it, from the pinned root (what `ruvector-audit verify
    // --root` runs).
    let after = exported(&mut db);
    assert!(entries(&after).len() > entries(&before).len());
    assert_eq!(
        entries(&after)[..entries(&before).len()],
        entries(&before)[..]
    );
    assert_eq!(
        json(&mut db, "SELECT ruvector_verify_audit_chain()")["ok"],
        true
    );
    let trust = Trust {
        roots: vec![root],
        checkpoints: Vec::new(),
    };
    export::verify(after.as_bytes(), trust).unwrap_or_else(|f| panic!("{f:?}"));

    // The updated installation is the release's, object for object.
    db.batch_execute("CREATE DATABASE fresh").unwrap();
    let mut fresh = cluster.connect("postgres", "fresh");
    fresh.batch_execute("CREATE EXTENSION ruvector").unwrap();
    let (updated, installed) = (schema(&mut db), schema(&mut fresh));
    assert!(installed.len() > 200, "{installed:#?}");
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|x| !b.contains(x)).cloned().collect()
    };
    assert!(
        updated == installed,
        "only after the update: {:#?}\nonly in a fresh install: {:#?}",
        only(&updated, &installed),
        only(&installed, &updated)
    );
}

#[test]
fn drop_extension_waits_until_the_signed_trail_is_exported() {
    let (cluster, mut db) = cluster_with_docs("drop-unexported", &[]);
    db.batch_execute("CREATE ROLE stranger LOGIN").unwrap();
    wait_signed(&mut db);

    let (state, message) = error(&mut db, "DROP EXTENSION ruvector");
    assert_eq!(state, "55000", "{message}");
    assert!(message.contains("never exported"), "{message}");
    // Anyone else meets PostgreSQL's refusal, and learns nothing.
    let mut stranger = cluster.client_as("stranger");
    let (state, message) = error(&mut stranger, "DROP EXTENSION ruvector");
    assert_eq!(state, "42501", "{message}");
    assert!(message.contains("must be owner"), "{message}");
    let (state, _) = error(&mut stranger, "SET ruvector.allow_unexported_drop = on");
    assert_eq!(state, "42501");

    // Exported (the lines read by the client): the drop goes through.
    let trail = exported(&mut db);
    assert!(!entries(&trail).is_empty());
    db.batch_execute("DROP EXTENSION ruvector").unwrap();

    // A new installation's trail, not exported: a superuser's setting lets
    // the drop through.
    db.batch_execute("CREATE EXTENSION ruvector").unwrap();
    collection(&mut db, "docs2", 10);
    wait_signed(&mut db);
    assert_eq!(error(&mut db, "DROP EXTENSION ruvector").0, "55000");
    db.batch_execute("SET ruvector.allow_unexported_drop = on; DROP EXTENSION ruvector")
        .unwrap();
}
