//! IVF lists, as each sample sees them: the stored lists (read again only
//! after a new training) and a bounded drift sample of the vectors.
//!
//! The drift sample reads at most [`DRIFT_ROWS`] vectors from a few local
//! partitions as the table's owner, skipping any partition it cannot lock at
//! once, so a sample never waits behind a DBA's lock. (Training is
//! `ruvector_ivf_train`: `api::ivf`.)

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::pg_sys;
use ruvector_integrity::kmeans;
use ruvector_integrity::sources::ivf::{DriftSample, Ivf};
use ruvector_integrity::sources::partitions::Partition;

use crate::errors::{SqlError, SqlResult};
use crate::store::collections::Collection;
use crate::store::ivf::{Sampling, Trained};
use crate::{catalog, installation, store, xact};

/// Vectors in a drift sample, and the partitions it reads them from.
pub const DRIFT_ROWS: usize = 256;
const DRIFT_PARTITIONS: usize = 4;
/// Partitions up to this many rows are sampled by row, larger ones by page.
const ROW_SAMPLING_UP_TO: i64 = 50_000;

/// A collection's stored lists and their centroids, one after another.
type Lists = (Rc<Trained>, Rc<Vec<f32>>);

thread_local! {
    /// The lists as last read, per collection, with the `trained_at` they
    /// belong to: they only change when trained again.
    static TRAINED: RefCell<HashMap<i32, (String, Lists)>> = RefCell::new(HashMap::new());
}

/// The stored lists of `collection` and their centroids, read again only
/// after a new training.
fn trained(collection: &Collection) -> SqlResult<Option<Lists>> {
    let Some(trained_at) = store::ivf::trained_at(collection.id)? else {
        TRAINED.with(|t| t.borrow_mut().remove(&collection.id));
        return Ok(None);
    };
    if let Some((at, known)) = TRAINED.with(|t| t.borrow().get(&collection.id).cloned()) {
        if at == trained_at {
            return Ok(Some(known));
        }
    }
    let lists = Rc::new(store::ivf::lists(collection.id)?);
    let dim = lists.dimensions as usize;
    let mut centroids = Vec::with_capacity(lists.lists.len() * dim);
    store::ivf::centroids(collection.id, |values| {
        let centroid = values
            .and_then(|v| kmeans::usable(v, dim, false))
            .ok_or_else(|| SqlError::internal("a stored centroid is not a vector"))?;
        centroids.extend(centroid);
        Ok(())
    })?;
    let known = (lists, Rc::new(centroids));
    TRAINED.with(|t| {
        t.borrow_mut()
            .insert(collection.id, (trained_at, known.clone()))
    });
    Ok(Some(known))
}

/// The trained lists of `collection`, with a drift sample; `None` when
/// `ruvector_ivf_train` never ran for it.
pub fn read(collection: &Collection, partitions: &[Partition]) -> SqlResult<Option<Ivf>> {
    let Some((trained, centroids)) = trained(collection)? else {
        return Ok(None);
    };
    // Rows now: the statistics' live rows of local partitions; foreign ones
    // have no local statistics, so they count as trained.
    let foreign: Vec<i64> = partitions
        .iter()
        .filter(|p| p.server.is_some())
        .map(|p| p.relid)
        .collect();
    let live_rows = partitions.iter().map(|p| p.live).sum::<i64>()
        + trained
            .lists
            .iter()
            .flat_map(|l| &l.partition_counts)
            .filter(|(relid, _)| foreign.contains(relid))
            .map(|(_, n)| n)
            .sum::<i64>();
    let sample = drift_sample(
        collection,
        partitions,
        trained.dimensions as usize,
        &centroids,
    )?;
    Ok(Some(Ivf {
        live_rows,
        lists: trained.lists.clone(),
        trained_rows: trained.trained_rows,
        trained_mean_distance: trained.mean_distance,
        sample,
    }))
}

/// A uniform roll in [0, 1) from the backend's PRNG.
fn random() -> f64 {
    // SAFETY: the backend's own PRNG state, used by this process only.
    unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) }
}

/// Up to [`DRIFT_PARTITIONS`] local partitions, drawn by their live rows.
fn choose(partitions: &[Partition]) -> Vec<&Partition> {
    // (A partition the statistics say is empty has nothing to sample.)
    let mut local: Vec<&Partition> = partitions
        .iter()
        .filter(|p| p.server.is_none() && p.live > 0)
        .collect();
    let mut chosen = Vec::new();
    while chosen.len() < DRIFT_PARTITIONS && !local.is_empty() {
        let total: f64 = local.iter().map(|p| p.live as f64).sum();
        let mut target = random() * total;
        let pick = local
            .iter()
            .position(|p| {
                target -= p.live as f64;
                target < 0.0
            })
            .unwrap_or(local.len() - 1);
        chosen.push(local.swap_remove(pick));
    }
    chosen
}

/// Whether this transaction could lock `relid` for reading without waiting.
fn lock_now(relid: pg_sys::Oid) -> bool {
    // SAFETY: a lock request that never waits; the lock is released with the
    // (sub)transaction that took it.
    unsafe {
        pg_sys::ConditionalLockRelationOid(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE)
    }
}

/// Up to [`DRIFT_ROWS`] vectors from the chosen partitions, assigned to the
/// trained centroids.
fn drift_sample(
    collection: &Collection,
    partitions: &[Partition],
    dim: usize,
    centroids: &[f32],
) -> SqlResult<Option<DriftSample>> {
    let Some(owner) = collection.owner else {
        return Ok(None);
    };
    let chosen = choose(partitions);
    if centroids.is_empty() || chosen.is_empty() {
        return Ok(None);
    }
    let quota = DRIFT_ROWS.div_ceil(chosen.len()) as i64;
    let cosine = collection.distance_metric == "cosine";
    // In a subtransaction rolled back once the numbers are out: the locks it
    // took on the partitions go with it, so a caller's open transaction (an
    // idle ruvector_integrity_simulate) holds none.
    let (rows, total) = xact::released(|| {
        // Never wait for a lock: a partition someone holds is left out this
        // time. Once locked, a partition keeps the name it has now. About
        // `quota` rows each: row sampling where reading every page is cheap,
        // page sampling beyond.
        let named: Vec<(String, Sampling, f64)> = chosen
            .iter()
            .map(|p| (p, pg_sys::Oid::from(p.relid as u32)))
            .filter(|&(_, relid)| lock_now(relid))
            .filter_map(|(p, relid)| {
                let sampling = if p.live <= ROW_SAMPLING_UP_TO {
                    Sampling::Rows
                } else {
                    Sampling::Pages
                };
                let percent = (100.0 * quota as f64 / p.live as f64).clamp(0.0001, 100.0);
                Some((catalog::qualified_name(relid)?, sampling, percent))
            })
            .collect();
        let (mut rows, mut total) = (0i64, 0f64);
        installation::reading_for_itself(|| {
            installation::as_role(owner, || {
                store::ivf::drift_vectors(&named, &collection.column, 2 * quota, |values| {
                    if let Some(x) = values.and_then(|v| kmeans::usable(v, dim, cosine)) {
                        rows += 1;
                        total += kmeans::nearest(centroids, dim, &x).1.sqrt() as f64;
                    }
                })
            })
        })?;
        Ok((rows, total))
    })?;
    Ok((rows > 0).then(|| DriftSample {
        rows,
        mean_distance: total / rows as f64,
    }))
}
