//! One measurement of a collection: build its contracted graph, compute λ,
//! λ_nominal, λ_norm, λ₂ and the witness edges, and store the graph.
//! Deciding what the measurement means for the state is the worker's job.

use std::cell::RefCell;
use std::collections::HashMap;

use ruvector_integrity::audit::WitnessEdge;
use ruvector_integrity::graph::{Integrity, Node};
use ruvector_integrity::sources::{Built, Observed, Overrides};
use ruvector_integrity::spectral;
use serde_json::{json, Value};

use crate::control::controlled;
use crate::errors::SqlResult;
use crate::store::collections::Collection;
use crate::{graph_builder, store};

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
    let integrity = controlled(|c| graph.integrity_with(c))?;
    let lambda2 = controlled(|c| {
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
pub fn measure(collection: &Collection) -> SqlResult<Measurement> {
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

    /// Stores this graph as `collection_id`'s (see [`store::graph::store`]).
    pub fn store(&self, collection_id: i32, rewrite: bool) -> SqlResult<()> {
        store::graph::store(
            collection_id,
            &self.built.graph,
            &self.built.node_data,
            rewrite,
        )
    }
}
