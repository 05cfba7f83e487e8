//! The stored contracted graph: its nodes always, its edges when its topology
//! changed (a graph with IVF lists has tens of thousands of routing edges),
//! else only the error rates that changed; and the graph as drawn.

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::dot::Drawing;
use ruvector_integrity::graph::ContractedGraph;
use serde_json::{json, Value};

use super::document;
use crate::errors::{Optional, SqlResult};

/// Stores `graph` (with each node's observed data, in node order) as
/// collection `id`'s; its edges when its topology differs from the stored
/// one or `rewrite` says so. The collection's state row is locked first, so
/// that concurrent stores (the worker, a rebuild) follow each other.
pub fn store(
    id: i32,
    graph: &ContractedGraph,
    node_data: &[Value],
    rewrite: bool,
) -> SqlResult<()> {
    let stored = Spi::get_one_with_args::<String>(super::LOCK_GRAPH, &[id.into()]).optional()?;
    let topology: String = graph
        .topology()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let nodes: Vec<Value> = graph
        .nodes()
        .iter()
        .zip(node_data)
        .enumerate()
        .map(|(i, (n, data))| {
            json!({"node_type": n.kind.as_str(), "node_id": i, "node_name": n.name, "node_data": data, "health_score": n.health})
        })
        .collect();
    Spi::run_with_args(super::DELETE_GRAPH_NODES, &[id.into()])?;
    Spi::run_with_args(
        super::STORE_GRAPH,
        &[id.into(), JsonB(Value::Array(nodes)).into()],
    )?;
    let edges = graph.edges();
    if rewrite || stored.as_deref() != Some(topology.as_str()) {
        let kind = |i: usize| graph.nodes()[i].kind.as_str();
        let column = |f: &dyn Fn(&ruvector_integrity::graph::Edge) -> String| -> Vec<String> {
            edges.iter().map(f).collect()
        };
        Spi::run_with_args(super::DELETE_GRAPH_EDGES, &[id.into()])?;
        Spi::run_with_args(
            super::STORE_EDGES,
            &[
                id.into(),
                (0..edges.len() as i64).collect::<Vec<_>>().into(),
                column(&|e| kind(e.source).to_owned()).into(),
                edges
                    .iter()
                    .map(|e| e.source as i64)
                    .collect::<Vec<_>>()
                    .into(),
                column(&|e| kind(e.target).to_owned()).into(),
                edges
                    .iter()
                    .map(|e| e.target as i64)
                    .collect::<Vec<_>>()
                    .into(),
                column(&|e| e.kind.as_str().to_owned()).into(),
                edges.iter().map(|e| e.capacity).collect::<Vec<_>>().into(),
                edges
                    .iter()
                    .map(|e| e.error_rate)
                    .collect::<Vec<_>>()
                    .into(),
            ],
        )?;
        Spi::run_with_args(
            super::SET_GRAPH_TOPOLOGY,
            &[id.into(), topology.as_str().into()],
        )?;
    } else {
        let (ids, rates): (Vec<i64>, Vec<f64>) = edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.error_rate != 0.0)
            .map(|(i, e)| (i as i64, e.error_rate))
            .unzip();
        Spi::run_with_args(
            super::UPDATE_ERROR_RATES,
            &[id.into(), ids.into(), rates.into()],
        )?;
    }
    Ok(())
}

/// Collection `id`'s stored graph, as drawn.
pub fn drawing(id: i32) -> SqlResult<Drawing> {
    document(super::GRAPH_DRAWING, &[id.into()])
}
