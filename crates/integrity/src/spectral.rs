//! λ₂, the algebraic connectivity: the second-smallest eigenvalue of the weighted
//! Laplacian `L = D − W`. It is 0 exactly when the graph is disconnected and grows
//! with how well-knit the graph is, so it complements the minimum cut (which sees
//! the single weakest cut) with a global measure.
//!
//! This module owns the eigensolvers and nothing else.
//!
//! - Connectivity is decided combinatorially: a disconnected graph returns
//!   exactly 0 rather than an eigensolver's 1e-13.
//! - Up to [`DENSE_MAX`] vertices: a dense symmetric eigensolver.
//! - Beyond that, Lanczos with full reorthogonalization on 1⊥ (the constant
//!   vector, L's null space, is projected out), on one of two operators:
//!   - shift-invert, `L⁺`, applied through a sparse Cholesky factor of the
//!     grounded Laplacian (one vertex removed). λ₂ is `1/μ` for the largest
//!     eigenvalue μ of `L⁺`, which is far from the rest of `L⁺`'s spectrum even
//!     when λ₂ is tiny next to `λ_max` (grids, paths, long rings), where plain
//!     Lanczos needs hundreds of steps. Used when the factor stays sparse.
//!   - `L` itself, for graphs whose factor would fill in (expanders, random
//!     graphs); there λ₂ is well separated and plain Lanczos converges quickly.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::sparse::linalg::cholesky::{
    factorize_symbolic_cholesky, SymbolicCholesky, SymmetricOrdering,
};
use faer::sparse::{SparseColMat, Triplet};
use faer::{Conj, Mat, MatMut, Par, Side};

use crate::mincut::validate_edges;
use crate::union_find::UnionFind;
use crate::Error;

/// Up to this many vertices the dense solver is both exact and fast (< 5 ms).
pub const DENSE_MAX: usize = 256;

/// Shift-invert is used while the Cholesky factor has at most this many entries
/// per entry of the Laplacian: 2-D meshes stay near 10, random graphs go far
/// past it (their factor is nearly dense).
const MAX_FILL_RATIO: usize = 40;

/// Plain Lanczos on `L` gives way to shift-invert when, extrapolating its
/// residuals, it would need more steps than this: λ₂ is then tiny next to
/// `λ_max` (grids, paths, long rings) and `L⁺` separates it far better.
const PATIENCE: usize = 300;

/// Ritz values are accepted when the residual `‖A y − θ y‖` is below this share
/// of θ. The eigenvalue error is then about the square of that (≪ 1e-8 relative).
const RESIDUAL_TOLERANCE: f64 = 1e-10;

/// ...or when the residual is below this share and θ moved by less than 1e-13 of
/// itself over the last four steps.
const SETTLED_RESIDUAL: f64 = 1e-6;

/// λ₂ of the graph on vertices `0..n`. Parallel edges add up, self-loops are
/// ignored, and graphs with fewer than two vertices have λ₂ = 0.
pub fn lambda2(n: usize, edges: &[(u32, u32, f64)]) -> Result<f64, Error> {
    validate_edges(n, edges)?;
    let edges: Vec<(u32, u32, f64)> = edges
        .iter()
        .copied()
        .filter(|&(u, v, w)| w > 0.0 && u != v)
        .collect();
    if n < 2 {
        return Ok(0.0);
    }
    let mut components = UnionFind::new(n);
    for &(u, v, _) in &edges {
        components.union(u, v);
    }
    if components.sets() > 1 {
        return Ok(0.0);
    }
    if n <= DENSE_MAX {
        return Ok(dense_lambda2(n, &edges));
    }
    let laplacian = Laplacian::new(n, &edges);
    let start = start_vector(&laplacian.degree);
    let plain = |patience| {
        lanczos(&start, Extreme::Smallest, patience, |x, y| {
            laplacian.apply(x, y)
        })
    };
    let value = match plain(Some(PATIENCE))? {
        Some(value) => value,
        None => match GroundedFactor::new(&laplacian) {
            Some(factor) => {
                let mu = lanczos(&start, Extreme::Largest, None, |x, y| {
                    factor.pseudo_inverse(x, y)
                })?;
                1.0 / mu.expect("without patience Lanczos runs to the end")
            }
            None => plain(None)?.expect("without patience Lanczos runs to the end"),
        },
    };
    Ok(value.max(0.0))
}

/// λ₂ from all eigenvalues of the dense Laplacian.
pub fn dense_lambda2(n: usize, edges: &[(u32, u32, f64)]) -> f64 {
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
        .expect("the symmetric eigensolver converges on a finite matrix");
    eigenvalues.get(1).copied().unwrap_or(0.0).max(0.0)
}

/// The Laplacian in compressed rows (parallel entries left unmerged).
struct Laplacian {
    offsets: Vec<usize>,
    targets: Vec<u32>,
    weights: Vec<f64>,
    degree: Vec<f64>,
}

