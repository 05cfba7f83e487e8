//! Min-cut rounds on a sparse contracted graph in compressed-row form: the
//! Padberg-Rinaldi tests and one CAPFOREST scan per round, then a contraction
//! that rebuilds the rows with parallel edges merged.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::weight::{Bar, Weight};
use crate::control::Control;
use crate::union_find::UnionFind;
use crate::Error;

/// Edges are counted and placed in chunks of this many between two calls of
/// the interrupt hook.
const CHUNK: usize = 4096;

/// An undirected multigraph with parallel edges merged: the neighbours of `v` are
/// `targets[offsets[v]..offsets[v + 1]]`, each edge stored once per direction.
pub(super) struct Csr<W> {
    offsets: Vec<usize>,
    targets: Vec<u32>,
    weights: Vec<W>,
    degree: Vec<W>,
}

/// What one round found: the contraction labels, and a cut lighter than the bound
/// it started from (as a side over this round's vertices), if it found one.
pub(super) struct Round<W> {
    pub(super) labels: Vec<u32>,
    pub(super) lighter_cut: Option<(W, Vec<bool>)>,
}

impl<W: Weight> Csr<W> {
    /// Builds the graph from edges with positive weights and distinct endpoints.
    pub(super) fn from_edges(
        n: usize,
        edges: &[(u32, u32, W)],
        control: &mut Control,
    ) -> Result<Csr<W>, Error> {
        let mut counts = vec![0usize; n + 1];
        for chunk in edges.chunks(CHUNK) {
            for &(u, v, _) in chunk {
                counts[u as usize + 1] += 1;
                counts[v as usize + 1] += 1;
            }
            control.work(chunk.len())?;
        }
        Csr::assemble(n, counts, control, |emit, control| {
            for chunk in edges.chunks(CHUNK) {
                for &(u, v, w) in chunk {
                    emit(u, v, w);
                    emit(v, u, w);
                }
                control.work(2 * chunk.len())?;
            }
            Ok(())
        })
    }

