//! `make bench`: a soak of the decision path. 10,000 samples of one
//! collection, a sample every 10 s of simulated time (28 hours), through the
//! same code the worker runs on every sample: the graph built from what was
//! observed ([`sources::build`]), its exact minimum cut, the hysteresis of the
//! default policy ([`Controller`]) and the gate's decision on a one-row insert
//! after each sample ([`gate::decide`], with its throttle roll).
//!
//! What is simulated is the cluster: a collection of 4 local partitions, a
//! foreign shard holding 2 more, two expected standbys and 8 IVF lists.
//! Between faults it lives in its normal range with noise (replay lag,
//! probe latency, bloat, growth since training) and with blips outside it
//! that a healthy cluster has and that are not faults: one probe that times
//! out, a replay lag or a probe latency spike for one or two samples. Faults
//! are injected at random, one at a time, each for 3 to 60 samples, then the
//! collection is left to recover (up to 200 samples):
//!
//! | fault | expected state |
//! |---|---|
//! | both standbys stopped, the foreign shard unreachable | critical |
//! | one standby stopped or lagging past the budget, autovacuum off, IVF lists drifted | stress |
//! | the shard slow (1.5 s), a partition 90% dead | stress at worst: normal or stress |
//!
//! Reported: false transitions (goal 0): an escalation beyond what the active
//! fault calls for (or any without one), a recovery below it while the fault
//! lasts; and the detection delay, from the fault's onset (at a random moment
//! of the interval before its first sample) to the first one-row insert the
//! gate refuses (one is tried after every sample), p50 and p99 per expected
//! state. A fault can end before
//! the hysteresis lets it show (a stress fault needs 3 samples below
//! `threshold_high`): those are counted as missed, not as delays.
//!
//! Last, the time of `ruvector_integrity_explain`'s search for the smallest
//! repair, on this collection under each fault and on a large one, and of one
//! probe of a foreign server (answering, refused, silent until its timeout).
//!
//! Output: tables on stdout and `target/bench/soak.json`. `--samples N`
//! changes the length; `--seed S` the random stream.

use std::collections::HashMap;

use ruvector_integrity::control::Control;
use ruvector_integrity::explain;
use ruvector_integrity::gate::{self, GateInput, Operation, Rows};
use ruvector_integrity::hysteresis::Controller;
use ruvector_integrity::policy::Policy;
use ruvector_integrity::rng::Rng;
use ruvector_integrity::sources::ivf::{DriftSample, Ivf, List};
use ruvector_integrity::sources::partitions::Partition;
use ruvector_integrity::sources::probe::{self, Probe};
use ruvector_integrity::sources::replication::{Replication, Standby};
use ruvector_integrity::sources::shards::Shard;
use ruvector_integrity::sources::{self, Observed, Overrides};
use ruvector_integrity::state::State;
use ruvector_integrity::{Micros, SECOND};

const INTERVAL: Micros = 10 * SECOND;
const LAG_BUDGET: i64 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fault {
    StandbysLost,
    ShardUnreachable,
    OneStandbyLost,
    StandbyLagging,
    ShardSlow,
    Bloat,
    AutovacuumOff,
    IvfDrift,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::StandbysLost,
        Fault::ShardUnreachable,
        Fault::OneStandbyLost,
        Fault::StandbyLagging,
        Fault::ShardSlow,
        Fault::Bloat,
        Fault::AutovacuumOff,
        Fault::IvfDrift,
    ];

    /// The state the fault calls for: critical, or stress. A slow shard
    /// and a bloated partition are "stress at worst" (docs/how-it-works.md):
    /// where IVF lists route to every partition their routing links carry
    /// the node, and they may not lower `lambda_norm` below
    /// `threshold_high` at all (the table shows how far they do).
    fn expected(self) -> State {
        match self {
            Fault::StandbysLost | Fault::ShardUnreachable => State::Critical,
            _ => State::Stress,
        }
    }

    /// The least state the fault must keep the collection in while it lasts.
    fn least(self) -> State {
        match self {
            Fault::ShardSlow | Fault::Bloat => State::Normal,
            f => f.expected(),
        }
    }
}

