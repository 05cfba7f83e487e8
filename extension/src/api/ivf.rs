//! `ruvector_ivf_train(collection, lists)`: trains IVF lists with the core's
//! k-means and stores them; each sample then reads them back with a bounded
//! drift sample (`graph_builder`).
//!
//! Training reads the vectors as the caller (it is their table), twice: a
//! random sample of at most [`MAX_SAMPLE`] rows for k-means, then every row
//! to count each list's vectors per partition and its mean distance.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::Instant;

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::gate::Operation;
use ruvector_integrity::kmeans::{self, Step};
use ruvector_integrity::Error;
use serde_json::json;

use super::collections::require_owner;
use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::gate::target_named;
use crate::store::ivf::{NewList, Training};
use crate::{catalog, hooks, installation, shmem, store};

/// The most lists a collection may have (the graph holds one node per list).
pub const MAX_LISTS: i32 = 1000;
/// Rows k-means trains on per list, and the bounds of the training sample.
const SAMPLE_PER_LIST: i64 = 20;
const MIN_SAMPLE: i64 = 1000;
pub const MAX_SAMPLE: i64 = 50_000;
/// Lloyd iterations at most.
const ITERATIONS: usize = 10;

#[pg_extern(schema = "ruvector", name = "_ivf_train")]
fn ivf_train(collection: &str, lists: i32) -> JsonB {
    train(collection, lists).or_raise()
}

