//! Min-cut rounds on an adjacency matrix, for contracted graphs that are small or
//! dense. A round is one maximum-adjacency scan (CAPFOREST) whose inner loop adds
//! a matrix row to the scan keys and finds the next vertex in the same pass; the
//! round's contractions are then merged in place, a row and a column at a time.

use super::sparse::Csr;
use super::weight::{Bar, Margin, Weight};
use crate::control::Control;
use crate::union_find::UnionFind;
use crate::Error;

/// Below this many vertices the matrix is always used.
const ALWAYS_DENSE: usize = 64;

/// The matrix is never larger than this: 3,000² `f64` or `u64`, 2,121² `u128`.
const MAX_MATRIX_BYTES: usize = 72_000_000;

/// Whether a contracted graph with `k` vertices and `entries` directed entries is
/// better solved as a matrix. A matrix round reads k² weights; a sparse round
/// pushes every entry through a heap, several times the cost per entry, so the
/// matrix wins once at least one pair in six is an edge.
pub(super) fn preferred<W>(k: usize, entries: usize) -> bool {
    k <= ALWAYS_DENSE
        || (k * k * std::mem::size_of::<W>() <= MAX_MATRIX_BYTES && k * k <= 6 * entries)
}

/// A symmetric weight matrix over the first `k` of `stride` slots, with the
/// round-start vertices each slot holds.
pub(super) struct Dense<W> {
    k: usize,
    stride: usize,
    weights: Vec<W>,
    degree: Vec<W>,
    /// The input vertices merged into each slot.
    members: Vec<Vec<u32>>,
}

impl<W: Weight> Dense<W> {
    pub(super) fn from_csr(graph: &Csr<W>) -> Dense<W> {
        let k = graph.len();
        let mut weights = vec![W::ZERO; k * k];
        for u in 0..k {
            for (v, w) in graph.neighbors(u as u32) {
                weights[u * k + v as usize] = w;
            }
        }
        Dense {
            k,
            stride: k,
            weights,
            degree: (0..k).map(|v| graph.degree(v)).collect(),
            members: (0..k as u32).map(|v| vec![v]).collect(),
        }
    }

    fn row(&self, v: usize) -> &[W] {
        &self.weights[v * self.stride..v * self.stride + self.k]
    }

    /// Runs rounds until two slots are left. Returns a cut lighter than
    /// `lambda_hat`, as a side over the input vertices, if there is one.
    ///
    /// Rounds here never hand over to the flow sweep: a matrix round costs k²
    /// and merges at least one pair, and on the graphs small or dense enough to
    /// come here that beats the sweep (a random-weight K₁₀₀₀: 160 ms against
    /// 640 ms; a unit K₁₀₀₀: 210 against 250).
    pub(super) fn solve(
        mut self,
        mut lambda_hat: W,
        margin: Margin,
        control: &mut Control,
    ) -> Result<Option<(W, Vec<bool>)>, Error> {
        let inputs = self.k;
        let mut lighter: Option<Vec<usize>> = None;
        let mut round = 0usize;
        // A round may merge everything; a single slot is not a cut.
        while self.k >= 2 {
            let lightest = (0..self.k)
                .min_by(|&a, &b| self.degree[a].order(&self.degree[b]))
                .unwrap_or(0);
            if self.degree[lightest] < lambda_hat {
                lambda_hat = self.degree[lightest];
                lighter = Some(self.input_vertices(&[lightest]));
            }
            if self.k <= 2 {
                break;
            }
            let start = (round * 7919) % self.k;
            let (labels, prefix) = self.scan(Bar { lambda_hat, margin }, start, control)?;
            if let Some(slots) = prefix {
                let value = self.cut_weight(&slots);
                if value < lambda_hat {
                    lambda_hat = value;
                    lighter = Some(self.input_vertices(&slots));
                }
            }
            self.merge(labels, control)?;
            round += 1;
        }
        Ok(lighter.map(|vertices| (lambda_hat, side_of(inputs, vertices))))
    }

    fn input_vertices(&self, slots: &[usize]) -> Vec<usize> {
        slots
            .iter()
            .flat_map(|&s| self.members[s].iter().map(|&v| v as usize))
            .collect()
    }

