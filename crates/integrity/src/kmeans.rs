//! k-means for IVF lists: k-means++ seeding, then Lloyd iterations, on rows of
//! `dim` `f32`s stored one after another. Distances are Euclidean.
//!
//! The caller passes a `step` callback, called after seeding, after each
//! iteration and every few thousand distance rows in between: it reports
//! progress and may stop the work by returning an error (the extension checks
//! for a cancelled query there).

use crate::rng::Rng;
use crate::Error;

/// Where training is, for the `step` callback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Still working (called every few thousand rows' distances).
    Working,
    Seeded,
    /// Lloyd iteration `iteration` (from 1) moved `changed` rows to another list.
    Iterated {
        iteration: usize,
        changed: usize,
    },
}

/// Squared Euclidean distance, in eight lanes so that it vectorises.
pub fn distance2(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            lanes[i] += d * d;
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += (x - y) * (x - y);
    }
    sum
}

/// The nearest of `centroids` to `x`, and the squared distance to it.
pub fn nearest(centroids: &[f32], dim: usize, x: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::INFINITY);
    for (i, c) in centroids.chunks_exact(dim).enumerate() {
        let d = distance2(c, x);
        if d < best.1 {
            best = (i, d);
        }
    }
    best
}

/// Scales `x` to unit length (for cosine distance); a zero vector stays zero.
pub fn normalize(x: &mut [f32]) {
    let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        x.iter_mut().for_each(|v| *v /= norm);
    }
}

/// A stored vector as training and sampling use it: `dim` values, all
/// finite, scaled to unit length for cosine distance; `None` for anything
/// else (a row of another length, a NaN or an infinity is skipped).
pub fn usable(mut values: Vec<f32>, dim: usize, cosine: bool) -> Option<Vec<f32>> {
    if values.len() != dim || !values.iter().all(|v| v.is_finite()) {
        return None;
    }
    if cosine {
        normalize(&mut values);
    }
    Some(values)
}

