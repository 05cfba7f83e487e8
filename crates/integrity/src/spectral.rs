//! λ₂, the algebraic connectivity: the second-smallest eigenvalue of the weighted
//! Laplacian `L = D − W`. It is 0 exactly when the graph is disconnected and grows
//! with how well-knit the graph is, so it complements the minimum cut (which sees
//! the single weakest cut) with a global measure.
//!
//! This module owns the eigensolvers and nothing else.
//!
//! - Connectivity is decided combinatorially: a disconnected graph returns
//!   exactly 0 rather than an eigensolver's 1e-13.
//! - Weights are scaled by a power of two (exactly) so that they sum to about 1:
//!   no product or square can overflow or lose precision to underflow, whatever
//!   the input's magnitude.
//! - Up to [`DENSE_MAX`] vertices: a dense symmetric eigensolver.
//! - Beyond that, thick-restart Lanczos (Wu and Simon) on 1⊥ (the constant
//!   vector, L's null space, is projected out), with a basis of at most
//!   [`MAX_BASIS`] vectors: when it is full, the [`KEEP`] Ritz vectors nearest
//!   the wanted end are kept and the rest is dropped, so memory stays at
//!   `MAX_BASIS + 4` vectors of `n` doubles however long it runs. It runs on one
//!   of two operators:
//!   - `L` itself, first: where λ₂ is well separated (expanders, random graphs)
//!     it converges in a few hundred products;
//!   - shift-invert, `L⁺`, applied through a sparse Cholesky factor of the
//!     grounded Laplacian (one vertex removed), when plain Lanczos would take
//!     too long: λ₂ is `1/μ` for the largest eigenvalue μ of `L⁺`, which is far
//!     from the rest of `L⁺`'s spectrum even when λ₂ is tiny next to `λ_max`
//!     (grids, paths, long rings). Used only while the factor stays within
//!     [`MAX_FILL_RATIO`] times the Laplacian's entries and [`MAX_FACTOR_FLOPS`],
//!     both known from the elimination tree before anything is factorized.
//!
//! Ritz values are accepted at a relative residual of 1e-10 (or 1e-6 once they
//! stop moving), which puts the eigenvalue within about 1e-12 relative of λ₂,
//! double eigenvalues included (a Ritz value converges to λ₂ whatever its
//! multiplicity).
//!
//! # Accuracy
//!
//! λ₂ is within 1e-8 relative (1e-10 or better in practice) while it is above
//! about 1e-7 of λ_max. Below that (a graph held together by a very light
//! edge) the Laplacian's diagonal, a sum of weights, holds the light edge only
//! to about 1e-16 of the heavy ones, so λ₂ is known to about 1e-15·λ_max in
//! absolute terms: a λ₂ below [`TINY`]·λ_max is recomputed by shift-invert
//! where the factor is within budget, and every result is clamped to what is
//! proven: `0 ≤ λ₂ ≤ n/(n−1)·δ`, δ the least weighted degree.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::sparse::linalg::amd;
use faer::sparse::SymbolicSparseColMatRef;
use faer::{Mat, Side};

use crate::control::Control;
use crate::mincut::validate_edges;
use crate::union_find::UnionFind;
use crate::Error;

/// Up to this many vertices the dense solver is both exact and fast (< 5 ms).
pub const DENSE_MAX: usize = 256;

/// The most vectors Lanczos keeps (plus four work vectors): 36·n doubles, 29 MB
/// at 100,000 vertices. Large enough that one restart cycle resolves clustered
/// eigenvalues, small enough that orthogonalizing against it stays cheap.
pub const MAX_BASIS: usize = 36;

/// Ritz vectors kept at a restart: the wanted end of the spectrum and a margin
/// of its neighbours, so that convergence toward λ₂ carries over.
const KEEP: usize = 12;

/// Shift-invert is used while the Cholesky factor has at most this many entries
/// per entry of the Laplacian: 2-D meshes stay near 15, random graphs go far
/// past it (their factor is nearly dense). This bounds the factor's memory to
/// 12 bytes × 40 per Laplacian entry.
const MAX_FILL_RATIO: usize = 40;

/// ...and while the factorization takes at most this many multiply-adds: a few
/// seconds here, about what a plain Lanczos run may take (the factorization
/// calls the interrupt hook after every row, so this bounds time, not the
/// latency of a cancel). A 316×316 grid takes 3e8.
const MAX_FACTOR_FLOPS: f64 = 2e9;

