//! `make bench`: a soak on real clusters (ignored by `make test`: about ten
//! minutes). A primary whose worker samples 20 collections every second, a
//! streaming standby made with `pg_basebackup` that every collection expects,
//! and a second cluster holding a postgres_fdw partition of each collection.
//! Faults are injected at random, one at a time, for 4 to 12 s, then healed,
//! until the collections have taken 10,000 samples between them:
//!
//! | fault | how | expected state |
//! |---|---|---|
//! | the standby stopped | `pg_ctl stop`, then `start` | critical |
//! | the foreign server stopped | `pg_ctl stop`, then `start` | critical |
//! | autovacuum off | `ALTER SYSTEM`, reload | stress |
//!
//! Meanwhile a client inserts one row into every collection, round after
//! round. Reported (stdout and `target/bench/soak-clusters.json`):
//! - false transitions (goal 0): an escalation outside a fault (until its
//!   component is back) or beyond what it calls for, a recovery below it
//!   while it lasts;
//! - the detection delay, from the fault's injection to each collection's
//!   first refused insert (55000 or 53000), p50 and p99 per expected state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ruvector_integrity::rng::Rng;
use ruvector_tests::*;

const COLLECTIONS: usize = 20;
const SAMPLES: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    StandbyStopped,
    ForeignServerStopped,
    AutovacuumOff,
}

impl Fault {
    fn expected(self) -> &'static str {
        match self {
            Fault::AutovacuumOff => "stress",
            _ => "critical",
        }
    }
}

/// One injected fault: when (seconds since the epoch, the primary's clock)
/// it began, when its heal was issued and when its component was back.
struct Window {
    fault: Fault,
    start: f64,
    healed: f64,
    back: f64,
}

fn total_samples(db: &mut Client) -> i64 {
    db.query_one(
        "SELECT sum(sample_count)::bigint FROM ruvector.collections_status",
        &[],
    )
    .unwrap()
    .get(0)
}

fn all_normal(db: &mut Client) -> bool {
    let normal: i64 = db
        .query_one(
            "SELECT count(*) FROM ruvector.collections_status WHERE state = 'normal' AND NOT stale",
            &[],
        )
        .unwrap()
        .get(0);
    normal == COLLECTIONS as i64
}

fn set_autovacuum(db: &mut Client, value: &str) {
    db.batch_execute(&format!("ALTER SYSTEM SET autovacuum = {value}"))
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    (!sorted.is_empty()).then(|| sorted[rank.clamp(1, sorted.len()) - 1])
}

