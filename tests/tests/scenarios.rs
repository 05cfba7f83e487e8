//! The contracted graph is the system: real faults — a standby stopped or
//! paused, a foreign server down or black-holed, IVF lists drifted, a metric
//! flapping — reach the state SPEC §3's scenario table says, in the number of
//! samples the policy says, with witness edges naming the component.

use std::net::TcpListener;
use std::time::Instant;

use ruvector_tests::*;

/// A policy whose recovery holds and cooldown fit in a test: 2 s holds, 1 s
/// cooldown, the v2 defaults otherwise (3 samples to stress, 2 to critical).
fn fast_policy(db: &mut Client, name: &str) {
    db.execute(
        "SELECT ruvector_integrity_policy_set($1, 'fast', '{\"hysteresis\": {\"restore_hold_seconds\": 2, \"cooldown_after_transition_seconds\": 1}}')",
        &[&name],
    )
    .unwrap();
}

/// Waits until `name` has taken `more` samples beyond now.
fn wait_samples(db: &mut Client, name: &str, more: i64) {
    let start = sample_count(db, name);
    wait_for(60, &format!("{more} samples of {name}"), || {
        (sample_count(db, name) >= start + more).then_some(())
    });
}

/// The state changes of `name`, oldest first, as `from>to`.
fn transitions(db: &mut Client, name: &str) -> Vec<String> {
    db.query(
        "SELECT previous_state || '>' || new_state FROM ruvector.integrity_events
         WHERE collection_name = $1 AND event_type = 'state_change' ORDER BY seq",
        &[&name],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// `(lambda_norm, state, seconds since the epoch)` of every stored sample of `name`.
fn samples(db: &mut Client, name: &str) -> Vec<(f64, String, f64)> {
    db.query(
        "SELECT s.lambda_norm, s.state, extract(epoch FROM s.sampled_at)::float8
         FROM ruvector.integrity_samples s JOIN ruvector.collections c ON c.id = s.collection_id
         WHERE c.name = $1 ORDER BY s.sampled_at",
        &[&name],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// `ruvector_integrity_explain(name)`, checked against its text rendering,
/// and the components of its smallest repair.
fn explained(db: &mut Client, name: &str) -> (Value, Vec<String>) {
    let e = json(db, &format!("SELECT ruvector_integrity_explain('{name}')"));
    let text: String = db
        .query_one("SELECT ruvector_integrity_explain_text($1)", &[&name])
        .unwrap()
        .get(0);
    let repair: Vec<String> = e["repair"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["component"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(e["repair"]["exact"], true, "{e}");
    for c in &repair {
        assert!(text.contains(c.as_str()), "{c} not in\n{text}");
    }
    (e, repair)
}

/// A streaming standby of `primary` made with `pg_basebackup -R` under
/// `dir` (unique to the test), whose application name is `name`, started.
fn standby(primary: &Cluster, dir: &str, name: &str) -> Cluster {
    let standby = primary.base_backup(dir, &[&format!("cluster_name = '{name}'")]);
    standby.pg_ctl_start();
    standby
}

/// `rows` vectors of `dim` values around eight centres, moved by `shift`.
fn insert_vectors(db: &mut Client, table: &str, rows: i32, dim: i32, shift: f64) {
    db.batch_execute(&format!(
        "INSERT INTO {table} (embedding)
         SELECT array(SELECT (random() + (g % 8) * 3 + {shift})::real FROM generate_series(1, {dim}) WHERE g > 0)
         FROM generate_series(1, {rows}) g"
    ))
    .unwrap();
}

/// A table of `partitions` hash partitions (a plain table for 1) registered as
/// collection `name`, with `rows` 8-dimensional vectors.
fn partitioned_collection(db: &mut Client, name: &str, partitions: u32, rows: i32) {
    collection_of_type(db, name, partitions, rows, "real[]");
}

/// As [`partitioned_collection`], with vectors of `column_type` (one that
/// real[] is assigned to).
fn collection_of_type(db: &mut Client, name: &str, partitions: u32, rows: i32, column_type: &str) {
    if partitions == 1 {
        db.batch_execute(&format!(
            "CREATE TABLE {name} (id bigserial PRIMARY KEY, embedding {column_type})"
        ))
        .unwrap();
    } else {
        db.batch_execute(&format!(
            "CREATE TABLE {name} (id bigserial PRIMARY KEY, embedding {column_type}) PARTITION BY HASH (id)"
        ))
        .unwrap();
        for i in 0..partitions {
            db.batch_execute(&format!(
                "CREATE TABLE {name}_p{i} PARTITION OF {name} FOR VALUES WITH (MODULUS {partitions}, REMAINDER {i})"
            ))
            .unwrap();
        }
    }
    insert_vectors(db, name, rows, 8, 0.0);
    db.batch_execute(&format!(
        "SELECT ruvector_register_collection('{name}', '{name}', 'embedding', dimensions => 8)"
    ))
    .unwrap();
}

#[test]
fn healthy_collections_of_1_8_and_64_partitions_stay_exactly_normal() {
    let cluster = Cluster::start("healthy", &[]);
    let mut db = cluster.client();
    for (name, partitions) in [("one", 1), ("eight", 8), ("sixtyfour", 64)] {
        partitioned_collection(&mut db, name, partitions, 4000);
    }
    for name in ["eight", "sixtyfour"] {
        let trained = json(&mut db, &format!("SELECT ruvector_ivf_train('{name}', 16)"));
        assert_eq!(trained["trained_rows"], 4000, "{trained}");
    }
    for name in ["one", "eight", "sixtyfour"] {
        wait_for_state(&mut db, name, "normal", 30);
    }
    wait_samples(&mut db, "sixtyfour", 10);
    for name in ["one", "eight", "sixtyfour"] {
        let s = status(&mut db, name);
        assert_eq!(s["state"], "normal", "{name}: {s}");
        assert_eq!(s["lambda_norm"], 1.0, "{name}: {s}");
        assert_eq!(transitions(&mut db, name), ["unknown>normal"], "{name}");
        assert!(samples(&mut db, name)
            .iter()
            .all(|(l, state, _)| *l == 1.0 && state == "normal"));
    }
    let graph = json(&mut db, "SELECT ruvector_contracted_graph('sixtyfour')");
    let kinds = |kind: &str| {
        graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["type"] == kind)
            .count()
    };
    assert_eq!(kinds("partition"), 64);
    assert_eq!(kinds("centroid"), 16);
    // The picture groups nodes by type.
    let dot: String = db
        .query_one("SELECT ruvector_contracted_graph_dot('sixtyfour')", &[])
        .unwrap()
        .get(0);
    for group in [
        "cluster_centroid",
        "cluster_partition",
        "cluster_shard",
        "cluster_maintenance_dep",
    ] {
        assert!(dot.contains(group), "{group} missing from the picture");
    }
}

#[test]
fn an_expected_standby_stopped_is_critical_and_restarted_recovers_through_stress() {
    let primary = Cluster::start(
        "standby-primary",
        &[
            "ruvector.expected_standbys = 'replica1'",
            "ruvector.startup_grace = 0",
            "wal_keep_size = '256MB'",
        ],
    );
    let mut db = primary.client();
    // Registered while the standby does not exist yet: the first samples obey
    // the counts, so the state is unknown, then critical, never critical at once.
    collection(&mut db, "docs", 10);
    wait_for_state(&mut db, "docs", "critical", 30);
    let first = samples(&mut db, "docs");
    assert_eq!(
        (first[0].0, first[0].1.as_str()),
        (0.0, "unknown"),
        "{first:?}"
    );
    assert_eq!(transitions(&mut db, "docs"), ["unknown>critical"]);
    assert!(witnesses(&mut db, "docs").contains("replication_target:replica1"));
    fast_policy(&mut db, "docs");

    let replica = standby(&primary, "lost-replica1", "replica1");
    wait_streaming(&mut db, &["replica1"]);
    wait_for_state(&mut db, "docs", "normal", 60);
    assert_eq!(
        transitions(&mut db, "docs"),
        ["unknown>critical", "critical>stress", "stress>normal"]
    );

    // The fault, and the time to the first refused write.
    let fault_at = now_epoch(&mut db);
    let started = Instant::now();
    replica.stop();
    let refused = wait_for(30, "a write to be refused", || {
        match db.execute("INSERT INTO docs (embedding) VALUES ('{1,2,3}')", &[]) {
            Ok(_) => None,
            Err(e) => Some(e.as_db_error().unwrap().code().code().to_owned()),
        }
    });
    assert_eq!(refused, "55000");
    // (How long that takes is `make bench`'s to report: critical_samples
    // samples after the fault, as the samples below show.)
    eprintln!(
        "standby stopped: first write refused after {:?}",
        started.elapsed()
    );
    let after: Vec<_> = samples(&mut db, "docs")
        .into_iter()
        .filter(|s| s.2 >= fault_at)
        .collect();
    let to_critical = after.iter().position(|s| s.1 == "critical").unwrap();
    assert_eq!(
        after[..=to_critical].iter().filter(|s| s.0 < 0.3).count(),
        2,
        "critical after critical_samples samples: {after:?}"
    );
    assert!(witnesses(&mut db, "docs").contains("replication_target:replica1"));
    let (e, repair) = explained(&mut db, "docs");
    assert_eq!(repair, ["replication_target:replica1"], "{e}");
    let stream = &e["repair"]["components"][0]["health_function"];
    assert_eq!(stream["function"], "standby_stream", "{e}");
    assert_eq!(stream["measured"]["status"], "absent", "{e}");
    assert_eq!(e["repair"]["lambda_norm_after"], 1.0, "{e}");
    assert!(
        e["refused"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["operation"] == "insert"),
        "{e}"
    );

    replica.pg_ctl_start();
    wait_streaming(&mut db, &["replica1"]);
    wait_for_state(&mut db, "docs", "normal", 60);
    let seen = transitions(&mut db, "docs");
    assert_eq!(
        seen[seen.len() - 3..],
        ["normal>critical", "critical>stress", "stress>normal"]
    );

    // A server restart: the standby reconnects within the startup grace, and
    // nothing changes state.
    db.batch_execute("ALTER SYSTEM SET ruvector.startup_grace = 60")
        .unwrap();
    let before = transitions(&mut db, "docs");
    primary.restart();
    let mut db = primary.client();
    wait_streaming(&mut db, &["replica1"]);
    wait_samples(&mut db, "docs", 5);
    assert_eq!(transitions(&mut db, "docs"), before);
    assert_eq!(state(&mut db, "docs"), "normal");
}

#[test]
fn two_expected_standbys_one_lost_or_lagging_is_stress_an_undeclared_one_never_counts() {
    let primary = Cluster::start(
        "two-standbys",
        &[
            "ruvector.expected_standbys = 'replica1, replica2'",
            "ruvector.startup_grace = 0",
            "ruvector.replication_lag_budget = '1MB'",
            "wal_keep_size = '256MB'",
        ],
    );
    let mut db = primary.client();
    let replica1 = standby(&primary, "two-replica1", "replica1");
    let replica2 = standby(&primary, "two-replica2", "replica2");
    let adhoc = standby(&primary, "two-adhoc", "adhoc");
    wait_streaming(&mut db, &["replica1", "replica2", "adhoc"]);
    collection(&mut db, "docs", 10);
    fast_policy(&mut db, "docs");
    wait_for_state(&mut db, "docs", "normal", 30);
    let graph = json(&mut db, "SELECT ruvector_contracted_graph('docs')");
    let primary_node = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "primary")
        .unwrap()
        .clone();
    assert!(primary_node["data"]["undeclared_standbys"]
        .to_string()
        .contains("adhoc"));
    // What if: failing a standby breaks its stream, not the graph.
    let what_if = json(
        &mut db,
        "SELECT ruvector_integrity_simulate('docs', '{\"replication_target:replica1\": 0}')",
    );
    assert_eq!(what_if["simulated"]["level"], "stress", "{what_if}");
    let both = json(
        &mut db,
        "SELECT ruvector_integrity_simulate('docs', '{\"replication_target:replica1\": 0, \"replication_target:replica2\": 0}')",
    );
    assert_eq!(both["simulated"]["level"], "critical", "{both}");

    // The standby nobody declared goes away: nothing changes.
    adhoc.stop();
    wait_samples(&mut db, "docs", 5);
    assert_eq!(state(&mut db, "docs"), "normal");
    assert_eq!(transitions(&mut db, "docs"), ["unknown>normal"]);

    // One of two expected standbys stopped: stress, never critical.
    replica2.stop();
    wait_for_state(&mut db, "docs", "stress", 30);
    let s = status(&mut db, "docs");
    assert!(
        (s["lambda_norm"].as_f64().unwrap() - 0.4).abs() < 1e-9,
        "{s}"
    );
    assert!(s["witness_edges"]
        .to_string()
        .contains("replication_target:replica2"));
    replica2.pg_ctl_start();
    wait_streaming(&mut db, &["replica2"]);
    wait_for_state(&mut db, "docs", "normal", 60);

    // One standby's replay paused while the primary writes past the budget.
    let mut r1 = replica1.client();
    r1.batch_execute("SELECT pg_wal_replay_pause()").unwrap();
    db.batch_execute(
        "CREATE TABLE filler (t text);
         INSERT INTO filler SELECT repeat(md5(i::text), 40) FROM generate_series(1, 3000) i",
    )
    .unwrap();
    wait_for_state(&mut db, "docs", "stress", 30);
    let s = status(&mut db, "docs");
    assert!(
        s["witness_edges"]
            .to_string()
            .contains("replication_target:replica1"),
        "{s}"
    );
    assert!(samples(&mut db, "docs").iter().all(|s| s.1 != "critical"));
    r1.batch_execute("SELECT pg_wal_replay_resume()").unwrap();
    wait_for_state(&mut db, "docs", "normal", 60);
}

#[test]
fn a_foreign_shard_down_is_critical_and_named_and_never_stalls_the_worker() {
    let remote = Cluster::start_without_extension("remote", &[]);
    remote
        .client()
        .batch_execute("CREATE TABLE docs_remote (id bigint, embedding real[])")
        .unwrap();
    // A server that accepts connections and never answers.
    let black_hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_port = black_hole.local_addr().unwrap().port();

    let primary = Cluster::start("shards", &[]);
    let mut db = primary.client();
    execute_each(
        &mut db,
        &format!(
            "CREATE EXTENSION postgres_fdw;
             CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw
                 OPTIONS (host '127.0.0.1', port '{}', dbname '{DATABASE}', connect_timeout '2');
             CREATE USER MAPPING FOR postgres SERVER remote OPTIONS (user 'postgres');
             CREATE SERVER hole FOREIGN DATA WRAPPER postgres_fdw
                 OPTIONS (host '127.0.0.1', port '{hole_port}', dbname 'x', connect_timeout '2');
             CREATE TABLE docs (id bigint, embedding real[]) PARTITION BY RANGE (id);
             CREATE TABLE docs_local PARTITION OF docs FOR VALUES FROM (0) TO (1000);
             CREATE FOREIGN TABLE docs_far PARTITION OF docs FOR VALUES FROM (1000) TO (2000)
                 SERVER remote OPTIONS (table_name 'docs_remote');
             INSERT INTO docs SELECT i, ARRAY[i, i, i]::real[] FROM generate_series(0, 1999) i;
             SELECT ruvector_register_collection('docs', 'docs', 'embedding', dimensions => 3);
             CREATE TABLE lost (id bigint, embedding real[]) PARTITION BY RANGE (id);
             CREATE TABLE lost_local PARTITION OF lost FOR VALUES FROM (0) TO (1000);
             CREATE FOREIGN TABLE lost_far PARTITION OF lost FOR VALUES FROM (1000) TO (2000)
                 SERVER hole OPTIONS (table_name 'x');",
            remote.port
        ),
    );
    fast_policy(&mut db, "docs");
    wait_for_state(&mut db, "docs", "normal", 30);
    assert_eq!(status(&mut db, "docs")["lambda_norm"], 1.0);

    // A collection on a black-holed server: each probe waits out its 2 s
    // timeout, and the worker keeps sampling everything else meanwhile.
    db.batch_execute(
        "SELECT ruvector_register_collection('lost', 'lost', 'embedding', dimensions => 3)",
    )
    .unwrap();
    wait_for_state(&mut db, "lost", "critical", 30);
    assert!(witnesses(&mut db, "lost").contains("shard:hole"));
    let (e, repair) = explained(&mut db, "lost");
    assert_eq!(repair, ["shard:hole"], "{e}");

    let fault_at = now_epoch(&mut db);
    remote.stop();
    wait_for_state(&mut db, "docs", "critical", 30);
    assert!(
        witnesses(&mut db, "docs").contains("shard:remote"),
        "{}",
        witnesses(&mut db, "docs")
    );
    let (e, repair) = explained(&mut db, "docs");
    assert_eq!(repair, ["shard:remote"], "{e}");
    let probe = &e["repair"]["components"][0]["health_function"];
    assert_eq!(
        (&probe["function"], &probe["measured"]["reachable"]),
        (&json!("reachability"), &json!(false)),
        "{e}"
    );
    wait_samples(&mut db, "docs", 3);
    let during: Vec<f64> = samples(&mut db, "docs")
        .into_iter()
        .filter(|s| s.2 >= fault_at)
        .map(|s| s.2)
        .collect();
    // Samples kept coming while the black hole held each probe for its
    // timeout (each probe's bound is the core's `probe` tests'; the longest
    // gap is `make bench`'s to report).
    assert!(during.len() >= 3, "{during:?}");
    let longest = during.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    eprintln!("foreign server down: longest gap between samples {longest:.2} s");

    remote.pg_ctl_start();
    wait_for_state(&mut db, "docs", "normal", 60);
    let seen = transitions(&mut db, "docs");
    assert_eq!(
        seen[seen.len() - 3..],
        ["normal>critical", "critical>stress", "stress>normal"]
    );
    drop(black_hole);
}

/// The drift is read through the column type's cast to real[] (as pgvector's
/// `vector` is read; pgvector is not in this machine's package archive).
#[test]
fn ivf_lists_drifted_by_shifted_inserts_are_stress_whatever_the_vector_type() {
    let cluster = Cluster::start("ivf-drift", &[]);
    let mut db = cluster.client();
    db.batch_execute(
        "CREATE TYPE my_vector AS (v real[]);
         CREATE FUNCTION my_vector_values(my_vector) RETURNS real[]
             LANGUAGE sql IMMUTABLE STRICT RETURN ($1).v;
         CREATE FUNCTION my_vector_of(real[]) RETURNS my_vector
             LANGUAGE sql IMMUTABLE STRICT RETURN ROW($1)::my_vector;
         CREATE CAST (my_vector AS real[]) WITH FUNCTION my_vector_values(my_vector);
         CREATE CAST (real[] AS my_vector) WITH FUNCTION my_vector_of(real[]) AS ASSIGNMENT;",
    )
    .unwrap();
    collection_of_type(&mut db, "docs", 4, 3000, "my_vector");
    fast_policy(&mut db, "docs");
    let trained = json(&mut db, "SELECT ruvector_ivf_train('docs', 16)");
    assert_eq!(trained["lists"], 16);
    wait_for_state(&mut db, "docs", "normal", 30);
    wait_samples(&mut db, "docs", 3);
    assert_eq!(status(&mut db, "docs")["lambda_norm"], 1.0);

    // 15% more rows (under the growth bound) far from every centroid.
    insert_vectors(&mut db, "docs", 450, 8, 100.0);
    wait_for_state(&mut db, "docs", "stress", 30);
    let s = status(&mut db, "docs");
    assert_eq!(s["lambda_norm"], 0.5, "{s}");
    assert!(s["witness_edges"].to_string().contains("centroid:"), "{s}");
    assert!(samples(&mut db, "docs").iter().all(|s| s.1 != "critical"));
    // Every list drifted: each is retrained, and the remedy says how.
    let (e, repair) = explained(&mut db, "docs");
    let lists = json(&mut db, "SELECT ruvector_contracted_graph('docs')")["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] == "centroid")
        .count();
    assert!(lists > 0 && repair.len() == lists, "{lists} lists: {e}");
    assert!(repair.iter().all(|c| c.starts_with("centroid:")), "{e}");
    let drift = &e["repair"]["components"][0];
    assert_eq!(drift["health_function"]["function"], "ivf_drift", "{e}");
    assert!(
        drift["health_function"]["measured"]["distance_ratio"]
            .as_f64()
            .unwrap()
            > 1.25,
        "{e}"
    );
    assert!(
        drift["remedy"]
            .as_str()
            .unwrap()
            .contains("ruvector_ivf_train('docs'"),
        "{e}"
    );

    // Retrained on what the collection holds now: normal again.
    json(&mut db, "SELECT ruvector_ivf_train('docs', 16)");
    wait_for_state(&mut db, "docs", "normal", 60);
}

#[test]
fn a_metric_flapping_every_sample_moves_the_state_at_most_once_per_cooldown() {
    let cluster = Cluster::start("flapping", &["ruvector.startup_grace = 0"]);
    let mut db = cluster.client();
    collection(&mut db, "docs", 10);
    db.execute(
        "SELECT ruvector_integrity_policy_set('docs', 'jumpy', '{\"hysteresis\": {\"degrade_samples\": 1, \"critical_samples\": 1, \"restore_hold_seconds\": 0, \"cooldown_after_transition_seconds\": 5}}')",
        &[],
    )
    .unwrap();
    wait_for_state(&mut db, "docs", "normal", 30);
    // An expected standby that is there one sample and gone the next. Once a
    // new session sees the setting, the worker has been signalled: at most
    // one more sample (already under way) is taken under the old one.
    for flip in 0..14 {
        let value = if flip % 2 == 0 { "ghost" } else { "" };
        execute_each(
            &mut db,
            &format!("ALTER SYSTEM SET ruvector.expected_standbys = '{value}';\nSELECT pg_reload_conf();"),
        );
        wait_for(30, "the reload", || {
            let mut fresh = cluster.client();
            (json(
                &mut fresh,
                "SELECT to_jsonb(current_setting('ruvector.expected_standbys'))",
            ) == value)
                .then_some(())
        });
        wait_samples(&mut db, "docs", 2);
    }
    let flips = samples(&mut db, "docs")
        .windows(2)
        .filter(|w| (w[0].0 < 0.3) != (w[1].0 < 0.3))
        .count();
    assert!(flips >= 10, "the metric flapped only {flips} times");
    let at: Vec<f64> = db
        .query(
            "SELECT extract(epoch FROM created_at)::float8 FROM ruvector.integrity_events
             WHERE collection_name = 'docs' AND event_type = 'state_change' ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(at.len() >= 2, "the state never moved: {at:?}");
    for pair in at.windows(2) {
        assert!(
            pair[1] - pair[0] >= 5.0 - 0.2,
            "two transitions within the cooldown: {at:?}"
        );
    }
}