/// Plain Lanczos on `L` gives way to shift-invert when, extrapolating its
/// residuals, it would need more products than this.
const PATIENCE: usize = 300;

/// Plain Lanczos, when there is no factor to invert, stops with an error after
/// this many products with `L`.
const MAX_PRODUCTS: usize = 6_000;

/// Shift-invert converges in tens of solves on the graphs it is used for; this
/// many mean something is wrong.
const MAX_SOLVES: usize = 600;

/// Ritz values are accepted when the residual `‖A y − θ y‖` is below this share
/// of θ. The eigenvalue error is then about the square of that (≪ 1e-8 relative).
const RESIDUAL_TOLERANCE: f64 = 1e-10;

/// ...or when the residual is below this share and θ moved by less than 1e-13 of
/// itself over the last check.
const SETTLED_RESIDUAL: f64 = 1e-6;

/// Rows are processed in blocks of this many between two calls of the hook.
const BLOCK: usize = 4096;

/// λ₂ of the graph on vertices `0..n`. Parallel edges add up, self-loops are
/// ignored, and graphs with fewer than two vertices have λ₂ = 0. Runs with the
/// default [`Limits`](crate::control::Limits) and no interrupt hook; see
/// [`lambda2_with`].
pub fn lambda2(n: usize, edges: &[(u32, u32, f64)]) -> Result<f64, Error> {
    lambda2_with(n, edges, &mut Control::default())
}

/// [`lambda2`] under `control`: refuses inputs beyond its limits before
/// allocating, and calls its interrupt hook every few thousand steps, returning
/// the hook's error if it fails.
pub fn lambda2_with(
    n: usize,
    edges: &[(u32, u32, f64)],
    control: &mut Control,
) -> Result<f64, Error> {
    control.limits().check(n, edges.len())?;
    validate_edges(n, edges)?;
    control.check()?;
    if n < 2 {
        return Ok(0.0);
    }
    let mut positive = Vec::with_capacity(edges.len());
    let mut components = UnionFind::new(n);
    let mut total = 0.0;
    for chunk in edges.chunks(BLOCK) {
        for &(u, v, w) in chunk {
            if w > 0.0 && u != v {
                positive.push((u, v, w));
                components.union(u, v);
                total += w;
            }
        }
        control.work(chunk.len())?;
    }
    if components.sets() > 1 {
        return Ok(0.0);
    }
    drop(components);
    // Scale so the weights sum to [1, 2); λ₂ scales with them, exactly.
    let exponent = total.log2().floor() as i32;
    positive
        .iter_mut()
        .for_each(|e| e.2 = times_power_of_two(e.2, -exponent));
    let value = if n <= DENSE_MAX {
        let value = dense(n, &positive)?;
        let laplacian = Laplacian::new(n, &positive, control)?;
        refined(value, &laplacian, control)?
    } else {
        let laplacian = Laplacian::new(n, &positive, control)?;
        drop(positive);
        let value = iterative(&laplacian, control)?;
        refined(value, &laplacian, control)?
    };
    let value = times_power_of_two(value, exponent);
    if value.is_finite() {
        Ok(value.max(0.0) + 0.0)
    } else {
        Err(Error::Spectral(format!("the eigensolver produced {value}")))
    }
}

/// `x · 2^exponent` in two steps, so that neither factor leaves the range of
/// `f64` (the exponent spans up to ±1075 here).
fn times_power_of_two(x: f64, exponent: i32) -> f64 {
    let half = exponent / 2;
    x * 2f64.powi(half) * 2f64.powi(exponent - half)
}

/// λ₂ from all eigenvalues of the dense Laplacian (the reference the tests and
/// the benchmark compare against).
pub fn dense_lambda2(n: usize, edges: &[(u32, u32, f64)]) -> Result<f64, Error> {
    validate_edges(n, edges)?;
    dense(n, edges)
}

fn dense(n: usize, edges: &[(u32, u32, f64)]) -> Result<f64, Error> {
    let mut l = Mat::<f64>::zeros(n, n);
    for &(u, v, w) in edges {
        let (u, v) = (u as usize, v as usize);
        if u != v {
            l[(u, u)] += w;
            l[(v, v)] += w;
            l[(u, v)] -= w;
            l[(v, u)] -= w;
        }
    }
    let eigenvalues = l
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|e| Error::Spectral(format!("the dense eigensolver failed: {e:?}")))?;
    Ok(eigenvalues.get(1).copied().unwrap_or(0.0).max(0.0))
}

