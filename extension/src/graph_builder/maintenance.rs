//! Maintenance dependencies of the shard: autovacuum, and WAL archiving where it
//! is configured (the backup path).
//!
//! A dependency that is off or failing scores [`IMPAIRED`]: the collection keeps
//! serving, but its upkeep or its backups are at risk, which is stress, never
//! critical. An archiver is failing when its last failure is newer than its
//! last success.

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::graph::{EdgeKind, NodeKind};
use serde::Deserialize;
use serde_json::json;

use super::BuiltGraph;
use crate::errors::{SqlError, SqlResult};

const MAINTENANCE: &str = include_str!("../../sql/queries/maintenance.sql");

/// Health of a dependency that is off or failing.
pub const IMPAIRED: f64 = 0.5;

#[derive(Deserialize)]
struct Observations {
    autovacuum: bool,
    track_counts: bool,
    archive_mode: String,
    archived_count: i64,
    failed_count: i64,
    last_archived: Option<i64>,
    last_failed: Option<i64>,
}

pub fn add(built: &mut BuiltGraph, shard: usize) -> SqlResult<()> {
    let seen: Observations = serde_json::from_value(
        Spi::get_one::<JsonB>(MAINTENANCE)?
            .ok_or_else(|| SqlError::internal("the maintenance query returned nothing"))?
            .0,
    )?;
    let autovacuum_works = seen.autovacuum && seen.track_counts;
    let autovacuum = built.add_node(
        NodeKind::MaintenanceDep,
        "autovacuum",
        if autovacuum_works { 1.0 } else { IMPAIRED },
        json!({"type": "vacuum", "autovacuum": seen.autovacuum, "track_counts": seen.track_counts}),
    )?;
    built
        .graph
        .add_edge(shard, autovacuum, EdgeKind::Dependency, 1.0, 0.0)
        .map_err(SqlError::from)?;
    if seen.archive_mode != "off" {
        let failing = match (seen.last_failed, seen.last_archived) {
            (Some(failed), Some(archived)) => failed > archived,
            (Some(_), None) => true,
            _ => false,
        };
        let archiving = built.add_node(
            NodeKind::MaintenanceDep,
            "wal_archiving",
            if failing { IMPAIRED } else { 1.0 },
            json!({
                "type": "backup", "archive_mode": seen.archive_mode, "failing": failing,
                "archived_count": seen.archived_count, "failed_count": seen.failed_count,
            }),
        )?;
        built
            .graph
            .add_edge(shard, archiving, EdgeKind::Dependency, 1.0, 0.0)
            .map_err(SqlError::from)?;
    }
    Ok(())
}
