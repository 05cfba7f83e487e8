//! `ruvector_contracted_graph_dot(collection)`: the stored contracted graph as
//! Graphviz text, nodes grouped by type and coloured by health, the witness
//! edges (the edges across the minimum cut) drawn red, and edges that carry
//! nothing any more (a lost standby's stream, a dead server's links) dashed.

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
    capacity: f64,
    effective_capacity: f64,
}

/// The order and titles of the node groups.
const GROUPS: [(&str, &str); 5] = [
    ("centroid", "IVF lists"),
    ("partition", "partitions"),
    ("shard", "shards"),
    ("replication_target", "standbys"),
    ("maintenance_dep", "maintenance"),
];

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
                     -- a standby's health is its stream's (on its replication edge)
                     'health', CASE WHEN node_type = 'replication_target'
                                    THEN coalesce((node_data->>'health')::float8, health_score)
                                    ELSE health_score END) ORDER BY node_id)
                     FROM ruvector.contracted_graph WHERE collection_id = $1), '[]'),
                 'edges', coalesce((SELECT jsonb_agg(jsonb_build_object(
                     'source', e.source, 'target', e.target, 'kind', e.edge_type,
                     'capacity', e.capacity, 'effective_capacity', e.effective_capacity) ORDER BY e.edge_id)
                     FROM ruvector.contracted_edge_capacities e WHERE e.collection_id = $1), '[]'),
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
            "{collection}: {}, λ {}, λ_norm {}",
            row.state,
            row.lambda_cut.map_or("-".to_owned(), |l| format!("{l:.3}")),
            row.lambda_norm.map_or("-".to_owned(), |l| format!("{l:.3}"))
        )),
    );
    for (kind, title) in GROUPS {
        let members: Vec<&StoredNode> = stored.nodes.iter().filter(|n| n.kind == kind).collect();
        if members.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "  subgraph {} {{\n    label={};\n    style=\"rounded,dashed\";\n    color=\"#9e9e9e\";\n",
            quoted(&format!("cluster_{kind}")),
            quoted(&format!("{title} ({})", members.len()))
        ));
        for n in members {
            out.push_str(&format!(
                "    {} [label={}, fillcolor=\"{}\"];\n",
                quoted(&n.label),
                quoted(&format!("{}\nhealth {:.2}", n.name, n.health)),
                fill(n.health)
            ));
        }
        out.push_str("  }\n");
    }
    for e in &stored.edges {
        let mut style = String::new();
        if is_witness(e) {
            style.push_str(", color=red, fontcolor=red, penwidth=2.5");
        }
        if e.capacity > 0.0 && e.effective_capacity < 1e-9 {
            style.push_str(", style=dashed");
        }
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