/// The result within what is proven of λ₂, refined first when it is tiny next
/// to the spectrum: an eigensolver on `L` is accurate to about 1e-13·λ_max in
/// absolute terms only, so a λ₂ below [`TINY`]·λ_max (a graph held together by
/// a very light edge) is recomputed by shift-invert, whose factor takes the
/// light edge in exactly, when the factor is within budget.
///
/// Whatever the solver returns is then clamped to `0 ≤ λ₂ ≤ n/(n−1)·δ`, with δ
/// the least weighted degree (Fiedler's bound, ties λ₂ to the minimum cut).
fn refined(value: f64, laplacian: &Laplacian, control: &mut Control) -> Result<f64, Error> {
    let n = laplacian.degree.len();
    let (lightest, heaviest) = laplacian
        .degree
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &d| (lo.min(d), hi.max(d)));
    let lambda_max_bound = 2.0 * heaviest;
    let mut value = value;
    if value < TINY * lambda_max_bound && n > 2 {
        if let Some(mu) = shift_invert(laplacian, control)? {
            // 1/μ overflows only for λ₂ below 1e-308 of the scaled total.
            if mu.is_finite() && mu > 0.0 {
                value = 1.0 / mu;
            }
        }
    }
    let bound = n as f64 / (n as f64 - 1.0) * lightest;
    Ok(value.clamp(0.0, bound))
}

/// Below this share of λ_max, λ₂ from `L` is refined by shift-invert.
const TINY: f64 = 1e-6;

/// The largest eigenvalue of `L⁺`, if the grounded factor is within budget.
fn shift_invert(laplacian: &Laplacian, control: &mut Control) -> Result<Option<f64>, Error> {
    match GroundedFactor::new(laplacian, control)? {
        Some(factor) => inverted(laplacian, &factor, control).map(Some),
        None => Ok(None),
    }
}

/// The largest eigenvalue of `L⁺` through `factor`.
fn inverted(
    laplacian: &Laplacian,
    factor: &GroundedFactor,
    control: &mut Control,
) -> Result<f64, Error> {
    let start = start_vector(&laplacian.degree);
    let apply =
        |x: &[f64], y: &mut [f64], control: &mut Control| factor.pseudo_inverse(x, y, control);
    Lanczos::new(&start, Extreme::Largest)
        .run(None, MAX_SOLVES, apply, control)?
        .ok_or_else(|| {
            Error::Spectral(format!(
                "shift-invert Lanczos did not converge in {MAX_SOLVES} solves"
            ))
        })
}

/// λ₂ of a connected graph beyond [`DENSE_MAX`] vertices: plain Lanczos while
/// it converges fast, else shift-invert if the factor is within budget, else
/// plain Lanczos to the end (its basis is dropped only once a factor exists, so
/// memory never holds two bases).
fn iterative(laplacian: &Laplacian, control: &mut Control) -> Result<f64, Error> {
    let start = start_vector(&laplacian.degree);
    let mut plain = Lanczos::new(&start, Extreme::Smallest);
    let apply = |x: &[f64], y: &mut [f64], control: &mut Control| laplacian.apply(x, y, control);
    if let Some(value) = plain.run(Some(PATIENCE), PATIENCE, apply, control)? {
        return Ok(value);
    }
    if let Some(factor) = GroundedFactor::new(laplacian, control)? {
        drop(plain);
        let mu = inverted(laplacian, &factor, control)?;
        return if mu.is_finite() && mu > 0.0 {
            Ok(1.0 / mu)
        } else {
            Err(Error::Spectral(format!(
                "shift-invert Lanczos produced μ = {mu}"
            )))
        };
    }
    plain
        .run(None, MAX_PRODUCTS, apply, control)?
        .ok_or_else(|| {
            Error::Spectral(format!(
                "Lanczos did not converge in {MAX_PRODUCTS} products with the Laplacian, \
                 and its Cholesky factor would exceed the memory or time allowed"
            ))
        })
}

/// The Laplacian in compressed rows (parallel entries left unmerged).
struct Laplacian {
    offsets: Vec<usize>,
    targets: Vec<u32>,
    weights: Vec<f64>,
    degree: Vec<f64>,
}

