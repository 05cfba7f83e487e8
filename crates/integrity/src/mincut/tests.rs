use super::*;
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
    let cut = min_cut_by(n, edges, rounds)
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
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn matches_brute_force_on_small_graphs((n, edges) in graphs()) {
        assert_exact(n, &edges, Rounds::Auto);
    }

    #[test]
    fn sparse_rounds_alone_match_brute_force((n, edges) in graphs()) {
        assert_exact(n, &edges, Rounds::Sparse);
    }
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
        Err(Error::NodeOutOfRange { index: 2, nodes: 2 })
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
