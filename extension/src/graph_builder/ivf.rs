//! IVF lists: `ruvector_ivf_train(collection, lists)` trains them with the
//! core's k-means; each sample reads them back with a bounded drift sample.
//!
//! Training reads the vectors as the caller (it is their table), twice: a
//! random sample of at most [`MAX_SAMPLE`] rows for k-means, then every row
//! to count each list's vectors per partition and its mean distance. The
//! drift sample reads at most [`DRIFT_ROWS`] vectors from a few local
//! partitions (block sampling, `TABLESAMPLE SYSTEM`) as the table's owner,
//! skipping any partition it cannot lock at once, so a sample never waits
//! behind a DBA's lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use pgrx::prelude::*;
use pgrx::{Array, JsonB};
use ruvector_integrity::kmeans::{self, Step};
use ruvector_integrity::sources::ivf::{DriftSample, Ivf, List};
use ruvector_integrity::sources::partitions::Partition;
use ruvector_integrity::Error;
use serde::Deserialize;
use serde_json::json;

use crate::collections::{self, CollectionRow};
use crate::errors::{Optional, OrRaise, SqlError, SqlResult};
use crate::{enforce, installation, shmem, xact};

/// The most lists a collection may have (the graph holds one node per list).
pub const MAX_LISTS: i32 = 1000;
/// Rows k-means trains on per list, and the bounds of the training sample.
const SAMPLE_PER_LIST: i64 = 20;
const MIN_SAMPLE: i64 = 1000;
pub const MAX_SAMPLE: i64 = 50_000;
/// Lloyd iterations at most.
const ITERATIONS: usize = 10;
/// Vectors in a drift sample, and the partitions it reads them from.
pub const DRIFT_ROWS: usize = 256;
const DRIFT_PARTITIONS: usize = 4;
/// Partitions up to this many rows are sampled by row, larger ones by page.
const ROW_SAMPLING_UP_TO: i64 = 50_000;
/// Rows fetched per cursor round.
const BATCH: i64 = 1000;

#[derive(Deserialize)]
pub struct Trained {
    trained_rows: i64,
    mean_distance: f64,
    dimensions: i32,
    lists: Vec<List>,
}

fn cosine(collection: &CollectionRow) -> bool {
    collection.distance_metric == "cosine"
}

/// A vector as training and sampling use it: `dim` values, all finite,
/// scaled to unit length for cosine distance; `None` for anything else.
fn vector(array: Option<Array<f32>>, dim: usize, cosine: bool) -> Option<Vec<f32>> {
    let array = array?;
    let mut values = array.as_slice().ok()?.to_vec();
    if values.len() != dim || !values.iter().all(|v| v.is_finite()) {
        return None;
    }
    if cosine {
        kmeans::normalize(&mut values);
    }
    Some(values)
}

/// A collection's stored lists and their centroids, one after another.
type Lists = (Rc<Trained>, Rc<Vec<f32>>);

thread_local! {
    /// The lists as last read, per collection, with the `trained_at` they
    /// belong to: they only change when trained again.
    static TRAINED: RefCell<HashMap<i32, (String, Lists)>> = RefCell::new(HashMap::new());
}

