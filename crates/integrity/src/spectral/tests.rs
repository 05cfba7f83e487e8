use super::*;
use proptest::prelude::*;

fn relative_error(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

fn lcg(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 11) as f64 / (1u64 << 53) as f64
}

fn grid(side: u32) -> (usize, Vec<(u32, u32, f64)>) {
    let mut edges = Vec::new();
    for r in 0..side {
        for c in 0..side {
            let v = r * side + c;
            if c + 1 < side {
                edges.push((v, v + 1, 1.0));
            }
            if r + 1 < side {
                edges.push((v, v + side, 1.0));
            }
        }
    }
    ((side * side) as usize, edges)
}

#[test]
fn disconnected_graph_is_exactly_zero() {
    assert_eq!(lambda2(4, &[(0, 1, 1.0), (2, 3, 1.0)]).unwrap(), 0.0);
    assert_eq!(lambda2(3, &[(0, 1, 1.0), (1, 2, 0.0)]).unwrap(), 0.0);
    let (n, mut edges) = grid(20);
    edges.retain(|&(u, v, _)| !(u % 20 == 9 && v == u + 1));
    assert_eq!(lambda2(n, &edges).unwrap(), 0.0);
}

#[test]
fn small_graphs_have_known_values() {
    assert_eq!(lambda2(1, &[]).unwrap(), 0.0);
    assert!((lambda2(2, &[(0, 1, 1.5)]).unwrap() - 3.0).abs() < 1e-12);
    // K_n with unit weights: λ₂ = n.
    let k5: Vec<_> = (0..5u32)
        .flat_map(|u| (u + 1..5).map(move |v| (u, v, 1.0)))
        .collect();
    assert!((lambda2(5, &k5).unwrap() - 5.0).abs() < 1e-12);
}

#[test]
fn grid_uses_shift_invert_and_matches_the_closed_form() {
    // λ₂ of the s×s grid is 2 − 2cos(π/s).
    let (n, edges) = grid(30);
    let expected = 2.0 - 2.0 * (std::f64::consts::PI / 30.0).cos();
    assert!(relative_error(lambda2(n, &edges).unwrap(), expected) < 1e-9);
    assert!(GroundedFactor::new(&Laplacian::new(n, &edges)).is_some());
}

#[test]
fn random_graphs_use_plain_lanczos_and_match_dense() {
    let mut seed = 11u64;
    let n = 1500;
    let mut edges: Vec<(u32, u32, f64)> = (1..n as u32).map(|v| (v - 1, v, 1.0)).collect();
    for _ in 0..5 * n {
        let u = (lcg(&mut seed) * n as f64) as u32;
        let v = (lcg(&mut seed) * n as f64) as u32;
        edges.push((u, v, 0.5 + lcg(&mut seed)));
    }
    let laplacian = Laplacian::new(
        n,
        &edges
            .iter()
            .copied()
            .filter(|e| e.0 != e.1)
            .collect::<Vec<_>>(),
    );
    assert!(
        GroundedFactor::new(&laplacian).is_none(),
        "a random graph's factor fills in"
    );
    let dense = dense_lambda2(n, &edges);
    assert!(relative_error(lambda2(n, &edges).unwrap(), dense) < 1e-8);
}

/// Graphs of 2–60 vertices against the dense eigensolver, including through the
/// iterative paths (forced here by calling them directly).
fn graphs() -> impl Strategy<Value = (usize, Vec<(u32, u32, f64)>)> {
    (2usize..=60).prop_flat_map(|n| {
        let weight = prop_oneof![Just(1.0), 0.01..10.0];
        let spanning = prop::collection::vec(weight.clone(), n - 1);
        let extra = prop::collection::vec((0..n as u32, 0..n as u32, weight), 0..(3 * n));
        (Just(n), spanning, extra).prop_map(|(n, spanning, mut extra)| {
            extra.extend(
                spanning
                    .into_iter()
                    .enumerate()
                    .map(|(i, w)| (i as u32, i as u32 + 1, w)),
            );
            (n, extra)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_solver_matches_the_dense_eigensolver((n, edges) in graphs()) {
        let expected = dense_lambda2(n, &edges);
        prop_assert!(relative_error(lambda2(n, &edges).unwrap(), expected) < 1e-9);
        if n >= 3 {
            let positive: Vec<_> = edges.iter().copied().filter(|e| e.0 != e.1).collect();
            let laplacian = Laplacian::new(n, &positive);
            let start = start_vector(&laplacian.degree);
            let plain = lanczos(&start, Extreme::Smallest, None, |x, y| laplacian.apply(x, y)).unwrap().unwrap();
            prop_assert!(relative_error(plain, expected) < 1e-8, "plain {plain} vs {expected}");
            let factor = GroundedFactor::new(&laplacian).expect("small graphs factor");
            let inverted = 1.0 / lanczos(&start, Extreme::Largest, None, |x, y| factor.pseudo_inverse(x, y)).unwrap().unwrap();
            prop_assert!(relative_error(inverted, expected) < 1e-8, "shift-invert {inverted} vs {expected}");
        }
    }

    /// λ₂ ≤ n/(n−1) · min weighted degree, a bound that ties λ₂ to the min cut.
    #[test]
    fn lambda2_is_bounded_by_the_lightest_vertex((n, edges) in graphs()) {
        let mut degree = vec![0.0; n];
        for &(u, v, w) in &edges {
            if u != v {
                degree[u as usize] += w;
                degree[v as usize] += w;
            }
        }
        let lightest = degree.iter().copied().fold(f64::INFINITY, f64::min);
        prop_assert!(lambda2(n, &edges).unwrap() <= n as f64 / (n as f64 - 1.0) * lightest * (1.0 + 1e-9));
    }
}

#[test]
fn invalid_weights_are_rejected() {
    assert!(lambda2(2, &[(0, 1, f64::NAN)]).is_err());
    assert!(lambda2(2, &[(0, 1, -2.0)]).is_err());
}
