//! The solvers' input paths on arbitrary numbers: every `f64` bit pattern (NaN,
//! ±∞, negative, subnormal, huge) and endpoints past the last node. Whatever
//! comes in, a solver returns an error or a finite, non-negative result (never
//! -0.0); it never panics. Runs in `cargo test` as part of the core tier.

use proptest::prelude::*;
use ruvector_integrity::graph::{ContractedGraph, EdgeKind, NodeKind};
use ruvector_integrity::{mincut, spectral};

/// Any weight: mostly ordinary ones, often the edge cases, sometimes raw bits.
fn weight() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..10.0f64,
        2 => Just(1.0),
        1 => Just(0.0),
        1 => Just(-0.0),
        1 => prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
        1 => prop_oneof![Just(1e308), Just(f64::MAX), Just(1e-310), Just(f64::MIN_POSITIVE), Just(5e-324)],
        1 => any::<u64>().prop_map(f64::from_bits),
        1 => (-300.0..300.0f64).prop_map(|e| 10f64.powf(e)),
    ]
}

/// A valid weight, often at the edges of the range (all of them together stay
/// below the total the solvers accept).
fn valid_weight() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..10.0f64,
        2 => Just(1.0),
        1 => Just(0.0),
        1 => Just(-0.0),
        1 => prop_oneof![Just(1e296), Just(1e-310), Just(f64::MIN_POSITIVE), Just(5e-324)],
        1 => (-300.0..296.0f64).prop_map(|e| 10f64.powf(e)),
    ]
}

/// A graph on up to 300 nodes: a spanning path (so that larger ones are
/// connected and reach the iterative solvers) and random edges. Half of them
/// have only valid weights and endpoints; the others anything.
fn graphs() -> impl Strategy<Value = (usize, Vec<(u32, u32, f64)>)> {
    (0usize..300, any::<bool>()).prop_flat_map(|(n, anything)| {
        let weight = if anything {
            weight().boxed()
        } else {
            valid_weight().boxed()
        };
        let spanning = prop::collection::vec(weight.clone(), n.saturating_sub(1));
        let endpoint = 0..(n as u32 + 2);
        let extra = prop::collection::vec((endpoint.clone(), endpoint, weight), 0..(2 * n + 2));
        (Just(n), spanning, extra, Just(!anything)).prop_map(|(n, spanning, extra, in_range)| {
            let mut edges: Vec<_> = spanning
                .into_iter()
                .enumerate()
                .map(|(i, w)| (i as u32, i as u32 + 1, w))
                .collect();
            edges.extend(
                extra
                    .into_iter()
                    .filter(|&(u, v, _)| !in_range || (u < n as u32 && v < n as u32)),
            );
            (n, edges)
        })
    })
}

fn sound(value: f64) -> bool {
    value.is_finite() && value >= 0.0 && value.to_bits() != (-0.0f64).to_bits()
}

fn valid(n: usize, edges: &[(u32, u32, f64)]) -> bool {
    mincut::validate_edges(n, edges).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_min_cut_answers_soundly_or_refuses((n, edges) in graphs()) {
        match mincut::min_cut(n, &edges) {
            Ok(Some(cut)) => {
                prop_assert!(sound(cut.value), "λ = {}", cut.value);
                prop_assert_eq!(cut.side.len(), n);
                let crossing = mincut::cut_weight(&edges, &cut.side);
                prop_assert!((crossing - cut.value).abs() <= 1e-9 * cut.value.max(f64::MIN_POSITIVE));
            }
            Ok(None) => prop_assert!(n < 2),
            Err(e) => prop_assert!(!valid(n, &edges), "refused a valid input: {e}"),
        }
    }

    #[test]
    fn lambda2_answers_soundly_or_refuses((n, edges) in graphs()) {
        match spectral::lambda2(n, &edges) {
            Ok(value) => {
                prop_assert!(sound(value), "λ₂ = {value}");
                // λ₂ ≤ n/(n−1) · the least weighted degree.
                if n >= 2 {
                    let mut degree = vec![0.0; n];
                    for &(u, v, w) in &edges {
                        if u != v {
                            degree[u as usize] += w;
                            degree[v as usize] += w;
                        }
                    }
                    let lightest = degree.iter().copied().fold(f64::INFINITY, f64::min);
                    prop_assert!(value <= n as f64 / (n as f64 - 1.0) * lightest * (1.0 + 1e-9));
                }
            }
            Err(e) => prop_assert!(
                !valid(n, &edges) || matches!(e, ruvector_integrity::Error::Spectral(_)),
                "refused a valid input: {e}"
            ),
        }
    }

    /// The contracted graph refuses bad numbers when they are added, and what
    /// it accepts always has sound integrity numbers or a clear error.
    #[test]
    fn the_contracted_graph_refuses_or_answers_soundly(
        healths in prop::collection::vec(weight(), 2..40),
        edges in prop::collection::vec((0usize..45, 0usize..45, weight(), weight()), 0..80),
    ) {
        let unit = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        let mut g = ContractedGraph::new();
        for (i, &h) in healths.iter().enumerate() {
            let added = g.add_node(NodeKind::Partition, format!("p{i}"), h);
            prop_assert_eq!(added.is_ok(), unit(h), "health {}: {:?}", h, added);
        }
        let nodes = g.nodes().len();
        for &(u, v, capacity, error_rate) in &edges {
            let added = g.add_edge(u, v, EdgeKind::RoutingLink, capacity, error_rate);
            let acceptable = u < nodes && v < nodes && capacity.is_finite() && capacity >= 0.0 && unit(error_rate);
            prop_assert_eq!(added.is_ok(), acceptable, "edge {} {} {} {}: {:?}", u, v, capacity, error_rate, added);
        }
        if let Ok(integrity) = g.integrity() {
            prop_assert!(sound(integrity.lambda_cut) && sound(integrity.lambda_nominal));
            prop_assert!((0.0..=1.0).contains(&integrity.lambda_norm));
            prop_assert!(integrity.lambda_norm.is_finite());
        }
    }
}