impl Laplacian {
    fn new(n: usize, edges: &[(u32, u32, f64)], control: &mut Control) -> Result<Self, Error> {
        let mut offsets = vec![0usize; n + 1];
        let mut degree = vec![0f64; n];
        for chunk in edges.chunks(BLOCK) {
            for &(u, v, w) in chunk {
                offsets[u as usize + 1] += 1;
                offsets[v as usize + 1] += 1;
                degree[u as usize] += w;
                degree[v as usize] += w;
            }
            control.work(chunk.len())?;
        }
        for v in 0..n {
            offsets[v + 1] += offsets[v];
        }
        let mut cursor = offsets.clone();
        let mut targets = vec![0u32; offsets[n]];
        let mut weights = vec![0f64; offsets[n]];
        for chunk in edges.chunks(BLOCK) {
            for &(u, v, w) in chunk {
                for (a, b) in [(u, v), (v, u)] {
                    let at = cursor[a as usize];
                    targets[at] = b;
                    weights[at] = w;
                    cursor[a as usize] += 1;
                }
            }
            control.work(2 * chunk.len())?;
        }
        Ok(Laplacian {
            offsets,
            targets,
            weights,
            degree,
        })
    }

    /// `y = L x`.
    fn apply(&self, x: &[f64], y: &mut [f64], control: &mut Control) -> Result<(), Error> {
        for (block, out) in y.chunks_mut(BLOCK).enumerate() {
            let first = block * BLOCK;
            for (i, out) in out.iter_mut().enumerate() {
                let v = first + i;
                let range = self.offsets[v]..self.offsets[v + 1];
                let neighbours: f64 = self.targets[range.clone()]
                    .iter()
                    .zip(&self.weights[range])
                    .map(|(&t, &w)| w * x[t as usize])
                    .sum();
                *out = self.degree[v] * x[v] - neighbours;
            }
            let last = first + out.len();
            control.work(self.offsets[last] - self.offsets[first] + out.len())?;
        }
        Ok(())
    }
}

/// A Cholesky factor `L Lᵀ = P M Pᵀ` of the grounded Laplacian `M` (the last
/// vertex removed), which is positive definite on a connected graph. `P` is an
/// approximate-minimum-degree ordering; `L` is in compressed columns, each
/// starting with its diagonal.
///
/// The factorization is CSparse's up-looking one (`cs_chol`): row k of `L` is
/// a sparse triangular solve against the rows before it, its pattern read off
/// the elimination tree. It is simple, exact to rounding, and calls the
/// interrupt hook after every row, so no part of λ₂ runs unchecked.
struct GroundedFactor {
    /// `order[k]`: the vertex at position k.
    order: Vec<usize>,
    columns: Vec<usize>,
    rows: Vec<u32>,
    values: Vec<f64>,
}

