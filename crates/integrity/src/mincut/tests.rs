use super::*;
use crate::control::Limits;
use proptest::prelude::*;

/// The lightest cut by enumerating every side that excludes vertex 0.
fn brute_force(n: usize, edges: &[(u32, u32, f64)]) -> f64 {
    (1u32..(1 << (n - 1)))
        .map(|mask| {
            let side: Vec<bool> = (0..n)
                .map(|v| v > 0 && mask & (1 << (v - 1)) != 0)
                .collect();
            cut_weight(edges, &side)
        })
        .fold(f64::INFINITY, f64::min)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300)
}

fn assert_exact(n: usize, edges: &[(u32, u32, f64)], rounds: Rounds) {
    let cut = min_cut_by(n, edges, rounds, &mut Control::default())
        .unwrap()
        .expect("n ≥ 2 has a cut");
    let expected = brute_force(n, edges);
    assert!(
        close(cut.value, expected),
        "λ {} but brute force says {}",
        cut.value,
        expected
    );
    assert!(close(cut_weight(edges, &cut.side), cut.value));
    let on_side = cut.side.iter().filter(|&&s| s).count();
    assert!(on_side >= 1 && on_side <= n / 2, "side of {on_side} of {n}");
}

/// Random graphs up to 12 vertices: weights drawn from a small set so that ties,
/// zeros and parallel edges are common, and sparse enough to be disconnected.
fn graphs() -> impl Strategy<Value = (usize, Vec<(u32, u32, f64)>)> {
    (2usize..=12).prop_flat_map(|n| {
        let weight = prop_oneof![Just(0.0), Just(1.0), Just(2.0), 0.0..10.0, 1e-9..1e-6];
        let edge = (0..n as u32, 0..n as u32, weight);
        (Just(n), prop::collection::vec(edge, 0..(n * n)))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn matches_brute_force_on_small_graphs((n, edges) in graphs()) {
        assert_exact(n, &edges, Rounds::Auto);
    }

    #[test]
    fn sparse_rounds_alone_match_brute_force((n, edges) in graphs()) {
        assert_exact(n, &edges, Rounds::Sparse);
    }

    #[test]
    fn the_sweep_alone_matches_brute_force((n, edges) in graphs()) {
        assert_exact(n, &edges, Rounds::Sweep);
    }

    /// Equal weights: λ is exactly the least number of crossing edges times w,
    /// rounded once, in every mode.
    #[test]
    fn equal_weights_are_exact_in_every_mode((n, pairs) in tied_graphs(), w in equal_weight()) {
        let edges: Vec<_> = pairs.iter().map(|&(u, v)| (u, v, w)).collect();
        let expected = brute_force_count(n, &pairs) as f64 * w;
        for rounds in [Rounds::Auto, Rounds::Sparse, Rounds::Sweep] {
            let cut = min_cut_by(n, &edges, rounds, &mut Control::default()).unwrap().unwrap();
            prop_assert_eq!(cut.value.to_bits(), expected.to_bits(), "{} vs {}", cut.value, expected);
            let crossing = pairs.iter().filter(|&&(u, v)| cut.side[u as usize] != cut.side[v as usize]).count();
            prop_assert_eq!(crossing as f64 * w, expected);
        }
    }

    /// Small integral weights with many ties: exact equality with brute force.
    #[test]
    fn integral_weights_are_exact_in_every_mode((n, edges) in integral_graphs()) {
        let expected = brute_force(n, &edges);
        for rounds in [Rounds::Auto, Rounds::Sparse, Rounds::Sweep] {
            let cut = min_cut_by(n, &edges, rounds, &mut Control::default()).unwrap().unwrap();
            prop_assert_eq!(cut.value, expected);
            prop_assert_eq!(cut_weight(&edges, &cut.side), expected);
        }
    }

    /// Weights over hundreds of orders of magnitude take the float path.
    #[test]
    fn huge_weight_ranges_match_brute_force((n, edges) in wide_range_graphs()) {
        assert_exact(n, &edges, Rounds::Auto);
        assert_exact(n, &edges, Rounds::Sparse);
    }
}

/// Up to 12 vertices, dense enough for many ties and parallel edges.
fn tied_graphs() -> impl Strategy<Value = (usize, Vec<(u32, u32)>)> {
    (2usize..=12).prop_flat_map(|n| {
        let edge = (0..n as u32, 0..n as u32);
        (Just(n), prop::collection::vec(edge, n..(n * n)))
    })
}

fn equal_weight() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(1.0),
        Just(0.1),
        Just(0.3),
        Just(7.0),
        Just(1e-300),
        Just(3e250),
        1e-3..1e3
    ]
}