/// The stored lists of `collection` and their centroids, read again only
/// after a new training.
fn trained(collection: &CollectionRow) -> SqlResult<Option<Lists>> {
    let Some(trained_at) = Spi::get_one_with_args::<String>(
        "SELECT trained_at::text FROM ruvector.ivf_training WHERE collection_id = $1",
        &[collection.id.into()],
    )
    .optional()?
    else {
        TRAINED.with(|t| t.borrow_mut().remove(&collection.id));
        return Ok(None);
    };
    if let Some((at, known)) = TRAINED.with(|t| t.borrow().get(&collection.id).cloned()) {
        if at == trained_at {
            return Ok(Some(known));
        }
    }
    let lists = Spi::get_one_with_args::<JsonB>(
        "SELECT jsonb_build_object(
             'trained_rows', t.trained_rows, 'mean_distance', t.mean_distance, 'dimensions', t.dimensions,
             'lists', coalesce((SELECT jsonb_agg(jsonb_build_object(
                 'list_id', l.list_id, 'vector_count', l.vector_count,
                 'mean_distance', l.mean_distance, 'partition_counts', l.partition_counts) ORDER BY l.list_id)
                 FROM ruvector.ivf_lists l WHERE l.collection_id = t.collection_id), '[]'))
         FROM ruvector.ivf_training t WHERE t.collection_id = $1",
        &[collection.id.into()],
    )?
    .ok_or_else(|| SqlError::internal("the IVF lists query returned nothing"))?;
    let lists: Rc<Trained> = Rc::new(serde_json::from_value(lists.0)?);
    let centroids = Rc::new(centroids(collection.id, lists.dimensions as usize)?);
    TRAINED.with(|t| {
        t.borrow_mut().insert(
            collection.id,
            (trained_at, (lists.clone(), centroids.clone())),
        )
    });
    Ok(Some((lists, centroids)))
}

/// The trained lists of `collection`, with a drift sample; `None` when
/// `ruvector_ivf_train` never ran for it.
pub fn read(collection: &CollectionRow, partitions: &[Partition]) -> SqlResult<Option<Ivf>> {
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

fn centroids(collection_id: i32, dim: usize) -> SqlResult<Vec<f32>> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT centroid FROM ruvector.ivf_lists WHERE collection_id = $1 ORDER BY list_id",
            None,
            &[collection_id.into()],
        )?;
        let mut out = Vec::with_capacity(rows.len() * dim);
        for row in rows {
            let centroid = vector(row.get::<Array<f32>>(1)?, dim, false)
                .ok_or_else(|| SqlError::internal("a stored centroid is not a vector"))?;
            out.extend(centroid);
        }
        Ok(out)
    })
}

fn random() -> f64 {
    unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) }
}

/// Up to [`DRIFT_ROWS`] vectors from up to [`DRIFT_PARTITIONS`] local
/// partitions drawn by their live rows, assigned to the trained centroids.
fn drift_sample(
    collection: &CollectionRow,
    partitions: &[Partition],
    dim: usize,
    centroids: &[f32],
) -> SqlResult<Option<DriftSample>> {
    let Some(owner) = collection.owner else {
        return Ok(None);
    };
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
    if centroids.is_empty() || chosen.is_empty() {
        return Ok(None);
    }
    let quota = DRIFT_ROWS.div_ceil(chosen.len()) as i64;
    let column = pgrx::spi::quote_identifier(&collection.column);
    let cosine = cosine(collection);
    let role = pg_sys::Oid::from(owner as u32);
    // In a subtransaction rolled back once the numbers are out: the locks it
    // took on the partitions go with it, so a caller's open transaction (an
    // idle ruvector_integrity_simulate) holds none.
    let (rows, total) = xact::released(|| {
        // Never wait for a lock: a partition someone holds is left out this
        // time. Once locked, a partition keeps the name it has now.
        let named: Vec<(&Partition, String)> = chosen
            .iter()
            .filter(|p| unsafe {
                pg_sys::ConditionalLockRelationOid(
                    pg_sys::Oid::from(p.relid as u32),
                    pg_sys::AccessShareLock as pg_sys::LOCKMODE,
                )
            })
            .filter_map(|p| Some((*p, current_name(pg_sys::Oid::from(p.relid as u32))?)))
            .collect();
        enforce::internal(|| {
            installation::as_role(role, || {
                Spi::connect(|client| {
                    let (mut rows, mut total) = (0i64, 0f64);
                    for (p, table) in &named {
                        // About `quota` rows: row sampling where reading every
                        // page is cheap, page sampling beyond.
                        let percent = (100.0 * quota as f64 / p.live as f64).clamp(0.0001, 100.0);
                        let method = if p.live <= ROW_SAMPLING_UP_TO {
                            "BERNOULLI"
                        } else {
                            "SYSTEM"
                        };
                        let query = format!(
                            "SELECT {column} FROM {table} TABLESAMPLE {method} ($1) WHERE {column} IS NOT NULL LIMIT $2"
                        );
                        for row in
                            client.select(&query, None, &[percent.into(), (2 * quota).into()])?
                        {
                            if let Some(x) = vector(row.get::<Array<f32>>(1)?, dim, cosine) {
                                rows += 1;
                                total += kmeans::nearest(centroids, dim, &x).1.sqrt() as f64;
                            }
                        }
                    }
                    Ok::<_, SqlError>((rows, total))
                })
            })
        })
    })?;
    Ok((rows > 0).then(|| DriftSample {
        rows,
        mean_distance: total / rows as f64,
    }))
}

