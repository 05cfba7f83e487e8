//! Builds a collection's contracted operational graph from the live catalog and
//! statistics views, never from the vectors themselves. Each source of nodes is
//! one module with one query; this module wires them together:
//!
//! ```text
//! partition ── partition_link ── shard ── dependency ── maintenance_dep
//! ```
//!
//! Every node is connected, so a healthy collection's graph is connected and its
//! `lambda_norm` is 1. Health functions have a dead zone: a component in its
//! normal operating range scores exactly 1.

mod maintenance;
mod partitions;
mod shard;

use ruvector_integrity::graph::ContractedGraph;
use serde_json::Value;

use crate::collections::CollectionRow;
use crate::errors::{SqlError, SqlResult};

/// A graph with, per node, the observations its health was computed from.
#[derive(Clone)]
pub struct BuiltGraph {
    pub graph: ContractedGraph,
    pub node_data: Vec<Value>,
}

impl BuiltGraph {
    fn add_node(
        &mut self,
        kind: ruvector_integrity::graph::NodeKind,
        name: &str,
        health: f64,
        data: Value,
    ) -> SqlResult<usize> {
        let index = self
            .graph
            .add_node(kind, name, health)
            .map_err(SqlError::from)?;
        self.node_data.push(data);
        Ok(index)
    }
}

/// The graph of `collection` as the catalog and statistics describe it now.
pub fn build(collection: &CollectionRow) -> SqlResult<BuiltGraph> {
    let mut built = BuiltGraph {
        graph: ContractedGraph::new(),
        node_data: Vec::new(),
    };
    let primary = shard::add_primary(&mut built)?;
    partitions::add(&mut built, collection, primary)?;
    maintenance::add(&mut built, primary)?;
    Ok(built)
}

/// Health that is 1 up to `healthy`, falls linearly to `floor` at `worst`, and
/// stays there: the dead zone and the floor of every health function.
fn ramp(value: f64, healthy: f64, worst: f64, floor: f64) -> f64 {
    if value <= healthy {
        1.0
    } else if value >= worst {
        floor
    } else {
        1.0 - (1.0 - floor) * (value - healthy) / (worst - healthy)
    }
}
