//! The solvers on any graph, for operators and for checking them against other
//! tools: `ruvector_mincut(edges)` and `ruvector_lambda2(edges)`, where `edges`
//! is `[{"source": .., "target": .., "capacity": ..}, ...]`, node ids are text
//! or numbers, and a missing capacity is 1.

use std::collections::HashMap;

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::control::{Control, Limits};
use ruvector_integrity::{mincut, spectral, Error};
use serde_json::{json, Value};

use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::gucs;

/// Runs `solve` under `ruvector.solver_max_edges`, checking for a cancel or a
/// `statement_timeout` every few thousand steps (the check raises the ERROR,
/// which unwinds through the solver).
pub fn controlled<R>(solve: impl FnOnce(&mut Control) -> Result<R, Error>) -> SqlResult<R> {
    let mut hook = || -> Result<(), Error> {
        check_for_interrupts!();
        Ok(())
    };
    let limits = Limits {
        max_edges: gucs::SOLVER_MAX_EDGES.get() as usize,
    };
    let mut control = Control::new(limits).with_interrupt(&mut hook);
    solve(&mut control).map_err(SqlError::from)
}

/// A graph given as JSON: node ids in order of first appearance, and edges.
struct JsonGraph {
    ids: Vec<Value>,
    edges: Vec<(u32, u32, f64)>,
}

fn node_key(edge: usize, end: &str, id: Option<&Value>) -> SqlResult<String> {
    match id {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(SqlError::invalid(format!(
            "edge {edge}: \"{end}\" must be a string or a number"
        ))),
    }
}

fn parse(edges: &Value) -> SqlResult<JsonGraph> {
    let list = edges.as_array().ok_or_else(|| {
        SqlError::invalid(
            "edges must be a JSON array of {\"source\", \"target\", \"capacity\"} objects",
        )
    })?;
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut graph = JsonGraph {
        ids: Vec::new(),
        edges: Vec::with_capacity(list.len()),
    };
    for (i, edge) in list.iter().enumerate() {
        if i % 65_536 == 65_535 {
            check_for_interrupts!();
        }
        let object = edge
            .as_object()
            .ok_or_else(|| SqlError::invalid(format!("edge {i} must be an object")))?;
        if let Some(key) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "source" | "target" | "capacity"))
        {
            return Err(
                SqlError::invalid(format!("edge {i}: unknown key \"{key}\""))
                    .hint("Each edge has source, target and optionally capacity (default 1)."),
            );
        }
        let mut endpoint = |end: &str| -> SqlResult<u32> {
            let id = object.get(end);
            let key = node_key(i, end, id)?;
            Ok(*index.entry(key).or_insert_with(|| {
                graph.ids.push(id.cloned().unwrap_or(Value::Null));
                (graph.ids.len() - 1) as u32
            }))
        };
        let (source, target) = (endpoint("source")?, endpoint("target")?);
        let capacity = match object.get("capacity") {
            None => 1.0,
            Some(c) => c
                .as_f64()
                .ok_or_else(|| SqlError::invalid(format!("edge {i}: capacity must be a number")))?,
        };
        if !capacity.is_finite() || capacity < 0.0 {
            return Err(SqlError::invalid(format!(
                "edge {i}: capacity must be a finite number ≥ 0, got {capacity}"
            )));
        }
        graph.edges.push((source, target, capacity));
    }
    Ok(graph)
}

/// The exact global minimum cut: `lambda`, one side of the cut, and the edges
/// that cross it. `lambda` is null for graphs with fewer than two nodes.
#[pg_extern(immutable, parallel_safe, strict)]
fn ruvector_mincut(edges: JsonB) -> JsonB {
    let graph = parse(&edges.0).or_raise();
    // Freed now, not while a cancel unwinds.
    drop(edges);
    let n = graph.ids.len();
    let cut = controlled(|c| mincut::min_cut_with(n, &graph.edges, c)).or_raise();
    JsonB(match cut {
        None => {
            json!({"lambda": null, "nodes": n, "edges": graph.edges.len(), "side": [], "witness_edges": []})
        }
        Some(cut) => json!({
            "lambda": cut.value,
            "nodes": n,
            "edges": graph.edges.len(),
            "side": cut.side_vertices().iter().map(|&v| graph.ids[v].clone()).collect::<Vec<_>>(),
            "witness_edges": graph.edges.iter()
                .filter(|&&(u, v, _)| cut.side[u as usize] != cut.side[v as usize])
                .map(|&(u, v, w)| json!({"source": graph.ids[u as usize], "target": graph.ids[v as usize], "capacity": w}))
                .collect::<Vec<_>>(),
        }),
    })
}

/// λ₂, the algebraic connectivity of the weighted Laplacian (0 when the graph
/// is disconnected).
#[pg_extern(immutable, parallel_safe, strict)]
fn ruvector_lambda2(edges: JsonB) -> JsonB {
    let graph = parse(&edges.0).or_raise();
    drop(edges);
    let n = graph.ids.len();
    let value = controlled(|c| spectral::lambda2_with(n, &graph.edges, c)).or_raise();
    JsonB(
        json!({"lambda2": value, "nodes": n, "edges": graph.edges.len(), "connected": value > 0.0}),
    )
}