impl GroundedFactor {
    /// `None` when the factor would exceed [`MAX_FILL_RATIO`] times the entries
    /// of the Laplacian or [`MAX_FACTOR_FLOPS`], which is known (from the
    /// elimination tree and column counts) before anything is factorized.
    fn new(laplacian: &Laplacian, control: &mut Control) -> Result<Option<Self>, Error> {
        let m = laplacian.degree.len() - 1;
        let Some((order, position)) = minimum_degree_order(laplacian, control)? else {
            return Ok(None);
        };
        // The upper triangle of P M Pᵀ by columns: column k holds the entries
        // (i, k) with i ≤ k, duplicates merged, the diagonal last.
        let mut upper_columns = Vec::with_capacity(m + 1);
        let mut upper_rows: Vec<u32> = Vec::new();
        let mut upper_values: Vec<f64> = Vec::new();
        let mut entries: Vec<(u32, f64)> = Vec::new();
        upper_columns.push(0);
        for (k, &v) in order.iter().enumerate() {
            entries.clear();
            for at in laplacian.offsets[v]..laplacian.offsets[v + 1] {
                let Some(&i) = position.get(laplacian.targets[at] as usize) else {
                    continue; // the grounded vertex
                };
                if i < k {
                    entries.push((i as u32, -laplacian.weights[at]));
                }
            }
            entries.sort_unstable_by_key(|&(i, _)| i);
            for &(i, w) in entries.iter() {
                if upper_rows.len() > upper_columns[k] && upper_rows.last() == Some(&i) {
                    *upper_values.last_mut().unwrap_or(&mut 0.0) += w;
                } else {
                    upper_rows.push(i);
                    upper_values.push(w);
                }
            }
            upper_rows.push(k as u32);
            upper_values.push(laplacian.degree[v]);
            upper_columns.push(upper_rows.len());
            control.work(entries.len() + 1)?;
        }
        // The elimination tree and the column counts of L (each column's
        // entries: its diagonal and every later row that reaches it).
        const NONE: usize = usize::MAX;
        let mut parent = vec![NONE; m];
        let mut counts = vec![1usize; m];
        let mut visited = vec![NONE; m];
        let (mut entries_of_l, mut flops) = (0usize, 0f64);
        for k in 0..m {
            visited[k] = k;
            for &i in &upper_rows[upper_columns[k]..upper_columns[k + 1] - 1] {
                let mut i = i as usize;
                while visited[i] != k {
                    if parent[i] == NONE {
                        parent[i] = k;
                    }
                    counts[i] += 1;
                    visited[i] = k;
                    i = parent[i];
                }
            }
            control.work(upper_columns[k + 1] - upper_columns[k])?;
        }
        for &c in &counts {
            entries_of_l += c;
            flops += (c as f64) * (c as f64);
        }
        if entries_of_l > MAX_FILL_RATIO * upper_rows.len() || flops > MAX_FACTOR_FLOPS {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(m + 1);
        columns.push(0);
        for &c in &counts {
            columns.push(columns.last().copied().unwrap_or(0) + c);
        }
        drop(counts);
        let mut rows = vec![0u32; entries_of_l];
        let mut values = vec![0f64; entries_of_l];
        // next[i]: where column i's next entry goes.
        let mut next: Vec<usize> = columns[..m].to_vec();
        let mut x = vec![0f64; m];
        let mut pattern = vec![0usize; m];
        visited.iter_mut().for_each(|v| *v = NONE);
        for k in 0..m {
            // The pattern of row k of L: the tree paths from each entry of
            // column k of the upper triangle up to k, in topological order.
            let mut top = m;
            visited[k] = k;
            let column = upper_columns[k]..upper_columns[k + 1];
            for at in column.clone() {
                let mut i = upper_rows[at] as usize;
                x[i] += upper_values[at];
                let mut len = 0;
                while visited[i] != k {
                    pattern[len] = i;
                    len += 1;
                    visited[i] = k;
                    i = parent[i];
                }
                while len > 0 {
                    len -= 1;
                    top -= 1;
                    pattern[top] = pattern[len];
                }
            }
            let mut diagonal = x[k];
            x[k] = 0.0;
            let mut work = column.len();
            for &i in &pattern[top..m] {
                let lki = x[i] / values[columns[i]];
                x[i] = 0.0;
                for at in columns[i] + 1..next[i] {
                    x[rows[at] as usize] -= values[at] * lki;
                }
                work += next[i] - columns[i];
                diagonal -= lki * lki;
                rows[next[i]] = k as u32;
                values[next[i]] = lki;
                next[i] += 1;
            }
            if diagonal <= 0.0 || !diagonal.is_finite() {
                // Not positive definite to working precision: no factor.
                return Ok(None);
            }
            rows[next[k]] = k as u32;
            values[next[k]] = diagonal.sqrt();
            next[k] += 1;
            control.work(work)?;
        }
        Ok(Some(GroundedFactor {
            order,
            columns,
            rows,
            values,
        }))
    }

    /// `y = L⁺ x` for `x ⊥ 1`: solve the grounded system, put 0 at the grounded
    /// vertex, and project onto 1⊥.
    fn pseudo_inverse(&self, x: &[f64], y: &mut [f64], control: &mut Control) -> Result<(), Error> {
        let m = self.order.len();
        let mut z: Vec<f64> = self.order.iter().map(|&v| x[v]).collect();
        // L z' = z, then Lᵀ z'' = z'.
        for j in 0..m {
            let range = self.columns[j]..self.columns[j + 1];
            z[j] /= self.values[range.start];
            let zj = z[j];
            for at in range.start + 1..range.end {
                z[self.rows[at] as usize] -= self.values[at] * zj;
            }
            if j % BLOCK == 0 {
                control.work(BLOCK)?;
            }
        }
        for j in (0..m).rev() {
            let range = self.columns[j]..self.columns[j + 1];
            let mut zj = z[j];
            for at in range.start + 1..range.end {
                zj -= self.values[at] * z[self.rows[at] as usize];
            }
            z[j] = zj / self.values[range.start];
            if j % BLOCK == 0 {
                control.work(BLOCK)?;
            }
        }
        y[m] = 0.0;
        for (k, &v) in self.order.iter().enumerate() {
            y[v] = z[k];
        }
        project_out_constant(y);
        control.work(2 * self.values.len())
    }
}

/// An approximate-minimum-degree order of the grounded Laplacian's vertices
/// (faer's AMD), and the position of every vertex in it. `None` if AMD cannot
/// run (it refuses matrices beyond its index range or memory).
type Order = (Vec<usize>, Vec<usize>);

fn minimum_degree_order(
    laplacian: &Laplacian,
    control: &mut Control,
) -> Result<Option<Order>, Error> {
    let m = laplacian.degree.len() - 1;
    // The pattern of the lower triangle, by columns.
    let mut columns = Vec::with_capacity(m + 1);
    let mut rows: Vec<usize> = Vec::with_capacity(laplacian.targets.len() / 2 + m);
    columns.push(0);
    for v in 0..m {
        let start = rows.len();
        rows.push(v);
        for at in laplacian.offsets[v]..laplacian.offsets[v + 1] {
            let t = laplacian.targets[at] as usize;
            if t > v && t < m {
                rows.push(t);
            }
        }
        rows[start..].sort_unstable();
        let mut kept = start;
        for at in start..rows.len() {
            if at == start || rows[at] != rows[kept - 1] {
                rows[kept] = rows[at];
                kept += 1;
            }
        }
        rows.truncate(kept);
        columns.push(rows.len());
        control.work(laplacian.offsets[v + 1] - laplacian.offsets[v] + 1)?;
    }
    // Columns sorted and free of duplicates, as built above.
    let pattern = SymbolicSparseColMatRef::new_checked(m, m, &columns, None, &rows);
    let (mut order, mut position) = (vec![0usize; m], vec![0usize; m]);
    let Ok(mut scratch) = MemBuffer::try_new(amd::order_scratch::<usize>(m, rows.len())) else {
        return Ok(None);
    };
    let ordered = amd::order(
        &mut order,
        &mut position,
        pattern,
        amd::Control::default(),
        MemStack::new(&mut scratch),
    );
    control.check()?;
    Ok(ordered.is_ok().then_some((order, position)))
}

fn project_out_constant(x: &mut [f64]) {
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    x.iter_mut().for_each(|v| *v -= mean);
}

/// `a · b` with eight independent partial sums, which the compiler turns into
/// packed multiply-adds; a single running sum would wait on each addition.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    const LANES: usize = 8;
    let mut partial = [0f64; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            partial[i] += x[i] * y[i];
        }
    }
    partial.iter().sum::<f64>() + tail
}

