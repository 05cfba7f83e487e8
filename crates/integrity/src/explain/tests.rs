//! The smallest repair against every subset on random collections; the
//! explanation of each kind of fault names its component; the text.

use std::collections::HashMap;

use super::*;
use crate::rng::Rng;
use crate::sources::ivf::{Ivf, List};
use crate::sources::partitions::Partition;
use crate::sources::probe::Probe;
use crate::sources::replication::{Replication, Standby};
use crate::sources::shards::Shard;

trait Chance {
    fn chance(&mut self, percent: u64) -> bool;
}

impl Chance for Rng {
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn partition(i: i64, dead: i64, server: Option<&str>) -> Partition {
    Partition {
        relid: 16384 + i,
        name: format!("public.items_p{i}"),
        relkind: if server.is_some() { "f" } else { "r" }.into(),
        live: 10_000 - dead,
        dead,
        last_vacuum: None,
        server: server.map(str::to_owned),
    }
}

fn probe(reachable: bool, latency_ms: f64) -> Probe {
    Probe {
        reachable,
        latency_ms,
        address: "127.0.0.1:5432".into(),
        error: None,
    }
}

fn standby(name: &str, state: &str, lag: i64) -> Standby {
    Standby {
        application_name: name.into(),
        state: state.into(),
        sync_state: None,
        client_addr: None,
        replay_lag_bytes: Some(lag),
    }
}

/// A random collection: local partitions with some bloat, foreign shards
/// answering or not, standbys streaming, lagging or gone, IVF lists.
fn random_collection(rng: &mut Rng) -> Observed {
    let mut o = Observed::default();
    let local = 1 + rng.below(3) as i64;
    for i in 0..local {
        let dead = if rng.chance(30) {
            rng.below(9_000) as i64
        } else {
            100
        };
        o.partitions.push(partition(i, dead, None));
    }
    for s in 0..rng.below(3) {
        let name = format!("shard{s}");
        let answer = match rng.below(3) {
            0 => probe(false, 3000.0),
            1 => probe(true, 250.0 + rng.below(2500) as f64),
            _ => probe(true, 5.0),
        };
        o.shards.push(Shard {
            name: name.clone(),
            kind: "postgres_fdw".into(),
            probe: Some(answer),
        });
        for p in 0..1 + rng.below(2) as i64 {
            o.partitions
                .push(partition(10 * (s as i64 + 1) + p, 0, Some(&name)));
        }
    }
    let names: Vec<String> = (0..rng.below(4)).map(|i| format!("standby{i}")).collect();
    let budget = 64 << 20;
    o.replication = Replication {
        expected_standbys: names.join(","),
        standbys: names
            .iter()
            .filter_map(|n| match rng.below(4) {
                0 => None,
                1 => Some(standby(n, "catchup", 0)),
                2 => Some(standby(n, "streaming", rng.below(2 * budget as u64) as i64)),
                _ => Some(standby(n, "streaming", 0)),
            })
            .collect(),
        lag_budget_bytes: budget,
        ..Replication::default()
    };
    o.maintenance.autovacuum = !rng.chance(15);
    if rng.chance(50) {
        let relids: Vec<i64> = o.partitions.iter().map(|p| p.relid).collect();
        let lists = 2 + rng.below(3) as i32;
        o.ivf = Some(Ivf {
            lists: (0..lists)
                .map(|l| List {
                    list_id: l,
                    vector_count: if rng.chance(20) { 40_000 } else { 1_000 },
                    mean_distance: 1.0,
                    partition_counts: relids
                        .iter()
                        .filter_map(|&r| {
                            let count = 1 + rng.below(500) as i64;
                            rng.chance(60).then_some((r, count))
                        })
                        .collect::<HashMap<_, _>>(),
                })
                .collect(),
            trained_rows: 1_000 * lists as i64,
            trained_mean_distance: 1.0,
            live_rows: if rng.chance(20) {
                3_000 * lists as i64
            } else {
                1_000 * lists as i64
            },
            sample: None,
        });
    }
    o
}

/// `lambda_norm` with the nodes `set` (labels) repaired.
fn norm_with(o: &Observed, set: &[&String]) -> f64 {
    let overrides: Overrides = set.iter().map(|l| ((*l).clone(), 1.0)).collect();
    sources::build(o, &overrides)
        .unwrap()
        .graph
        .integrity()
        .unwrap()
        .lambda_norm
}

/// The size of the smallest set of nodes (any nodes) whose repair reaches
/// `target`, by trying every subset of each size in turn.
fn smallest_by_brute_force(o: &Observed, target: f64) -> Option<usize> {
    let built = sources::build(o, &Overrides::new()).unwrap();
    let labels: Vec<String> = built
        .graph
        .nodes()
        .iter()
        .map(|n| sources::label(n.kind, &n.name))
        .collect();
    let n = labels.len();
    (0..=n).find(|&size| {
        (0u32..1 << n)
            .filter(|mask| mask.count_ones() as usize == size)
            .any(|mask| {
                let set: Vec<&String> = (0..n)
                    .filter(|i| mask >> i & 1 == 1)
                    .map(|i| &labels[i])
                    .collect();
                norm_with(o, &set) >= target
            })
    })
}

fn labels_of(found: &Found, o: &Observed) -> Vec<String> {
    let built = sources::build(o, &Overrides::new()).unwrap();
    found
        .set
        .iter()
        .map(|&i| sources::label(built.graph.nodes()[i].kind, &built.graph.nodes()[i].name))
        .collect()
}

#[test]
fn the_smallest_repair_is_as_small_as_any_subset_allows() {
    let mut rng = Rng(7);
    let mut checked = 0;
    let mut nonempty = 0;
    while checked < 200 {
        let o = random_collection(&mut rng);
        let nodes = sources::build(&o, &Overrides::new())
            .unwrap()
            .graph
            .nodes()
            .len();
        if nodes > 14 {
            continue;
        }
        for target in [0.9, 0.5] {
            let found = smallest_repair(&o, target, MAX_STEPS, &mut Control::default()).unwrap();
            assert!(found.summary.exact);
            let labels = labels_of(&found, &o);
            let refs: Vec<&String> = labels.iter().collect();
            let after = norm_with(&o, &refs);
            assert_eq!(after, found.summary.lambda_norm_after);
            assert!(
                after >= target,
                "{labels:?} reaches {after} < {target} in {o:?}"
            );
            assert_eq!(
                Some(found.set.len()),
                smallest_by_brute_force(&o, target),
                "{labels:?} for {target} in {o:?}"
            );
            nonempty += usize::from(!found.set.is_empty());
        }
        checked += 1;
    }
    assert!(
        nonempty > 60,
        "too few collections needed a repair: {nonempty}"
    );
}

fn lost_standby() -> Observed {
    let mut o = Observed {
        partitions: vec![partition(0, 100, None)],
        ..Observed::default()
    };
    o.replication = Replication {
        expected_standbys: "replica".into(),
        ..Replication::default()
    };
    o
}

fn context<'a>(policy: &'a Policy, controller: &'a Controller, now: Micros) -> Context<'a> {
    Context {
        collection: "docs",
        policy,
        controller,
        last_sample: Some(now - 2 * SECOND),
        sample_interval_secs: 10,
        sampled_state: controller.state,
        in_force: (controller.state, false),
        pin: None,
        now,
    }
}

fn explained(o: &Observed, controller: &Controller) -> Explanation {
    let policy = Policy::default();
    explain(
        o,
        &context(&policy, controller, 1_000 * SECOND),
        &mut Control::default(),
    )
    .unwrap()
}

#[test]
fn a_lost_standby_is_the_witness_and_the_repair() {
    let controller = Controller {
        state: State::Critical,
        below_high: 5,
        below_low: 5,
        recovering_since: None,
        last_transition: Some(990 * SECOND),
    };
    let e = explained(&lost_standby(), &controller);
    assert_eq!(e.lambda_norm, 0.0);
    assert_eq!(e.level, State::Critical);
    assert_eq!(e.cut.len(), 1);
    assert_eq!(
        (e.cut[0].nominal_capacity, e.cut[0].effective_capacity),
        (1.0, 0.0)
    );
    let names = |cs: &[Component]| cs.iter().map(|c| c.component.clone()).collect::<Vec<_>>();
    assert_eq!(names(&e.witness_components), ["replication_target:replica"]);
    assert_eq!(names(&e.repair.components), ["replication_target:replica"]);
    let standby = &e.repair.components[0];
    assert_eq!(standby.health, 0.0);
    assert_eq!(standby.health_function.function, "standby_stream");
    assert_eq!(standby.health_function.measured["status"], "absent");
    assert!(
        standby.remedy.contains("ruvector.expected_standbys"),
        "{}",
        standby.remedy
    );
    assert_eq!(
        (e.repair.target, e.repair.lambda_norm_after, e.repair.exact),
        (0.9, 1.0, true)
    );
    // Critical recovers to stress after the hold, counted from the next sample.
    let m = &e.hysteresis.moves;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].to, State::Stress);
    assert_eq!((m[0].held_seconds, m[0].hold_seconds), (Some(0), Some(300)));
    assert_eq!(m[0].earliest, 998 * SECOND + 10 * SECOND + 300 * SECOND);
    assert_eq!(
        e.hysteresis.cooldown_until.as_deref(),
        Some(utc(1_050 * SECOND).as_str())
    );
    // The default policy in critical: no writes, a fifth of searches turned
    // away and at most 10 at once, backups go on.
    let refused = |op: &str| {
        e.refused
            .iter()
            .find(|r| r.operation == op)
            .map(|r| r.decision)
    };
    assert_eq!(refused("bulk_insert"), Some("reject"));
    assert_eq!(refused("search"), Some("throttle"));
    assert_eq!(refused("backup"), None);
    assert_eq!(
        e.limits,
        Limits {
            max_insert_batch_size: None,
            max_concurrent_searches: Some(10)
        }
    );
    let text = e.to_string();
    for needle in [
        "docs: critical",
        "replication_target:replica: health 0.000 by standby_stream",
        "repair 1 component(s), lambda_norm 0.000 -> 1.000",
        "to stress: lambda_norm >= 0.4 on every sample for 300 s; held 0 s of 300 s",
        "reject: insert, bulk_insert,",
        "throttle: search (20% turned away)",
        "at most 10 concurrent searches",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
}