/// A blip: outside the normal range for a sample or two, not a fault.
#[derive(Debug, Clone, Copy)]
enum Blip {
    ProbeTimeout,
    LagSpike,
    LatencySpike,
}

fn probe(reachable: bool, latency_ms: f64) -> Option<Probe> {
    Some(Probe {
        reachable,
        latency_ms,
        address: "127.0.0.1:5433".into(),
        error: (!reachable).then(|| "timeout".into()),
    })
}

fn streaming(name: &str, lag: i64) -> Standby {
    Standby {
        application_name: name.into(),
        state: "streaming".into(),
        sync_state: Some("async".into()),
        client_addr: Some("127.0.0.1".into()),
        replay_lag_bytes: Some(lag),
    }
}

/// What one sample observes, with `fault` and `blip` (if any) in effect.
/// `count` IVF lists of `vectors` each, list `l` spread over `partitions(l)`
/// (partition relid, vectors there).
fn lists(count: i32, vectors: i64, partitions: impl Fn(i32) -> HashMap<i64, i64>) -> Vec<List> {
    (0..count)
        .map(|l| List {
            list_id: l,
            vector_count: vectors,
            mean_distance: 1.0,
            partition_counts: partitions(l),
        })
        .collect()
}

fn observe(rng: &mut Rng, fault: Option<Fault>, blip: Option<Blip>) -> Observed {
    let mut partitions: Vec<Partition> = (0..6)
        .map(|i| {
            // Autovacuum keeps the dead share under its 20% trigger.
            let dead = (rng.range(0.0, 0.18) * 100_000.0) as i64;
            Partition {
                relid: 16384 + i,
                name: format!("public.items_p{i}"),
                relkind: if i < 4 { "r" } else { "f" }.into(),
                live: 100_000 - dead,
                dead,
                last_vacuum: None,
                server: (i >= 4).then(|| "far".into()),
            }
        })
        .collect();
    if fault == Some(Fault::Bloat) {
        partitions[1].dead = 90_000;
        partitions[1].live = 10_000;
    }
    let latency = match (fault, blip) {
        (Some(Fault::ShardSlow), _) => 1500.0,
        (_, Some(Blip::LatencySpike)) => rng.range(300.0, 1200.0),
        _ => rng.range(1.0, 200.0),
    };
    let reachable = !matches!(fault, Some(Fault::ShardUnreachable))
        && !matches!(blip, Some(Blip::ProbeTimeout));
    let mut lag = || match blip {
        Some(Blip::LagSpike) => rng.range(0.6, 1.5) * LAG_BUDGET as f64,
        _ => rng.range(0.0, 0.45) * LAG_BUDGET as f64,
    } as i64;
    let standbys = match fault {
        Some(Fault::StandbysLost) => vec![],
        Some(Fault::OneStandbyLost) => vec![streaming("replica1", lag())],
        Some(Fault::StandbyLagging) => vec![
            streaming("replica1", lag()),
            streaming("replica2", 2 * LAG_BUDGET),
        ],
        _ => vec![streaming("replica1", lag()), streaming("replica2", lag())],
    };
    let drifted = fault == Some(Fault::IvfDrift);
    let mut observed = Observed {
        partitions,
        shards: vec![Shard {
            name: "far".into(),
            kind: "postgres_fdw".into(),
            probe: probe(reachable, if reachable { latency } else { 2000.0 }),
        }],
        replication: Replication {
            expected_standbys: "replica1, replica2".into(),
            standbys,
            lag_budget_bytes: LAG_BUDGET,
            ..Replication::default()
        },
        ..Observed::default()
    };
    observed.maintenance.autovacuum = fault != Some(Fault::AutovacuumOff);
    observed.ivf = Some(Ivf {
        lists: lists(8, 75_000, |_| (0..6).map(|p| (16384 + p, 12_500)).collect()),
        trained_rows: 600_000,
        trained_mean_distance: 1.0,
        live_rows: (600_000.0 * rng.range(1.0, 1.15)) as i64,
        sample: Some(DriftSample {
            rows: 256,
            mean_distance: if drifted {
                rng.range(2.0, 3.0)
            } else {
                rng.range(0.9, 1.2)
            },
        }),
    });
    observed
}