    /// Builds rows from per-source `counts` (shifted by one) and a generator that
    /// emits every directed entry; merges parallel entries.
    fn assemble(
        n: usize,
        mut counts: Vec<usize>,
        control: &mut Control,
        fill: impl FnOnce(&mut dyn FnMut(u32, u32, W), &mut Control) -> Result<(), Error>,
    ) -> Result<Csr<W>, Error> {
        for v in 0..n {
            counts[v + 1] += counts[v];
        }
        let total = counts[n];
        let mut cursor = counts.clone();
        let mut targets = vec![0u32; total];
        let mut weights = vec![W::ZERO; total];
        fill(
            &mut |u, v, w| {
                let at = cursor[u as usize];
                targets[at] = v;
                weights[at] = w;
                cursor[u as usize] += 1;
            },
            control,
        )?;
        // Merge parallel entries row by row; `slot[t]` is where t last went.
        let mut slot = vec![usize::MAX; n];
        let mut offsets = Vec::with_capacity(n + 1);
        let mut degree = Vec::with_capacity(n);
        let mut out = 0usize;
        offsets.push(0);
        for v in 0..n {
            let row_start = out;
            for at in counts[v]..counts[v + 1] {
                let (t, w) = (targets[at], weights[at]);
                let s = slot[t as usize];
                if s != usize::MAX && s >= row_start {
                    weights[s] = weights[s].plus(w);
                } else {
                    slot[t as usize] = out;
                    targets[out] = t;
                    weights[out] = w;
                    out += 1;
                }
            }
            degree.push(
                weights[row_start..out]
                    .iter()
                    .fold(W::ZERO, |sum, &w| sum.plus(w)),
            );
            offsets.push(out);
            control.work(counts[v + 1] - counts[v] + 1)?;
        }
        targets.truncate(out);
        weights.truncate(out);
        Ok(Csr {
            offsets,
            targets,
            weights,
            degree,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.degree.len()
    }

    /// Number of directed entries (twice the number of merged edges).
    pub(super) fn entries(&self) -> usize {
        self.targets.len()
    }

    pub(super) fn row(&self, v: u32) -> std::ops::Range<usize> {
        self.offsets[v as usize]..self.offsets[v as usize + 1]
    }

    pub(super) fn neighbors(&self, v: u32) -> impl Iterator<Item = (u32, W)> + '_ {
        let range = self.row(v);
        self.targets[range.clone()]
            .iter()
            .copied()
            .zip(self.weights[range].iter().copied())
    }

    pub(super) fn degree(&self, v: usize) -> W {
        self.degree[v]
    }

    /// The vertex of least weighted degree, and that degree.
    pub(super) fn min_degree(&self) -> (u32, W) {
        let mut lightest = (0u32, self.degree[0]);
        for (v, &d) in self.degree.iter().enumerate() {
            if d < lightest.1 {
                lightest = (v as u32, d);
            }
        }
        lightest
    }

    /// One contraction round against `bar` (a cut already found).
    pub(super) fn round(
        &self,
        bar: Bar<W>,
        round: usize,
        control: &mut Control,
    ) -> Result<Round<W>, Error> {
        let k = self.len();
        let mut merges = UnionFind::new(k);
        self.padberg_rinaldi(bar, &mut merges, control)?;
        let start = ((round * 7919) % k) as u32;
        let scan = self.capforest(bar, start, &mut merges, control)?;
        if merges.sets() == k {
            // Stoer-Wagner: the last two vertices of a maximum-adjacency scan can
            // always be merged; guarantees progress when nothing else applies.
            // (The scan of a connected round reaches all of its k ≥ 3 vertices.)
            if let [.., s, t] = scan.order[..] {
                merges.union(s, t);
            }
        }
        let lighter_cut = match scan.lightest_prefix {
            None => None,
            Some(len) => {
                let mut side = vec![false; k];
                scan.order[..len]
                    .iter()
                    .for_each(|&v| side[v as usize] = true);
                // Exact prefix sums are the cut; float ones are re-summed, which
                // only adds non-negative terms.
                let value = if W::EXACT {
                    scan.lightest_value
                } else {
                    self.cut_weight(&side, control)?
                };
                (value < bar.lambda_hat).then_some((value, side))
            }
        };
        Ok(Round {
            labels: merges.labels(),
            lighter_cut,
        })
    }

    /// Padberg-Rinaldi tests 1 and 2 on every edge: `w(u,v) ≥ λ̂` (no cut lighter
    /// than λ̂ separates them), and `2·w(u,v) > min(deg u, deg v)` (moving the
    /// lighter end across any cut that separates them makes it lighter). Test 2
    /// stays strict: with a tie, moving the end keeps the cut's weight, and
    /// contracting every such edge at once could merge both sides of a cut.
    fn padberg_rinaldi(
        &self,
        bar: Bar<W>,
        merges: &mut UnionFind,
        control: &mut Control,
    ) -> Result<(), Error> {
        for u in 0..self.len() as u32 {
            for (v, w) in self.neighbors(u) {
                if u < v {
                    let lighter_end = self.degree[u as usize].min(self.degree[v as usize]);
                    if bar.reached_by(w) || w.double().exceeds(lighter_end, bar.margin) {
                        merges.union(u, v);
                    }
                }
            }
            control.work(self.row(u).len() + 1)?;
        }
        Ok(())
    }

    /// A maximum-adjacency scan from `start` that merges every edge `(x, y)` whose
    /// scan lifts `r(y)` to at least `lambda_hat` (Nagamochi-Ono-Ibaraki: then
    /// `λ(x, y) ≥ r(y) ≥ λ̂`, ties included), and watches the prefix cuts.
    fn capforest(
        &self,
        bar: Bar<W>,
        start: u32,
        merges: &mut UnionFind,
        control: &mut Control,
    ) -> Result<Scan<W>, Error> {
        let k = self.len();
        let mut r = vec![W::ZERO; k];
        let mut scanned = vec![false; k];
        let mut heap = BinaryHeap::with_capacity(k);
        heap.push(Keyed(W::ZERO, start));
        let mut order = Vec::with_capacity(k);
        // The cut between the scanned prefix and the rest: exact for integers;
        // for floats only a guide, re-summed before it is trusted.
        let mut prefix_cut = W::ZERO;
        let mut lightest = (bar.lambda_hat, None);
        while let Some(Keyed(_, x)) = heap.pop() {
            if scanned[x as usize] {
                continue;
            }
            scanned[x as usize] = true;
            order.push(x);
            // Adding x: its edges to the rest join the cut, those to the prefix
            // (r(x) of them) leave it. The new cut is ≥ 0, so this never underflows.
            prefix_cut = prefix_cut
                .plus(self.degree[x as usize])
                .minus(r[x as usize].double());
            if order.len() < k && prefix_cut < lightest.0 {
                lightest = (prefix_cut, Some(order.len()));
            }
            for (y, w) in self.neighbors(x) {
                if !scanned[y as usize] {
                    let ry = r[y as usize].plus(w);
                    r[y as usize] = ry;
                    if bar.reached_by(ry) {
                        merges.union(x, y);
                    }
                    heap.push(Keyed(ry, y));
                }
            }
            control.work(self.row(x).len() + 1)?;
        }
        Ok(Scan {
            order,
            lightest_value: lightest.0,
            lightest_prefix: lightest.1,
        })
    }

    /// The weight of the edges leaving `side`.
    pub(super) fn cut_weight(&self, side: &[bool], control: &mut Control) -> Result<W, Error> {
        let mut total = W::ZERO;
        for u in 0..self.len() as u32 {
            if side[u as usize] {
                for (v, w) in self.neighbors(u) {
                    if !side[v as usize] {
                        total = total.plus(w);
                    }
                }
                control.work(self.row(u).len())?;
            }
        }
        Ok(total)
    }

    /// The graph with every vertex `v` replaced by `labels[v]`.
    pub(super) fn contract(&self, labels: &[u32], control: &mut Control) -> Result<Csr<W>, Error> {
        let k = labels.iter().max().map_or(0, |&l| l as usize + 1);
        let mut counts = vec![0usize; k + 1];
        for u in 0..self.len() as u32 {
            let lu = labels[u as usize];
            counts[lu as usize + 1] += self
                .neighbors(u)
                .filter(|&(v, _)| labels[v as usize] != lu)
                .count();
            control.work(self.row(u).len() + 1)?;
        }
        Csr::assemble(k, counts, control, |emit, control| {
            for u in 0..self.len() as u32 {
                let lu = labels[u as usize];
                for (v, w) in self.neighbors(u) {
                    let lv = labels[v as usize];
                    if lv != lu {
                        emit(lu, lv, w);
                    }
                }
                control.work(self.row(u).len() + 1)?;
            }
            Ok(())
        })
    }
}

struct Scan<W> {
    order: Vec<u32>,
    lightest_value: W,
    lightest_prefix: Option<usize>,
}

/// A heap entry ordered by its key alone.
pub(super) struct Keyed<W>(pub(super) W, pub(super) u32);

impl<W: Weight> PartialEq for Keyed<W> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<W: Weight> Eq for Keyed<W> {}
impl<W: Weight> PartialOrd for Keyed<W> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<W: Weight> Ord for Keyed<W> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.order(&other.0)
    }
}
