//! The solvers as SQL callers meet them: a cancel or a statement timeout ends
//! them in any phase, oversized and overflowing inputs are refused with their
//! SQLSTATE, what calls may hold together is bounded, and hostile inputs from
//! any role leave the server up. How fast a cancel takes effect is measured by
//! `make bench`, not asserted here.

use ruvector_tests::*;

/// Runs `sql`; returns its SQLSTATE, or "ok".
fn outcome(db: &mut Client, sql: &str) -> String {
    match db.batch_execute(sql) {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.as_db_error().unwrap().code().code().to_owned(),
    }
}

#[test]
fn a_timeout_or_a_cancel_ends_the_solvers_in_any_phase() {
    let cluster = Cluster::start("solver-cancel", &[]);
    let mut db = cluster.client();
    db.batch_execute(CUBIC_GRAPH).unwrap();

    // Reading the input is interruptible: with a bad last edge, a call that
    // read everything would fail with 22023; a timeout that fires while it
    // reads ends it first.
    let bad_last =
        "SELECT {f}(edges || '[{\"source\": 1, \"target\": 2, \"capacity\": -1}]') FROM g";
    for function in ["ruvector_mincut", "ruvector_lambda2"] {
        let sql = bad_last.replace("{f}", function);
        assert_eq!(
            outcome(&mut db, &sql),
            "22023",
            "{function} reads to the end"
        );
        db.batch_execute("SET statement_timeout = 1").unwrap();
        assert_eq!(outcome(&mut db, &sql), "57014", "{function} while reading");
        db.batch_execute("RESET statement_timeout").unwrap();
        assert_eq!(
            json(&mut db, "SELECT to_jsonb(1)"),
            1,
            "the backend is usable"
        );
    }

    // pg_cancel_backend from another session, once the call runs.
    let pid: i32 = db.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let mut other = cluster.client();
    for function in ["ruvector_mincut", "ruvector_lambda2"] {
        let canceller = {
            let mut other = cluster.client();
            std::thread::spawn(move || {
                wait_for(30, "the call to run", || {
                    other
                        .query_opt(
                            "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%edges%'",
                            &[&pid],
                        )
                        .unwrap()
                });
                other
                    .execute("SELECT pg_cancel_backend($1)", &[&pid])
                    .unwrap();
            })
        };
        let code = outcome(&mut db, &format!("SELECT {function}(edges) FROM g"));
        canceller.join().unwrap();
        assert_eq!(code, "57014", "{function}");
        assert_eq!(json(&mut db, "SELECT to_jsonb(1)"), 1);
    }
    // Nothing is held once the calls ended, however they ended.
    let held: i64 = other
        .query_one(
            "SELECT (ruvector._shared_memory() -> 'solver_memory' ->> 'held_bytes')::bigint",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(held, 0);
}

#[test]
fn oversized_and_overflowing_inputs_are_refused_cleanly() {
    let cluster = Cluster::start("solver-limits", &["ruvector.solver_max_edges = 3"]);
    let mut db = cluster.client();
    let four = "'[{\"source\": 1, \"target\": 2}, {\"source\": 2, \"target\": 3}, {\"source\": 3, \"target\": 4}, {\"source\": 4, \"target\": 1}]'";
    for function in ["ruvector_mincut", "ruvector_lambda2"] {
        let (code, message) = error(&mut db, &format!("SELECT {function}({four})"));
        assert_eq!(code, "54000", "{function}: {message}");
        assert!(message.contains('4') && message.contains('3'), "{message}");
    }
    // Only a superuser raises the limit.
    db.batch_execute("CREATE ROLE alice LOGIN").unwrap();
    let mut alice = cluster.client_as("alice");
    assert_eq!(
        error(&mut alice, "SET ruvector.solver_max_edges = 100000000").0,
        "42501"
    );
    db.batch_execute("SET ruvector.solver_max_edges = 10")
        .unwrap();
    assert_eq!(
        json(&mut db, &format!("SELECT ruvector_mincut({four})"))["lambda"],
        2.0
    );
    let (code, message) = error(
        &mut db,
        "SELECT ruvector_mincut('[{\"source\": 1, \"target\": 2, \"capacity\": 1e308}, {\"source\": 1, \"target\": 2, \"capacity\": 1e308}]')",
    );
    assert_eq!(code, "22003", "{message}");
    assert!(message.contains("edge"), "{message}");
    assert_eq!(json(&mut db, "SELECT to_jsonb(1)"), 1);
}

#[test]
fn every_bad_input_is_named_and_good_ones_answer() {
    let cluster = Cluster::start("solver-inputs", &[]);
    let mut db = cluster.client();
    for (input, code, words) in [
        ("'{\"source\": 1}'", "22023", "must be a JSON array"),
        ("'5'", "22023", "must be a JSON array"),
        ("'[1]'", "22023", "edge 0: must be an object"),
        (
            "'[{\"source\": 1, \"target\": 2}, {\"source\": 1, \"target\": 2, \"weight\": 3}]'",
            "22023",
            "edge 1: unknown key \"weight\"",
        ),
        (
            "'[{\"source\": null, \"target\": 2}]'",
            "22023",
            "\"source\" must be a string or a number",
        ),
        (
            "'[{\"source\": 1}]'",
            "22023",
            "\"target\" must be a string or a number",
        ),
        (
            "'[{\"source\": 1, \"target\": 2, \"capacity\": \"3\"}]'",
            "22023",
            "capacity must be a number",
        ),
        (
            "'[{\"source\": 1, \"target\": 2, \"capacity\": 1e400}]'",
            "22023",
            "finite number",
        ),
    ] {
        let (got, message) = error(&mut db, &format!("SELECT ruvector_mincut({input})"));
        assert_eq!(
            (got.as_str(), message.contains(words)),
            (code, true),
            "{input}: {message}"
        );
    }
    // Names are text or numbers; 1 and 1.0 are one node, written back as a number.
    let cut = json(
        &mut db,
        "SELECT ruvector_mincut('[{\"source\": 1, \"target\": \"b\", \"capacity\": 2.5},
                                  {\"source\": \"b\", \"target\": \"c\"}, {\"source\": \"c\", \"target\": 1.0}]')",
    );
    assert_eq!(cut["lambda"], 2.0);
    assert_eq!(cut["nodes"], 3);
    let all: Vec<Value> = cut["side"].as_array().unwrap().clone();
    assert!(all.iter().all(|v| v.is_number() || v.is_string()), "{cut}");
    assert_eq!(
        json(&mut db, "SELECT ruvector_mincut('[]')")["lambda"],
        Value::Null
    );
    assert_eq!(
        json(
            &mut db,
            "SELECT ruvector_lambda2('[{\"source\": \"a\", \"target\": \"b\"}]')"
        )["lambda2"],
        2.0
    );
    // The small documents of the other functions are bounded too.
    let (code, message) = error(
        &mut db,
        "SELECT ruvector_integrity_simulate('x', jsonb_build_object('k', repeat('v', 2000000)))",
    );
    assert_eq!(code, "54000", "{message}");
}

/// Peak resident memory of process `pid`, in kB.
fn peak_rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The attacker's repro from the review: any role that can connect, a
/// 5,000,000-element input, four sessions at once. Before, each call turned
/// the document into a `serde_json::Value` tree (gigabytes each) and the
/// postmaster restarted every session when one allocation failed.
#[test]
fn hostile_calls_on_a_huge_input_leave_the_server_up_with_bounded_memory() {
    let cluster = Cluster::start("solver-hostile", &[]);
    let mut db = cluster.client();
    db.batch_execute(
        "CREATE ROLE mallory LOGIN;
         CREATE TABLE j AS SELECT ('[' || repeat('{\"a\":0},', 5000000) || '{\"a\":0}]')::jsonb v;
         GRANT SELECT ON j TO mallory;",
    )
    .unwrap();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let mut mallory = cluster.client_as("mallory");
            std::thread::spawn(move || {
                let pid: i32 = mallory
                    .query_one("SELECT pg_backend_pid()", &[])
                    .unwrap()
                    .get(0);
                let before = peak_rss_kb(pid);
                let code = outcome(&mut mallory, "SELECT ruvector_mincut(v) FROM j");
                (code, peak_rss_kb(pid).saturating_sub(before))
            })
        })
        .collect();
    for caller in callers {
        let (code, grown_kb) = caller.join().unwrap();
        eprintln!(
            "a hostile call: {code}, its backend grew by {} MB",
            grown_kb / 1024
        );
        // Refused on its first element, or for want of the solvers' memory budget.
        assert!(code == "22023" || code == "53200", "{code}");
        assert!(grown_kb < 100 * 1024, "the backend grew by {grown_kb} kB");
    }
    assert_eq!(json(&mut db, "SELECT to_jsonb(1)"), 1);
    assert!(
        !cluster.log().contains("terminated by signal"),
        "{}",
        cluster.log()
    );
}