/// Trains `lists` IVF lists for `name` and stores them.
fn train(name: &str, lists: i32) -> SqlResult<JsonB> {
    let started = Instant::now();
    let collection = store::collections::find(name)?;
    require_owner(&collection, "train IVF lists of")?;
    if !(1..=MAX_LISTS).contains(&lists) {
        return Err(SqlError::invalid(format!(
            "lists must be between 1 and {MAX_LISTS}, got {lists}"
        ))
        .hint("A list per √rows is a common start: 316 lists for 100,000 vectors."));
    }
    // Retraining moves every centroid: the gate decides, as for any
    // centroid_update.
    hooks::gate_operation(&target_named(name)?, Operation::CentroidUpdate)?;
    let dim = collection.dimensions as usize;
    let cosine = collection.distance_metric == "cosine";
    // By OID, locked first: the names a collection was stored under go stale
    // on a rename, and whatever has a stale name now could be someone else's
    // (run as the caller, it would run with their rights); locked, the table
    // keeps its current name while training reads it.
    catalog::lock(
        collection.relid,
        pg_sys::AccessShareLock as pg_sys::LOCKMODE,
    );
    let table = catalog::qualified_name(collection.relid).ok_or_else(|| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("the table of collection \"{name}\" no longer exists"),
        )
    })?;
    // Read as the table's owner (a type's cast to real[] runs with the
    // owner's rights, even when a superuser trains), and no search.
    let owner = catalog::owner(collection.relid);
    let as_owner = |read: &mut dyn FnMut() -> SqlResult<()>| {
        installation::reading_for_itself(|| installation::as_role(owner, read))
    };

    let sample_size = (SAMPLE_PER_LIST * lists as i64).clamp(MIN_SAMPLE, MAX_SAMPLE);
    let mut sample = Vec::with_capacity(sample_size as usize * dim);
    as_owner(&mut || {
        store::ivf::random_vectors(&table, &collection.column, sample_size, |values| {
            if let Some(x) = values.and_then(|v| kmeans::usable(v, dim, cosine)) {
                sample.extend(x);
            }
        })
    })?;
    let sampled = sample.len() / dim.max(1);
    if sampled < lists as usize {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("collection \"{name}\" has {sampled} usable vectors, fewer than the {lists} lists asked for"),
        )
        .hint("Train fewer lists, or train once the collection holds data. Vectors must have the collection's dimensions and finite values."));
    }
    notice!("ruvector: training {lists} IVF lists of \"{name}\" on {sampled} sampled vectors");
    let mut report = |step: Step| -> Result<(), Error> {
        check_for_interrupts!();
        match step {
            Step::Seeded => notice!("ruvector: k-means++ seeding done ({:.1} s)", started.elapsed().as_secs_f64()),
            Step::Iterated { iteration, changed } => notice!(
                "ruvector: Lloyd iteration {iteration}/{ITERATIONS}: {changed} vectors moved ({:.1} s)",
                started.elapsed().as_secs_f64()
            ),
            Step::Working => {}
        }
        Ok(())
    };
    let seed = collection.id as u64 ^ (lists as u64) << 32;
    let centroids = kmeans::train(&sample, dim, lists as usize, ITERATIONS, seed, &mut report)
        .map_err(SqlError::from)?;
    drop(sample);

    // Every row: its list, per partition, and its distance.
    let partitions = store::sources::partitions(collection.relid)?.partitions;
    let expected_rows: i64 = partitions
        .iter()
        .map(|p| p.live)
        .sum::<i64>()
        .max(sampled as i64);
    let k = lists as usize;
    let mut counts: Vec<HashMap<i64, i64>> = vec![HashMap::new(); k];
    let mut distance_sums = vec![0f64; k];
    let (assigned, mut skipped) = (Cell::new(0i64), 0i64);
    let mut next_notice = 0.1;
    as_owner(&mut || {
        store::ivf::every_vector(
            &table,
            &collection.column,
            |relid, values| {
                let Some(x) = values.and_then(|v| kmeans::usable(v, dim, cosine)) else {
                    skipped += 1;
                    return;
                };
                let (list, d2) = kmeans::nearest(&centroids, dim, &x);
                *counts[list].entry(u32::from(relid) as i64).or_default() += 1;
                distance_sums[list] += d2.sqrt() as f64;
                assigned.set(assigned.get() + 1);
            },
            || {
                check_for_interrupts!();
                let done = assigned.get() as f64 / expected_rows as f64;
                if done >= next_notice && done < 1.0 {
                    notice!(
                        "ruvector: assigned {} vectors to their lists (~{:.0}%)",
                        assigned.get(),
                        done * 100.0
                    );
                    next_notice = (done * 10.0).floor() / 10.0 + 0.1;
                }
            },
        )
    })?;

    let assigned = assigned.get();
    let per_list = assigned.max(1) as f64 / k as f64;
    let mut max_imbalance = 0f64;
    let new_lists: Vec<NewList> = (0..k)
        .map(|list| {
            let count: i64 = counts[list].values().sum();
            max_imbalance = max_imbalance.max(count as f64 / per_list);
            let by_partition: serde_json::Map<String, serde_json::Value> = counts[list]
                .iter()
                .map(|(relid, n)| (relid.to_string(), json!(n)))
                .collect();
            NewList {
                centroid: &centroids[list * dim..(list + 1) * dim],
                vector_count: count,
                mean_distance: distance_sums[list] / count.max(1) as f64,
                partition_counts: serde_json::Value::Object(by_partition),
            }
        })
        .collect();
    let mean_distance = distance_sums.iter().sum::<f64>() / assigned.max(1) as f64;
    let seconds = started.elapsed().as_secs_f64();
    store::ivf::store(
        collection.id,
        &new_lists,
        &Training {
            lists,
            trained_rows: assigned,
            mean_distance,
            dimensions: collection.dimensions,
            distance_metric: &collection.distance_metric,
            sample_rows: sampled as i64,
            skipped_rows: skipped,
            seconds,
        },
    )?;
    if let Ok(shared) = shmem::shared() {
        shared.request_sample(name);
        shared.wake_worker();
    }
    notice!(
        "ruvector: {lists} IVF lists of \"{name}\" trained on {assigned} vectors in {seconds:.1} s"
    );
    Ok(JsonB(json!({
        "collection": name,
        "lists": lists,
        "trained_rows": assigned,
        "sample_rows": sampled,
        "skipped_rows": skipped,
        "mean_distance": mean_distance,
        "max_imbalance": max_imbalance,
        "seconds": seconds,
    })))
}