#[test]
fn an_unreachable_shard_is_repaired_by_its_server_not_its_partitions() {
    let mut o = lost_standby();
    o.replication = Replication::default();
    o.shards.push(Shard {
        name: "far".into(),
        kind: "postgres_fdw".into(),
        probe: Some(probe(false, 2000.0)),
    });
    o.partitions.push(partition(1, 0, Some("far")));
    o.partitions.push(partition(2, 0, Some("far")));
    let e = explained(&o, &Controller::default());
    assert_eq!(e.lambda_norm, 0.0);
    let repair: Vec<_> = e
        .repair
        .components
        .iter()
        .map(|c| c.component.as_str())
        .collect();
    assert_eq!(repair, ["shard:far"]);
    assert_eq!(
        e.repair.components[0].health_function.measured["reachable"],
        false
    );
    assert!(e.repair.components[0]
        .remedy
        .contains("foreign server \"far\""));
    assert!(
        e.witness_components
            .iter()
            .all(|c| c.component.contains("far")),
        "{:?}",
        e.witness_components
    );
}

/// One partition and `lists` IVF lists in it, grown to three times the rows
/// they were trained on: every list drifted.
fn drifted(lists: i32) -> Observed {
    let mut o = lost_standby();
    o.replication = Replication::default();
    o.ivf = Some(Ivf {
        lists: (0..lists)
            .map(|l| List {
                list_id: l,
                vector_count: 100,
                mean_distance: 1.0,
                partition_counts: HashMap::from([(16384, 100)]),
            })
            .collect(),
        trained_rows: 100 * lists as i64,
        trained_mean_distance: 1.0,
        live_rows: 300 * lists as i64,
        sample: None,
    });
    o
}

