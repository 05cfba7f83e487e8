//! Partitions: the leaves of the collection's table (or the table itself),
//! each linked to the shard that holds it by a `partition_link` of capacity 1.
//!
//! Health is bloat, the share of dead tuples: 1 up to [`DEAD_SHARE_HEALTHY`]
//! (autovacuum's own default trigger is 20%), falling to [`BLOAT_FLOOR`] at
//! [`DEAD_SHARE_WORST`]. The floor is above the default `threshold_low` (0.3):
//! bloat alone can put a collection under stress, never make it critical, since
//! slow scans are not lost data. A foreign partition has no local statistics;
//! its health is its server's (0 when the server is unreachable).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::shards::Placement;
use super::{ramp, Builder, Why};
use crate::graph::{EdgeKind, NodeKind};
use crate::Error;

/// Dead share up to which a partition is healthy.
pub const DEAD_SHARE_HEALTHY: f64 = 0.2;
/// Dead share at which bloat health reaches its floor.
pub const DEAD_SHARE_WORST: f64 = 0.8;
/// The lowest health bloat alone can cause.
pub const BLOAT_FLOOR: f64 = 0.5;
/// Below this many tuples the dead share is noise (a 10-row table with 3 dead
/// rows is not bloated).
pub const MIN_TUPLES: i64 = 1000;

/// One leaf partition as `pg_class` and `pg_stat_all_tables` describe it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partition {
    pub relid: i64,
    /// Qualified, quoted name: `public.items_p0`.
    pub name: String,
    pub relkind: String,
    pub live: i64,
    pub dead: i64,
    /// Last (auto)vacuum, µs since the epoch.
    pub last_vacuum: Option<i64>,
    /// The foreign server of a foreign partition.
    #[serde(default)]
    pub server: Option<String>,
}

/// Bloat health of a partition with `live` and `dead` tuples.
pub fn bloat_health(live: i64, dead: i64) -> (f64, f64) {
    let total = live.max(0) + dead.max(0);
    let dead_share = if total >= MIN_TUPLES {
        dead.max(0) as f64 / total as f64
    } else {
        0.0
    };
    (
        dead_share,
        ramp(
            dead_share,
            DEAD_SHARE_HEALTHY,
            DEAD_SHARE_WORST,
            BLOAT_FLOOR,
        ),
    )
}

/// Adds the partitions, each on its shard; returns relid → node.
pub(crate) fn add(
    b: &mut Builder,
    partitions: &[Partition],
    placement: &Placement,
) -> Result<HashMap<i64, usize>, Error> {
    let mut placed = HashMap::with_capacity(partitions.len());
    for p in partitions {
        let (dead_share, bloat) = bloat_health(p.live, p.dead);
        let (shard, health, why) = match &p.server {
            Some(server) => {
                let &(node, health) = placement.foreign.get(server).ok_or_else(|| {
                    Error::Source(format!(
                        "partition {} is on foreign server \"{server}\", which was not observed",
                        p.name
                    ))
                })?;
                let why = Why {
                    function: "foreign_partition",
                    measured: json!({"server": server}),
                    healthy_while: format!(
                        "its server, {}, is healthy",
                        super::label(NodeKind::Shard, server)
                    ),
                };
                (node, health, why)
            }
            None => {
                let why = Why {
                    function: "bloat",
                    measured: json!({"dead_share": dead_share, "live_tuples": p.live, "dead_tuples": p.dead}),
                    healthy_while: format!(
                        "dead_share <= {DEAD_SHARE_HEALTHY}, or fewer than {MIN_TUPLES} tuples \
                         (falls to {BLOAT_FLOOR} at {DEAD_SHARE_WORST})"
                    ),
                };
                (placement.primary, bloat, why)
            }
        };
        let node = b.node(
            NodeKind::Partition,
            &p.name,
            health,
            json!({
                "relid": p.relid, "relkind": p.relkind, "server": p.server,
                "live_tuples": p.live, "dead_tuples": p.dead,
                "dead_share": dead_share, "last_vacuum_unix_us": p.last_vacuum,
            }),
            why,
        )?;
        b.built
            .graph
            .add_edge(node, shard, EdgeKind::PartitionLink, 1.0, 0.0)?;
        placed.insert(p.relid, node);
    }
    Ok(placed)
}
