//! Exact global minimum cut of an undirected graph with non-negative weights.
//!
//! This module owns the solver and nothing else: it knows vertices `0..n` and
//! weighted edges, not what they mean (that is [`crate::graph`]).
//!
//! # Algorithm
//!
//! 1. Vertices joined only by zero-weight edges are apart: if the positive edges
//!    leave the graph disconnected, λ = 0 and one component is the cut.
//! 2. Otherwise the graph is contracted in rounds until one vertex is left, keeping
//!    the lightest cut seen, λ̂. Every vertex of every round is a cut (its weighted
//!    degree), and so is every prefix of a maximum-adjacency scan. A round contracts
//!    each pair that no cut lighter than λ̂ can separate:
//!    - Padberg-Rinaldi: `w(u,v) ≥ λ̂`, or `2·w(u,v) > min(deg u, deg v)`;
//!    - Nagamochi-Ono-Ibaraki (CAPFOREST): in a maximum-adjacency scan, an edge
//!      `(x,y)` whose scan lifts `r(y)` to `≥ λ̂` has `λ(x,y) ≥ r(y) ≥ λ̂`;
//!    - and, if nothing else applies, the last two vertices of the scan
//!      (Stoer-Wagner's phase contraction), so every round makes progress.
//!
//!    Large sparse rounds run on compressed rows with a binary heap ([`sparse`]);
//!    once the contracted graph is small or dense they run on an adjacency matrix
//!    with merges done in place ([`dense`]).
//!
//! # Exactness
//!
//! Weights are `f64`. Contraction tests carry a relative margin of 1e-12, and a
//! candidate prefix cut is re-summed from its crossing edges before it is trusted,
//! so λ is exact up to the rounding of summing at most `n` weights. The reported
//! value is the sum of the weights that cross the reported side.

mod dense;
mod sparse;

use crate::union_find::UnionFind;
use crate::Error;

/// Relative margin on every contraction test, so that rounding in a float sum can
/// never contract an edge of a cut that is lighter than λ̂ by more than 1e-12.
const CONTRACTION_MARGIN: f64 = 1.0 + 1e-12;

/// A minimum cut: its weight and one side of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    /// λ, the total weight of the edges that cross the cut.
    pub value: f64,
    /// `side[v]` is true for the vertices on the reported side: the smaller side,
    /// or on a tie the side without vertex 0.
    pub side: Vec<bool>,
}

impl Cut {
    /// Indices of the vertices on the reported side.
    pub fn side_vertices(&self) -> Vec<usize> {
        (0..self.side.len()).filter(|&v| self.side[v]).collect()
    }
}

/// Checks that every endpoint is below `n` and every weight is finite and ≥ 0.
pub fn validate_edges(n: usize, edges: &[(u32, u32, f64)]) -> Result<(), Error> {
    for (i, &(u, v, w)) in edges.iter().enumerate() {
        for endpoint in [u, v] {
            if endpoint as usize >= n {
                return Err(Error::NodeOutOfRange {
                    index: endpoint as usize,
                    nodes: n,
                });
            }
        }
        if !w.is_finite() || w < 0.0 {
            return Err(Error::InvalidNumber {
                what: format!("the weight of edge {i}"),
                expected: "a finite number ≥ 0",
                value: w,
            });
        }
    }
    Ok(())
}

/// The total weight of the edges with exactly one endpoint on `side`.
pub fn cut_weight(edges: &[(u32, u32, f64)], side: &[bool]) -> f64 {
    edges
        .iter()
        .filter(|&&(u, v, _)| side[u as usize] != side[v as usize])
        .map(|&(_, _, w)| w)
        .sum()
}

/// The exact global minimum cut of the graph on vertices `0..n`. Parallel edges
/// add up, self-loops are ignored. Returns `None` when `n < 2`: such a graph has
/// no cut.
pub fn min_cut(n: usize, edges: &[(u32, u32, f64)]) -> Result<Option<Cut>, Error> {
    min_cut_by(n, edges, Rounds::Auto)
}

/// Which round implementation runs; tests force each one.
#[derive(Clone, Copy, PartialEq)]
enum Rounds {
    /// Sparse rounds until the contracted graph is small or dense, then matrix rounds.
    Auto,
    /// Sparse rounds only.
    #[cfg(test)]
    Sparse,
}

fn min_cut_by(n: usize, edges: &[(u32, u32, f64)], rounds: Rounds) -> Result<Option<Cut>, Error> {
    validate_edges(n, edges)?;
    if n < 2 {
        return Ok(None);
    }
    let positive = || edges.iter().copied().filter(|&(u, v, w)| w > 0.0 && u != v);
    let mut components = UnionFind::new(n);
    for (u, v, _) in positive() {
        components.union(u, v);
    }
    let side: Vec<bool> = if components.sets() > 1 {
        let labels = components.labels();
        labels.iter().map(|&l| l == 0).collect()
    } else {
        solve_connected(n, positive(), rounds)
    };
    Ok(Some(normalized(edges, side)))
}

/// Reports the smaller side (the side without vertex 0 on a tie), with the value
/// summed from the original edges.
fn normalized(edges: &[(u32, u32, f64)], mut side: Vec<bool>) -> Cut {
    let on_side = side.iter().filter(|&&s| s).count();
    let off_side = side.len() - on_side;
    if on_side > off_side || (on_side == off_side && side[0]) {
        side.iter_mut().for_each(|s| *s = !*s);
    }
    Cut {
        value: cut_weight(edges, &side),
        side,
    }
}

/// The lightest cut found so far, as a side over the vertices `owner` maps from.
struct Best {
    value: f64,
    side: Vec<bool>,
}

impl Best {
    /// Takes `value` if it is lighter, with the side given over current vertices.
    fn offer(&mut self, value: f64, owner: &[u32], in_side: impl Fn(u32) -> bool) {
        if value < self.value {
            self.value = value;
            self.side = owner.iter().map(|&o| in_side(o)).collect();
        }
    }
}

/// Min cut of a connected graph with positive weights; returns one side.
fn solve_connected(
    n: usize,
    edges: impl Iterator<Item = (u32, u32, f64)>,
    rounds: Rounds,
) -> Vec<bool> {
    let mut graph = sparse::Csr::from_edges(n, edges);
    // owner[v] = the current (contracted) vertex that original vertex v is in.
    let mut owner: Vec<u32> = (0..n as u32).collect();
    let mut best = Best {
        value: f64::INFINITY,
        side: Vec::new(),
    };
    let mut round = 0usize;
    // A round may contract everything; a single vertex is not a cut.
    while graph.len() >= 2 {
        let k = graph.len();
        let (lightest, degree) = graph.min_degree();
        best.offer(degree, &owner, |o| o == lightest);
        if k <= 2 {
            break;
        }
        if rounds == Rounds::Auto && dense::preferred(k, graph.entries()) {
            let matrix = dense::Dense::from_csr(&graph);
            if let Some((value, side)) = matrix.solve(best.value) {
                best.offer(value, &owner, |o| side[o as usize]);
            }
            break;
        }
        let outcome = graph.round(best.value, round);
        if let Some((value, side)) = outcome.lighter_cut {
            best.offer(value, &owner, |o| side[o as usize]);
        }
        let labels = outcome.labels;
        graph = graph.contract(&labels);
        owner.iter_mut().for_each(|o| *o = labels[*o as usize]);
        round += 1;
    }
    best.side
}

#[cfg(test)]
mod tests;
