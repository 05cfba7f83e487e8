//! Min-cut rounds on an adjacency matrix, for contracted graphs that are small or
//! dense. A round is one maximum-adjacency scan (CAPFOREST) whose inner loop adds
//! a matrix row to the scan keys and finds the next vertex in the same pass; the
//! round's contractions are then merged in place, a row and a column at a time.

use super::sparse::Csr;
use super::CONTRACTION_MARGIN;
use crate::union_find::UnionFind;

/// Below this many vertices the matrix is always used.
const ALWAYS_DENSE: usize = 64;

/// Above this many vertices the matrix is never used: 3,000² f64 is 72 MB.
const NEVER_DENSE: usize = 3_000;

/// Whether a contracted graph with `k` vertices and `entries` directed entries is
/// better solved as a matrix. A matrix round reads k² weights; a sparse round
/// pushes every entry through a heap, several times the cost per entry, so the
/// matrix wins once at least one pair in six is an edge.
pub(super) fn preferred(k: usize, entries: usize) -> bool {
    k <= ALWAYS_DENSE || (k <= NEVER_DENSE && k * k <= 6 * entries)
}

/// A symmetric weight matrix over the first `k` of `stride` slots, with the
/// round-start vertices each slot holds.
pub(super) struct Dense {
    k: usize,
    stride: usize,
    weights: Vec<f64>,
    degree: Vec<f64>,
    /// The input vertices merged into each slot.
    members: Vec<Vec<u32>>,
}

impl Dense {
    pub(super) fn from_csr(graph: &Csr) -> Dense {
        let k = graph.len();
        let mut weights = vec![0f64; k * k];
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

    fn row(&self, v: usize) -> &[f64] {
        &self.weights[v * self.stride..v * self.stride + self.k]
    }

    /// Runs rounds until two slots are left. Returns a cut lighter than
    /// `lambda_hat`, as a side over the input vertices, if there is one.
    pub(super) fn solve(mut self, mut lambda_hat: f64) -> Option<(f64, Vec<bool>)> {
        let inputs = self.k;
        let mut lighter: Option<Vec<usize>> = None;
        let mut round = 0usize;
        // A round may merge everything; a single slot is not a cut.
        while self.k >= 2 {
            let lightest = (0..self.k)
                .min_by(|&a, &b| self.degree[a].total_cmp(&self.degree[b]))
                .expect("at least two slots");
            if self.degree[lightest] < lambda_hat {
                lambda_hat = self.degree[lightest];
                lighter = Some(self.input_vertices(&[lightest]));
            }
            if self.k <= 2 {
                break;
            }
            let start = (round * 7919) % self.k;
            let (labels, prefix) = self.scan(lambda_hat, start);
            if let Some(slots) = prefix {
                let value = self.cut_weight(&slots);
                if value < lambda_hat {
                    lambda_hat = value;
                    lighter = Some(self.input_vertices(&slots));
                }
            }
            self.merge(labels);
            round += 1;
        }
        lighter.map(|vertices| {
            let mut side = vec![false; inputs];
            vertices.into_iter().for_each(|v| side[v] = true);
            (lambda_hat, side)
        })
    }

    fn input_vertices(&self, slots: &[usize]) -> Vec<usize> {
        slots
            .iter()
            .flat_map(|&s| self.members[s].iter().map(|&v| v as usize))
            .collect()
    }

    /// One CAPFOREST scan. Returns the merge labels and the slots of the lightest
    /// prefix cut if one looked lighter than `lambda_hat` (the caller re-sums it).
    fn scan(&self, lambda_hat: f64, start: usize) -> (UnionFind, Option<Vec<usize>>) {
        let k = self.k;
        let threshold = lambda_hat * CONTRACTION_MARGIN;
        let mut merges = UnionFind::new(k);
        // keys[v] = r(v) while v is unscanned, -∞ once scanned: then adding a row
        // never revives it and the arg-max skips it without a branch.
        let mut keys = vec![0f64; k];
        let mut order = Vec::with_capacity(k);
        let mut prefix_cut = 0f64;
        let mut lightest = (lambda_hat, None);
        let mut x = start;
        for step in 0..k {
            prefix_cut += self.degree[x] - 2.0 * keys[x];
            keys[x] = f64::NEG_INFINITY;
            order.push(x);
            if step + 1 == k {
                break;
            }
            if prefix_cut < lightest.0 {
                lightest = (prefix_cut, Some(step + 1));
            }
            let row = self.row(x);
            let (next, max_key) = add_row_and_find_max(&mut keys, row);
            if max_key >= threshold {
                for y in 0..k {
                    if keys[y] >= threshold && row[y] > 0.0 {
                        merges.union(x as u32, y as u32);
                    }
                }
            }
            x = next;
        }
        if merges.sets() == k {
            merges.union(order[k - 2] as u32, order[k - 1] as u32);
        }
        (merges, lightest.1.map(|len| order[..len].to_vec()))
    }

    fn cut_weight(&self, slots: &[usize]) -> f64 {
        let mut inside = vec![false; self.k];
        slots.iter().for_each(|&s| inside[s] = true);
        slots
            .iter()
            .map(|&s| {
                self.row(s)
                    .iter()
                    .zip(&inside)
                    .filter(|(_, &i)| !i)
                    .map(|(w, _)| w)
                    .sum::<f64>()
            })
            .sum()
    }

    /// Applies a round's merges: each vertex joins its set's root slot, and the
    /// last slot moves into the hole it leaves.
    fn merge(&mut self, mut labels: UnionFind) {
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
        }
    }