/// Trains `k` centroids on `rows` (each `dim` finite values) with at most
/// `iterations` Lloyd iterations; stops early when no row changes list.
pub fn train(
    rows: &[f32],
    dim: usize,
    k: usize,
    iterations: usize,
    seed: u64,
    step: &mut dyn FnMut(Step) -> Result<(), Error>,
) -> Result<Vec<f32>, Error> {
    if dim == 0 || !rows.len().is_multiple_of(dim) {
        return Err(Error::Source(format!(
            "{} values are not rows of {dim}",
            rows.len()
        )));
    }
    let n = rows.len() / dim;
    if k == 0 || k > n {
        return Err(Error::Source(format!(
            "cannot make {k} lists from {n} vectors"
        )));
    }
    if let Some(bad) = rows.iter().position(|v| !v.is_finite()) {
        return Err(Error::Source(format!(
            "vector {} has a non-finite value",
            bad / dim
        )));
    }
    let row = |i: usize| &rows[i * dim..(i + 1) * dim];
    let mut rng = Rng(seed);

    // k-means++: each next seed is drawn with probability ∝ squared distance
    // to the nearest seed so far.
    let mut centroids = Vec::with_capacity(k * dim);
    centroids.extend_from_slice(row(rng.below(n as u64) as usize));
    let mut d2: Vec<f32> = (0..n).map(|i| distance2(row(i), &centroids)).collect();
    let mut assignment = vec![0usize; n];
    for c in 1..k {
        if c % 16 == 0 {
            step(Step::Working)?;
        }
        let total: f64 = d2.iter().map(|&d| d as f64).sum();
        let chosen = if total > 0.0 {
            let mut target = rng.unit() * total;
            let mut chosen = n - 1;
            for (i, &d) in d2.iter().enumerate() {
                target -= d as f64;
                if target < 0.0 {
                    chosen = i;
                    break;
                }
            }
            chosen
        } else {
            // Every row sits on a seed already (duplicates): any row will do.
            rng.below(n as u64) as usize
        };
        centroids.extend_from_slice(row(chosen));
        let seed = &centroids[c * dim..];
        for i in 0..n {
            let d = distance2(row(i), seed);
            if d < d2[i] {
                d2[i] = d;
                assignment[i] = c;
            }
        }
    }
    step(Step::Seeded)?;

    let mut sums = vec![0f64; k * dim];
    let mut counts = vec![0usize; k];
    for iteration in 1..=iterations {
        sums.iter_mut().for_each(|s| *s = 0.0);
        counts.iter_mut().for_each(|c| *c = 0);
        for (i, &list) in assignment.iter().enumerate() {
            counts[list] += 1;
            for (s, &v) in sums[list * dim..(list + 1) * dim].iter_mut().zip(row(i)) {
                *s += v as f64;
            }
        }
        for list in 0..k {
            let target = &mut centroids[list * dim..(list + 1) * dim];
            if counts[list] > 0 {
                let count = counts[list] as f64;
                for (c, s) in target.iter_mut().zip(&sums[list * dim..]) {
                    *c = (s / count) as f32;
                }
            } else {
                // An empty list takes the row farthest from its own centroid.
                let far = (0..n).max_by(|&a, &b| d2[a].total_cmp(&d2[b])).unwrap_or(0);
                target.copy_from_slice(row(far));
                d2[far] = 0.0;
            }
        }
        let mut changed = 0;
        for i in 0..n {
            if i % 4096 == 4095 {
                step(Step::Working)?;
            }
            let (list, d) = nearest(&centroids, dim, row(i));
            if list != assignment[i] {
                assignment[i] = list;
                changed += 1;
            }
            d2[i] = d;
        }
        step(Step::Iterated { iteration, changed })?;
        if changed == 0 {
            break;
        }
    }
    Ok(centroids)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_vectors_of_the_right_length_and_finite_values_are_usable() {
        assert_eq!(
            super::usable(vec![3.0, 4.0], 2, false),
            Some(vec![3.0, 4.0])
        );
        assert_eq!(super::usable(vec![3.0, 4.0], 2, true), Some(vec![0.6, 0.8]));
        assert_eq!(super::usable(vec![0.0, 0.0], 2, true), Some(vec![0.0, 0.0]));
        assert_eq!(super::usable(vec![1.0], 2, false), None);
        assert_eq!(super::usable(vec![1.0, 2.0, 3.0], 2, false), None);
        assert_eq!(super::usable(vec![1.0, f32::NAN], 2, false), None);
        assert_eq!(super::usable(vec![f32::INFINITY, 1.0], 2, true), None);
    }

    use super::*;

    fn blobs(centres: &[[f32; 2]], per: usize, spread: f32, seed: u64) -> Vec<f32> {
        let mut rng = Rng(seed);
        let mut rows = Vec::new();
        for c in centres {
            for _ in 0..per {
                rows.push(c[0] + spread * (rng.unit() as f32 - 0.5));
                rows.push(c[1] + spread * (rng.unit() as f32 - 0.5));
            }
        }
        rows
    }

    fn no_step(_: Step) -> Result<(), Error> {
        Ok(())
    }

    #[test]
    fn finds_separated_blobs() {
        let centres = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]];
        let rows = blobs(&centres, 50, 1.0, 7);
        let found = train(&rows, 2, 4, 20, 1, &mut no_step).unwrap();
        for c in centres {
            let (_, d) = nearest(&found, 2, &c);
            assert!(d < 0.1, "no centroid near {c:?}: {found:?}");
        }
    }

    #[test]
    fn distance_matches_the_definition_on_odd_lengths() {
        for dim in [1, 7, 8, 9, 130] {
            let a: Vec<f32> = (0..dim).map(|i| i as f32 * 0.5).collect();
            let b: Vec<f32> = (0..dim).map(|i| (i * i) as f32 * 0.01).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            assert!((distance2(&a, &b) - plain).abs() <= plain * 1e-5);
        }
    }

    #[test]
    fn duplicates_ties_and_extremes_do_not_break_it() {
        // Every row identical: all lists share the point, nothing diverges.
        let rows = vec![1.0f32; 2 * 64];
        let found = train(&rows, 2, 8, 5, 3, &mut no_step).unwrap();
        assert!(found.iter().all(|&v| v == 1.0));
        // Huge and tiny magnitudes stay finite.
        let rows: Vec<f32> = (0..200)
            .map(|i| if i % 2 == 0 { 1e18 } else { 1e-30 } * (i % 7) as f32)
            .collect();
        let found = train(&rows, 2, 5, 5, 3, &mut no_step).unwrap();
        assert!(found.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn bad_input_is_refused_and_cancel_stops() {
        assert!(train(&[1.0, 2.0, 3.0], 2, 1, 5, 0, &mut no_step).is_err());
        assert!(train(&[1.0, f32::NAN], 1, 1, 5, 0, &mut no_step).is_err());
        assert!(train(&[1.0, 2.0], 1, 3, 5, 0, &mut no_step).is_err());
        let rows = blobs(&[[0.0, 0.0], [5.0, 5.0]], 20, 1.0, 1);
        let mut iterations = 0;
        let stopped = train(&rows, 2, 2, 10, 0, &mut |s| {
            if let Step::Iterated { .. } = s {
                iterations += 1;
                return Err(Error::Source("cancelled".into()));
            }
            Ok(())
        });
        assert_eq!(stopped, Err(Error::Source("cancelled".into())));
        assert_eq!(iterations, 1);
    }

    #[test]
    fn same_seed_same_centroids() {
        let rows = blobs(&[[0.0, 0.0], [3.0, 1.0], [1.0, 4.0]], 40, 2.0, 9);
        let a = train(&rows, 2, 3, 10, 42, &mut no_step).unwrap();
        let b = train(&rows, 2, 3, 10, 42, &mut no_step).unwrap();
        assert_eq!(a, b);
    }
}
