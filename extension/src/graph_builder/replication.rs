//! Replication targets: the settings naming expected standbys and
//! `pg_stat_replication`.

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::sources::replication::Replication;

use crate::errors::{SqlError, SqlResult};
use crate::gucs;

const REPLICATION: &str = include_str!("../../sql/queries/replication.sql");

pub fn read() -> SqlResult<Replication> {
    let seen = Spi::get_one_with_args::<JsonB>(
        REPLICATION,
        &[
            gucs::expected_standbys().into(),
            (gucs::REPLICATION_LAG_BUDGET.get() as i64 * 1024).into(),
            (gucs::STARTUP_GRACE.get() as f64).into(),
        ],
    )?
    .ok_or_else(|| SqlError::internal("the replication query returned nothing"))?;
    Ok(serde_json::from_value(seen.0)?)
}
