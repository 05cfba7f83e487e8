use super::*;
use crate::control::Limits;
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
    let control = &mut Control::default();
    let laplacian = Laplacian::new(n, &edges, control).unwrap();
    assert!(GroundedFactor::new(&laplacian, control).unwrap().is_some());
}

fn random_graph(n: usize, seed: u64) -> Vec<(u32, u32, f64)> {
    let mut seed = seed;
    let mut edges: Vec<(u32, u32, f64)> = (1..n as u32).map(|v| (v - 1, v, 1.0)).collect();
    for _ in 0..5 * n {
        let u = (lcg(&mut seed) * n as f64) as u32;
        let v = (lcg(&mut seed) * n as f64) as u32;
        if u != v {
            edges.push((u, v, 0.5 + lcg(&mut seed)));
        }
    }
    edges
}

#[test]
fn random_graphs_match_dense() {
    let n = 1500;
    let edges = random_graph(n, 11);
    let dense = dense_lambda2(n, &edges).unwrap();
    assert!(relative_error(lambda2(n, &edges).unwrap(), dense) < 1e-8);
}

#[test]
fn a_factor_that_would_fill_in_is_not_made() {
    let n = 6000;
    let control = &mut Control::default();
    let laplacian = Laplacian::new(n, &random_graph(n, 12), control).unwrap();
    assert!(
        GroundedFactor::new(&laplacian, control).unwrap().is_none(),
        "a random graph's factor fills in"
    );
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
        let expected = dense_lambda2(n, &edges).unwrap();
        prop_assert!(relative_error(lambda2(n, &edges).unwrap(), expected) < 1e-9);
        if n >= 3 {
            let positive: Vec<_> = edges.iter().copied().filter(|e| e.0 != e.1).collect();
            let (plain, inverted) = both_operators(n, &positive);
            prop_assert!(relative_error(plain, expected) < 1e-8, "plain {plain} vs {expected}");
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

/// λ₂ by plain thick-restart Lanczos on L and by shift-invert, each run to
/// convergence without patience.
fn both_operators(n: usize, edges: &[(u32, u32, f64)]) -> (f64, f64) {
    let control = &mut Control::default();
    let laplacian = Laplacian::new(n, edges, control).unwrap();
    let start = start_vector(&laplacian.degree);
    let plain = Lanczos::new(&start, Extreme::Smallest)
        .run(None, 20_000, |x, y, c| laplacian.apply(x, y, c), control)
        .unwrap()
        .expect("plain Lanczos converges");
    let factor = GroundedFactor::new(&laplacian, control)
        .unwrap()
        .expect("these graphs factor");
    let inverted = 1.0
        / Lanczos::new(&start, Extreme::Largest)
            .run(
                None,
                2_000,
                |x, y, c| factor.pseudo_inverse(x, y, c),
                control,
            )
            .unwrap()
            .expect("shift-invert converges");
    (plain, inverted)
}

fn cycle(n: u32, w: f64) -> Vec<(u32, u32, f64)> {
    (0..n).map(|v| (v, (v + 1) % n, w)).collect()
}

fn path(n: u32) -> Vec<(u32, u32, f64)> {
    (1..n).map(|v| (v - 1, v, 1.0)).collect()
}

fn rectangle(rows: u32, cols: u32) -> Vec<(u32, u32, f64)> {
    let mut edges = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            let v = r * cols + c;
            if c + 1 < cols {
                edges.push((v, v + 1, 1.0));
            }
            if r + 1 < rows {
                edges.push((v, v + cols, 1.0));
            }
        }
    }
    edges
}

/// `2 − 2cos(π/s)`, computed as `4 sin²(π/2s)` (the cosine form cancels to a
/// few digits for large s): λ₂ of a path of s vertices, of grids of side s, and
/// of a cycle of 2s vertices.
fn closed_form(s: f64) -> f64 {
    (2.0 * (std::f64::consts::PI / (2.0 * s)).sin()).powi(2)
}

/// Cycles (λ₂ double), paths and grids (square ones double), where λ₂ is tiny
/// next to λ_max: within 1e-8 of the closed form, through `lambda2` and
/// through each operator alone.
#[test]
fn clustered_and_double_eigenvalues_match_their_closed_form() {
    let cases = [
        ("cycle 3000", 3000, cycle(3000, 1.0), closed_form(1500.0)),
        ("path 2500", 2500, path(2500), closed_form(2500.0)),
        ("grid 45×45", 45 * 45, rectangle(45, 45), closed_form(45.0)),
        ("grid 20×70", 20 * 70, rectangle(20, 70), closed_form(70.0)),
    ];
    for (name, n, edges, expected) in &cases {
        let value = lambda2(*n, edges).unwrap();
        assert!(
            relative_error(value, *expected) < 1e-8,
            "{name}: {value} vs {expected}"
        );
    }
    // Each operator alone, on sizes plain Lanczos reaches in a few thousand products.
    let small = [
        ("cycle 400", 400, cycle(400, 1.0), closed_form(200.0)),
        ("path 300", 300, path(300), closed_form(300.0)),
        ("grid 18×18", 18 * 18, rectangle(18, 18), closed_form(18.0)),
    ];
    for (name, n, edges, expected) in &small {
        let (plain, inverted) = both_operators(*n, edges);
        assert!(
            relative_error(plain, *expected) < 1e-8,
            "{name} plain: {plain}"
        );
        assert!(
            relative_error(inverted, *expected) < 1e-8,
            "{name} shift-invert: {inverted}"
        );
    }
}

