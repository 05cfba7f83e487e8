//! `ruvector_contracted_graph_dot(collection)`: the stored contracted graph as
//! Graphviz text, nodes coloured by health and the witness edges (the edges
//! across the minimum cut) drawn red.

use pgrx::prelude::*;
use pgrx::JsonB;
use serde::Deserialize;
use serde_json::Value;

use crate::collections;
use crate::errors::{OrRaise, SqlError, SqlResult};

#[derive(Deserialize)]
struct Stored {
    nodes: Vec<StoredNode>,
    edges: Vec<StoredEdge>,
    witness: Vec<Value>,
}

#[derive(Deserialize)]
struct StoredNode {
    label: String,
    kind: String,
    name: String,
    health: f64,
}

#[derive(Deserialize)]
struct StoredEdge {
    source: String,
    target: String,
    kind: String,
    effective_capacity: f64,
}

/// A double-quoted Graphviz ID.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn fill(health: f64) -> &'static str {
    match health {
        h if h >= 0.999 => "#c8e6c9",
        h if h >= 0.5 => "#ffe0b2",
        _ => "#ffcdd2",
    }
}

#[pg_extern(schema = "ruvector", name = "_contracted_graph_dot")]
fn contracted_graph_dot(collection: &str) -> String {
    dot(collection).or_raise()
}

fn dot(collection: &str) -> SqlResult<String> {
    let row = collections::find(collection)?;
    let stored: Stored = serde_json::from_value(
        Spi::get_one_with_args::<JsonB>(
            "SELECT jsonb_build_object(
                 'nodes', coalesce((SELECT jsonb_agg(jsonb_build_object(
                     'label', node_type || ':' || node_name, 'kind', node_type, 'name', node_name,
                     'health', health_score) ORDER BY node_id)
                     FROM ruvector.contracted_graph WHERE collection_id = $1), '[]'),
                 'edges', coalesce((SELECT jsonb_agg(jsonb_build_object(
                     'source', s.node_type || ':' || s.node_name, 'target', t.node_type || ':' || t.node_name,
                     'kind', e.edge_type, 'effective_capacity', e.effective_capacity) ORDER BY e.id)
                     FROM ruvector.contracted_edges e
                     JOIN ruvector.contracted_graph s ON s.collection_id = e.collection_id
                          AND s.node_type = e.source_type AND s.node_id = e.source_id
                     JOIN ruvector.contracted_graph t ON t.collection_id = e.collection_id
                          AND t.node_type = e.target_type AND t.node_id = e.target_id
                     WHERE e.collection_id = $1), '[]'),
                 'witness', (SELECT witness_edges FROM ruvector.integrity_state WHERE collection_id = $1))",
            &[row.id.into()],
        )?
        .ok_or_else(|| SqlError::internal("the graph query returned nothing"))?
        .0,
    )?;
    let is_witness = |e: &StoredEdge| {
        stored.witness.iter().any(|w| {
            w["kind"] == e.kind.as_str()
                && ((w["source"] == e.source.as_str() && w["target"] == e.target.as_str())
                    || (w["source"] == e.target.as_str() && w["target"] == e.source.as_str()))
        })
    };
    let mut out = format!(
        "graph {} {{\n  label={};\n  labelloc=t;\n  fontname=\"Helvetica\";\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n",
        quoted(collection),
        quoted(&format!(
            "{collection}: {}, lambda_norm {}",
            row.state,
            row.lambda_norm.map_or("-".to_owned(), |l| format!("{l:.3}"))
        )),
    );
    for n in &stored.nodes {
        out.push_str(&format!(
            "  {} [label={}, fillcolor=\"{}\"];\n",
            quoted(&n.label),
            quoted(&format!("{}\n{}\nhealth {:.2}", n.name, n.kind, n.health)),
            fill(n.health)
        ));
    }
    for e in &stored.edges {
        let style = if is_witness(e) {
            ", color=red, fontcolor=red, penwidth=2.5"
        } else {
            ""
        };
        out.push_str(&format!(
            "  {} -- {} [label={}{style}];\n",
            quoted(&e.source),
            quoted(&e.target),
            quoted(&format!("{:.2}", e.effective_capacity)),
        ));
    }
    out.push_str("}\n");
    Ok(out)
}