/// The quoted, qualified name `relid` has now (`None` once it is gone).
fn current_name(relid: pg_sys::Oid) -> Option<String> {
    // SAFETY: syscache lookups by OID; the strings are palloc'd copies.
    unsafe {
        let name = pg_sys::get_rel_name(relid);
        let schema = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        if name.is_null() || schema.is_null() {
            return None;
        }
        let text = |s| std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned();
        Some(pgrx::spi::quote_qualified_identifier(
            text(schema),
            text(name),
        ))
    }
}

#[pg_extern(schema = "ruvector", name = "_ivf_train")]
fn ivf_train(collection: &str, lists: i32) -> JsonB {
    train(collection, lists).or_raise()
}

/// Trains `lists` IVF lists for `collection` and stores them.
pub fn train(name: &str, lists: i32) -> SqlResult<JsonB> {
    let started = Instant::now();
    let collection = collections::find(name)?;
    collections::check_may_change(&collection, "train IVF lists of")?;
    if !(1..=MAX_LISTS).contains(&lists) {
        return Err(SqlError::invalid(format!(
            "lists must be between 1 and {MAX_LISTS}, got {lists}"
        ))
        .hint("A list per √rows is a common start: 316 lists for 100,000 vectors."));
    }
    // Retraining moves every centroid: the gate decides, as for any
    // centroid_update.
    enforce::gate_operation(
        &collection.name,
        ruvector_integrity::gate::Operation::CentroidUpdate,
    )?;
    let dim = collection.dimensions as usize;
    let cosine = cosine(&collection);
    // By OID, locked first: the names a collection was stored under go stale
    // on a rename, and whatever has a stale name now could be someone else's
    // (run as the caller, it would run with their rights); locked, the table
    // keeps its current name while training reads it.
    let relid = collection.relid();
    unsafe { pg_sys::LockRelationOid(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
    let table = current_name(relid).ok_or_else(|| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("the table of collection \"{name}\" no longer exists"),
        )
    })?;
    let column = pgrx::spi::quote_identifier(&collection.column);

    let sample_size = (SAMPLE_PER_LIST * lists as i64).clamp(MIN_SAMPLE, MAX_SAMPLE);
    let sample = enforce::internal(|| {
        installation::as_caller(|| {
            Spi::connect(|client| {
                let rows = client.select(
                &format!(
                    "SELECT {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY pg_catalog.random() LIMIT $1"
                ),
                None,
                &[sample_size.into()],
            )?;
                let mut sample = Vec::with_capacity(rows.len() * dim);
                for row in rows {
                    if let Some(x) = vector(row.get::<Array<f32>>(1)?, dim, cosine) {
                        sample.extend(x);
                    }
                }
                Ok::<_, SqlError>(sample)
            })
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
    let (partitions, _) = super::partitions::read(&collection)?;
    let expected_rows: i64 = partitions
        .iter()
        .map(|p| p.live)
        .sum::<i64>()
        .max(sampled as i64);
    let k = lists as usize;
    let mut counts: Vec<HashMap<i64, i64>> = vec![HashMap::new(); k];
    let mut distance_sums = vec![0f64; k];
    let (mut assigned, mut skipped) = (0i64, 0i64);
    enforce::internal(|| {
        installation::as_caller(|| {
            Spi::connect(|client| {
                let mut cursor = client.try_open_cursor(
                    &format!("SELECT tableoid::pg_catalog.oid, {column} FROM {table}"),
                    &[],
                )?;
                let mut next_notice = 0.1;
                loop {
                    let batch = cursor.fetch(BATCH)?;
                    if batch.is_empty() {
                        break;
                    }
                    for row in batch {
                        let relid = row.get::<pg_sys::Oid>(1)?.map_or(0, |o| o.to_u32() as i64);
                        let Some(x) = vector(row.get::<Array<f32>>(2)?, dim, cosine) else {
                            skipped += 1;
                            continue;
                        };
                        let (list, d2) = kmeans::nearest(&centroids, dim, &x);
                        *counts[list].entry(relid).or_default() += 1;
                        distance_sums[list] += d2.sqrt() as f64;
                        assigned += 1;
                    }
                    check_for_interrupts!();
                    let done = assigned as f64 / expected_rows as f64;
                    if done >= next_notice && done < 1.0 {
                        notice!(
                            "ruvector: assigned {assigned} vectors to their lists (~{:.0}%)",
                            done * 100.0
                        );
                        next_notice = (done * 10.0).floor() / 10.0 + 0.1;
                    }
                }
                Ok::<_, SqlError>(())
            })
        })
    })?;

    Spi::run_with_args(
        "DELETE FROM ruvector.ivf_lists WHERE collection_id = $1",
        &[collection.id.into()],
    )?;
    let mut max_imbalance = 0f64;
    let per_list = assigned.max(1) as f64 / k as f64;
    for list in 0..k {
        let count: i64 = counts[list].values().sum();
        max_imbalance = max_imbalance.max(count as f64 / per_list);
        let by_partition: serde_json::Map<String, serde_json::Value> = counts[list]
            .iter()
            .map(|(relid, n)| (relid.to_string(), json!(n)))
            .collect();
        Spi::run_with_args(
            "INSERT INTO ruvector.ivf_lists (collection_id, list_id, centroid, vector_count, mean_distance, partition_counts)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                collection.id.into(),
                (list as i32 + 1).into(),
                centroids[list * dim..(list + 1) * dim].to_vec().into(),
                count.into(),
                (distance_sums[list] / count.max(1) as f64).into(),
                JsonB(serde_json::Value::Object(by_partition)).into(),
            ],
        )?;
    }
    let mean_distance = distance_sums.iter().sum::<f64>() / assigned.max(1) as f64;
    let seconds = started.elapsed().as_secs_f64();
    Spi::run_with_args(
        "INSERT INTO ruvector.ivf_training
             (collection_id, lists, trained_rows, mean_distance, dimensions,
              distance_metric, sample_rows, skipped_rows, seconds, trained_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
         ON CONFLICT (collection_id) DO UPDATE SET
             lists = EXCLUDED.lists, trained_rows = EXCLUDED.trained_rows,
             mean_distance = EXCLUDED.mean_distance,
             dimensions = EXCLUDED.dimensions, distance_metric = EXCLUDED.distance_metric,
             sample_rows = EXCLUDED.sample_rows, skipped_rows = EXCLUDED.skipped_rows,
             seconds = EXCLUDED.seconds, trained_at = EXCLUDED.trained_at",
        &[
            collection.id.into(),
            lists.into(),
            assigned.into(),
            mean_distance.into(),
            collection.dimensions.into(),
            collection.distance_metric.as_str().into(),
            (sampled as i64).into(),
            skipped.into(),
            seconds.into(),
        ],
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
