//! Shards: servers that hold the collection's partitions. At this stage, the
//! local primary, which is up by definition (the worker runs on it).

use ruvector_integrity::graph::NodeKind;
use serde_json::json;

use super::BuiltGraph;
use crate::errors::SqlResult;

/// Adds the local primary; returns its node.
pub fn add_primary(built: &mut BuiltGraph) -> SqlResult<usize> {
    built.add_node(NodeKind::Shard, "primary", 1.0, json!({"type": "primary"}))
}