fn integral_graphs() -> impl Strategy<Value = (usize, Vec<(u32, u32, f64)>)> {
    (2usize..=12).prop_flat_map(|n| {
        let weight = prop_oneof![
            Just(1.0),
            Just(2.0),
            Just(3.0),
            Just(0.0),
            (0u32..1000).prop_map(f64::from)
        ];
        let edge = (0..n as u32, 0..n as u32, weight);
        (Just(n), prop::collection::vec(edge, 0..(n * n)))
    })
}

fn wide_range_graphs() -> impl Strategy<Value = (usize, Vec<(u32, u32, f64)>)> {
    (2usize..=12).prop_flat_map(|n| {
        let weight = prop_oneof![Just(1e-200), Just(1.0 + f64::EPSILON), -250.0..250.0f64]
            .prop_map(|x: f64| {
                if x.abs() < 1.0 {
                    x
                } else {
                    10f64.powf(x.floor()) * 1.7
                }
            });
        let edge = (0..n as u32, 0..n as u32, weight.prop_map(f64::abs));
        (Just(n), prop::collection::vec(edge, 0..(n * n)))
    })
}

/// The least number of edges across a cut, by enumeration.
fn brute_force_count(n: usize, pairs: &[(u32, u32)]) -> usize {
    (1u32..(1 << (n - 1)))
        .map(|mask| {
            let inside = |v: u32| v > 0 && mask & (1 << (v - 1)) != 0;
            pairs
                .iter()
                .filter(|&&(u, v)| inside(u) != inside(v))
                .count()
        })
        .min()
        .unwrap_or(0)
}

#[test]
fn disconnected_graph_has_zero_cut_and_a_component_as_side() {
    let edges = [(0, 1, 3.0), (2, 3, 4.0), (3, 4, 1.0)];
    let cut = min_cut(5, &edges).unwrap().unwrap();
    assert_eq!(cut.value, 0.0);
    assert_eq!(cut.side_vertices(), vec![0, 1]);
}

#[test]
fn zero_weight_edges_do_not_connect() {
    let cut = min_cut(3, &[(0, 1, 0.0), (1, 2, 5.0)]).unwrap().unwrap();
    assert_eq!(cut.value, 0.0);
    assert_eq!(cut.side_vertices(), vec![0]);
}

#[test]
fn fewer_than_two_vertices_have_no_cut() {
    assert_eq!(min_cut(0, &[]).unwrap(), None);
    assert_eq!(min_cut(1, &[(0, 0, 1.0)]).unwrap(), None);
}

#[test]
fn two_vertices_cut_is_their_summed_parallel_edges() {
    let cut = min_cut(2, &[(0, 1, 1.5), (1, 0, 2.5), (0, 0, 9.0)])
        .unwrap()
        .unwrap();
    assert_eq!(cut.value, 4.0);
    assert_eq!(cut.side_vertices(), vec![1]);
}

#[test]
fn planted_bridge_is_found_between_two_cliques() {
    let mut edges = Vec::new();
    for half in [0u32, 50] {
        for u in 0..50 {
            for v in u + 1..50 {
                edges.push((half + u, half + v, 1.0 + ((u * 7 + v * 3) % 5) as f64));
            }
        }
    }
    edges.push((3, 77, 0.25));
    edges.push((10, 60, 0.5));
    let cut = min_cut(100, &edges).unwrap().unwrap();
    assert_eq!(cut.value, 0.75);
    assert_eq!(cut.side_vertices().len(), 50);
}