impl Laplacian {
    fn new(n: usize, edges: &[(u32, u32, f64)]) -> Self {
        let mut offsets = vec![0usize; n + 1];
        let mut degree = vec![0f64; n];
        for &(u, v, w) in edges {
            offsets[u as usize + 1] += 1;
            offsets[v as usize + 1] += 1;
            degree[u as usize] += w;
            degree[v as usize] += w;
        }
        for v in 0..n {
            offsets[v + 1] += offsets[v];
        }
        let mut cursor = offsets.clone();
        let mut targets = vec![0u32; offsets[n]];
        let mut weights = vec![0f64; offsets[n]];
        for &(u, v, w) in edges {
            for (a, b) in [(u, v), (v, u)] {
                let at = cursor[a as usize];
                targets[at] = b;
                weights[at] = w;
                cursor[a as usize] += 1;
            }
        }
        Laplacian {
            offsets,
            targets,
            weights,
            degree,
        }
    }

    /// `y = L x`.
    fn apply(&self, x: &[f64], y: &mut [f64]) {
        for (v, out) in y.iter_mut().enumerate() {
            let range = self.offsets[v]..self.offsets[v + 1];
            let neighbours: f64 = self.targets[range.clone()]
                .iter()
                .zip(&self.weights[range])
                .map(|(&t, &w)| w * x[t as usize])
                .sum();
            *out = self.degree[v] * x[v] - neighbours;
        }
    }
}

/// A Cholesky factor of the Laplacian with its last vertex removed (grounded),
/// which is positive definite on a connected graph.
struct GroundedFactor {
    symbolic: SymbolicCholesky<usize>,
    values: Vec<f64>,
}

impl GroundedFactor {
    /// `None` when the factor would fill in beyond [`MAX_FILL_RATIO`].
    fn new(laplacian: &Laplacian) -> Option<Self> {
        let m = laplacian.degree.len() - 1;
        let mut triplets = Vec::with_capacity(m + laplacian.targets.len() / 2);
        for v in 0..m {
            triplets.push(Triplet::new(v, v, laplacian.degree[v]));
            for at in laplacian.offsets[v]..laplacian.offsets[v + 1] {
                let t = laplacian.targets[at] as usize;
                if t > v && t < m {
                    triplets.push(Triplet::new(t, v, -laplacian.weights[at]));
                }
            }
        }
        let matrix = SparseColMat::<usize, f64>::try_new_from_triplets(m, m, &triplets).ok()?;
        let symbolic = factorize_symbolic_cholesky(
            matrix.symbolic(),
            Side::Lower,
            SymmetricOrdering::Amd,
            Default::default(),
        )
        .ok()?;
        if symbolic.len_val() > MAX_FILL_RATIO * triplets.len() {
            return None;
        }
        let mut values = vec![0f64; symbolic.len_val()];
        let mut scratch = MemBuffer::new(
            symbolic.factorize_numeric_llt_scratch::<f64>(Par::Seq, Default::default()),
        );
        symbolic
            .factorize_numeric_llt(
                &mut values,
                matrix.as_ref(),
                Side::Lower,
                Default::default(),
                Par::Seq,
                MemStack::new(&mut scratch),
                Default::default(),
            )
            .ok()?;
        Some(GroundedFactor { symbolic, values })
    }

