//! From what the database says about a collection to its contracted graph.
//!
//! The extension reads the catalog and statistics views into an [`Observed`]
//! (one module per source reads one part); [`build`] turns it into nodes,
//! healths and edges. Building is a pure function so that every health formula
//! and the calibration of every capacity is tested here, down to a long
//! simulation of healthy clusters that must never leave `normal`.
//!
//! ```text
//!                 maintenance_dep        replication_target ── replication_target
//!                        │ dependency            │ replication (health on the edge)
//!  partition ── partition_link ── shard:primary ─┘
//!      │                               │ partition_link
//!      │ routing_link              shard:<foreign server> ── partition_link ── partition
//!  centroid ─────────── routing_link ─────────────────────────────────────────┘
//! ```
//!
//! Every health function has a dead zone: a component in its normal operating
//! range scores exactly 1, so a healthy collection has `lambda_norm` = 1.
//! Each module states its formula and why; the README's health table repeats
//! them for DBAs.

pub mod ivf;
pub mod maintenance;
pub mod partitions;
pub mod probe;
pub mod replication;
pub mod shards;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::graph::{ContractedGraph, NodeKind};
use crate::Error;

/// Everything a collection's graph is built from, as read in one sample.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Observed {
    pub partitions: Vec<partitions::Partition>,
    /// Foreign servers and Citus workers holding partitions (the local primary
    /// is always there and is not listed).
    #[serde(default)]
    pub shards: Vec<shards::Shard>,
    #[serde(default)]
    pub replication: replication::Replication,
    pub maintenance: maintenance::Maintenance,
    /// Trained IVF lists, if `ruvector_ivf_train` ran for this collection.
    #[serde(default)]
    pub ivf: Option<ivf::Ivf>,
}

/// Healths to impose on named nodes (`kind:name` → health), for what-if
/// questions: the builder uses them in place of the measured ones.
pub type Overrides = HashMap<String, f64>;

/// A built graph and, per node, the observations its health came from and
/// how (the second is not stored with the graph: only explanations show it).
#[derive(Debug, Clone, Default)]
pub struct Built {
    pub graph: ContractedGraph,
    pub node_data: Vec<Value>,
    pub why: Vec<Why>,
}

/// A node's label: `kind:name`, as witness edges and what-if changes name it.
pub fn label(kind: NodeKind, name: &str) -> String {
    format!("{}:{name}", kind.as_str())
}

/// How a node's health came about, for `ruvector_integrity_explain`: the
/// health function, the raw measurement it read, and where its dead zone
/// ends (health is 1 while the measurement stays there).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Why {
    /// The function's name, as the health table of docs/how-it-works.md has it.
    pub function: &'static str,
    pub measured: Value,
    pub healthy_while: String,
}

/// The builder's state: the graph so far and the overrides to apply.
pub(crate) struct Builder<'a> {
    pub built: Built,
    overrides: &'a Overrides,
}

impl Builder<'_> {
    /// The health of `kind:name`: its override if there is one, else `measured`.
    pub fn health(&self, kind: NodeKind, name: &str, measured: f64) -> f64 {
        self.overrides
            .get(&label(kind, name))
            .copied()
            .unwrap_or(measured)
    }

    /// Adds a node with its measured health (or its override), its
    /// observations and how its health came about.
    pub fn node(
        &mut self,
        kind: NodeKind,
        name: &str,
        measured: f64,
        mut data: Value,
        why: Why,
    ) -> Result<usize, Error> {
        let health = self.health(kind, name, measured);
        if health != measured {
            data["measured_health"] = measured.into();
        }
        self.raw_node(kind, name, health, data, why)
    }

    /// Adds a node with exactly this health.
    pub fn raw_node(
        &mut self,
        kind: NodeKind,
        name: &str,
        health: f64,
        data: Value,
        why: Why,
    ) -> Result<usize, Error> {
        let index = self.built.graph.add_node(kind, name, health)?;
        self.built.node_data.push(data);
        self.built.why.push(why);
        Ok(index)
    }
}

/// The contracted graph of what was observed, with `overrides` imposed.
/// Fails, naming it, when an override names a node the graph does not have.
pub fn build(observed: &Observed, overrides: &Overrides) -> Result<Built, Error> {
    let mut b = Builder {
        built: Built::default(),
        overrides,
    };
    let placement = shards::add(&mut b, &observed.shards, &observed.replication)?;
    let placed = partitions::add(&mut b, &observed.partitions, &placement)?;
    if let Some(ivf) = &observed.ivf {
        ivf::add(&mut b, ivf, &placed)?;
    }
    replication::add(&mut b, &observed.replication, placement.primary)?;
    maintenance::add(&mut b, &observed.maintenance, placement.primary)?;
    let graph = &b.built.graph;
    if let Some(unknown) = overrides
        .keys()
        .find(|l| !graph.nodes().iter().any(|n| label(n.kind, &n.name) == **l))
    {
        return Err(Error::UnknownNode(unknown.clone()));
    }
    Ok(b.built)
}

/// Health that is 1 up to `healthy`, falls linearly to `floor` at `worst`,
/// and stays there: the dead zone and the floor of every health function.
pub fn ramp(value: f64, healthy: f64, worst: f64, floor: f64) -> f64 {
    if value.is_nan() || value >= worst {
        floor
    } else if value <= healthy {
        1.0
    } else {
        1.0 - (1.0 - floor) * (value - healthy) / (worst - healthy)
    }
}

#[cfg(test)]
mod tests;