#[test]
fn invalid_weights_are_rejected() {
    for w in [f64::NAN, f64::INFINITY, -1.0] {
        assert!(matches!(
            min_cut(2, &[(0, 1, w)]),
            Err(Error::InvalidNumber { .. })
        ));
    }
    assert_eq!(
        min_cut(2, &[(0, 2, 1.0)]),
        Err(Error::EdgeOutOfRange {
            edge: 0,
            endpoint: 2,
            nodes: 2
        })
    );
}

/// A deterministic generator for larger cases checked against a plain
/// Stoer-Wagner, which is slow but obviously right.
fn lcg(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 11) as f64 / (1u64 << 53) as f64
}

fn stoer_wagner(n: usize, edges: &[(u32, u32, f64)]) -> f64 {
    let mut w = vec![vec![0.0; n]; n];
    for &(u, v, c) in edges {
        if u != v {
            w[u as usize][v as usize] += c;
            w[v as usize][u as usize] += c;
        }
    }
    let mut alive: Vec<usize> = (0..n).collect();
    let mut best = f64::INFINITY;
    while alive.len() > 1 {
        let mut key = vec![0.0f64; n];
        let mut added = vec![false; n];
        let (mut prev, mut last) = (alive[0], alive[0]);
        for _ in 0..alive.len() {
            let next = *alive
                .iter()
                .filter(|&&v| !added[v])
                .max_by(|&&a, &&b| key[a].total_cmp(&key[b]))
                .unwrap();
            added[next] = true;
            prev = last;
            last = next;
            for &v in &alive {
                key[v] += w[next][v];
            }
        }
        best = best.min(key[last] - w[last][last]);
        for &v in &alive {
            let add = w[last][v];
            w[prev][v] += add;
            w[v][prev] += add;
        }
        w[prev][prev] = 0.0;
        alive.retain(|&v| v != last);
    }
    best
}

#[test]
fn matches_stoer_wagner_on_medium_graphs_of_every_shape() {
    let mut seed = 7u64;
    for case in 0..60 {
        let n = 20 + case * 5;
        let mut edges = Vec::new();
        match case % 4 {
            // sparse random with a spanning path
            0 => {
                for v in 1..n as u32 {
                    edges.push((v - 1, v, 1.0 + 9.0 * lcg(&mut seed)));
                }
                for _ in 0..3 * n {
                    let u = (lcg(&mut seed) * n as f64) as u32;
                    let v = (lcg(&mut seed) * n as f64) as u32;
                    edges.push((u, v, 1.0 + 9.0 * lcg(&mut seed)));
                }
            }
            // complete with near-uniform weights
            1 => {
                for u in 0..n as u32 {
                    for v in u + 1..n as u32 {
                        edges.push((u, v, 0.9 + 0.2 * lcg(&mut seed)));
                    }
                }
            }
            // two dense halves and a light bridge
            2 => {
                for u in 0..n as u32 {
                    for v in u + 1..n as u32 {
                        let same = (u < n as u32 / 2) == (v < n as u32 / 2);
                        if same && lcg(&mut seed) < 0.5 {
                            edges.push((u, v, 1.0 + lcg(&mut seed)));
                        } else if !same && lcg(&mut seed) < 0.01 {
                            edges.push((u, v, 0.1 * lcg(&mut seed)));
                        }
                    }
                }
                for v in 1..n as u32 {
                    if v != n as u32 / 2 {
                        edges.push((v - 1, v, 0.5));
                    }
                }
                edges.push((0, n as u32 - 1, 1e-3));
            }
            // ring of cliques
            _ => {
                let size = 5;
                let cliques = n / size;
                for c in 0..cliques as u32 {
                    let base = c * size as u32;
                    for u in 0..size as u32 {
                        for v in u + 1..size as u32 {
                            edges.push((base + u, base + v, 2.0 + lcg(&mut seed)));
                        }
                    }
                    let next = ((c + 1) % cliques as u32) * size as u32;
                    edges.push((base, next + 1, 1.0 + lcg(&mut seed)));
                }
            }
        }
        let n = if case % 4 == 3 { (n / 5) * 5 } else { n };
        let cut = min_cut(n, &edges).unwrap().unwrap();
        let expected = stoer_wagner(n, &edges);
        assert!(
            close(cut.value, expected),
            "case {case}: λ {} vs Stoer-Wagner {}",
            cut.value,
            expected
        );
        assert!(close(cut_weight(&edges, &cut.side), cut.value));
    }
}

