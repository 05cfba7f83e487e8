//! A contracted graph as Graphviz text: nodes grouped by type and coloured by
//! health, the witness edges (the edges across the minimum cut) drawn red and
//! thick, and edges that carry nothing any more (a lost standby's stream, a
//! dead server's links) dashed. Rendering only: the extension reads the
//! stored graph into a [`Drawing`].

use serde::Deserialize;
use serde_json::Value;

/// A stored graph, as drawn.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Drawing {
    pub nodes: Vec<DrawnNode>,
    pub edges: Vec<DrawnEdge>,
    /// The witness edges, as the collection's state records them.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub witness: Vec<Value>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    Ok(Option::<Vec<Value>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Deserialize)]
pub struct DrawnNode {
    /// `kind:name`, as edges name their ends.
    pub label: String,
    pub kind: String,
    pub name: String,
    pub health: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DrawnEdge {
    pub source: String,
    pub target: String,
    pub kind: String,
    pub capacity: f64,
    pub effective_capacity: f64,
}

/// What the title says of the collection.
pub struct Title<'a> {
    pub collection: &'a str,
    pub state: &'a str,
    pub lambda_cut: Option<f64>,
    pub lambda_norm: Option<f64>,
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

impl DrawnEdge {
    /// Whether the state's witness edges name this edge (either way round).
    fn is_witness(&self, witness: &[Value]) -> bool {
        witness.iter().any(|w| {
            w["kind"] == self.kind.as_str()
                && ((w["source"] == self.source.as_str() && w["target"] == self.target.as_str())
                    || (w["source"] == self.target.as_str() && w["target"] == self.source.as_str()))
        })
    }
}

/// The graph as Graphviz text.
pub fn render(title: &Title, drawing: &Drawing) -> String {
    let number = |x: Option<f64>| x.map_or("-".to_owned(), |l| format!("{l:.3}"));
    let mut out = format!(
        "graph {} {{\n  label={};\n  labelloc=t;\n  fontname=\"Helvetica\";\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n",
        quoted(title.collection),
        quoted(&format!(
            "{}: {}, λ {}, λ_norm {}",
            title.collection,
            title.state,
            number(title.lambda_cut),
            number(title.lambda_norm)
        )),
    );
    for (kind, group) in GROUPS {
        let members: Vec<&DrawnNode> = drawing.nodes.iter().filter(|n| n.kind == kind).collect();
        if members.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "  subgraph {} {{\n    label={};\n    style=\"rounded,dashed\";\n    color=\"#9e9e9e\";\n",
            quoted(&format!("cluster_{kind}")),
            quoted(&format!("{group} ({})", members.len()))
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
    for e in &drawing.edges {
        let mut style = String::new();
        if e.is_witness(&drawing.witness) {
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn witness_edges_are_red_dead_ones_dashed_and_names_quoted() {
        let drawing: Drawing = serde_json::from_value(json!({
            "nodes": [
                {"label": "shard:primary", "kind": "shard", "name": "primary", "health": 1.0},
                {"label": "replication_target:r\"1", "kind": "replication_target", "name": "r\"1", "health": 0.0},
                {"label": "partition:p", "kind": "partition", "name": "p", "health": 0.6},
            ],
            "edges": [
                {"source": "replication_target:r\"1", "target": "shard:primary", "kind": "replication",
                 "capacity": 1.0, "effective_capacity": 0.0},
                {"source": "partition:p", "target": "shard:primary", "kind": "partition_link",
                 "capacity": 2.0, "effective_capacity": 1.2},
            ],
            "witness": [{"source": "shard:primary", "target": "replication_target:r\"1", "kind": "replication"}],
        }))
        .unwrap();
        let title = Title {
            collection: "docs",
            state: "critical",
            lambda_cut: Some(0.0),
            lambda_norm: None,
        };
        let text = render(&title, &drawing);
        assert!(
            text.starts_with("graph \"docs\" {\n  label=\"docs: critical, λ 0.000, λ_norm -\";"),
            "{text}"
        );
        assert!(text.contains(
            "  \"replication_target:r\\\"1\" -- \"shard:primary\" [label=\"0.00\", color=red, fontcolor=red, penwidth=2.5, style=dashed];"
        ), "{text}");
        assert!(
            text.contains("  \"partition:p\" -- \"shard:primary\" [label=\"1.20\"];"),
            "{text}"
        );
        // Groups in their order, each node coloured by health.
        let partitions = text.find("cluster_partition").unwrap();
        let shards = text.find("cluster_shard").unwrap();
        assert!(partitions < shards);
        assert!(text.contains("fillcolor=\"#ffe0b2\""));
        assert!(text.contains("fillcolor=\"#ffcdd2\""));
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn a_graph_without_a_witness_draws_none() {
        let drawing: Drawing =
            serde_json::from_value(json!({"nodes": [], "edges": [], "witness": null})).unwrap();
        let title = Title {
            collection: "empty",
            state: "unknown",
            lambda_cut: None,
            lambda_norm: None,
        };
        assert!(!render(&title, &drawing).contains("color=red"));
    }
}
