//! One measurement of a collection: build its contracted graph, compute λ,
//! λ_nominal, λ_norm, λ₂ and the witness edges, and store the graph.
//! Deciding what the measurement means for the state is the worker's job.

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::audit::WitnessEdge;
use ruvector_integrity::graph::{Integrity, Node};
use ruvector_integrity::sources::{Built, Observed, Overrides};
use ruvector_integrity::spectral;
use serde_json::{json, Value};

use crate::collections::CollectionRow;
use crate::errors::{Optional, SqlResult};
use crate::{graph_builder, solver};

const STORE_GRAPH: &str = include_str!("../sql/queries/store_graph.sql");
const STORE_EDGES: &str = include_str!("../sql/queries/store_edges.sql");
const UPDATE_ERROR_RATES: &str = include_str!("../sql/queries/update_error_rates.sql");

pub struct Measurement {
    pub observed: Observed,
    pub built: Built,
    pub integrity: Integrity,
    pub lambda2: f64,
}

thread_local! {
    /// Integrity and λ₂ of the graphs solved lately, by fingerprint: a
    /// collection whose graph did not change since its last sample (the
    /// common case) is not solved again.
    static SOLVED: RefCell<HashMap<[u8; 32], (Integrity, f64)>> = RefCell::new(HashMap::new());
}

/// How many solved graphs a process remembers.
const REMEMBERED: usize = 256;

/// λ, λ_nominal, λ_norm, the witness edges and λ₂ of `built`.
fn solved(built: &Built) -> SqlResult<(Integrity, f64)> {
    let graph = &built.graph;
    let key = graph.fingerprint(true);
    if let Some(known) = SOLVED.with(|s| s.borrow().get(&key).cloned()) {
        return Ok(known);
    }
    let integrity = solver::controlled(|c| graph.integrity_with(c))?;
    let lambda2 = solver::controlled(|c| {
        spectral::lambda2_with(graph.nodes().len(), &graph.weighted_edges(false), c)
    })?;
    SOLVED.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() >= REMEMBERED {
            s.clear();
        }
        s.insert(key, (integrity.clone(), lambda2));
    });
    Ok((integrity, lambda2))
}

/// Observes `collection` and measures its graph.
pub fn measure(collection: &CollectionRow) -> SqlResult<Measurement> {
    Measurement::of(graph_builder::observe(collection)?, &Overrides::new())
}

/// A node's label: `kind:name`, as witness edges and what-if changes name it.
pub fn label(node: &Node) -> String {
    ruvector_integrity::sources::label(node.kind, &node.name)
}

impl Measurement {
    /// λ, λ_nominal, λ_norm, the witness edges and λ₂ of the graph of what
    /// was observed, with `overrides` imposed.
    pub fn of(observed: Observed, overrides: &Overrides) -> SqlResult<Measurement> {
        let built = graph_builder::build(&observed, overrides)?;
        let (integrity, lambda2) = solved(&built)?;
        Ok(Measurement {
            observed,
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

    /// Stores this graph as `collection_id`'s: its nodes always, its edges
    /// when its topology differs from the stored one (or `rewrite` says so),
    /// else only the error rates that changed. The collection's state row is
    /// locked first, so that concurrent stores (the worker, a rebuild) follow
    /// each other.
    pub fn store(&self, collection_id: i32, rewrite: bool) -> SqlResult<()> {
        let graph = &self.built.graph;
        let stored = Spi::get_one_with_args::<String>(
            "SELECT graph_topology FROM ruvector.integrity_state WHERE collection_id = $1 FOR UPDATE",
            &[collection_id.into()],
        )
        .optional()?;
        let topology: String = graph
            .topology()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let nodes: Vec<Value> = graph
            .nodes()
            .iter()
            .zip(&self.built.node_data)
            .enumerate()
            .map(|(i, (n, data))| {
                json!({"node_type": n.kind.as_str(), "node_id": i, "node_name": n.name, "node_data": data, "health_score": n.health})
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
        if rewrite || stored.as_deref() != Some(topology.as_str()) {
            let edges = graph.edges();
            let kind = |i: usize| graph.nodes()[i].kind.as_str();
            Spi::run_with_args(
                "DELETE FROM ruvector.contracted_edges WHERE collection_id = $1",
                &[collection_id.into()],
            )?;
            Spi::run_with_args(
                STORE_EDGES,
                &[
                    collection_id.into(),
                    (0..edges.len() as i64).collect::<Vec<_>>().into(),
                    edges
                        .iter()
                        .map(|e| kind(e.source))
                        .collect::<Vec<_>>()
                        .into(),
                    edges
                        .iter()
                        .map(|e| e.source as i64)
                        .collect::<Vec<_>>()
                        .into(),
                    edges
                        .iter()
                        .map(|e| kind(e.target))
                        .collect::<Vec<_>>()
                        .into(),
                    edges
                        .iter()
                        .map(|e| e.target as i64)
                        .collect::<Vec<_>>()
                        .into(),
                    edges
                        .iter()
                        .map(|e| e.kind.as_str())
                        .collect::<Vec<_>>()
                        .into(),
                    edges.iter().map(|e| e.capacity).collect::<Vec<_>>().into(),
                    edges
                        .iter()
                        .map(|e| e.error_rate)
                        .collect::<Vec<_>>()
                        .into(),
                ],
            )?;
            Spi::run_with_args(
                "UPDATE ruvector.integrity_state SET graph_topology = $2 WHERE collection_id = $1",
                &[collection_id.into(), topology.as_str().into()],
            )?;
        } else {
            let (ids, rates): (Vec<i64>, Vec<f64>) = graph
                .edges()
                .iter()
                .enumerate()
                .filter(|(_, e)| e.error_rate != 0.0)
                .map(|(i, e)| (i as i64, e.error_rate))
                .unzip();
            Spi::run_with_args(
                UPDATE_ERROR_RATES,
                &[collection_id.into(), ids.into(), rates.into()],
            )?;
        }
        Ok(())
    }
}