/// How long one probe of a foreign server takes, on loopback: a server that
/// answers, a refused port, and a server that accepts and never answers
/// (the probe's own 2 s timeout ends it), each the median of 5.
fn probe_times() -> serde_json::Value {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;
    let listener = |answer: bool| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let mut stream = stream.unwrap();
                std::thread::spawn(move || {
                    let mut request = [0u8; 8];
                    let _ = stream.read_exact(&mut request);
                    if answer {
                        let _ = stream.write_all(b"N");
                    } else {
                        let _ = stream.read(&mut [0u8; 1]);
                    }
                });
            }
        });
        port
    };
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cases = [
        ("answering", listener(true)),
        ("refused", refused),
        ("silent", listener(false)),
    ];
    println!("\n  one probe, loopback, 2 s timeout (median of 5):");
    let mut out = serde_json::Map::new();
    for (name, port) in cases {
        let target = vec![probe::Target {
            host: "127.0.0.1".into(),
            port,
        }];
        let mut ms: Vec<f64> = (0..5)
            .map(|_| probe::probe(&target, Duration::from_secs(2)).latency_ms)
            .collect();
        ms.sort_by(f64::total_cmp);
        println!("  {name:<10} {:>9.2} ms", ms[2]);
        out.insert(name.into(), ms[2].into());
    }
    serde_json::Value::Object(out)
}