    /// Adds slot `t` into slot `s` (rows, columns, members) and re-sums `s`'s degree.
    fn merge_slot_into(&mut self, t: usize, s: usize) {
        let (k, stride) = (self.k, self.stride);
        for i in 0..k {
            let w = self.weights[s * stride + i] + self.weights[t * stride + i];
            self.weights[s * stride + i] = w;
            self.weights[i * stride + s] = w;
        }
        self.weights[s * stride + s] = 0.0;
        self.weights[s * stride + t] = 0.0;
        self.weights[t * stride + s] = 0.0;
        let moved = std::mem::take(&mut self.members[t]);
        self.members[s].extend(moved);
        self.degree[s] = self.row(s).iter().sum();
    }

    /// Copies slot `from` (the last one) into slot `to`, whose vertex is gone.
    fn move_slot(&mut self, from: usize, to: usize) {
        let (k, stride) = (self.k, self.stride);
        for i in 0..k {
            let w = self.weights[from * stride + i];
            self.weights[to * stride + i] = w;
            self.weights[i * stride + to] = w;
        }
        self.weights[to * stride + to] = 0.0;
        self.degree[to] = self.degree[from];
        self.members[to] = std::mem::take(&mut self.members[from]);
    }
}

/// `keys += row`, returning the index and value of the largest key. Eight
/// independent lanes keep the loop free of cross-iteration dependencies so that
/// it compiles to packed adds and maxes.
fn add_row_and_find_max(keys: &mut [f64], row: &[f64]) -> (usize, f64) {
    const LANES: usize = 8;
    let mut lane_max = [f64::NEG_INFINITY; LANES];
    let mut key_chunks = keys.chunks_exact_mut(LANES);
    let mut row_chunks = row.chunks_exact(LANES);
    for (kc, rc) in (&mut key_chunks).zip(&mut row_chunks) {
        for i in 0..LANES {
            kc[i] += rc[i];
            lane_max[i] = if kc[i] > lane_max[i] {
                kc[i]
            } else {
                lane_max[i]
            };
        }
    }
    let mut max = lane_max.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    for (key, &w) in key_chunks
        .into_remainder()
        .iter_mut()
        .zip(row_chunks.remainder())
    {
        *key += w;
        max = max.max(*key);
    }
    let at = keys.iter().position(|&key| key == max).unwrap_or(0);
    (at, max)
}