#[derive(Clone, Copy, PartialEq)]
enum Extreme {
    Smallest,
    Largest,
}

/// A reproducible start vector in 1⊥, weighted toward light vertices: where λ₂
/// is small because a few vertices hang on by light edges, its eigenvector lives
/// on them, and starting there saves many steps. (Any start converges.)
fn start_vector(degree: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = degree
        .iter()
        .enumerate()
        .map(|(i, d)| (((i as f64 + 1.0) * 0.618_033_988_749_895).fract() - 0.5) / d)
        .collect();
    project_out_constant(&mut v);
    let norm = dot(&v, &v).sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// Thick-restart Lanczos for the smallest or largest eigenvalue of a symmetric
/// operator restricted to 1⊥, with full reorthogonalization (after the
/// recurrence's own terms, classical Gram-Schmidt against the whole basis,
/// repeated once when it cancelled most of the vector: "twice is enough").
///
/// The basis holds at most [`MAX_BASIS`] vectors plus the next one. The
/// projected matrix `t` is tridiagonal after a fresh start, and after a restart
/// is the kept Ritz values on the diagonal with an arrow of couplings to the
/// first new vector.
struct Lanczos {
    n: usize,
    which: Extreme,
    /// Room for `size + 1` vectors of `n`, stored one after another.
    basis: Vec<f64>,
    size: usize,
    /// The projected matrix, `size × size`, row-major.
    t: Vec<f64>,
    /// Vectors in the basis whose column of `t` is complete.
    done: usize,
    products: usize,
    /// `(products, relative residual, Ritz value)` at every check.
    history: Vec<(usize, f64, f64)>,
    work: Vec<f64>,
}

impl Lanczos {
    fn new(start: &[f64], which: Extreme) -> Self {
        let n = start.len();
        // On 1⊥ the Krylov space has at most n − 1 dimensions.
        let size = MAX_BASIS.min(n - 1);
        let mut basis = vec![0f64; (size + 1) * n];
        basis[..n].copy_from_slice(start);
        Lanczos {
            n,
            which,
            basis,
            size,
            t: vec![0f64; size * size],
            done: 0,
            products: 0,
            history: Vec::new(),
            work: vec![0f64; n],
        }
    }

    fn vector(&self, i: usize) -> &[f64] {
        &self.basis[i * self.n..(i + 1) * self.n]
    }

    /// Runs until the wanted Ritz value converges (`Some`), or `max_products`
    /// products are spent, or, with `patience`, as soon as the residuals' trend
    /// says convergence would take more products than that (`None` for both).
    /// May be called again to continue.
    fn run(
        &mut self,
        patience: Option<usize>,
        max_products: usize,
        mut apply: impl FnMut(&[f64], &mut [f64], &mut Control) -> Result<(), Error>,
        control: &mut Control,
    ) -> Result<Option<f64>, Error> {
        let n = self.n;
        let budget = self.products + max_products;
        loop {
            let i = self.done;
            let mut w = std::mem::take(&mut self.work);
            apply(&self.basis[i * n..(i + 1) * n], &mut w, control)?;
            self.products += 1;
            let alpha = dot(&w, self.vector(i));
            // The recurrence first (α on this vector, and its column of t: the
            // previous β, or the arrow after a restart), then the whole basis.
            for l in 0..=i {
                let coefficient = if l == i {
                    alpha
                } else {
                    self.t[l * self.size + i]
                };
                if coefficient != 0.0 {
                    let q = &self.basis[l * n..(l + 1) * n];
                    w.iter_mut().zip(q).for_each(|(x, y)| *x -= coefficient * y);
                }
            }
            let beta = self.orthogonalize(&mut w, i + 1, control)?;
            self.t[i * self.size + i] = alpha;
            self.done = i + 1;
            let full = self.done == self.size;
            // The Krylov space is exhausted (or the residual vanished): exact.
            let exhausted = beta <= f64::EPSILON * alpha.abs().max(f64::MIN_POSITIVE)
                || (self.size == n - 1 && full);
            if full || exhausted || self.done.is_multiple_of(4) {
                let (theta, vectors) = self.ritz()?;
                let wanted = self.wanted(&theta);
                let last = vectors[(self.done - 1) * self.done + wanted];
                let relative = beta * last.abs() / theta[wanted].abs().max(f64::MIN_POSITIVE);
                let settled = relative <= SETTLED_RESIDUAL
                    && self.history.last().is_some_and(|&(_, _, previous)| {
                        (theta[wanted] - previous).abs() <= 1e-13 * theta[wanted].abs()
                    });
                if relative <= RESIDUAL_TOLERANCE || settled || exhausted {
                    self.work = w;
                    return Ok(Some(theta[wanted]));
                }
                self.history.push((self.products, relative, theta[wanted]));
                if self.products >= budget || patience.is_some_and(|p| too_slow(&self.history, p)) {
                    // Keep the residual vector so that a later call continues.
                    self.store_next(&w, beta, full, &theta, &vectors, control)?;
                    self.work = w;
                    return Ok(None);
                }
                self.store_next(&w, beta, full, &theta, &vectors, control)?;
            } else {
                self.store_next(&w, beta, false, &[], &[], control)?;
            }
            self.work = w;
        }
    }

    /// Orthogonalizes `w` against 1 and the first `count` basis vectors, twice
    /// if the first pass cancelled most of it; returns its norm. (After the
    /// recurrence, what is left to remove is rounding, so one pass is the rule.)
    fn orthogonalize(
        &self,
        w: &mut [f64],
        count: usize,
        control: &mut Control,
    ) -> Result<f64, Error> {
        let mut norm = dot(w, w).sqrt();
        let mut coefficients = Vec::with_capacity(count);
        for _pass in 0..2 {
            let before = norm;
            project_out_constant(w);
            coefficients.clear();
            for q in self.basis.chunks_exact(self.n).take(count) {
                coefficients.push(dot(q, w));
            }
            for (q, &c) in self.basis.chunks_exact(self.n).zip(&coefficients) {
                w.iter_mut().zip(q).for_each(|(x, y)| *x -= c * y);
            }
            control.work(2 * count * self.n)?;
            norm = dot(w, w).sqrt();
            if norm > 0.7 * before {
                break;
            }
        }
        Ok(norm)
    }

    /// Appends `w / beta` as the next basis vector, or, when the basis is
    /// `full`, restarts: keeps the [`KEEP`] Ritz vectors nearest the wanted
    /// end, then `w / beta`, coupled to them through the arrow of `t`.
    fn store_next(
        &mut self,
        w: &[f64],
        beta: f64,
        full: bool,
        theta: &[f64],
        vectors: &[f64],
        control: &mut Control,
    ) -> Result<(), Error> {
        let (n, size) = (self.n, self.size);
        if !full {
            let i = self.done;
            self.basis[i * n..(i + 1) * n]
                .iter_mut()
                .zip(w)
                .for_each(|(q, &x)| *q = x / beta);
            self.t[(i - 1) * size + i] = beta;
            self.t[i * size + i - 1] = beta;
            return Ok(());
        }
        let mut order: Vec<usize> = (0..size).collect();
        order.sort_by(|&a, &b| match self.which {
            Extreme::Smallest => theta[a].total_cmp(&theta[b]),
            Extreme::Largest => theta[b].total_cmp(&theta[a]),
        });
        let keep = KEEP.min(size - 1);
        let kept = &order[..keep];
        // basis[.., l] = Σ_j basis[.., j] · vectors[j][kept[l]], a block of rows at a time.
        let mut rows = vec![0f64; keep * BLOCK];
        for first in (0..n).step_by(BLOCK) {
            let len = BLOCK.min(n - first);
            rows[..keep * len].iter_mut().for_each(|x| *x = 0.0);
            for j in 0..size {
                let q = &self.basis[j * n + first..j * n + first + len];
                for (l, &col) in kept.iter().enumerate() {
                    let y = vectors[j * size + col];
                    rows[l * len..(l + 1) * len]
                        .iter_mut()
                        .zip(q)
                        .for_each(|(r, &x)| *r += y * x);
                }
            }
            for l in 0..keep {
                self.basis[l * n + first..l * n + first + len]
                    .copy_from_slice(&rows[l * len..(l + 1) * len]);
            }
            control.work(size * keep * len / 4 + len)?;
        }
        self.basis[keep * n..(keep + 1) * n]
            .iter_mut()
            .zip(w)
            .for_each(|(q, &x)| *q = x / beta);
        self.t.iter_mut().for_each(|x| *x = 0.0);
        for (l, &col) in kept.iter().enumerate() {
            self.t[l * size + l] = theta[col];
            let coupling = beta * vectors[(size - 1) * size + col];
            self.t[l * size + keep] = coupling;
            self.t[keep * size + l] = coupling;
        }
        self.done = keep;
        Ok(())
    }

    /// Eigenvalues and eigenvectors (row-major, `done × done`) of the leading
    /// `done × done` block of `t`.
    fn ritz(&self) -> Result<(Vec<f64>, Vec<f64>), Error> {
        let k = self.done;
        let block = Mat::<f64>::from_fn(k, k, |i, j| self.t[i * self.size + j]);
        let eigen = block
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| Error::Spectral(format!("the projected eigenproblem failed: {e:?}")))?;
        let theta = (0..k).map(|i| eigen.S()[i]).collect();
        let vectors = (0..k * k).map(|at| eigen.U()[(at / k, at % k)]).collect();
        Ok((theta, vectors))
    }

    fn wanted(&self, theta: &[f64]) -> usize {
        (0..theta.len())
            .reduce(|a, b| {
                let better = match self.which {
                    Extreme::Smallest => theta[b] < theta[a],
                    Extreme::Largest => theta[b] > theta[a],
                };
                if better {
                    b
                } else {
                    a
                }
            })
            .unwrap_or(0)
    }
}

/// Whether the residuals of the last checks, extrapolated at their rate, stay
/// above the tolerance beyond `patience` products. Lanczos speeds up as it
/// goes, so the extrapolation errs toward patience.
fn too_slow(history: &[(usize, f64, f64)], patience: usize) -> bool {
    let [.., (early_step, early, _), _, _, (step, now, _)] = history else {
        return false;
    };
    if *step < 64 || step == early_step {
        return false;
    }
    let rate = (now / early).powf(1.0 / (step - early_step) as f64);
    rate >= 1.0 || *step as f64 + (RESIDUAL_TOLERANCE / now).ln() / rate.ln() > patience as f64
}

#[cfg(test)]
mod tests;