/// How long `ruvector_integrity_explain`'s search for the smallest repair
/// takes: on the soak's collection under each fault, and on a large one
/// (256 partitions, 1,000 IVF lists each in 8 of them, every list drifted and
/// a standby lost: 1,001 components to repair).
fn explain_cost(rng: &mut Rng) -> serde_json::Value {
    let time = |observed: &Observed| {
        let started = std::time::Instant::now();
        let found =
            explain::smallest_repair(observed, 0.9, explain::MAX_STEPS, &mut Control::default())
                .expect("a search");
        (started.elapsed().as_secs_f64() * 1e3, found)
    };
    println!(
        "\n  explain's smallest repair: {:<18} {:>9} {:>10} {:>6} {:>5}",
        "collection", "ms", "components", "cuts", "exact"
    );
    let mut rows = Vec::new();
    let mut row = |name: String, observed: &Observed| {
        let (ms, found) = time(observed);
        let s = &found.summary;
        println!(
            "  {:<45} {ms:>9.2} {:>10} {:>6} {:>5}",
            name,
            found.set.len(),
            s.cuts_solved,
            s.exact
        );
        rows.push(serde_json::json!({"collection": name, "ms": ms, "components": found.set.len(),
                                     "cuts": s.cuts_solved, "exact": s.exact, "candidates": s.candidates}));
    };
    for fault in Fault::ALL {
        row(
            format!("soak layout, {fault:?}"),
            &observe(rng, Some(fault), None),
        );
    }
    let mut large = observe(rng, Some(Fault::OneStandbyLost), None);
    large.partitions = (0..256)
        .map(|i| Partition {
            relid: 20_000 + i,
            name: format!("public.big_p{i}"),
            relkind: "r".into(),
            live: 1_000,
            dead: 0,
            last_vacuum: None,
            server: None,
        })
        .collect();
    large.shards.clear();
    large.ivf = Some(Ivf {
        lists: lists(1000, 256, |l| {
            (0..8)
                .map(|k| (20_000 + (l as i64 * 8 + k) % 256, 32))
                .collect()
        }),
        trained_rows: 256_000,
        trained_mean_distance: 1.0,
        live_rows: 256_000,
        sample: Some(DriftSample {
            rows: 256,
            mean_distance: 2.5,
        }),
    });
    row("256 partitions, 1,000 lists drifted".into(), &large);
    serde_json::Value::Array(rows)
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .map_or(default, |at| args[at + 1].parse().expect("a number"))
    };
    let samples = flag("--samples", 10_000);
    let mut rng = Rng(flag("--seed", 42));
    let policy = Policy::default();
    let thresholds = policy.thresholds();
    let compiled = policy.compile();
    let mut controller = Controller::default();

    // The schedule: (first sample, length, fault), one at a time, each
    // followed by a quiet spell.
    let mut schedule = Vec::new();
    let mut at = 50;
    while at < samples {
        let fault = Fault::ALL[rng.below(Fault::ALL.len() as u64) as usize];
        let length = 3 + rng.below(58);
        schedule.push((at, length, fault));
        at += length + 60 + rng.below(140);
    }

    let mut fault_of = vec![None; samples as usize];
    for &(start, length, fault) in &schedule {
        for s in start..(start + length).min(samples) {
            fault_of[s as usize] = Some(fault);
        }
    }

    let started = std::time::Instant::now();
    let mut false_transitions = Vec::new();
    let mut transitions = 0;
    let mut blips = 0;
    let mut blip_left = 0;
    let mut blip = None;
    let mut blipped_before = false;
    // Per fault: the lowest and highest lambda_norm seen while it lasted.
    let mut seen: HashMap<Fault, (u32, f64, f64)> = HashMap::new();
    // The fault being watched for its first refused write: its first
    // sample, itself, and how long before that sample it began (s).
    let mut watching: Option<(u64, Fault, f64)> = None;
    let mut delays: HashMap<State, Vec<f64>> = HashMap::new();
    let mut missed: HashMap<State, u32> = HashMap::new();
    let mut worst_seen = State::Normal;
    for s in 0..samples {
        let now = s as Micros * INTERVAL;
        let fault = fault_of[s as usize];
        // Blips are isolated: never next to a fault or another blip.
        let quiet = s > 0 && fault_of[s as usize - 1].is_none() && !blipped_before;
        if fault.is_none() && quiet && blip_left == 0 && rng.below(100) < 3 {
            blip = Some(match rng.below(3) {
                0 => Blip::ProbeTimeout,
                1 => Blip::LagSpike,
                _ => Blip::LatencySpike,
            });
            // A timeout is one sample (two in a row reach critical: that is
            // a shard down); spikes last one or two.
            blip_left = if matches!(blip, Some(Blip::ProbeTimeout)) {
                1
            } else {
                1 + rng.below(2)
            };
            blips += 1;
        }
        let active_blip = if blip_left > 0 {
            blip_left -= 1;
            blip
        } else {
            None
        };
        blipped_before = active_blip.is_some();
        if let Some(f) = fault.filter(|f| f.least() > State::Normal) {
            if s == 0 || fault_of[s as usize - 1] != fault {
                // It began at some moment of the interval before this sample.
                let onset = rng.unit() * (INTERVAL / SECOND) as f64;
                watching = Some((s, f, onset));
            }
        }

        let observed = observe(&mut rng, fault, active_blip);
        let built = sources::build(&observed, &Overrides::new()).expect("a valid graph");
        let integrity = built
            .graph
            .integrity_with(&mut Control::default())
            .expect("a solvable graph");
        let (least, most) = fault.map_or((State::Normal, State::Normal), |f| {
            (f.least(), f.expected())
        });
        if let Some(f) = fault {
            let e = seen
                .entry(f)
                .or_insert((0, f64::INFINITY, f64::NEG_INFINITY));
            if fault_of[s as usize - 1] != fault {
                e.0 += 1;
            }
            e.1 = e.1.min(integrity.lambda_norm);
            e.2 = e.2.max(integrity.lambda_norm);
        }
        if let Some(t) =
            controller.observe(integrity.lambda_norm, now, &thresholds, &policy.hysteresis)
        {
            transitions += 1;
            // Beyond what the fault calls for, or back below it while it lasts.
            let is_false = if t.to > t.from {
                t.to > most
            } else {
                t.to < least
            };
            if is_false {
                false_transitions.push(format!(
                    "sample {s}: {} -> {} with {:?} (lambda_norm {:.3})",
                    t.from.as_str(),
                    t.to.as_str(),
                    fault,
                    integrity.lambda_norm
                ));
            }
        }
        worst_seen = worst_seen.max(controller.state);

        // One single-row insert after the sample, with the gate's roll.
        let verdict = gate::decide(
            &compiled,
            GateInput {
                state: controller.state,
                stale: false,
                live_searches: 0,
                rows: Rows::Counted(1),
            },
            Operation::Insert,
        );
        let refused = !verdict.allowed(rng.unit());
        if let Some((start, f, onset)) = watching {
            let over = fault_of[s as usize] != Some(f);
            if refused && !over {
                let delay = onset + ((s - start) * (INTERVAL / SECOND) as u64) as f64;
                delays.entry(f.expected()).or_default().push(delay);
                watching = None;
            } else if over {
                *missed.entry(f.expected()).or_default() += 1;
                watching = None;
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "\n  {:<18} {:>6} {:>16} {:>9}",
        "fault", "times", "lambda_norm", "expected"
    );
    for f in Fault::ALL {
        if let Some(&(times, low, high)) = seen.get(&f) {
            println!(
                "  {:<18} {times:>6} {:>16} {:>9}",
                format!("{f:?}"),
                format!("{low:.3} - {high:.3}"),
                match f.least() {
                    least if least == f.expected() => least.as_str().to_owned(),
                    least => format!("{}..{}", least.as_str(), f.expected().as_str()),
                }
            );
        }
    }

    println!(
        "\nsoak: {samples} samples, one every {} s (simulated), seed {}",
        INTERVAL / SECOND,
        flag("--seed", 42)
    );
    println!(
        "  {} faults injected, {} blips (not faults), {transitions} transitions, worst state {}",
        schedule.len(),
        blips,
        worst_seen.as_str()
    );
    println!("  false transitions: {}", false_transitions.len());
    for f in &false_transitions {
        println!("    {f}");
    }
    let mut report = serde_json::json!({
        "samples": samples,
        "interval_secs": INTERVAL / SECOND,
        "faults": schedule.len(),
        "blips": blips,
        "transitions": transitions,
        "false_transitions": false_transitions.len(),
        "wall_secs": elapsed.as_secs_f64(),
    });
    println!(
        "  {:<10} {:>7} {:>7} {:>12} {:>12}",
        "expected", "faults", "missed", "delay p50 s", "delay p99 s"
    );
    for state in [State::Stress, State::Critical] {
        let mut d = delays.remove(&state).unwrap_or_default();
        d.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&d, 50.0), percentile(&d, 99.0));
        let miss = missed.get(&state).copied().unwrap_or(0);
        println!(
            "  {:<10} {:>7} {:>7} {:>12} {:>12}",
            state.as_str(),
            d.len() as u32 + miss,
            miss,
            p50.map_or("-".into(), |v| format!("{v:.0}")),
            p99.map_or("-".into(), |v| format!("{v:.0}"))
        );
        report[state.as_str()] = serde_json::json!({
            "detected": d.len(), "missed": miss, "delay_p50_secs": p50, "delay_p99_secs": p99,
        });
    }
    println!(
        "  {} samples in {:.2} s of wall time ({:.0} µs per sample)",
        samples,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / samples as f64
    );
    report["explain"] = explain_cost(&mut rng);
    report["probe"] = probe_times();
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").to_owned());
    std::fs::create_dir_all(format!("{target}/bench")).unwrap();
    let path = format!("{target}/bench/soak.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("  wrote {path}");
}
