//! Maintenance dependencies: the autovacuum settings and `pg_stat_archiver`.

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::sources::maintenance::Maintenance;

use crate::errors::{SqlError, SqlResult};

const MAINTENANCE: &str = include_str!("../../sql/queries/maintenance.sql");

pub fn read() -> SqlResult<Maintenance> {
    let seen = Spi::get_one::<JsonB>(MAINTENANCE)?
        .ok_or_else(|| SqlError::internal("the maintenance query returned nothing"))?;
    Ok(serde_json::from_value(seen.0)?)
}