#[test]
fn drifted_ivf_lists_each_need_retraining() {
    let o = drifted(4);
    let e = explained(
        &o,
        &Controller {
            state: State::Stress,
            ..Controller::default()
        },
    );
    assert_eq!(e.lambda_norm, 0.5);
    let repair: Vec<_> = e
        .repair
        .components
        .iter()
        .map(|c| c.component.as_str())
        .collect();
    assert_eq!(
        repair,
        ["centroid:0", "centroid:1", "centroid:2", "centroid:3"]
    );
    assert!(e.repair.exact);
    let drift = &e.repair.components[0].health_function;
    assert_eq!(drift.function, "ivf_drift");
    assert_eq!(drift.measured["growth"], 2.0);
    assert!(e.repair.components[0]
        .remedy
        .contains("ruvector_ivf_train('docs'"));
}

#[test]
fn a_healthy_collection_needs_nothing() {
    let mut o = lost_standby();
    o.replication = Replication::default();
    let e = explained(
        &o,
        &Controller {
            state: State::Normal,
            ..Controller::default()
        },
    );
    assert_eq!(e.lambda_norm, 1.0);
    assert!(e.repair.components.is_empty() && e.repair.reachable);
    assert!(e.witness_components.is_empty());
    assert!(e.refused.is_empty(), "{:?}", e.refused);
    assert!(e.to_string().contains("nothing to repair"), "{e}");
}

#[test]
fn past_its_bound_the_search_still_answers_but_not_as_proven() {
    // 300 drifted lists: each is its own cut, so 300 cuts are needed, and
    // the budget allows about 100 of this graph's.
    let o = drifted(300);
    let graph = sources::build(&o, &Overrides::new()).unwrap().graph;
    let step = graph.edges().len() + graph.nodes().len();
    let found = smallest_repair(&o, 0.9, 500 * step, &mut Control::default()).unwrap();
    assert!(!found.summary.exact);
    assert_eq!(found.set.len(), 300);
    assert!(
        found.summary.cuts_solved < 300,
        "{}",
        found.summary.cuts_solved
    );
    // A budget smaller than one build per candidate does not even start.
    let none = smallest_repair(&o, 0.9, 299 * step, &mut Control::default()).unwrap();
    assert_eq!((none.summary.exact, none.summary.cuts_solved), (false, 2));
    // Already at the target: nothing to repair, whatever the budget.
    let there = smallest_repair(&o, 0.5, 0, &mut Control::default()).unwrap();
    assert_eq!((there.set.len(), there.summary.exact), (0, true));
    let exact = smallest_repair(&o, 0.9, MAX_STEPS, &mut Control::default()).unwrap();
    assert!(exact.summary.exact);
    assert_eq!(exact.set, found.set);
}
