//! IVF lists as stored, and the vectors that training and drift samples read
//! from a collection's table (by statements naming it, filled in here).
//! Reading vectors runs as whoever calls it: the callers choose the role.

use pgrx::prelude::*;
use pgrx::{Array, JsonB};
use ruvector_integrity::sources::ivf::List;
use serde::Deserialize;

use super::{document, template};
use crate::errors::{Optional, SqlResult};

/// Rows fetched per cursor round.
const BATCH: i64 = 1000;

/// A stored `real[]` as values (`None` for NULL, or an array holding NULLs).
fn values(array: Option<Array<f32>>) -> Option<Vec<f32>> {
    Some(array?.as_slice().ok()?.to_vec())
}

/// The last training of a collection and its lists.
#[derive(Deserialize)]
pub struct Trained {
    pub trained_rows: i64,
    pub mean_distance: f64,
    pub dimensions: i32,
    pub lists: Vec<List>,
}

/// When collection `id`'s lists were last trained (`None`: never).
pub fn trained_at(id: i32) -> SqlResult<Option<String>> {
    Spi::get_one_with_args::<String>(super::IVF_TRAINED_AT, &[id.into()]).optional()
}

/// Collection `id`'s last training and its lists (without their centroids).
pub fn lists(id: i32) -> SqlResult<Trained> {
    document(super::IVF_LISTS, &[id.into()])
}

/// Collection `id`'s centroids, in list order, each handed to `each`.
pub fn centroids(
    id: i32,
    mut each: impl FnMut(Option<Vec<f32>>) -> SqlResult<()>,
) -> SqlResult<()> {
    Spi::connect(|client| {
        for row in client.select(super::IVF_CENTROIDS, None, &[id.into()])? {
            each(values(row.get::<Array<f32>>(1)?))?;
        }
        Ok(())
    })
}

/// Up to `limit` vectors of `column` of `table` (quoted, qualified), drawn at
/// random, each handed to `each`.
pub fn random_vectors(
    table: &str,
    column: &str,
    limit: i64,
    mut each: impl FnMut(Option<Vec<f32>>),
) -> SqlResult<()> {
    let query = template(super::IVF_SAMPLE, table, column, "");
    Spi::connect(|client| {
        for row in client.select(&query, None, &[limit.into()])? {
            each(values(row.get::<Array<f32>>(1)?));
        }
        Ok(())
    })
}

/// Every vector of `column` of `table`, with the partition it lives in, a
/// batch at a time; `batch_done` runs after each batch (progress, interrupts).
pub fn every_vector(
    table: &str,
    column: &str,
    mut each: impl FnMut(pg_sys::Oid, Option<Vec<f32>>),
    mut batch_done: impl FnMut(),
) -> SqlResult<()> {
    let query = template(super::IVF_EVERY_VECTOR, table, column, "");
    Spi::connect(|client| {
        let mut cursor = client.try_open_cursor(&query, &[])?;
        loop {
            let batch = cursor.fetch(BATCH)?;
            if batch.is_empty() {
                return Ok(());
            }
            for row in batch {
                each(
                    row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                    values(row.get::<Array<f32>>(2)?),
                );
            }
            batch_done();
        }
    })
}

/// How a drift sample draws rows from a partition.
#[derive(Clone, Copy)]
pub enum Sampling {
    /// Row by row: where reading every page is cheap.
    Rows,
    /// Page by page.
    Pages,
}

/// About `limit` vectors of `column` of each partition (quoted, qualified
/// name; sampling method; percent), each handed to `each`.
pub fn drift_vectors(
    partitions: &[(String, Sampling, f64)],
    column: &str,
    limit: i64,
    mut each: impl FnMut(Option<Vec<f32>>),
) -> SqlResult<()> {
    Spi::connect(|client| {
        for (table, sampling, percent) in partitions {
            let method = match sampling {
                Sampling::Rows => "BERNOULLI",
                Sampling::Pages => "SYSTEM",
            };
            let query = template(super::DRIFT_SAMPLE, table, column, method);
            for row in client.select(&query, None, &[(*percent).into(), limit.into()])? {
                each(values(row.get::<Array<f32>>(1)?));
            }
        }
        Ok(())
    })
}

/// A list to store.
pub struct NewList<'a> {
    pub centroid: &'a [f32],
    pub vector_count: i64,
    pub mean_distance: f64,
    /// Partition OID (as text) → vectors of this list there.
    pub partition_counts: serde_json::Value,
}

/// A training to record.
pub struct Training<'a> {
    pub lists: i32,
    pub trained_rows: i64,
    pub mean_distance: f64,
    pub dimensions: i32,
    pub distance_metric: &'a str,
    pub sample_rows: i64,
    pub skipped_rows: i64,
    pub seconds: f64,
}

/// Replaces collection `id`'s lists and records the training.
pub fn store(id: i32, lists: &[NewList], training: &Training) -> SqlResult<()> {
    Spi::run_with_args(super::DELETE_IVF_LISTS, &[id.into()])?;
    for (i, list) in lists.iter().enumerate() {
        Spi::run_with_args(
            super::INSERT_IVF_LIST,
            &[
                id.into(),
                (i as i32 + 1).into(),
                list.centroid.to_vec().into(),
                list.vector_count.into(),
                list.mean_distance.into(),
                JsonB(list.partition_counts.clone()).into(),
            ],
        )?;
    }
    Spi::run_with_args(
        super::UPSERT_IVF_TRAINING,
        &[
            id.into(),
            training.lists.into(),
            training.trained_rows.into(),
            training.mean_distance.into(),
            training.dimensions.into(),
            training.distance_metric.into(),
            training.sample_rows.into(),
            training.skipped_rows.into(),
            training.seconds.into(),
        ],
    )?;
    Ok(())
}
