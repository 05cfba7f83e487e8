//! Exact global minimum cut of an undirected graph with non-negative weights.
//!
//! This module owns the solver and nothing else: it knows vertices `0..n` and
//! weighted edges, not what they mean (that is [`crate::graph`]).
//!
//! # Algorithm
//!
//! 1. Vertices joined only by zero-weight edges are apart: if the positive edges
//!    leave the graph disconnected, λ = 0 and one component is the cut.
//! 2. Otherwise the graph is contracted in rounds, keeping the lightest cut
//!    seen, λ̂. Every vertex of every round is a cut (its weighted degree), and
//!    so is every prefix of a maximum-adjacency scan. A round contracts each pair
//!    that no cut lighter than λ̂ can separate, ties included: if λ is below λ̂
//!    such a pair is in no minimum cut, and if λ = λ̂ the cut is already kept.
//!    - Padberg-Rinaldi: `w(u,v) ≥ λ̂`, or `2·w(u,v) > min(deg u, deg v)` (this
//!      one strict: see [`sparse`]);
//!    - Nagamochi-Ono-Ibaraki (CAPFOREST): in a maximum-adjacency scan, an edge
//!      `(x,y)` whose scan lifts `r(y)` to `≥ λ̂` has `λ(x,y) ≥ r(y) ≥ λ̂`;
//!    - and, if nothing else applies, the last two vertices of the scan
//!      (Stoer-Wagner's phase contraction), so every round makes progress.
//!
//!    Large sparse rounds run on compressed rows with a binary heap ([`sparse`]);
//!    once the contracted graph is small or dense they run to the end on an
//!    adjacency matrix with merges done in place ([`dense`]).
//! 3. When a sparse round on exact capacities contracts fewer than 1/8 of the
//!    vertices (graphs whose edges all tie: cycles, tori, hypercubes, regular
//!    graphs), the rest
//!    is solved by the flow sweep ([`sweep`]): one maximum-adjacency order in
//!    which every vertex joins only after an augmenting-path flow proves that no
//!    cut lighter than λ̂ separates it from those before it, the flow carried
//!    over from vertex to vertex.
//!
//! # Exactness
//!
//! Capacities are converted to exact integers where ties can occur: every
//! weight is a whole number of one unit (`odd · 2^e`, see [`weight`]), summed in
//! `u64` (unit, equal and integral capacities totalling below 2⁶²) or `u128`
//! (a few distinct decimal values). Then every sum, comparison and flow is
//! exact, ties included, and λ is the exact minimum rounded once to `f64`.
//! Random capacities (many distinct values: ties are measure-zero) and ranges
//! too wide for 125 bits run on `f64` with every contraction test cleared by a
//! margin proven from the number of terms in its sums, so no lighter cut is
//! ever contracted away; the chosen cut is then within a relative `3·m·2⁻⁵³` of
//! the minimum, its weight is still summed exactly when the units fit 128
//! bits, and since these inputs skip the flow sweep (which needs exact flows),
//! heavily tied ones among them could take quadratic time.
//!
//! # Limits
//!
//! Inputs beyond [`Limits`](crate::control::Limits) are refused before anything
//! is allocated, capacities must be finite, ≥ 0 and sum to at most
//! [`MAX_TOTAL_CAPACITY`], and every long loop calls the caller's interrupt hook
//! every few thousand steps ([`Control`]). Memory is `O(n + m)`.

mod dense;
mod sparse;
mod sweep;
mod weight;

use crate::control::Control;
use crate::union_find::UnionFind;
use crate::Error;
use weight::{Capacities, Margin, Weight};

/// Input edges are filtered and joined in chunks of this many between two
/// calls of the interrupt hook.
const CHUNK: usize = 4096;

/// Capacities must add up to at most this. It leaves eight orders of magnitude
/// below `f64::MAX`, so no sum the solvers form (a degree, a cut, twice a cut,
/// a Laplacian's largest eigenvalue, at most twice the total) can overflow.
pub const MAX_TOTAL_CAPACITY: f64 = 1e300;

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