// Unweighted families with closed-form λ, in every mode and at two weights.

fn unit(pairs: impl IntoIterator<Item = (u32, u32)>, w: f64) -> Vec<(u32, u32, f64)> {
    pairs.into_iter().map(|(u, v)| (u, v, w)).collect()
}

fn lattice(rows: u32, cols: u32, torus: bool) -> Vec<(u32, u32)> {
    let mut pairs = Vec::new();
    for i in 0..rows {
        for j in 0..cols {
            let v = i * cols + j;
            if j + 1 < cols || torus {
                pairs.push((v, i * cols + (j + 1) % cols));
            }
            if i + 1 < rows || torus {
                pairs.push((v, ((i + 1) % rows) * cols + j));
            }
        }
    }
    pairs
}

/// A family's name, n, edges, and λ in edges.
type Family = (&'static str, usize, Vec<(u32, u32)>, f64);

fn families() -> Vec<Family> {
    let mut seed = 3u64;
    let cycle = (0..1500u32).map(|v| (v, (v + 1) % 1500)).collect();
    let path = (1..1500u32).map(|v| (v - 1, v)).collect();
    let hypercube = (0..1u32 << 9)
        .flat_map(|v| (0..9).map(move |b| (v, v ^ (1 << b))))
        .filter(|&(v, u)| v < u)
        .collect();
    let complete = (0..120u32)
        .flat_map(|u| (u + 1..120).map(move |v| (u, v)))
        .collect();
    let tree = (1..1500u32)
        .map(|v| ((lcg(&mut seed) * v as f64) as u32, v))
        .collect();
    let star = (1..1500u32).map(|v| (0, v)).collect();
    let mut barbell: Vec<(u32, u32)> = Vec::new();
    for base in [0u32, 1480] {
        for u in 0..20 {
            for v in u + 1..20 {
                barbell.push((base + u, base + v));
            }
        }
    }
    barbell.extend((20..=1480u32).map(|v| (v - 1, v)));
    let necklace = (0..300u32)
        .flat_map(|c| {
            let b = 4 * c;
            [
                (b, b + 1),
                (b, b + 2),
                (b, b + 3),
                (b + 1, b + 2),
                (b + 1, b + 3),
                (b + 2, b + 3),
            ]
            .into_iter()
            .chain([(b + 3, 4 * ((c + 1) % 300))])
        })
        .collect();
    let cycle_squared = (0..1500u32)
        .flat_map(|v| [(v, (v + 1) % 1500), (v, (v + 2) % 1500)])
        .collect();
    vec![
        ("cycle", 1500, cycle, 2.0),
        ("path", 1500, path, 1.0),
        ("grid", 40 * 37, lattice(40, 37, false), 2.0),
        ("torus", 30 * 31, lattice(30, 31, true), 4.0),
        ("hypercube", 512, hypercube, 9.0),
        ("complete", 120, complete, 119.0),
        ("tree", 1500, tree, 1.0),
        ("star", 1500, star, 1.0),
        ("barbell", 1500, barbell, 1.0),
        ("necklace", 1200, necklace, 2.0),
        ("cycle squared", 1500, cycle_squared, 4.0),
    ]
}

#[test]
fn unweighted_families_have_their_closed_form_lambda() {
    for (name, n, pairs, lambda) in families() {
        for w in [1.0, 0.1] {
            let edges = unit(pairs.iter().copied(), w);
            for rounds in [Rounds::Auto, Rounds::Sweep] {
                let cut = min_cut_by(n, &edges, rounds, &mut Control::default())
                    .unwrap()
                    .unwrap();
                // λ is the exact count times w, rounded once; a float sum of the
                // crossing weights may differ from it in the last bit.
                assert_eq!(cut.value, lambda * w, "{name} at weight {w}");
                assert!(close(cut_weight(&edges, &cut.side), cut.value), "{name}");
            }
        }
    }
}

#[test]
fn tied_shapes_match_stoer_wagner_exactly() {
    let mut seed = 5u64;
    for case in 0..24 {
        let n = 30 + 7 * case;
        let mut pairs: Vec<(u32, u32, f64)> = Vec::new();
        match case % 3 {
            // a random 4-regular multigraph: two random Hamiltonian cycles
            0 => {
                for _ in 0..2 {
                    let mut order: Vec<u32> = (0..n as u32).collect();
                    for i in (1..n).rev() {
                        order.swap(i, (lcg(&mut seed) * (i + 1) as f64) as usize);
                    }
                    pairs.extend((0..n).map(|i| (order[i], order[(i + 1) % n], 1.0)));
                }
            }
            // two unit tori joined by a few edges
            1 => {
                let half = (n / 2) as u32;
                for (u, v) in lattice(1, half, true) {
                    pairs.push((u, v, 2.0));
                    pairs.push((half + u, half + v, 2.0));
                }
                for _ in 0..3 {
                    let u = (lcg(&mut seed) * half as f64) as u32;
                    pairs.push((u, half + u, 1.0));
                }
            }
            // small integral weights on a random sparse graph
            _ => {
                for v in 1..n as u32 {
                    pairs.push((v - 1, v, (1 + (lcg(&mut seed) * 3.0) as u32) as f64));
                }
                for _ in 0..2 * n {
                    let u = (lcg(&mut seed) * n as f64) as u32;
                    let v = (lcg(&mut seed) * n as f64) as u32;
                    pairs.push((u, v, (1 + (lcg(&mut seed) * 3.0) as u32) as f64));
                }
            }
        }
        let n = if case % 3 == 1 { n / 2 * 2 } else { n };
        let expected = stoer_wagner(n, &pairs);
        for rounds in [Rounds::Auto, Rounds::Sparse, Rounds::Sweep] {
            let cut = min_cut_by(n, &pairs, rounds, &mut Control::default())
                .unwrap()
                .unwrap();
            assert_eq!(cut.value, expected, "case {case}");
        }
    }
}

/// A few distinct decimals (0.1, 0.3, 0.7: coprime 52-bit odd parts) on
/// thousands of edges overflow u64 units and run on exact u128, ties included.
#[test]
fn few_decimal_values_are_exact_on_wide_integers() {
    let mut seed = 9u64;
    let values = [0.1, 0.3, 0.7];
    for n in [150usize, 400] {
        let mut edges: Vec<(u32, u32, f64)> = Vec::new();
        for v in 1..n as u32 {
            edges.push((v - 1, v, values[v as usize % 3]));
        }
        edges.push((n as u32 - 1, 0, 0.3));
        while edges.len() < 3000 {
            let u = (lcg(&mut seed) * n as f64) as u32;
            let v = (lcg(&mut seed) * n as f64) as u32;
            edges.push((u, v, values[(lcg(&mut seed) * 3.0) as usize]));
        }
        assert!(matches!(
            weight::Capacities::of(&edges, &mut Control::default()).unwrap(),
            weight::Capacities::Wide(..)
        ));
        let expected = stoer_wagner(n, &edges);
        for rounds in [Rounds::Auto, Rounds::Sparse, Rounds::Sweep] {
            let cut = min_cut_by(n, &edges, rounds, &mut Control::default())
                .unwrap()
                .unwrap();
            assert!(close(cut.value, expected), "{} vs {expected}", cut.value);
        }
    }
}

#[test]
fn lambda_is_never_negative_zero() {
    for edges in [vec![], vec![(0, 1, -0.0)], vec![(0, 1, 0.0), (2, 3, 1.0)]] {
        let cut = min_cut(4, &edges).unwrap().unwrap();
        assert_eq!(cut.value.to_bits(), 0f64.to_bits(), "{edges:?}");
    }
    assert_eq!(cut_weight(&[], &[true, false]).to_bits(), 0f64.to_bits());
}

#[test]
fn capacities_that_could_overflow_are_refused_naming_the_edge() {
    let edges = [(0, 1, 1e308), (1, 2, 1e308), (2, 0, 1.0)];
    let err = min_cut(3, &edges).unwrap_err();
    assert_eq!(
        err,
        Error::CapacityOverflow {
            edge: 0,
            capacity: 1e308,
            limit: MAX_TOTAL_CAPACITY
        }
    );
    assert!(
        err.to_string().starts_with("edge 0: capacity 1e308"),
        "{err}"
    );
    let err = min_cut(3, &[(0, 1, 6e299), (1, 2, 6e299)]).unwrap_err();
    assert!(matches!(err, Error::CapacityOverflow { edge: 1, .. }));
    // Just under the limit is fine, and exact.
    let cut = min_cut(3, &[(0, 1, 4e299), (1, 2, 5e299)])
        .unwrap()
        .unwrap();
    assert_eq!(cut.value, 4e299);
}

#[test]
fn invalid_edges_are_named_with_their_value() {
    let err = min_cut(3, &[(0, 1, 1.0), (1, 2, f64::NAN)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the weight of edge 1 must be a finite number ≥ 0, got NaN"
    );
    let err = min_cut(3, &[(0, 1, 1.0), (1, 2, -3.5)]).unwrap_err();
    assert!(err.to_string().contains("edge 1") && err.to_string().contains("-3.5"));
    let err = min_cut(3, &[(0, 7, 1.0)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "edge 0: endpoint 7 is out of range: the graph has 3 nodes"
    );
}

#[test]
fn inputs_over_the_limit_are_refused_before_anything_else() {
    let edges = [(0, 1, f64::NAN), (1, 2, 1.0), (2, 0, 1.0)];
    let mut control = Control::new(Limits { max_edges: 2 });
    assert_eq!(
        min_cut_with(3, &edges, &mut control),
        Err(Error::TooLarge {
            what: "edges",
            count: 3,
            limit: 2
        })
    );
    assert!(matches!(
        min_cut_with(5, &[], &mut Control::new(Limits { max_edges: 2 })),
        Err(Error::TooLarge { what: "nodes", .. })
    ));
}

/// A unit cycle of 20,000 vertices takes the sweep; a hook that fails on its
/// third call stops it there, and nothing runs after the failing call.
#[test]
fn a_failing_hook_stops_the_solver_at_once() {
    let n = 20_000u32;
    let edges: Vec<_> = (0..n).map(|v| (v, (v + 1) % n, 1.0)).collect();
    let mut calls = 0;
    let mut hook = || {
        calls += 1;
        if calls == 3 {
            Err(Error::Cancelled("statement timeout".into()))
        } else {
            Ok(())
        }
    };
    assert_eq!(
        min_cut_with(
            n as usize,
            &edges,
            &mut Control::default().with_interrupt(&mut hook)
        ),
        Err(Error::Cancelled("statement timeout".into()))
    );
    assert_eq!(calls, 3);
}

/// The hook is called throughout a solve, not only at its start: at least
/// once per CHECK_INTERVAL work units, so often enough to stop any long run.
#[test]
fn the_hook_is_called_throughout_a_solve() {
    for (n, edges) in [
        (
            20_000usize,
            (0..20_000u32)
                .map(|v| (v, (v + 1) % 20_000, 1.0))
                .collect::<Vec<_>>(),
        ),
        (
            4096,
            (0..1u32 << 12)
                .flat_map(|v| (0..12).map(move |b| (v, v ^ (1 << b), 1.0)))
                .filter(|&(v, u, _)| v < u)
                .collect(),
        ),
    ] {
        let mut calls = 0usize;
        let mut hook = || {
            calls += 1;
            Ok(())
        };
        let cut = min_cut_with(n, &edges, &mut Control::default().with_interrupt(&mut hook));
        assert!(cut.unwrap().is_some());
        assert!(calls >= 10, "{calls} calls for {} edges", edges.len());
    }
}

/// PostgreSQL's interrupt check unwinds; the solver keeps no state between
/// calls, so the next call works.
#[test]
fn a_hook_that_unwinds_leaves_nothing_behind() {
    let edges: Vec<_> = (0..20_000u32).map(|v| (v, (v + 1) % 20_000, 1.0)).collect();
    let unwound = std::panic::catch_unwind(|| {
        let mut hook =
            || -> Result<(), Error> { panic!("canceling statement due to user request") };
        let _ = min_cut_with(
            20_000,
            &edges,
            &mut Control::default().with_interrupt(&mut hook),
        );
    });
    assert!(unwound.is_err());
    assert_eq!(min_cut(20_000, &edges).unwrap().unwrap().value, 2.0);
}
