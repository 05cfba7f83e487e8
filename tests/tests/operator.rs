//! What an operator looks at, checked as they would: the graph picture
//! rendered by Graphviz, the λ_norm chart, the worker's log, and the
//! documentation of every SQL function.

use std::process::Command;

use ruvector_tests::*;

/// A cluster whose collection expects a standby that does not exist (critical
/// after two samples), so that the worker makes real state changes.
fn cluster_with_a_missing_standby(name: &str) -> (Cluster, Client) {
    let cluster = Cluster::start(
        name,
        &[
            "ruvector.expected_standbys = 'ghost'",
            "ruvector.startup_grace = 0",
        ],
    );
    let mut db = cluster.client();
    collection(&mut db, "docs", 10);
    db.execute(
        r#"SELECT ruvector_integrity_policy_set('docs', 'default', '{"hysteresis": {"degrade_samples": 2,
             "critical_samples": 2, "restore_hold_seconds": 2, "cooldown_after_transition_seconds": 1}}')"#,
        &[],
    )
    .unwrap();
    wait_for_state(&mut db, "docs", "critical", 30);
    (cluster, db)
}

#[test]
fn the_graph_picture_styles_every_witness_edge_and_the_log_names_each_change() {
    let (cluster, mut db) = cluster_with_a_missing_standby("picture");
    let status = json(&mut db, "SELECT ruvector_integrity_status('docs')");
    let witness = status["witness_edges"].as_array().unwrap().clone();
    assert!(!witness.is_empty(), "{status}");
    let dot: String = db
        .query_one("SELECT ruvector_contracted_graph_dot('docs')", &[])
        .unwrap()
        .get(0);
    assert!(dot.contains("docs: critical, λ "), "{dot}");
    // Rendered by Graphviz: each witness edge is drawn red.
    let path = std::env::temp_dir().join(format!("ruvector-picture-{}.dot", std::process::id()));
    std::fs::write(&path, &dot).unwrap();
    let svg = Command::new("dot")
        .args(["-Tsvg", path.to_str().unwrap()])
        .output()
        .expect("Graphviz's dot");
    std::fs::remove_file(&path).unwrap();
    assert!(svg.status.success());
    let svg = String::from_utf8(svg.stdout).unwrap();
    let edges: Vec<&str> = svg.split("class=\"edge\"").skip(1).collect();
    for w in &witness {
        let (a, b) = (w["source"].as_str().unwrap(), w["target"].as_str().unwrap());
        let title = |x: &str, y: &str| format!("<title>{x}&#45;&#45;{y}</title>");
        let drawn = edges
            .iter()
            .find(|e| e.contains(&title(a, b)) || e.contains(&title(b, a)))
            .unwrap_or_else(|| panic!("witness edge {a} -- {b} not drawn:\n{svg}"));
        assert!(
            drawn.contains("stroke=\"red\"") && drawn.contains("stroke-width=\"2.5\""),
            "{drawn}"
        );
    }
    // The worker's log: one line per state change, with λ_norm and the witness.
    let log = cluster.log();
    let changes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ruvector: collection \"docs\" went from"))
        .collect();
    assert_eq!(changes.len(), 1, "{log}");
    assert!(
        changes[0].contains("went from unknown to critical (lambda_norm ")
            && changes[0].contains(", witness: ")
            && changes[0].contains("ghost"),
        "{}",
        changes[0]
    );
}

#[test]
fn the_lambda_chart_holds_both_thresholds_and_every_state_change() {
    let (_cluster, mut db) = cluster_with_a_missing_standby("chart");
    // The standby is no longer expected: recovery, through stress.
    db.batch_execute("ALTER SYSTEM SET ruvector.expected_standbys = ''")
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_for_state(&mut db, "docs", "normal", 60);
    let series = ruvector_chart::read(&mut db, "docs").unwrap();
    let base = std::env::temp_dir().join(format!("ruvector-chart-{}", std::process::id()));
    let (svg, png) = ruvector_chart::render(&series, &base).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
    std::fs::remove_file(&svg).unwrap();
    std::fs::remove_file(&png).unwrap();
    for threshold in ["threshold_high 0.80", "threshold_low 0.30"] {
        assert!(
            text.lines().any(|l| l.trim() == threshold),
            "{threshold} missing"
        );
    }
    let changes: Vec<(String, String)> = db
        .query(
            "SELECT previous_state, new_state FROM ruvector.integrity_events
             WHERE event_type = 'state_change' ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        changes,
        [
            ("unknown", "critical"),
            ("critical", "stress"),
            ("stress", "normal")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    for (from, to) in &changes {
        let label = ruvector_chart::change_label("state_change", Some(from), Some(to));
        assert!(text.lines().any(|l| l.trim() == label), "{label} missing");
    }
    assert!(series.samples.len() >= 6);
}

#[test]
fn every_sql_function_is_documented_and_the_seeds_examples_run_as_written() {
    let cluster = Cluster::start("documented", &[]);
    let mut db = cluster.client();
    // The design document's usage examples, on a cluster whose first
    // collection is named as there (they read collection_id = 1).
    collection(&mut db, "embeddings", 100);
    wait_for_state(&mut db, "embeddings", "normal", 30);
    wait_signed(&mut db);
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let examples = std::fs::read_to_string(docs.join("seed-examples.sql")).unwrap();
    let statements: Vec<&str> = examples
        .split(";\n")
        .map(str::trim)
        .filter(|s| {
            s.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with("--"))
        })
        .collect();
    assert_eq!(statements.len(), 6, "{statements:#?}");
    let mut answers = Vec::new();
    for sql in statements {
        let rows = db
            .query(sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
        answers.push(rows);
    }
    let status: Value = answers[0][0].get(0);
    assert_eq!(status["state"], "normal", "{status}");
    let gate: Value = answers[1][0].get(0);
    assert_eq!(gate["allowed"], true, "{gate}");
    let history = &answers[3];
    assert!(
        history
            .iter()
            .any(|r| r.get::<_, String>("event_type") == "state_change"),
        "the first sample's state change is in the history"
    );
    let signatures = &answers[4];
    assert!(!signatures.is_empty());
    assert!(signatures
        .iter()
        .all(|r| r.get::<_, bool>("signature_valid")));
    let policy: Value = answers[5][0].get(0);
    assert_eq!(policy["in_force"], true, "{policy}");
    assert_eq!(policy["document"]["threshold_high"], 0.7, "{policy}");

    let functions: Vec<String> = db
        .query(
            "SELECT DISTINCT p.proname::text FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
             WHERE d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
               AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ruvector')
             ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(functions.len() > 20, "{functions:?}");
    let text: String = std::fs::read_dir(&docs)
        .expect("docs/")
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let missing: Vec<&String> = functions
        .iter()
        .filter(|f| !text.contains(&format!("`{f}")) && !text.contains(&format!(".{f}")))
        .collect();
    assert!(missing.is_empty(), "not in docs/: {missing:?}");
}
