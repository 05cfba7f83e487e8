//! One measurement of a collection: build its contracted graph, compute λ,
//! λ_nominal, λ_norm, λ₂ and the witness edges, and store the graph.
//! Deciding what the measurement means for the state is the worker's job.

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::audit::WitnessEdge;
use ruvector_integrity::graph::{Integrity, Node};
use ruvector_integrity::spectral;
use serde_json::{json, Value};

use crate::collections::CollectionRow;
use crate::errors::{SqlError, SqlResult};
use crate::graph_builder::{self, BuiltGraph};

const STORE_GRAPH: &str = include_str!("../sql/queries/store_graph.sql");
const STORE_EDGES: &str = include_str!("../sql/queries/store_edges.sql");

pub struct Measurement {
    pub built: BuiltGraph,
    pub integrity: Integrity,
    pub lambda2: f64,
}

pub fn measure(collection: &CollectionRow) -> SqlResult<Measurement> {
    Measurement::of(graph_builder::build(collection)?)
}

/// A node's label: `kind:name`, as witness edges and what-if changes name it.
pub fn label(node: &Node) -> String {
    format!("{}:{}", node.kind.as_str(), node.name)
}

impl Measurement {
    /// λ, λ_nominal, λ_norm, the witness edges and λ₂ of a built graph.
    pub fn of(built: BuiltGraph) -> SqlResult<Measurement> {
        let integrity = built.graph.integrity().map_err(SqlError::from)?;
        let lambda2 = spectral::lambda2(
            built.graph.nodes().len(),
            &built.graph.weighted_edges(false),
        )
        .map_err(SqlError::from)?;
        Ok(Measurement {
            built,
            integrity,
            lambda2,
        })
    }

    /// The edges across the minimum cut, as events record them.
    pub fn witness_edges(&self) -> Vec<WitnessEdge> {
        let graph = &self.built.graph;
        self.integrity
            .witness_edges
            .iter()
            .map(|&i| {
                let e = &graph.edges()[i];
                WitnessEdge {
                    source: label(&graph.nodes()[e.source]),
                    target: label(&graph.nodes()[e.target]),
                    kind: e.kind.as_str().to_owned(),
                    capacity: graph.effective_capacity(e),
                }
            })
            .collect()
    }

    /// A summary for SQL callers.
    pub fn summary(&self) -> Value {
        let graph = &self.built.graph;
        json!({
            "lambda_cut": self.integrity.lambda_cut,
            "lambda_nominal": self.integrity.lambda_nominal,
            "lambda_norm": self.integrity.lambda_norm,
            "lambda2": self.lambda2,
            "node_count": graph.nodes().len(),
            "edge_count": graph.edges().len(),
            "cut_side": self.integrity.cut_side.iter().map(|&i| label(&graph.nodes()[i])).collect::<Vec<_>>(),
            "witness_edges": self.witness_edges(),
            "nodes": graph.nodes().iter().zip(&self.built.node_data).map(|(n, data)| json!({
                "node": label(n), "health": n.health, "observed": data,
            })).collect::<Vec<_>>(),
        })
    }

    /// Replaces the stored graph of `collection_id` with this one.
    pub fn store(&self, collection_id: i32) -> SqlResult<()> {
        let graph = &self.built.graph;
        let nodes: Vec<Value> = graph
            .nodes()
            .iter()
            .zip(&self.built.node_data)
            .enumerate()
            .map(|(i, (n, data))| {
                json!({"node_type": n.kind.as_str(), "node_id": i, "node_name": n.name, "node_data": data, "health_score": n.health})
            })
            .collect();
        let edges: Vec<Value> = graph
            .edges()
            .iter()
            .map(|e| {
                json!({
                    "source_type": graph.nodes()[e.source].kind.as_str(), "source_id": e.source,
                    "target_type": graph.nodes()[e.target].kind.as_str(), "target_id": e.target,
                    "edge_type": e.kind.as_str(), "capacity": e.capacity,
                    "effective_capacity": graph.effective_capacity(e), "error_rate": e.error_rate,
                })
            })
            .collect();
        Spi::run_with_args(
            "DELETE FROM ruvector.contracted_graph WHERE collection_id = $1",
            &[collection_id.into()],
        )?;
        Spi::run_with_args(
            STORE_GRAPH,
            &[collection_id.into(), JsonB(Value::Array(nodes)).into()],
        )?;
        Spi::run_with_args(
            STORE_EDGES,
            &[collection_id.into(), JsonB(Value::Array(edges)).into()],
        )?;
        Ok(())
    }
}
