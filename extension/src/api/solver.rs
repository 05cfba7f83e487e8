//! The solvers on any graph, for operators and for checking them against other
//! tools: `ruvector_mincut(edges)` and `ruvector_lambda2(edges)`, where `edges`
//! is `[{"source": .., "target": .., "capacity": ..}, ...]`, node ids are text
//! or numbers, and a missing capacity is 1.
//!
//! Any role may call them, so what one call may take is bounded before it takes
//! it: the element count is read from the document's header and refused beyond
//! `ruvector.solver_max_edges`; the memory the call will need is reserved from
//! the cluster-wide `ruvector.solver_memory_limit` (shared memory) and given
//! back when the call ends, however it ends; the edges are read straight from
//! the binary jsonb with interrupts checked (see [`crate::jsonb`]).

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::control::Control;
use ruvector_integrity::edge_list::{EdgeList, EdgeListReader};
use ruvector_integrity::{mincut, spectral, Error};
use serde_json::json;

use crate::control::controlled;
use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::jsonb::{JsonbArg, Root};
use crate::shmem;

/// Bytes a call may need per edge of its input, beyond the input itself: the
/// min cut's peak (70 to 130 bytes per edge, `make bench`), the edge list (16)
/// and a node name's index entry (about 40 per node, at most two nodes per
/// edge, most graphs far fewer). λ₂ needs less per edge.
pub const BYTES_PER_EDGE: usize = 160;

/// Reads `edges` into an edge list and runs `solve` on it, holding the call's
/// share of `ruvector.solver_memory_limit` meanwhile.
fn with_graph<R>(
    edges: &JsonbArg,
    solve: impl FnOnce(&EdgeList, &mut Control) -> Result<R, Error>,
) -> SqlResult<(EdgeList, R)> {
    let count = match edges.root() {
        Root::Array(count) => count,
        _ => {
            return Err(SqlError::invalid(
                "edges must be a JSON array of {\"source\", \"target\", \"capacity\"} objects",
            ))
        }
    };
    // Refused on the header alone, before anything is read or reserved.
    controlled(|c| c.limits().check(0, count))?;
    let needed = count
        .saturating_mul(BYTES_PER_EDGE)
        .saturating_add(edges.size());
    let _share = shmem::shared()?.reserve_solver_memory(needed)?;
    controlled(|control| {
        let mut reader = EdgeListReader::new(count, control)?;
        edges.read_edges(count, &mut reader)?;
        let graph = reader.finish();
        preflight(&graph)?;
        let answer = solve(&graph, control)?;
        Ok((graph, answer))
    })
}

/// Asks the allocator for the solver's peak working memory, fallibly, and
/// gives it back: an allocation failure inside the solver would abort the
/// backend (Rust's allocation failures are not errors), this one is an ERROR.
fn preflight(graph: &EdgeList) -> Result<(), Error> {
    let peak = graph.edges.len() * 130 + graph.ids.len() * 300;
    let mut probe: Vec<u8> = Vec::new();
    probe
        .try_reserve_exact(peak)
        .map_err(|_| Error::OutOfMemory {
            what: "the solver's working memory",
        })
}

/// The exact global minimum cut: `lambda`, one side of the cut, and the edges
/// that cross it. `lambda` is null for graphs with fewer than two nodes.
#[pg_extern(immutable, parallel_safe, strict)]
fn ruvector_mincut(edges: JsonbArg) -> JsonB {
    let (graph, cut) = with_graph(&edges, |g, c| {
        mincut::min_cut_with(g.ids.len(), &g.edges, c)
    })
    .or_raise();
    let n = graph.ids.len();
    JsonB(match cut {
        None => {
            json!({"lambda": null, "nodes": n, "edges": graph.edges.len(), "side": [], "witness_edges": []})
        }
        Some(cut) => json!({
            "lambda": cut.value,
            "nodes": n,
            "edges": graph.edges.len(),
            "side": cut.side_vertices().iter().map(|&v| graph.ids[v].to_json()).collect::<Vec<_>>(),
            "witness_edges": graph.edges.iter()
                .filter(|&&(u, v, _)| cut.side[u as usize] != cut.side[v as usize])
                .map(|&(u, v, w)| json!({"source": graph.ids[u as usize].to_json(), "target": graph.ids[v as usize].to_json(), "capacity": w}))
                .collect::<Vec<_>>(),
        }),
    })
}

/// λ₂, the algebraic connectivity of the weighted Laplacian (0 when the graph
/// is disconnected).
#[pg_extern(immutable, parallel_safe, strict)]
fn ruvector_lambda2(edges: JsonbArg) -> JsonB {
    let (graph, value) = with_graph(&edges, |g, c| {
        spectral::lambda2_with(g.ids.len(), &g.edges, c)
    })
    .or_raise();
    JsonB(
        json!({"lambda2": value, "nodes": graph.ids.len(), "edges": graph.edges.len(), "connected": value > 0.0}),
    )
}
