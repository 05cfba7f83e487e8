//! Min-cut rounds on a sparse contracted graph in compressed-row form: the
//! Padberg-Rinaldi tests and one CAPFOREST scan per round, then a contraction
//! that rebuilds the rows with parallel edges merged.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::CONTRACTION_MARGIN;
use crate::union_find::UnionFind;

/// An undirected multigraph with parallel edges merged: the neighbours of `v` are
/// `targets[offsets[v]..offsets[v + 1]]`, each edge stored once per direction.
pub(super) struct Csr {
    offsets: Vec<usize>,
    targets: Vec<u32>,
    weights: Vec<f64>,
    degree: Vec<f64>,
}

/// What one round found: the contraction labels, and a cut lighter than the bound
/// it started from (as a side over this round's vertices), if it found one.
pub(super) struct Round {
    pub(super) labels: Vec<u32>,
    pub(super) lighter_cut: Option<(f64, Vec<bool>)>,
}

impl Csr {
    /// Builds the graph from edges with positive weights and distinct endpoints.
    pub(super) fn from_edges(n: usize, edges: impl Iterator<Item = (u32, u32, f64)>) -> Csr {
        let edges: Vec<(u32, u32, f64)> = edges.collect();
        let mut counts = vec![0usize; n + 1];
        for &(u, v, _) in &edges {
            counts[u as usize + 1] += 1;
            counts[v as usize + 1] += 1;
        }
        Csr::assemble(n, counts, |emit| {
            for &(u, v, w) in &edges {
                emit(u, v, w);
                emit(v, u, w);
            }
        })
    }

