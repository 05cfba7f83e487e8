//! A collection's stored contracted graph: drawn as Graphviz text
//! (`ruvector_contracted_graph_dot`, rendered by the core's `dot`), and
//! rebuilt now (`ruvector_rebuild_contracted_graph`).

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::dot::{self, Title};
use serde_json::json;

use super::collections::require_owner;
use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::{graph_builder, sampler, store};

#[pg_extern(schema = "ruvector", name = "_contracted_graph_dot")]
fn contracted_graph_dot(collection: &str) -> String {
    let found = store::collections::find(collection).or_raise();
    let drawing = store::graph::drawing(found.id).or_raise();
    let title = Title {
        collection,
        state: found.state.as_str(),
        lambda_cut: found.lambda_cut,
        lambda_norm: found.lambda_norm,
    };
    dot::render(&title, &drawing)
}

/// Rebuilds and stores the collection's contracted graph now.
#[pg_extern(schema = "ruvector", name = "_rebuild_contracted_graph")]
fn rebuild_contracted_graph(collection: &str) -> JsonB {
    rebuild(collection).or_raise()
}

fn rebuild(collection: &str) -> SqlResult<JsonB> {
    graph_builder::forget_probes();
    let found = store::collections::find(collection)?;
    // Storing the graph locks the collection's state row until the caller's
    // transaction ends: the table's owner's call, as changing its policy is.
    require_owner(&found, "rebuild the graph of")?;
    let measurement = sampler::measure(&found)?;
    measurement.store(found.id, true)?;
    let graph = &measurement.built.graph;
    if graph.nodes().is_empty() {
        return Err(SqlError::internal("the rebuilt graph is empty"));
    }
    Ok(JsonB(json!({
        "collection": collection,
        "node_count": graph.nodes().len(),
        "edge_count": graph.edges().len(),
        "lambda_cut": measurement.integrity.lambda_cut,
        "lambda_norm": measurement.integrity.lambda_norm,
    })))
}
