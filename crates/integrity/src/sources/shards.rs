//! Shards: the servers that hold the collection's partitions. The local
//! primary is up by definition (the worker runs on it). Each foreign server
//! holding a partition (postgres_fdw) and each Citus worker holding a shard
//! placement is a `shard` node, linked to the primary, which holds the parent
//! table and routes to it, by a `partition_link` of capacity 1; its partitions
//! hang off it.
//!
//! Health is reachability, probed by the worker with a bounded timeout
//! ([`super::probe`]): 1 when the server answers within [`LATENCY_HEALTHY_MS`],
//! falling to [`SLOW_FLOOR`] at [`LATENCY_WORST_MS`], 0 when it does not answer
//! at all. A server whose wrapper cannot be probed (not postgres_fdw) is 1.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::probe::Probe;
use super::replication::{self, Replication};
use super::{ramp, Builder, Why};
use crate::graph::{EdgeKind, NodeKind};
use crate::Error;

/// Answer time up to which a server is healthy.
pub const LATENCY_HEALTHY_MS: f64 = 250.0;
/// Answer time at which a slow server's health reaches [`SLOW_FLOOR`].
pub const LATENCY_WORST_MS: f64 = 2000.0;
/// The health of a server that answers, however slowly: stress, not critical.
pub const SLOW_FLOOR: f64 = 0.5;

/// A server holding some of the collection's partitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shard {
    /// The foreign server's name, or the Citus worker's `host:port`.
    pub name: String,
    /// `postgres_fdw`, another wrapper's name, or `citus`.
    pub kind: String,
    /// The probe of this sample; `None` when the server cannot be probed.
    #[serde(default)]
    pub probe: Option<Probe>,
}

/// The health a probe calls for.
pub fn probe_health(probe: Option<&Probe>) -> f64 {
    match probe {
        None => 1.0,
        Some(p) if !p.reachable => 0.0,
        Some(p) => ramp(
            p.latency_ms,
            LATENCY_HEALTHY_MS,
            LATENCY_WORST_MS,
            SLOW_FLOOR,
        ),
    }
}

/// Where partitions go: the primary's node, and each foreign server's node and health.
pub(crate) struct Placement {
    pub primary: usize,
    pub foreign: HashMap<String, (usize, f64)>,
}

/// Adds the primary (with the standbys nobody declared among its
/// observations) and the foreign shards.
pub(crate) fn add(
    b: &mut Builder,
    shards: &[Shard],
    replication: &Replication,
) -> Result<Placement, Error> {
    let mut data =
        json!({"type": "primary", "undeclared_standbys": replication::undeclared(replication)});
    if let Some(this) = replication::named_self(replication) {
        data["expected_standby_is_this_server"] = this;
    }
    let why = Why {
        function: "primary",
        measured: json!({}),
        healthy_while: "always: the worker runs on it".into(),
    };
    let primary = b.node(NodeKind::Shard, "primary", 1.0, data, why)?;
    let mut foreign = HashMap::with_capacity(shards.len());
    for s in shards {
        let measured = probe_health(s.probe.as_ref());
        let node = b.node(
            NodeKind::Shard,
            &s.name,
            measured,
            json!({"type": s.kind, "probe": s.probe}),
            Why {
                function: "reachability",
                measured: match &s.probe {
                    None => json!({"probed": false}),
                    Some(p) => json!({"reachable": p.reachable, "latency_ms": p.latency_ms}),
                },
                healthy_while: format!(
                    "it answers within {LATENCY_HEALTHY_MS} ms (falls to {SLOW_FLOOR} at {LATENCY_WORST_MS} ms; 0 when it does not answer)"
                ),
            },
        )?;
        b.built
            .graph
            .add_edge(node, primary, EdgeKind::PartitionLink, 1.0, 0.0)?;
        foreign.insert(s.name.clone(), (node, b.built.graph.nodes()[node].health));
    }
    Ok(Placement { primary, foreign })
}
