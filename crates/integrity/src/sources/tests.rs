//! The calibration of every source, scenario by scenario (SPEC §3's table), and
//! a long simulation of healthy clusters that must never leave `normal`.

use std::collections::HashMap;

use super::ivf::{DriftSample, Ivf, List};
use super::partitions::Partition;
use super::probe::Probe;
use super::replication::{synchronous_names, Replication, Standby};
use super::shards::Shard;
use super::*;
use crate::graph::Integrity;
use crate::hysteresis::Controller;
use crate::kmeans;
use crate::policy::Hysteresis;
use crate::state::State;
use crate::SECOND;

const MB: i64 = 1 << 20;

fn partition(i: usize, live: i64, dead: i64) -> Partition {
    Partition {
        relid: 16384 + i as i64,
        name: format!("public.items_p{i}"),
        relkind: "r".into(),
        live,
        dead,
        last_vacuum: None,
        server: None,
    }
}

fn collection(partitions: usize) -> Observed {
    Observed {
        partitions: (0..partitions).map(|i| partition(i, 10_000, 100)).collect(),
        ..Observed::default()
    }
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

fn with_standbys(mut o: Observed, expected: &str, standbys: Vec<Standby>) -> Observed {
    o.replication = Replication {
        expected_standbys: expected.into(),
        standbys,
        ..Replication::default()
    };
    o
}

fn integrity(o: &Observed) -> (Built, Integrity) {
    let built = build(o, &Overrides::new()).unwrap();
    let integrity = built.graph.integrity().unwrap();
    (built, integrity)
}

fn lambda_norm(o: &Observed) -> f64 {
    integrity(o).1.lambda_norm
}

fn level(o: &Observed) -> State {
    crate::policy::Policy::default()
        .thresholds()
        .level(lambda_norm(o))
}

/// The labels of the nodes at the ends of the witness edges.
fn witnesses(o: &Observed) -> Vec<String> {
    let (built, integrity) = integrity(o);
    let g = &built.graph;
    integrity
        .witness_edges
        .iter()
        .flat_map(|&i| [g.edges()[i].source, g.edges()[i].target])
        .map(|n| label(g.nodes()[n].kind, &g.nodes()[n].name))
        .collect()
}

#[test]
fn healthy_collections_of_any_shape_are_exactly_one() {
    for partitions in [1, 8, 64] {
        for standbys in 0..4 {
            let names: Vec<String> = (0..standbys).map(|i| format!("s{i}")).collect();
            let mut o = with_standbys(
                collection(partitions),
                &names.join(","),
                names.iter().map(|n| streaming(n, 4 * MB)).collect(),
            );
            o.maintenance.archive_mode = "on".into();
            assert_eq!(
                lambda_norm(&o),
                1.0,
                "{partitions} partitions, {standbys} standbys"
            );
            o.ivf = Some(trained_ivf(&o, 16));
            assert_eq!(lambda_norm(&o), 1.0, "with IVF lists");
        }
    }
}

#[test]
fn a_sole_expected_standby_lost_is_critical_and_names_it() {
    let o = with_standbys(collection(4), "replica1", vec![]);
    assert_eq!(lambda_norm(&o), 0.0);
    assert_eq!(level(&o), State::Critical);
    assert!(witnesses(&o).contains(&"replication_target:replica1".to_owned()));

    let mut stopped = with_standbys(collection(4), "replica1", vec![streaming("replica1", 0)]);
    stopped.replication.standbys[0].state = "startup".into();
    assert_eq!(level(&stopped), State::Critical);
}

#[test]
fn one_of_two_lost_is_stress_all_lost_critical() {
    let two = |standbys| with_standbys(collection(8), "a, b", standbys);
    assert_eq!(
        lambda_norm(&two(vec![streaming("a", 0), streaming("b", 0)])),
        1.0
    );
    let one_lost = two(vec![streaming("a", 0)]);
    assert!((lambda_norm(&one_lost) - 0.4).abs() < 1e-12);
    assert_eq!(level(&one_lost), State::Stress);
    assert!(witnesses(&one_lost).contains(&"replication_target:b".to_owned()));
    assert_eq!(level(&two(vec![])), State::Critical);
    // Any number of standbys: losing all but one is stress, all critical.
    for n in 2..7 {
        let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        let o = with_standbys(collection(2), &names.join(","), vec![streaming("s0", 0)]);
        assert!((lambda_norm(&o) - 0.4).abs() < 1e-12, "{n} standbys");
        assert_eq!(
            level(&with_standbys(collection(2), &names.join(","), vec![])),
            State::Critical
        );
    }
}

#[test]
fn lag_past_the_budget_is_stress_never_critical() {
    let budget = 64 * MB;
    let one = |lag| with_standbys(collection(2), "a", vec![streaming("a", lag)]);
    assert_eq!(lambda_norm(&one(budget / 2)), 1.0);
    assert!(lambda_norm(&one(budget * 3 / 4)) < 0.8);
    assert_eq!(level(&one(budget)), State::Stress);
    assert_eq!(level(&one(100 * budget)), State::Stress);
    // Nothing replayed yet counts as lag at the budget.
    let mut unknown_lag = one(0);
    unknown_lag.replication.standbys[0].replay_lag_bytes = None;
    assert_eq!(level(&unknown_lag), State::Stress);

    let two = |lag| {
        with_standbys(
            collection(2),
            "a,b",
            vec![streaming("a", 0), streaming("b", lag)],
        )
    };
    assert_eq!(level(&two(budget / 2)), State::Normal);
    assert!((lambda_norm(&two(budget)) - 0.7).abs() < 1e-12);
    assert_eq!(level(&two(10 * budget)), State::Stress);
}

#[test]
fn undeclared_standbys_are_observed_but_never_count() {
    let o = with_standbys(collection(2), "", vec![streaming("adhoc", 900 * MB)]);
    let (built, integrity) = integrity(&o);
    assert_eq!(integrity.lambda_norm, 1.0);
    assert!(built
        .graph
        .find(NodeKind::ReplicationTarget, "adhoc")
        .is_none());
    let primary = built.graph.find(NodeKind::Shard, "primary").unwrap();
    assert_eq!(
        built.node_data[primary]["undeclared_standbys"][0]["application_name"],
        "adhoc"
    );
}

#[test]
fn after_a_failover_the_standby_the_settings_name_as_this_server_is_not_lost() {
    // Promoted: the settings it carries still expect it, by its cluster_name.
    let mut o = with_standbys(collection(2), "demo_standby", vec![]);
    o.replication.this_server = "Demo_Standby".into();
    // Never promoted (timeline 1): the name is a standby's, lost.
    assert_eq!(level(&o), State::Critical);
    o.replication.timeline = 2;
    let (built, measured) = integrity(&o);
    assert_eq!(measured.lambda_norm, 1.0);
    assert!(built
        .graph
        .find(NodeKind::ReplicationTarget, "demo_standby")
        .is_none());
    let primary = built.graph.find(NodeKind::Shard, "primary").unwrap();
    let said = &built.node_data[primary]["expected_standby_is_this_server"];
    assert_eq!(said["name"], "demo_standby");
    assert!(said["hint"]
        .as_str()
        .unwrap()
        .contains("remove it from ruvector.expected_standbys"));
    // Another expected standby still counts.
    o.replication.expected_standbys = "demo_standby, replica2".into();
    assert_eq!(level(&o), State::Critical);
    // A standby of that name connected (Debian names every cluster 15/main):
    // it is that standby, not this server.
    o.replication.expected_standbys = "demo_standby".into();
    o.replication.standbys = vec![streaming("demo_standby", 0)];
    assert_eq!(lambda_norm(&o), 1.0);
    let (built, _) = integrity(&o);
    assert!(built
        .graph
        .find(NodeKind::ReplicationTarget, "demo_standby")
        .is_some());
    o.replication.standbys = vec![];
    // A primary whose settings do not name it says nothing.
    o.replication.this_server = "main".into();
    let (built, _) = integrity(&o);
    let primary = built.graph.find(NodeKind::Shard, "primary").unwrap();
    assert!(built.node_data[primary]
        .get("expected_standby_is_this_server")
        .is_none());
}

#[test]
fn within_the_startup_grace_a_reconnecting_standby_is_not_lost() {
    let mut o = with_standbys(collection(2), "a", vec![]);
    o.replication.in_startup_grace = true;
    assert_eq!(lambda_norm(&o), 1.0);
    // The grace does not hide lag of a standby that is streaming.
    o.replication.standbys = vec![streaming("a", 64 * MB)];
    assert_eq!(level(&o), State::Stress);
}

#[test]
fn synchronous_standby_names_are_expected_case_insensitively() {
    assert_eq!(synchronous_names("s1, s2"), ["s1", "s2"]);
    assert_eq!(synchronous_names("FIRST 2 (s1, \"S 2\")"), ["s1", "S 2"]);
    assert_eq!(synchronous_names("any 1 (a,b,c)"), ["a", "b", "c"]);
    assert_eq!(synchronous_names("2 (a, b)"), ["a", "b"]);
    assert_eq!(synchronous_names("*"), Vec::<String>::new());
    assert_eq!(synchronous_names("\"a\"\"b\""), ["a\"b"]);
    assert_eq!(synchronous_names(""), Vec::<String>::new());

    let mut o = with_standbys(collection(2), "Replica", vec![streaming("replica", 0)]);
    o.replication.synchronous_standby_names = "FIRST 1 (REPLICA, other)".into();
    let expected = replication::expected(&o.replication);
    assert_eq!(expected.len(), 2);
    assert_eq!(
        expected[0].declared_by,
        ["ruvector.expected_standbys", "synchronous_standby_names"]
    );
    // `other` is absent: one of two lost.
    assert!((lambda_norm(&o) - 0.4).abs() < 1e-12);
}

fn foreign(o: &mut Observed, server: &str, partitions: usize, probe: Option<Probe>) {
    let base = o.partitions.len();
    for i in 0..partitions {
        let mut p = partition(base + i, 0, 0);
        p.relkind = "f".into();
        p.server = Some(server.into());
        o.partitions.push(p);
    }
    o.shards.push(Shard {
        name: server.into(),
        kind: "postgres_fdw".into(),
        probe,
    });
}

fn answered(latency_ms: f64) -> Option<Probe> {
    Some(Probe {
        reachable: true,
        latency_ms,
        address: "127.0.0.1:5433".into(),
        error: None,
    })
}

#[test]
fn a_foreign_shard_down_is_critical_and_named_slow_is_reduced() {
    let mut o = collection(4);
    foreign(&mut o, "remote", 2, answered(3.0));
    assert_eq!(lambda_norm(&o), 1.0);

    o.shards[0].probe = answered(1125.0);
    assert!((lambda_norm(&o) - 0.75).abs() < 1e-12);
    o.shards[0].probe = answered(5000.0);
    assert_eq!(level(&o), State::Stress);

    o.shards[0].probe = Some(Probe {
        reachable: false,
        latency_ms: 1.0,
        address: "127.0.0.1:5433".into(),
        error: Some("connection refused".into()),
    });
    assert_eq!(lambda_norm(&o), 0.0);
    assert!(
        witnesses(&o).contains(&"shard:remote".to_owned()),
        "{:?}",
        witnesses(&o)
    );

    // A wrapper that cannot be probed counts as up.
    o.shards[0].probe = None;
    assert_eq!(lambda_norm(&o), 1.0);
    // A partition on a server that was not observed is an error, not a guess.
    o.shards.clear();
    assert!(build(&o, &Overrides::new()).is_err());
}

#[test]
fn bloat_is_stress_at_worst_never_critical() {
    let mut o = collection(8);
    o.partitions[3] = partition(3, 100, 1_000_000);
    assert!((lambda_norm(&o) - 0.5).abs() < 1e-12);
    for p in &mut o.partitions {
        *p = partition(0, 1, 10_000_000);
    }
    o.partitions = (0..8).map(|i| partition(i, 1, 10_000_000)).collect();
    assert_eq!(level(&o), State::Stress);
    // Tiny tables are never bloated, whatever their share.
    o.partitions = vec![partition(0, 10, 500)];
    assert_eq!(lambda_norm(&o), 1.0);
    // Maintenance off or failing: stress.
    let mut o = collection(2);
    o.maintenance.autovacuum = false;
    assert_eq!(level(&o), State::Stress);
    let mut o = collection(2);
    o.maintenance.archive_mode = "on".into();
    o.maintenance.last_failed = Some(2);
    o.maintenance.last_archived = Some(1);
    assert_eq!(level(&o), State::Stress);
}

/// Random vectors around eight fixed centres, `dim` wide, moved by `shift`;
/// `seed` draws the noise, so two seeds sample the same distribution.
fn vectors(rows: usize, dim: usize, shift: f32, seed: u64) -> Vec<f32> {
    let mut centres_walk = Walk(1);
    let centres: Vec<f32> = (0..8 * dim)
        .map(|_| centres_walk.unit() as f32 * 10.0)
        .collect();
    let mut walk = Walk(seed);
    (0..rows)
        .flat_map(|_| {
            let c = walk.below(8);
            (0..dim)
                .map(|d| centres[c * dim + d] + walk.unit() as f32 - 0.5 + shift)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// IVF lists trained by the real k-means on the collection's partitions.
fn trained_ivf(o: &Observed, lists: usize) -> Ivf {
    let dim = 8;
    let rows = vectors(lists * 40, dim, 0.0, 5);
    let centroids = kmeans::train(&rows, dim, lists, 10, 1, &mut |_| Ok(())).unwrap();
    let mut out: Vec<List> = (0..lists)
        .map(|i| List {
            list_id: i as i32 + 1,
            vector_count: 0,
            mean_distance: 0.0,
            partition_counts: HashMap::new(),
        })
        .collect();
    let mut total = 0.0;
    for (i, x) in rows.chunks_exact(dim).enumerate() {
        let (list, d2) = kmeans::nearest(&centroids, dim, x);
        let relid = o.partitions[i % o.partitions.len()].relid;
        let l = &mut out[list];
        l.vector_count += 1;
        l.mean_distance += d2.sqrt() as f64;
        *l.partition_counts.entry(relid).or_default() += 1;
        total += d2.sqrt() as f64;
    }
    for l in &mut out {
        l.mean_distance /= l.vector_count.max(1) as f64;
    }
    let n = (rows.len() / dim) as i64;
    Ivf {
        lists: out,
        trained_rows: n,
        trained_mean_distance: total / n as f64,
        live_rows: n,
        sample: None,
    }
}

fn sample_distance(centroids: &[f32], shift: f32) -> DriftSample {
    let dim = 8;
    let rows = vectors(256, dim, shift, 77);
    let total: f64 = rows
        .chunks_exact(dim)
        .map(|x| kmeans::nearest(centroids, dim, x).1.sqrt() as f64)
        .sum();
    DriftSample {
        rows: 256,
        mean_distance: total / 256.0,
    }
}

#[test]
fn drifted_ivf_lists_are_stress_never_critical() {
    let mut o = collection(4);
    let mut ivf = trained_ivf(&o, 16);
    o.ivf = Some(ivf.clone());
    assert_eq!(lambda_norm(&o), 1.0);
    let n = o.ivf.as_ref().unwrap().lists.len();
    assert_eq!(
        integrity(&o)
            .0
            .graph
            .nodes()
            .iter()
            .filter(|n| n.kind == NodeKind::Centroid)
            .count(),
        n
    );

    // Growth: 10% is fine, doubling is the floor.
    ivf.live_rows = ivf.trained_rows * 11 / 10;
    o.ivf = Some(ivf.clone());
    assert_eq!(lambda_norm(&o), 1.0);
    ivf.live_rows = ivf.trained_rows * 3;
    o.ivf = Some(ivf.clone());
    assert!((lambda_norm(&o) - 0.5).abs() < 1e-12);
    assert_eq!(level(&o), State::Stress);

    // Distance: rows from a shifted distribution sit far from every centroid.
    let dim = 8;
    let rows = vectors(16 * 40, dim, 0.0, 5);
    let centroids = kmeans::train(&rows, dim, 16, 10, 1, &mut |_| Ok(())).unwrap();
    let mut ivf = trained_ivf(&o, 16);
    ivf.sample = Some(sample_distance(&centroids, 0.0));
    let (_, ratio, health) = ivf::drift(&ivf);
    assert!(ratio.unwrap() < ivf::DISTANCE_HEALTHY, "{ratio:?}");
    assert_eq!(health, 1.0);
    ivf.sample = Some(sample_distance(&centroids, 6.0));
    o.ivf = Some(ivf);
    assert_eq!(level(&o), State::Stress);

    // Lists whose partitions are gone are left out; the rest still route.
    let mut ivf = trained_ivf(&o, 16);
    o.partitions.truncate(1);
    ivf.live_rows = 0;
    o.ivf = Some(ivf);
    assert_eq!(lambda_norm(&o), 1.0);
}

#[test]
fn overrides_fail_components_as_the_sample_would() {
    let o = with_standbys(
        collection(2),
        "a,b",
        vec![streaming("a", 0), streaming("b", 0)],
    );
    let what_if = |label: &str, health: f64| {
        let overrides = Overrides::from([(label.to_owned(), health)]);
        build(&o, &overrides).map(|b| b.graph.integrity().unwrap().lambda_norm)
    };
    // Failing a standby breaks its stream, it does not isolate the node.
    assert!((what_if("replication_target:a", 0.0).unwrap() - 0.4).abs() < 1e-12);
    assert_eq!(what_if("shard:primary", 0.0).unwrap(), 0.0);
    assert_eq!(what_if("partition:public.items_p1", 0.5).unwrap(), 0.5);
    assert_eq!(
        what_if("shard:nope", 0.0).unwrap_err(),
        Error::UnknownNode("shard:nope".into())
    );
    assert!(what_if("shard:primary", 2.0).is_err());
}

/// A small deterministic generator for the simulation.
struct Walk(u64);

impl Walk {
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }
}

/// 10,000 samples of randomized healthy clusters: partitions under autovacuum
/// churn, standbys with lag jitter under the budget and a restart with the
/// standbys reconnecting within the grace, foreign shards answering, IVF lists
/// with inserts under the drift bound. Not one sample may call for more than
/// normal, and the controller must never leave normal.
#[test]
fn ten_thousand_healthy_samples_never_leave_normal() {
    let mut walk = Walk(2024);
    let hysteresis = Hysteresis::default();
    let thresholds = crate::policy::Policy::default().thresholds();
    let mut samples = 0;
    for cluster in 0..50 {
        let partitions = 1 + walk.below(64);
        let mut o = collection(partitions);
        let standbys = walk.below(4);
        let names: Vec<String> = (0..standbys).map(|i| format!("standby{i}")).collect();
        o.replication.expected_standbys = names.join(",");
        if standbys > 0 && walk.unit() < 0.5 {
            o.replication.synchronous_standby_names = format!("ANY 1 ({})", names[0]);
        }
        o.maintenance.archive_mode = if walk.unit() < 0.5 { "on" } else { "off" }.into();
        for s in 0..walk.below(3) {
            foreign(
                &mut o,
                &format!("remote{s}"),
                1 + walk.below(4),
                answered(1.0),
            );
        }
        if walk.unit() < 0.6 {
            o.ivf = Some(trained_ivf(&o, 4 + walk.below(60)));
        }
        let mut controller = Controller::default();
        let mut now = cluster * 1_000_000 * SECOND;
        let restart_at = walk.below(200);
        for step in 0..200 {
            now += 60 * SECOND;
            let budget = o.replication.lag_budget_bytes;
            // Standbys stream with lag jitter under half the budget, except
            // just after a restart, when they are still reconnecting.
            let restarting = (restart_at..restart_at + 1).contains(&step);
            o.replication.in_startup_grace = restarting;
            o.replication.standbys = if restarting {
                vec![]
            } else {
                names
                    .iter()
                    .map(|n| streaming(n, (walk.unit() * 0.49 * budget as f64) as i64))
                    .collect()
            };
            // Autovacuum churn: dead tuples pile up to its trigger, then vanish.
            for p in o.partitions.iter_mut().filter(|p| p.server.is_none()) {
                p.live += walk.below(500) as i64;
                p.dead += walk.below(800) as i64;
                if p.dead as f64 > 50.0 + 0.2 * p.live as f64 {
                    p.dead = 0;
                }
            }
            for s in &mut o.shards {
                s.probe = answered(walk.unit() * 200.0);
            }
            if let Some(ivf) = &mut o.ivf {
                // Inserts under the drift bound, from the trained distribution.
                ivf.live_rows =
                    ivf.trained_rows + (walk.unit() * 0.19 * ivf.trained_rows as f64) as i64;
                ivf.sample = Some(DriftSample {
                    rows: 256,
                    mean_distance: ivf.trained_mean_distance * (0.9 + walk.unit() * 0.3),
                });
            }
            let lambda_norm = lambda_norm(&o);
            assert_eq!(lambda_norm, 1.0, "cluster {cluster} step {step}: {o:?}");
            controller.observe(lambda_norm, now, &thresholds, &hysteresis);
            assert_eq!(
                controller.state,
                State::Normal,
                "cluster {cluster} step {step}"
            );
            samples += 1;
        }
    }
    assert_eq!(samples, 10_000);
}