    /// `y = L⁺ x` for `x ⊥ 1`: solve the grounded system, put 0 at the grounded
    /// vertex, and project onto 1⊥.
    fn pseudo_inverse(&self, x: &[f64], y: &mut [f64]) {
        let m = y.len() - 1;
        y.copy_from_slice(x);
        y[m] = 0.0;
        let factor = faer::sparse::linalg::cholesky::LltRef::new(&self.symbolic, &self.values);
        let mut scratch = MemBuffer::new(self.symbolic.solve_in_place_scratch::<f64>(1, Par::Seq));
        factor.solve_in_place_with_conj(
            Conj::No,
            MatMut::from_column_major_slice_mut(&mut y[..m], m, 1),
            Par::Seq,
            MemStack::new(&mut scratch),
        );
        project_out_constant(y);
    }
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

/// The smallest or largest eigenvalue of a symmetric operator restricted to 1⊥,
/// by Lanczos from `start` with full reorthogonalization: classical Gram-Schmidt
/// against the whole basis (two passes over it, stored contiguously), repeated
/// once when it cancelled most of the vector ("twice is enough").
///
/// With `patience`, returns `Ok(None)` as soon as the residuals' trend says
/// convergence would take more than that many steps.
fn lanczos(
    start: &[f64],
    which: Extreme,
    patience: Option<usize>,
    mut apply: impl FnMut(&[f64], &mut [f64]),
) -> Result<Option<f64>, Error> {
    let n = start.len();
    let max_steps = (n - 1).min(1_000);
    let mut w = start.to_vec();
    let mut basis: Vec<f64> = w.clone();
    let (mut alpha, mut beta) = (Vec::new(), Vec::new());
    let mut coefficients = Vec::with_capacity(max_steps);
    // (step, relative residual, Ritz value) at every check.
    let mut history: Vec<(usize, f64, f64)> = Vec::new();
    for step in 0..max_steps {
        apply(&basis[step * n..(step + 1) * n], &mut w);
        alpha.push(dot(&w, &basis[step * n..(step + 1) * n]));
        let mut b = dot(&w, &w).sqrt();
        for _pass in 0..2 {
            let before = b;
            project_out_constant(&mut w);
            coefficients.clear();
            coefficients.extend(basis.chunks_exact(n).map(|q| dot(q, &w)));
            for (q, &c) in basis.chunks_exact(n).zip(&coefficients) {
                w.iter_mut().zip(q).for_each(|(x, y)| *x -= c * y);
            }
            b = dot(&w, &w).sqrt();
            if b > 0.7 * before {
                break;
            }
        }
        let last_step = step + 1 == max_steps;
        if last_step || step % 4 == 3 || b == 0.0 {
            let (theta, last) = extreme_ritz(&alpha, &beta, which)?;
            let relative = b * last.abs() / theta.abs();
            // A Ritz value's error shrinks with the square of its residual, so once the
            // residual is small, a value that stopped moving has converged.
            let settled = relative <= SETTLED_RESIDUAL
                && history.last().is_some_and(|&(_, _, previous)| {
                    (theta - previous).abs() <= 1e-13 * theta.abs()
                });
            if relative <= RESIDUAL_TOLERANCE || settled || b <= f64::EPSILON * theta.abs() {
                return Ok(Some(theta));
            }
            if last_step {
                // Below n − 1 steps the Krylov space is not exhausted: say so.
                return if max_steps == n - 1 {
                    Ok(Some(theta))
                } else {
                    Err(Error::Spectral(format!(
                        "{max_steps} Lanczos steps left a relative residual of {relative:e} at θ = {theta:e}"
                    )))
                };
            }
            history.push((step, relative, theta));
            if let Some(patience) = patience {
                if too_slow(&history, patience) {
                    return Ok(None);
                }
            }
        }
        beta.push(b);
        basis.extend(w.iter().map(|x| x / b));
    }
    unreachable!("the loop returns at its last step")
}

/// Whether the residuals of the last 12 steps, extrapolated at their rate, stay
/// above the tolerance beyond `patience` steps. Lanczos speeds up as it goes, so
/// the extrapolation errs toward patience.
fn too_slow(history: &[(usize, f64, f64)], patience: usize) -> bool {
    let [.., (early_step, early, _), _, _, (step, now, _)] = history else {
        return false;
    };
    if *step < 64 {
        return false;
    }
    let rate = (now / early).powf(1.0 / (step - early_step) as f64);
    rate >= 1.0 || *step as f64 + (RESIDUAL_TOLERANCE / now).ln() / rate.ln() > patience as f64
}

/// The extreme eigenvalue of the tridiagonal matrix (diagonal `alpha`,
/// off-diagonal `beta`) and the last component of its unit eigenvector.
fn extreme_ritz(alpha: &[f64], beta: &[f64], which: Extreme) -> Result<(f64, f64), Error> {
    let k = alpha.len();
    let mut d = alpha.to_vec();
    let mut e: Vec<f64> = beta[..k - 1].to_vec();
    e.push(0.0);
    // The last row of the accumulated rotations: last components of eigenvectors.
    let mut z = vec![0f64; k];
    z[k - 1] = 1.0;
    tridiagonal_ql(&mut d, &mut e, &mut z)?;
    let best = (0..k)
        .reduce(|a, b| {
            let better = match which {
                Extreme::Smallest => d[b] < d[a],
                Extreme::Largest => d[b] > d[a],
            };
            if better {
                b
            } else {
                a
            }
        })
        .expect("at least one Lanczos step");
    Ok((d[best], z[best]))
}

/// Eigenvalues of a symmetric tridiagonal matrix by the implicit QL method
/// with Wilkinson shifts. `d` is the diagonal and becomes the eigenvalues, `e`
/// the sub-diagonal (`e[k-1]` unused), and `z` a row vector the rotations are
/// applied to.
fn tridiagonal_ql(d: &mut [f64], e: &mut [f64], z: &mut [f64]) -> Result<(), Error> {
    let n = d.len();
    for l in 0..n {
        let mut iterations = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let scale = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * scale {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iterations += 1;
            if iterations > 60 {
                return Err(Error::Spectral(
                    "the tridiagonal QL iteration did not converge".into(),
                ));
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut underflow = false;
            for i in (l..m).rev() {
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    underflow = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                let zf = z[i + 1];
                z[i + 1] = s * z[i] + c * zf;
                z[i] = c * z[i] - s * zf;
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