#[test]
#[ignore = "a soak of about ten minutes: make bench runs it"]
fn ten_thousand_samples_under_random_real_faults() {
    let remote = Cluster::start_without_extension("soak-remote", &[]);
    let mut far = remote.client();
    let primary = Cluster::start(
        "soak",
        &[
            "ruvector.expected_standbys = 'soak_standby'",
            "ruvector.startup_grace = 0",
            "wal_keep_size = '1GB'",
        ],
    );
    let mut db = primary.client();
    db.batch_execute(&format!(
        "CREATE EXTENSION postgres_fdw;
         CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw
             OPTIONS (host '127.0.0.1', port '{}', dbname '{DATABASE}', connect_timeout '2');
         CREATE USER MAPPING FOR postgres SERVER remote OPTIONS (user 'postgres');",
        remote.port
    ))
    .unwrap();
    for i in 0..COLLECTIONS {
        far.batch_execute(&format!(
            "CREATE TABLE c{i}_remote (id bigint, embedding real[])"
        ))
        .unwrap();
        db.batch_execute(&format!(
            "CREATE TABLE c{i} (id bigint, embedding real[]) PARTITION BY RANGE (id);
             CREATE TABLE c{i}_local PARTITION OF c{i} FOR VALUES FROM (0) TO (MAXVALUE);
             CREATE FOREIGN TABLE c{i}_far PARTITION OF c{i} FOR VALUES FROM (MINVALUE) TO (0)
                 SERVER remote OPTIONS (table_name 'c{i}_remote');
             INSERT INTO c{i} SELECT g, ARRAY[g, g, g]::real[] FROM generate_series(-100, 100) g;
             SELECT ruvector_register_collection('c{i}', 'c{i}', 'embedding', dimensions => 3);
             SELECT ruvector_integrity_policy_set('c{i}', 'fast',
                 '{{\"hysteresis\": {{\"restore_hold_seconds\": 2, \"cooldown_after_transition_seconds\": 1}}}}');"
        ))
        .unwrap();
    }
    let standby = primary.base_backup("soak-standby", &["cluster_name = 'soak_standby'"]);
    standby.pg_ctl_start();
    wait_streaming(&mut db, &["soak_standby"]);
    wait_for(120, "every collection normal", || {
        all_normal(&mut db).then_some(())
    });

    // The writer: one row into every collection, round after round; each
    // refusal is kept with its collection and time.
    let refusals: Arc<Mutex<Vec<(usize, f64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (refusals, stop) = (refusals.clone(), stop.clone());
        let mut w = primary.client();
        std::thread::spawn(move || {
            let mut id: i64 = 1_000;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..COLLECTIONS {
                    id += 1;
                    let insert = format!("INSERT INTO c{i} VALUES ({id}, '{{1,2,3}}')");
                    if let Err(e) = w.batch_execute(&insert) {
                        let code = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
                        assert!(
                            code == "55000" || code == "53000",
                            "{insert}: {}",
                            describe(&e)
                        );
                        let at = now_epoch(&mut w);
                        refusals.lock().unwrap().push((i, at));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let started = Instant::now();
    let first = total_samples(&mut db);
    let soak_start = now_epoch(&mut db);
    let mut rng = Rng(7);
    let mut windows = Vec::new();
    let faults = [
        Fault::StandbyStopped,
        Fault::ForeignServerStopped,
        Fault::AutovacuumOff,
    ];
    while total_samples(&mut db) - first < SAMPLES {
        let fault = faults[rng.below(3) as usize];
        let start = now_epoch(&mut db);
        match fault {
            Fault::StandbyStopped => standby.stop(),
            Fault::ForeignServerStopped => remote.stop(),
            Fault::AutovacuumOff => set_autovacuum(&mut db, "off"),
        }
        std::thread::sleep(Duration::from_millis(4_000 + rng.below(8_000)));
        let healed = now_epoch(&mut db);
        match fault {
            Fault::StandbyStopped => {
                standby.pg_ctl_start();
                wait_streaming(&mut db, &["soak_standby"]);
            }
            Fault::ForeignServerStopped => remote.pg_ctl_start(),
            Fault::AutovacuumOff => set_autovacuum(&mut db, "on"),
        }
        let back = now_epoch(&mut db);
        windows.push(Window {
            fault,
            start,
            healed,
            back,
        });
        wait_for(120, "every collection back to normal", || {
            all_normal(&mut db).then_some(())
        });
        std::thread::sleep(Duration::from_millis(2_000 + rng.below(4_000)));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let samples = total_samples(&mut db) - first;
    let elapsed = started.elapsed();

    // False transitions, from the signed history.
    let transitions: Vec<(String, String, String, f64)> = db
        .query(
            "SELECT collection_name, previous_state, new_state, extract(epoch FROM created_at)::float8
             FROM ruvector.integrity_events
             WHERE event_type = 'state_change' AND created_at >= to_timestamp($1) ORDER BY seq",
            &[&soak_start],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let rank = |s: &str| {
        ["unknown", "normal", "stress", "critical"]
            .iter()
            .position(|x| *x == s)
            .unwrap()
    };
    let mut false_transitions = Vec::new();
    for (name, from, to, at) in &transitions {
        let escalation = rank(to) > rank(from);
        // The fault whose effects may still be sampled at `at`: from its
        // start until its component was back, and a sample interval more.
        let during = windows
            .iter()
            .find(|w| w.start <= *at && *at <= w.back + 1.0);
        let wrong = match during {
            None => escalation,
            Some(w) if escalation => rank(to) > rank(w.fault.expected()),
            // Back below what the fault calls for before its heal was issued.
            Some(w) => *at < w.healed && rank(to) < rank(w.fault.expected()),
        };
        if wrong {
            false_transitions.push(format!("{name}: {from} -> {to} at {at:.1}"));
        }
    }

    // Detection delays: each collection's first refusal in each fault.
    let refusals = refusals.lock().unwrap();
    let mut delays: Vec<(&str, Vec<f64>)> = vec![("stress", Vec::new()), ("critical", Vec::new())];
    let mut missed = 0;
    for w in &windows {
        for c in 0..COLLECTIONS {
            let first = refusals
                .iter()
                .filter(|&&(i, at)| i == c && at >= w.start && at <= w.healed)
                .map(|&(_, at)| at)
                .fold(f64::INFINITY, f64::min);
            if first.is_finite() {
                let slot = delays
                    .iter_mut()
                    .find(|(s, _)| *s == w.fault.expected())
                    .unwrap();
                slot.1.push(first - w.start);
            } else {
                missed += 1;
            }
        }
    }

    println!(
        "\nsoak on real clusters: {samples} samples of {COLLECTIONS} collections in {:.0} s, {} faults, {} transitions",
        elapsed.as_secs_f64(),
        windows.len(),
        transitions.len()
    );
    println!("  false transitions: {}", false_transitions.len());
    for f in &false_transitions {
        println!("    {f}");
    }
    println!(
        "  {:<10} {:>8} {:>12} {:>12}",
        "expected", "delays", "p50 s", "p99 s"
    );
    let mut report = json!({
        "samples": samples, "collections": COLLECTIONS, "faults": windows.len(),
        "transitions": transitions.len(), "false_transitions": false_transitions.len(),
        "missed": missed, "wall_secs": elapsed.as_secs_f64(),
    });
    for (state, d) in &mut delays {
        d.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(d, 50.0), percentile(d, 99.0));
        println!(
            "  {state:<10} {:>8} {:>12} {:>12}",
            d.len(),
            p50.map_or("-".into(), |v| format!("{v:.2}")),
            p99.map_or("-".into(), |v| format!("{v:.2}"))
        );
        report[*state] = json!({"delays": d.len(), "p50_secs": p50, "p99_secs": p99});
    }
    println!("  faults with a collection never refused before the heal: {missed}");
    let out = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench");
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(
        format!("{out}/soak-clusters.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    assert!(samples >= SAMPLES);
}
