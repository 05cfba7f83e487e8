//! The solvers as SQL callers meet them: a cancel or a statement timeout stops
//! them at once, oversized and overflowing inputs are refused with their
//! SQLSTATE, and the backend stays usable after each.

use std::time::{Duration, Instant};

use ruvector_tests::*;

/// Runs `sql`; returns its SQLSTATE (or "ok") and how long it took.
fn timed(db: &mut Client, sql: &str) -> (String, Duration) {
    let started = Instant::now();
    let code = match db.batch_execute(sql) {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.as_db_error().unwrap().code().code().to_owned(),
    };
    (code, started.elapsed())
}

#[test]
fn a_timeout_or_a_cancel_stops_the_solvers_within_the_second() {
    let cluster = Cluster::start("solver-cancel", &[]);
    let mut db = cluster.client();
    // An unweighted cycle of 1,000,000 nodes plus a random perfect matching: a
    // cubic graph whose exact min cut (3) and λ₂ take seconds. The seed makes it
    // the same graph every run (a matching that pairs neighbours of the cycle
    // would make a cut of 2 that is found at once).
    db.batch_execute(
        "SELECT setseed(0.3);
         CREATE TABLE g AS SELECT jsonb_agg(e) AS edges FROM (
             SELECT jsonb_build_object('source', i, 'target', (i + 1) % 1000000) e FROM generate_series(0, 999999) i
             UNION ALL
             SELECT jsonb_build_object('source', a, 'target', b) FROM (
                 SELECT row_number() OVER () r, i a, lead(i) OVER () b
                 FROM (SELECT i FROM generate_series(0, 999999) i ORDER BY random()) x) y
             WHERE r % 2 = 1) z",
    )
    .unwrap();
    // How long reading the input takes: an invalid last edge is refused once
    // every edge was read.
    let (code, reading) = timed(
        &mut db,
        "SELECT ruvector_mincut(edges || '[{\"source\": 1, \"target\": 2, \"capacity\": -1}]') FROM g",
    );
    assert_eq!(code, "22023");
    eprintln!("reading the input takes {reading:?}");

    // The timeout fires while the solver runs (it needs several seconds more).
    let timeout = reading + Duration::from_millis(1500);
    for function in ["ruvector_mincut", "ruvector_lambda2"] {
        db.batch_execute(&format!("SET statement_timeout = {}", timeout.as_millis()))
            .unwrap();
        let (code, took) = timed(&mut db, &format!("SELECT {function}(edges) FROM g"));
        db.batch_execute("RESET statement_timeout").unwrap();
        eprintln!("{function}: timeout {timeout:?}, error after {took:?}");
        assert_eq!(code, "57014", "{function}");
        assert!(
            took < timeout + Duration::from_secs(1),
            "{function}: {took:?}"
        );
        assert_eq!(
            json(&mut db, "SELECT to_jsonb(1)"),
            1,
            "the backend is usable"
        );
    }

    // pg_cancel_backend from another session.
    let pid: i32 = db.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let mut other = cluster.client();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(timeout);
        let sent = Instant::now();
        other
            .execute("SELECT pg_cancel_backend($1)", &[&pid])
            .unwrap();
        sent
    });
    let (code, _) = timed(&mut db, "SELECT ruvector_mincut(edges) FROM g");
    let sent = canceller.join().unwrap();
    eprintln!("cancelled {:?} after pg_cancel_backend", sent.elapsed());
    assert_eq!(code, "57014");
    assert!(sent.elapsed() < Duration::from_secs(1));
    assert_eq!(json(&mut db, "SELECT to_jsonb(1)"), 1);
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