/// Checks that every endpoint is below `n`, every weight is finite and ≥ 0,
/// and the weights sum to at most [`MAX_TOTAL_CAPACITY`]. Errors name the edge
/// (its index in `edges`) and the offending value.
pub fn validate_edges(n: usize, edges: &[(u32, u32, f64)]) -> Result<(), Error> {
    let mut total = 0.0;
    for (i, &(u, v, w)) in edges.iter().enumerate() {
        for endpoint in [u, v] {
            if endpoint as usize >= n {
                return Err(Error::EdgeOutOfRange {
                    edge: i,
                    endpoint: endpoint as usize,
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
        total += w;
        if total > MAX_TOTAL_CAPACITY {
            return Err(Error::CapacityOverflow {
                edge: i,
                capacity: w,
                limit: MAX_TOTAL_CAPACITY,
            });
        }
    }
    Ok(())
}

/// The total weight of the edges with exactly one endpoint on `side` (never -0.0).
pub fn cut_weight(edges: &[(u32, u32, f64)], side: &[bool]) -> f64 {
    edges
        .iter()
        .filter(|&&(u, v, _)| side[u as usize] != side[v as usize])
        .fold(0.0, |sum, &(_, _, w)| sum + w)
}

/// The exact global minimum cut of the graph on vertices `0..n`. Parallel edges
/// add up, self-loops are ignored. Returns `None` when `n < 2`: such a graph has
/// no cut. Runs with the default [`Limits`](crate::control::Limits) and no
/// interrupt hook; see [`min_cut_with`].
pub fn min_cut(n: usize, edges: &[(u32, u32, f64)]) -> Result<Option<Cut>, Error> {
    min_cut_with(n, edges, &mut Control::default())
}

/// [`min_cut`] under `control`: refuses inputs beyond its limits before
/// allocating, and calls its interrupt hook every few thousand steps, returning
/// the hook's error if it fails.
pub fn min_cut_with(
    n: usize,
    edges: &[(u32, u32, f64)],
    control: &mut Control,
) -> Result<Option<Cut>, Error> {
    min_cut_by(n, edges, Rounds::Auto, control)
}

/// Which round implementation runs; tests force each one.
#[derive(Clone, Copy, PartialEq)]
enum Rounds {
    /// Sparse rounds until the contracted graph is small or dense, then matrix
    /// rounds, and the sweep once rounds stall.
    Auto,
    /// Sparse rounds only.
    #[cfg(test)]
    Sparse,
    /// The sweep from the start.
    #[cfg(test)]
    Sweep,
}

impl Rounds {
    fn matrix(self) -> bool {
        self == Rounds::Auto
    }

    fn sweep_once_stalled(self) -> bool {
        match self {
            Rounds::Auto => true,
            #[cfg(test)]
            Rounds::Sparse => false,
            #[cfg(test)]
            Rounds::Sweep => true,
        }
    }

    fn sweep_at_once(self) -> bool {
        #[cfg(test)]
        if self == Rounds::Sweep {
            return true;
        }
        false
    }
}

fn min_cut_by(
    n: usize,
    edges: &[(u32, u32, f64)],
    rounds: Rounds,
    control: &mut Control,
) -> Result<Option<Cut>, Error> {
    control.limits().check(n, edges.len())?;
    validate_edges(n, edges)?;
    control.check()?;
    if n < 2 {
        return Ok(None);
    }
    let mut positive = Vec::with_capacity(edges.len());
    let mut components = UnionFind::new(n);
    for chunk in edges.chunks(CHUNK) {
        for &(u, v, w) in chunk {
            if w > 0.0 && u != v {
                positive.push((u, v, w));
                components.union(u, v);
            }
        }
        control.work(chunk.len())?;
    }
    if components.sets() > 1 {
        let labels = components.labels();
        let side = labels.iter().map(|&l| l == 0).collect();
        return Ok(Some(normalized(side, 0.0)));
    }
    drop(components);
    let margin = Margin::for_terms(positive.len());
    let capacities = Capacities::of(&positive, control)?;
    drop(positive);
    let cut = match capacities {
        Capacities::Small(edges, unit) => {
            let side = solve_connected(n, &edges, margin, rounds, control)?;
            let value = exact_cut(&edges, &side);
            normalized(side, unit.to_f64(value as u128))
        }
        Capacities::Wide(edges, unit) => {
            let side = solve_connected(n, &edges, margin, rounds, control)?;
            let value = exact_cut(&edges, &side);
            normalized(side, unit.to_f64(value))
        }
        Capacities::Float(edges, unit) => {
            let side = solve_connected(n, &edges, margin, rounds, control)?;
            let value = Capacities::float_cut(&edges, unit, &side);
            normalized(side, value)
        }
    };
    Ok(Some(cut))
}

/// The weight of the edges across `side`, summed exactly.
fn exact_cut<W: Weight>(edges: &[(u32, u32, W)], side: &[bool]) -> W {
    edges
        .iter()
        .filter(|&&(u, v, _)| side[u as usize] != side[v as usize])
        .fold(W::ZERO, |sum, &(_, _, w)| sum.plus(w))
}

/// Reports the smaller side (the side without vertex 0 on a tie).
fn normalized(mut side: Vec<bool>, value: f64) -> Cut {
    let on_side = side.iter().filter(|&&s| s).count();
    let off_side = side.len() - on_side;
    if on_side > off_side || (on_side == off_side && side[0]) {
        side.iter_mut().for_each(|s| *s = !*s);
    }
    // + 0.0 turns a -0.0 into 0.0.
    Cut {
        value: value + 0.0,
        side,
    }
}

/// The lightest cut found so far, as a side over the vertices `owner` maps from.
struct Best<W> {
    value: W,
    side: Vec<bool>,
}

impl<W: Weight> Best<W> {
    /// Takes `value` if it is lighter, with the side given over current vertices.
    fn offer(&mut self, value: W, owner: &[u32], in_side: impl Fn(u32) -> bool) {
        if value < self.value || self.side.is_empty() {
            self.value = value;
            self.side = owner.iter().map(|&o| in_side(o)).collect();
        }
    }
}

/// Min cut of a connected graph with positive weights; returns one side.
fn solve_connected<W: Weight>(
    n: usize,
    edges: &[(u32, u32, W)],
    margin: Margin,
    rounds: Rounds,
    control: &mut Control,
) -> Result<Vec<bool>, Error> {
    let mut graph = sparse::Csr::from_edges(n, edges, control)?;
    // owner[v] = the current (contracted) vertex that original vertex v is in.
    let mut owner: Vec<u32> = (0..n as u32).collect();
    let mut best = Best {
        value: W::ZERO,
        side: Vec::new(),
    };
    let mut round = 0usize;
    let mut stalled = rounds.sweep_at_once();
    // A round may contract everything; a single vertex is not a cut.
    while graph.len() >= 2 {
        let k = graph.len();
        let (lightest, degree) = graph.min_degree();
        best.offer(degree, &owner, |o| o == lightest);
        if k <= 2 {
            break;
        }
        if stalled && W::EXACT && rounds.sweep_once_stalled() {
            if let Some((value, side)) = sweep::solve(graph, best.value, control)? {
                best.offer(value, &owner, |o| side[o as usize]);
            }
            break;
        }
        if rounds.matrix() && dense::preferred::<W>(k, graph.entries()) {
            let lighter = dense::Dense::from_csr(&graph).solve(best.value, margin, control)?;
            if let Some((value, side)) = lighter {
                best.offer(value, &owner, |o| side[o as usize]);
            }
            break;
        }
        let bar = weight::Bar {
            lambda_hat: best.value,
            margin,
        };
        let outcome = graph.round(bar, round, control)?;
        if let Some((value, side)) = outcome.lighter_cut {
            best.offer(value, &owner, |o| side[o as usize]);
        }
        let labels = outcome.labels;
        graph = graph.contract(&labels, control)?;
        owner.iter_mut().for_each(|o| *o = labels[*o as usize]);
        stalled = 8 * (k - graph.len()) < k;
        round += 1;
    }
    Ok(best.side)
}

#[cfg(test)]
mod tests;
