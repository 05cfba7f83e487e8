//! Latencies that tests must not assert (they depend on how busy the machine
//! is), measured for `make bench` (`scripts/bench-latency`): how long after a
//! statement timeout or a `pg_cancel_backend` the solvers stop, in the phase
//! that reads the input and in the one that solves. Ignored by `make test`.

use std::time::{Duration, Instant};

use ruvector_tests::*;

/// Runs `sql`, returning its SQLSTATE ("ok" if none) and how long it took.
fn timed(db: &mut Client, sql: &str) -> (String, Duration) {
    let started = Instant::now();
    let code = match db.batch_execute(sql) {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.as_db_error().unwrap().code().code().to_owned(),
    };
    (code, started.elapsed())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[test]
#[ignore = "a benchmark: make bench"]
fn solver_cancel_latency() {
    const RUNS: usize = 5;
    let cluster = Cluster::start("bench-cancel", &[]);
    let mut db = cluster.client();
    db.batch_execute(CUBIC_GRAPH).unwrap();
    let pid: i32 = db.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let mut lines = Vec::new();
    for function in ["ruvector_mincut", "ruvector_lambda2"] {
        // While reading: a timeout of 50 ms fires in the read phase (reading
        // 1.5 million edges takes hundreds of ms); the error comes after it.
        db.batch_execute("SET statement_timeout = 50").unwrap();
        let reading: Vec<f64> = (0..RUNS)
            .map(|_| {
                let (code, took) = timed(&mut db, &format!("SELECT {function}(edges) FROM g"));
                assert_eq!(code, "57014");
                (took.as_secs_f64() - 0.050) * 1000.0
            })
            .collect();
        db.batch_execute("RESET statement_timeout").unwrap();
        // While solving: a cancel sent 2 s into the call (reading is over).
        let solving: Vec<f64> = (0..RUNS)
            .map(|_| {
                let mut other = cluster.client();
                let canceller = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(2));
                    let sent = Instant::now();
                    other
                        .execute("SELECT pg_cancel_backend($1)", &[&pid])
                        .unwrap();
                    sent
                });
                let (code, _) = timed(&mut db, &format!("SELECT {function}(edges) FROM g"));
                let sent = canceller.join().unwrap();
                assert_eq!(code, "57014");
                sent.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        let (reading, solving) = (median(reading), median(solving));
        lines.push(format!(
            "{{\"case\":\"cancel\",\"function\":\"{function}\",\"after_timeout_while_reading_ms\":{:.1},\"after_cancel_while_solving_ms\":{:.1},\"runs\":{RUNS}}}",
            reading, solving
        ));
        println!(
            "{function:<18} stops {:>7.1} ms after a statement timeout while reading, {:>7.1} ms after pg_cancel_backend while solving (median of {RUNS})",
            reading, solving
        );
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("cancel.jsonl"), lines.join("\n") + "\n").unwrap();
}