#[test]
fn the_solvers_memory_limit_bounds_what_calls_hold_together() {
    let cluster = Cluster::start("solver-budget", &["ruvector.solver_memory_limit = '16MB'"]);
    let mut db = cluster.client();
    // 200,000 edges need about 32 MB: more than the whole limit.
    db.batch_execute(
        "CREATE TABLE path AS SELECT jsonb_agg(jsonb_build_object('source', i, 'target', i + 1)) AS edges
         FROM generate_series(1, 200000) i",
    )
    .unwrap();
    let (code, message) = error(&mut db, "SELECT ruvector_mincut(edges) FROM path");
    assert_eq!(code, "53200", "{message}");
    assert!(
        message.contains("ruvector.solver_memory_limit"),
        "{message}"
    );
    execute_each(
        &mut db,
        "ALTER SYSTEM SET ruvector.solver_memory_limit = '64MB';\nSELECT pg_reload_conf();",
    );
    let cut: Value = wait_for(10, "the reload", || {
        db.query_one("SELECT ruvector_mincut(edges) FROM path", &[])
            .ok()
            .map(|row| row.get(0))
    });
    assert_eq!(cut["lambda"], 1.0);
    // A call that ended gave its share back.
    let held: i64 = db
        .query_one(
            "SELECT (ruvector._shared_memory() -> 'solver_memory' ->> 'held_bytes')::bigint",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(held, 0);
}
