//! What the worker records of each sample: the collection's state row, a row
//! of its sample history, the last error; and what the status reads back.

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::audit::WitnessEdge;
use ruvector_integrity::graph::Integrity;
use ruvector_integrity::hysteresis::Controller;
use ruvector_integrity::Micros;
use serde::Deserialize;
use serde_json::Value;

use crate::errors::{Optional, SqlResult};

/// One sample as the worker records it.
pub struct Sample<'a> {
    pub collection_id: i32,
    pub at: Micros,
    pub integrity: &'a Integrity,
    pub lambda2: f64,
    pub witness_edges: &'a [WitnessEdge],
    pub controller: &'a Controller,
    pub nodes: usize,
    pub edges: usize,
    pub duration_ms: f64,
}

/// Records `sample`: the state row, and a row of the history.
pub fn record(sample: &Sample) -> SqlResult<()> {
    let integrity = sample.integrity;
    let state = sample.controller.state.as_str();
    Spi::run_with_args(
        super::RECORD_SAMPLE,
        &[
            sample.collection_id.into(),
            state.into(),
            integrity.lambda_cut.into(),
            integrity.lambda_nominal.into(),
            integrity.lambda_norm.into(),
            sample.lambda2.into(),
            JsonB(serde_json::to_value(sample.witness_edges)?).into(),
            JsonB(serde_json::to_value(sample.controller)?).into(),
            sample.at.into(),
        ],
    )?;
    Spi::run_with_args(
        super::INSERT_SAMPLE,
        &[
            sample.collection_id.into(),
            sample.at.into(),
            integrity.lambda_cut.into(),
            integrity.lambda_nominal.into(),
            integrity.lambda_norm.into(),
            sample.lambda2.into(),
            state.into(),
            (sample.nodes as i32).into(),
            (sample.edges as i32).into(),
            sample.duration_ms.into(),
        ],
    )?;
    Ok(())
}

/// Why the last sample of collection `id` failed.
pub fn record_error(id: i32, message: &str) -> SqlResult<()> {
    Ok(Spi::run_with_args(
        super::RECORD_SAMPLE_ERROR,
        &[id.into(), message.into()],
    )?)
}

/// Forgets samples older than `seconds`.
pub fn prune(seconds: f64) -> SqlResult<()> {
    Ok(Spi::run_with_args(super::PRUNE_SAMPLES, &[seconds.into()])?)
}

/// What the status shows of a collection beyond shared memory.
#[derive(Debug, Default, Deserialize)]
pub struct Details {
    pub lambda_nominal: Option<f64>,
    pub lambda2: Option<f64>,
    pub witness_edges: Value,
    pub last_sample: Option<Micros>,
    pub override_reason: Option<String>,
    pub override_by: Option<String>,
    pub last_error: Option<String>,
}

pub fn details(id: i32) -> SqlResult<Details> {
    Ok(
        Spi::get_one_with_args::<JsonB>(super::STATUS_DETAILS, &[id.into()])
            .optional()?
            .map(|j| serde_json::from_value(j.0))
            .transpose()?
            .unwrap_or_default(),
    )
}