/// Weights scale λ₂ exactly, at both ends of the range.
#[test]
fn huge_and_tiny_weights_scale_lambda2() {
    let expected = closed_form(500.0);
    for w in [1e290, 1e-300, 3.0] {
        let value = lambda2(1000, &cycle(1000, w)).unwrap();
        assert!(
            relative_error(value, w * expected) < 1e-8,
            "{w}: {value} vs {}",
            w * expected
        );
        assert!(value.is_finite());
    }
    let k4: Vec<_> = (0..4u32)
        .flat_map(|u| (u + 1..4).map(move |v| (u, v, 1e-310)))
        .collect();
    assert!(relative_error(lambda2(4, &k4).unwrap(), 4e-310) < 1e-8);
}

#[test]
fn lambda2_is_never_negative_zero() {
    for (n, edges) in [
        (0usize, vec![]),
        (3, vec![(0, 1, 1.0)]),
        (2, vec![(0, 1, -0.0)]),
    ] {
        assert_eq!(lambda2(n, &edges).unwrap().to_bits(), 0f64.to_bits());
    }
}

#[test]
fn invalid_weights_are_rejected() {
    assert!(lambda2(2, &[(0, 1, f64::NAN)]).is_err());
    assert!(lambda2(2, &[(0, 1, -2.0)]).is_err());
    assert!(matches!(
        lambda2(3, &[(0, 1, 1e308), (1, 2, 1e308)]),
        Err(Error::CapacityOverflow { edge: 0, .. })
    ));
    assert!(matches!(
        lambda2_with(
            3,
            &[(0, 1, 1.0); 5],
            &mut Control::new(Limits { max_edges: 4 })
        ),
        Err(Error::TooLarge { what: "edges", .. })
    ));
}

#[test]
fn the_basis_never_exceeds_its_bound() {
    let edges = cycle(5000, 1.0);
    let control = &mut Control::default();
    let laplacian = Laplacian::new(5000, &edges, control).unwrap();
    let mut lanczos = Lanczos::new(&start_vector(&laplacian.degree), Extreme::Smallest);
    let bound = (MAX_BASIS + 1) * 5000;
    assert_eq!(lanczos.basis.len(), bound);
    // Hundreds of products: many restarts, the same memory.
    let _ = lanczos.run(None, 400, |x, y, c| laplacian.apply(x, y, c), control);
    assert_eq!(lanczos.basis.len(), bound);
    assert!(lanczos.basis.capacity() <= bound);
}

#[test]
fn a_failing_hook_stops_lambda2_at_once() {
    let edges = cycle(20_000, 1.0);
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
        lambda2_with(
            20_000,
            &edges,
            &mut Control::default().with_interrupt(&mut hook)
        ),
        Err(Error::Cancelled("statement timeout".into()))
    );
    assert_eq!(calls, 3);
}

#[test]
fn the_hook_is_called_throughout_lambda2() {
    let mut seed = 17u64;
    let n = 5000u32;
    let mut edges: Vec<(u32, u32, f64)> = (1..n).map(|v| (v - 1, v, 1.0)).collect();
    for _ in 0..4 * n {
        let u = (lcg(&mut seed) * n as f64) as u32;
        let v = (lcg(&mut seed) * n as f64) as u32;
        edges.push((u, v, 0.5 + lcg(&mut seed)));
    }
    let mut calls = 0usize;
    let mut hook = || {
        calls += 1;
        Ok(())
    };
    let value = lambda2_with(
        n as usize,
        &edges,
        &mut Control::default().with_interrupt(&mut hook),
    );
    assert!(value.unwrap() > 0.0);
    assert!(calls >= 10, "{calls} calls");
}

/// Two K_k joined by one edge of weight ε. By symmetry the Fiedler vector is
/// `a` on the bridge's ends, `b` on the rest of each clique (signs opposite),
/// which gives `λ² − (k + 2ε)λ + 2ε = 0`: λ₂ = 4ε / (k + 2ε + √((k + 2ε)² − 8ε)).
fn bridged_cliques(k: u32, epsilon: f64) -> (usize, Vec<(u32, u32, f64)>, f64) {
    let mut edges = Vec::new();
    for base in [0, k] {
        for u in 0..k {
            for v in u + 1..k {
                edges.push((base + u, base + v, 1.0));
            }
        }
    }
    edges.push((0, k, epsilon));
    let s = k as f64 + 2.0 * epsilon;
    let expected = 4.0 * epsilon / (s + (s * s - 8.0 * epsilon).sqrt());
    (2 * k as usize, edges, expected)
}

/// A light bridge: to 1e-8 relative while λ₂ is above about 1e-7·λ_max, on
/// the dense path and the iterative one. Below that, a Laplacian's diagonal
/// (k + ε) holds ε only to about 1e-16·k, so λ₂ is known to that absolute
/// accuracy: tiny, never negative, never above its bound.
#[test]
fn a_light_bridge_gives_lambda2_to_its_accuracy() {
    for (k, epsilon) in [(8u32, 1e-2), (8, 1e-5), (200, 1e-1), (200, 1e-2)] {
        let (n, edges, expected) = bridged_cliques(k, epsilon);
        let value = lambda2(n, &edges).unwrap();
        assert!(
            relative_error(value, expected) < 1e-8,
            "K_{k} pair at ε = {epsilon}: {value} vs {expected}"
        );
    }
    for (k, epsilon) in [(8u32, 1e-9), (200, 1e-9), (8, 1e-200)] {
        let (n, edges, expected) = bridged_cliques(k, epsilon);
        let value = lambda2(n, &edges).unwrap();
        assert!(
            (value - expected).abs() <= 1e-13 * k as f64,
            "K_{k} pair at ε = {epsilon}: {value} vs {expected}"
        );
    }
}