    /// One CAPFOREST scan. Returns the merge labels and the slots of the lightest
    /// prefix cut if one looked lighter than `lambda_hat` (the caller re-sums it).
    fn scan(
        &self,
        bar: Bar<W>,
        start: usize,
        control: &mut Control,
    ) -> Result<(UnionFind, Option<Vec<usize>>), Error> {
        let k = self.k;
        let mut merges = UnionFind::new(k);
        // keys[v] = r(v) while v is unscanned, SCANNED once scanned: adding a
        // row never revives it, and the arg-max skips it without a branch.
        let mut keys = vec![W::key(W::ZERO); k];
        let mut order = Vec::with_capacity(k);
        let mut prefix_cut = W::ZERO;
        let mut lightest = (bar.lambda_hat, None);
        let mut x = start;
        for step in 0..k {
            let r = W::unkey(keys[x]);
            prefix_cut = prefix_cut.plus(self.degree[x]).minus(r.double());
            keys[x] = W::SCANNED;
            order.push(x);
            if step + 1 == k {
                break;
            }
            if prefix_cut < lightest.0 {
                lightest = (prefix_cut, Some(step + 1));
            }
            let row = self.row(x);
            let (next, max_key) = W::add_row_and_find_max(&mut keys, row);
            if bar.reached_by(W::unkey(max_key)) {
                let unscanned = W::key(W::ZERO);
                for y in 0..k {
                    if keys[y] >= unscanned
                        && bar.reached_by(W::unkey(keys[y]))
                        && !row[y].is_zero()
                    {
                        merges.union(x as u32, y as u32);
                    }
                }
            }
            x = next;
            control.work(k)?;
        }
        if 8 * merges.sets() > 7 * k {
            self.triangles(bar, &mut merges, control)?;
        }
        if merges.sets() == k {
            merges.union(order[k - 2] as u32, order[k - 1] as u32);
        }
        Ok((merges, lightest.1.map(|len| order[..len].to_vec())))
    }

    /// Padberg-Rinaldi's triangle test on the star of the heaviest slot `h`:
    /// the edge and the two-edge paths through common neighbours are
    /// edge-disjoint, so `λ(h,v) ≥ w(h,v) + Σ_x min(w(h,x), w(v,x))`, and at
    /// λ̂ or more (ties included) no lighter cut separates them. It merges all
    /// of a complete graph's vertices in one round, where scans merge one pair
    /// each; it runs only when the scan merged fewer than 1/8 of the slots.
    fn triangles(
        &self,
        bar: Bar<W>,
        merges: &mut UnionFind,
        control: &mut Control,
    ) -> Result<(), Error> {
        let k = self.k;
        let h = (0..k)
            .max_by(|&a, &b| self.degree[a].order(&self.degree[b]))
            .unwrap_or(0);
        let hub = self.row(h);
        for v in 0..k {
            if hub[v].is_zero() {
                continue;
            }
            // The diagonal is zero, so x = h and x = v add nothing.
            let bound = hub
                .iter()
                .zip(self.row(v))
                .fold(hub[v], |sum, (&a, &b)| sum.plus(a.min(b)));
            if bar.reached_by(bound) {
                merges.union(h as u32, v as u32);
            }
            control.work(k)?;
        }
        Ok(())
    }

    fn cut_weight(&self, slots: &[usize]) -> W {
        let mut inside = vec![false; self.k];
        slots.iter().for_each(|&s| inside[s] = true);
        let mut total = W::ZERO;
        for &s in slots {
            for (w, &i) in self.row(s).iter().zip(&inside) {
                if !i {
                    total = total.plus(*w);
                }
            }
        }
        total
    }

    /// Applies a round's merges: each vertex joins its set's root slot, and the
    /// last slot moves into the hole it leaves.
    fn merge(&mut self, mut labels: UnionFind, control: &mut Control) -> Result<(), Error> {
        let k = self.k;
        // slot_of[v] and vertex_at[s] track round-start vertices as slots move.
        let mut slot_of: Vec<usize> = (0..k).collect();
        let mut vertex_at: Vec<usize> = (0..k).collect();
        for v in 0..k {
            let root = labels.find(v as u32) as usize;
            if root == v {
                continue;
            }
            let (s, t) = (slot_of[root], slot_of[v]);
            self.merge_slot_into(t, s);
            let last = self.k - 1;
            if t != last {
                self.move_slot(last, t);
                slot_of[vertex_at[last]] = t;
                vertex_at[t] = vertex_at[last];
            }
            self.k -= 1;
            control.work(2 * self.k)?;
        }
        Ok(())
    }

    /// Adds slot `t` into slot `s` (rows, columns, members) and re-sums `s`'s degree.
    fn merge_slot_into(&mut self, t: usize, s: usize) {
        let (k, stride) = (self.k, self.stride);
        for i in 0..k {
            let w = self.weights[s * stride + i].plus(self.weights[t * stride + i]);
            self.weights[s * stride + i] = w;
            self.weights[i * stride + s] = w;
        }
        self.weights[s * stride + s] = W::ZERO;
        self.weights[s * stride + t] = W::ZERO;
        self.weights[t * stride + s] = W::ZERO;
        let moved = std::mem::take(&mut self.members[t]);
        self.members[s].extend(moved);
        self.degree[s] = self.row(s).iter().fold(W::ZERO, |sum, &w| sum.plus(w));
    }

    /// Copies slot `from` (the last one) into slot `to`, whose vertex is gone.
    fn move_slot(&mut self, from: usize, to: usize) {
        let (k, stride) = (self.k, self.stride);
        for i in 0..k {
            let w = self.weights[from * stride + i];
            self.weights[to * stride + i] = w;
            self.weights[i * stride + to] = w;
        }
        self.weights[to * stride + to] = W::ZERO;
        self.degree[to] = self.degree[from];
        self.members[to] = std::mem::take(&mut self.members[from]);
    }
}

fn side_of(inputs: usize, vertices: Vec<usize>) -> Vec<bool> {
    let mut side = vec![false; inputs];
    vertices.into_iter().for_each(|v| side[v] = true);
    side
}