    /// Builds rows from per-source `counts` (shifted by one) and a generator that
    /// emits every directed entry; merges parallel entries.
    fn assemble(
        n: usize,
        mut counts: Vec<usize>,
        fill: impl FnOnce(&mut dyn FnMut(u32, u32, f64)),
    ) -> Csr {
        for v in 0..n {
            counts[v + 1] += counts[v];
        }
        let total = counts[n];
        let mut cursor = counts.clone();
        let mut targets = vec![0u32; total];
        let mut weights = vec![0f64; total];
        fill(&mut |u, v, w| {
            let at = cursor[u as usize];
            targets[at] = v;
            weights[at] = w;
            cursor[u as usize] += 1;
        });
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
                    weights[s] += w;
                } else {
                    slot[t as usize] = out;
                    targets[out] = t;
                    weights[out] = w;
                    out += 1;
                }
            }
            degree.push(weights[row_start..out].iter().sum());
            offsets.push(out);
        }
        targets.truncate(out);
        weights.truncate(out);
        Csr {
            offsets,
            targets,
            weights,
            degree,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.degree.len()
    }

    /// Number of directed entries (twice the number of merged edges).
    pub(super) fn entries(&self) -> usize {
        self.targets.len()
    }

    pub(super) fn neighbors(&self, v: u32) -> impl Iterator<Item = (u32, f64)> + '_ {
        let range = self.offsets[v as usize]..self.offsets[v as usize + 1];
        self.targets[range.clone()]
            .iter()
            .copied()
            .zip(self.weights[range].iter().copied())
    }

    /// The vertex of least weighted degree, and that degree.
    pub(super) fn min_degree(&self) -> (u32, f64) {
        let mut lightest = (0u32, f64::INFINITY);
        for (v, &d) in self.degree.iter().enumerate() {
            if d < lightest.1 {
                lightest = (v as u32, d);
            }
        }
        lightest
    }

    /// One contraction round against the bound `lambda_hat` (a cut already found).
    pub(super) fn round(&self, lambda_hat: f64, round: usize) -> Round {
        let k = self.len();
        let mut merges = UnionFind::new(k);
        self.padberg_rinaldi(lambda_hat, &mut merges);
        let start = ((round * 7919) % k) as u32;
        let scan = self.capforest(lambda_hat, start, &mut merges);
        if merges.sets() == k {
            // Stoer-Wagner: the last two vertices of a maximum-adjacency scan can
            // always be merged; guarantees progress when rounding starves the tests.
            let [.., s, t] = scan.order[..] else {
                unreachable!("a round runs on at least three vertices")
            };
            merges.union(s, t);
        }
        let lighter_cut = scan.lightest_prefix.and_then(|len| {
            let mut side = vec![false; k];
            scan.order[..len]
                .iter()
                .for_each(|&v| side[v as usize] = true);
            let value = self.cut_weight(&side);
            (value < lambda_hat).then_some((value, side))
        });
        Round {
            labels: merges.labels(),
            lighter_cut,
        }
    }

    /// Padberg-Rinaldi tests 1 and 2 on every edge.
    fn padberg_rinaldi(&self, lambda_hat: f64, merges: &mut UnionFind) {
        for u in 0..self.len() as u32 {
            for (v, w) in self.neighbors(u) {
                if u < v {
                    let lighter_end = self.degree[u as usize].min(self.degree[v as usize]);
                    if w >= lambda_hat * CONTRACTION_MARGIN
                        || 2.0 * w > lighter_end * CONTRACTION_MARGIN
                    {
                        merges.union(u, v);
                    }
                }
            }
        }
    }

    /// A maximum-adjacency scan from `start` that merges every edge `(x, y)` whose
    /// scan lifts `r(y)` to at least `lambda_hat`, and watches the prefix cuts.
    fn capforest(&self, lambda_hat: f64, start: u32, merges: &mut UnionFind) -> Scan {
        let k = self.len();
        let threshold = lambda_hat * CONTRACTION_MARGIN;
        let mut r = vec![0f64; k];
        let mut scanned = vec![false; k];
        let mut heap = BinaryHeap::with_capacity(k);
        heap.push(Keyed(0.0, start));
        let mut order = Vec::with_capacity(k);
        // The prefix cut is tracked approximately; the round re-sums the best one.
        let mut prefix_cut = 0f64;
        let mut lightest = (lambda_hat, None);
        while let Some(Keyed(_, x)) = heap.pop() {
            if scanned[x as usize] {
                continue;
            }
            scanned[x as usize] = true;
            order.push(x);
            prefix_cut += self.degree[x as usize] - 2.0 * r[x as usize];
            if order.len() < k && prefix_cut < lightest.0 {
                lightest = (prefix_cut, Some(order.len()));
            }
            for (y, w) in self.neighbors(x) {
                if !scanned[y as usize] {
                    let ry = r[y as usize] + w;
                    r[y as usize] = ry;
                    if ry >= threshold {
                        merges.union(x, y);
                    }
                    heap.push(Keyed(ry, y));
                }
            }
        }
        Scan {
            order,
            lightest_prefix: lightest.1,
        }
    }

    fn cut_weight(&self, side: &[bool]) -> f64 {
        let mut total = 0.0;
        for u in 0..self.len() as u32 {
            if side[u as usize] {
                total += self
                    .neighbors(u)
                    .filter(|&(v, _)| !side[v as usize])
                    .map(|(_, w)| w)
                    .sum::<f64>();
            }
        }
        total
    }

    /// The graph with every vertex `v` replaced by `labels[v]`.
    pub(super) fn contract(&self, labels: &[u32]) -> Csr {
        let k = labels.iter().max().map_or(0, |&l| l as usize + 1);
        let mut counts = vec![0usize; k + 1];
        for u in 0..self.len() as u32 {
            let lu = labels[u as usize];
            counts[lu as usize + 1] += self
                .neighbors(u)
                .filter(|&(v, _)| labels[v as usize] != lu)
                .count();
        }
        Csr::assemble(k, counts, |emit| {
            for u in 0..self.len() as u32 {
                let lu = labels[u as usize];
                for (v, w) in self.neighbors(u) {
                    let lv = labels[v as usize];
                    if lv != lu {
                        emit(lu, lv, w);
                    }
                }
            }
        })
    }

    pub(super) fn degree(&self, v: usize) -> f64 {
        self.degree[v]
    }
}

struct Scan {
    order: Vec<u32>,
    lightest_prefix: Option<usize>,
}

/// A heap entry ordered by its key alone (keys are finite and non-negative).
struct Keyed(f64, u32);

impl PartialEq for Keyed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Keyed {}
impl PartialOrd for Keyed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Keyed {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
