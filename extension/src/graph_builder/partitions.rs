//! Partitions: the leaves of the collection's table (or the table itself),
//! each linked to the shard that holds it.
//!
//! Health is bloat: the share of dead tuples. Up to [`DEAD_SHARE_HEALTHY`] a
//! partition is healthy (autovacuum's own default trigger is 20%); at
//! [`DEAD_SHARE_WORST`] and beyond it scores [`BLOAT_FLOOR`]. The floor is
//! above the default `threshold_low` (0.3), so bloat alone can put a collection
//! under stress but never make it critical: slow scans are not lost data.

use ruvector_integrity::graph::{EdgeKind, NodeKind};
use serde::Deserialize;
use serde_json::json;

use super::{ramp, BuiltGraph};
use crate::collections::CollectionRow;
use crate::errors::{SqlError, SqlResult};
use pgrx::prelude::*;
use pgrx::JsonB;

const PARTITIONS: &str = include_str!("../../sql/queries/partitions.sql");

/// Dead share up to which a partition is healthy.
pub const DEAD_SHARE_HEALTHY: f64 = 0.2;
/// Dead share at which bloat health reaches its floor.
pub const DEAD_SHARE_WORST: f64 = 0.8;
/// The lowest health bloat alone can cause.
pub const BLOAT_FLOOR: f64 = 0.5;
/// Below this many tuples the dead share is noise (a 10-row table with 3 dead
/// rows is not bloated).
pub const MIN_TUPLES: i64 = 1000;

#[derive(Deserialize)]
struct Partitions {
    exists: bool,
    partitions: Vec<Partition>,
}

#[derive(Deserialize)]
struct Partition {
    relid: i64,
    name: String,
    relkind: String,
    live: i64,
    dead: i64,
    last_vacuum: Option<i64>,
}

pub fn add(built: &mut BuiltGraph, collection: &CollectionRow, shard: usize) -> SqlResult<()> {
    let rows = Spi::get_one_with_args::<JsonB>(PARTITIONS, &[collection.relid().into()])?
        .ok_or_else(|| SqlError::internal("the partitions query returned nothing"))?;
    let found: Partitions = serde_json::from_value(rows.0)?;
    if !found.exists {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!(
                "the table of collection \"{}\" ({}.{}) no longer exists",
                collection.name, collection.schema, collection.table
            ),
        )
        .hint("Unregister the collection with ruvector_unregister_collection()."));
    }
    for p in found.partitions {
        let total = p.live + p.dead;
        let dead_share = if total >= MIN_TUPLES {
            p.dead as f64 / total as f64
        } else {
            0.0
        };
        let health = ramp(
            dead_share,
            DEAD_SHARE_HEALTHY,
            DEAD_SHARE_WORST,
            BLOAT_FLOOR,
        );
        let node = built.add_node(
            NodeKind::Partition,
            &p.name,
            health,
            json!({
                "relid": p.relid, "relkind": p.relkind, "live_tuples": p.live, "dead_tuples": p.dead,
                "dead_share": dead_share, "last_vacuum_unix_us": p.last_vacuum,
            }),
        )?;
        built
            .graph
            .add_edge(node, shard, EdgeKind::PartitionLink, 1.0, 0.0)
            .map_err(SqlError::from)?;
    }
    Ok(())
}
