//! What a DBA asks about a collection: its status
//! (`ruvector_integrity_status`), a fresh measurement
//! (`ruvector_integrity_sample`), a what-if (`ruvector_integrity_simulate`),
//! and how full shared memory is (`ruvector._shared_memory`).

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::sources::Overrides;
use ruvector_integrity::time::utc;
use serde_json::{json, Value};

use super::collections::require_owner;
use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::jsonb::{JsonbArg, SMALL_DOCUMENT};
use crate::sampler::{self, Measurement};
use crate::{clock, gate, graph_builder, gucs, shmem, store, sync};

#[pg_extern(schema = "ruvector", name = "_integrity_status")]
fn integrity_status(collection: &str) -> JsonB {
    status(collection).or_raise()
}

fn status(name: &str) -> SqlResult<JsonB> {
    let collection = store::collections::find(name)?;
    let details = store::samples::details(collection.id)?;
    let shared = shmem::shared()?;
    let now = clock::now();
    sync::ensure(shared);
    let held = shared.view(name).map(|(_, v)| v);
    // Statements are gated only where shared memory holds the collection: in
    // the watched database, once the worker (or this backend) has loaded it.
    let enforced = held.is_some() && gucs::INTEGRITY_ENABLED.get();
    let view = held.unwrap_or_else(|| collection.view());
    let (state, stale) = view.in_force(now);
    let pin = view.pin.filter(|p| p.in_force(now));
    let signals = view.policy.signals(state);
    let finite = |x: f64| x.is_finite().then_some(x);
    Ok(JsonB(json!({
        "collection": name,
        "table": collection.qualified_table(),
        "column": collection.column,
        "dimensions": collection.dimensions,
        "config": collection.config,
        "state": state.as_str(),
        "enforced": enforced,
        "sampled_state": view.state.as_str(),
        "stale": stale,
        "lambda_cut": finite(view.lambda_cut),
        "lambda_nominal": details.lambda_nominal,
        "lambda_norm": finite(view.lambda_norm),
        "lambda2": details.lambda2,
        "witness_edges": details.witness_edges,
        "last_sample": details.last_sample.map(utc),
        "sample_count": collection.sample_count,
        "last_error": details.last_error,
        "override": pin.map(|p| json!({
            "state": p.state.as_str(),
            "until": utc(p.until),
            "reason": details.override_reason,
            "by": details.override_by,
        })),
        "policy": {
            "name": collection.policy_name,
            "threshold_high": collection.policy.threshold_high,
            "threshold_low": collection.policy.threshold_low,
        },
        "signals": {
            "pause_gnn_training": signals & 1 != 0,
            "pause_tier_management": signals & 2 != 0,
            "emergency_compact": signals & 4 != 0,
        },
        "gate": gate::stats_json(shared, name),
        "worker": {
            "pid": shared.worker_pid(),
            "heartbeat": shared.heartbeat().map(utc),
            "audit": serde_json::from_str::<Value>(&shared.signing_note()).unwrap_or(Value::Null),
        },
    })))
}

/// What shared memory says of `collection` now, for the
/// `ruvector.collections_status` view: the state the gate acts on, whether
/// the last sample is stale, whether statements are gated, and the override in
/// force. No row where shared memory does not hold the collection.
/// Granted to `ruvector_reader`, as the status is.
#[pg_extern(schema = "ruvector", name = "_live_state")]
#[allow(clippy::type_complexity)] // the columns must be spelled here for pgrx
fn live_state(
    collection: &str,
) -> TableIterator<
    'static,
    (
        name!(state, String),
        name!(stale, bool),
        name!(enforced, bool),
        name!(override_state, Option<String>),
        name!(override_until_unix_us, Option<i64>),
    ),
> {
    // (Without the preloaded library there is no shared memory: no row.)
    let shared = shmem::shared().ok();
    if let Some(shared) = shared {
        sync::ensure(shared);
    }
    let now = clock::now();
    let row = shared.and_then(|s| s.view(collection)).map(|(_, view)| {
        let (state, stale) = view.in_force(now);
        let pin = view.pin.filter(|p| p.in_force(now));
        (
            state.as_str().to_owned(),
            stale,
            gucs::INTEGRITY_ENABLED.get(),
            pin.map(|p| p.state.as_str().to_owned()),
            pin.map(|p| p.until),
        )
    });
    TableIterator::new(row)
}

/// How full ruvector's shared memory is (all databases): collection slots and
/// relation entries used and reserved by transactions in progress, the
/// relation map's version, the solvers' memory held, and the pending audit
/// events the worker follows.
#[pg_extern(schema = "ruvector", name = "_shared_memory")]
fn shared_memory() -> JsonB {
    let usage = shmem::shared().or_raise().usage();
    JsonB(json!({
        "collections": {"capacity": usage.slot_capacity, "used": usage.slots_used, "reserved": usage.slots_reserved},
        "relations": {"capacity": usage.relation_capacity, "used": usage.relations_used,
                      "reserved": usage.relations_reserved, "map_version": usage.relations_version},
        "solver_memory": {"limit_bytes": gucs::SOLVER_MEMORY_LIMIT.get() as u64 * 1024,
                          "held_bytes": usage.solver_memory_held},
        "pending_events": {"tracked": usage.pending_tracked, "untracked": usage.pending_untracked},
        "databases": {"capacity": usage.database_capacity, "used": usage.databases_used},
    }))
}

/// Measures the collection now, without changing its state (state changes are
/// the worker's, which holds the signing key), and asks the worker to take a
/// real sample on its next tick.
#[pg_extern(schema = "ruvector", name = "_integrity_sample")]
fn integrity_sample(collection: &str) -> JsonB {
    graph_builder::forget_probes();
    let found = store::collections::find(collection).or_raise();
    require_owner(&found, "sample").or_raise();
    let measurement = sampler::measure(&found).or_raise();
    if let Ok(shared) = shmem::shared() {
        shared.request_sample(collection);
        shared.wake_worker();
    }
    let mut summary = measurement.summary();
    summary["collection"] = json!(collection);
    summary["state"] = json!(found.state.as_str());
    JsonB(summary)
}

/// What-if: λ and the state the sample would call for if the named nodes had
/// these healths (0 is failed), without touching the live state.
#[pg_extern(schema = "ruvector", name = "_integrity_simulate")]
fn integrity_simulate(collection: &str, changes: JsonbArg) -> JsonB {
    let changes = changes.small("changes", SMALL_DOCUMENT).or_raise();
    simulate(collection, &changes).or_raise()
}

fn simulate(name: &str, changes: &Value) -> SqlResult<JsonB> {
    graph_builder::forget_probes();
    let collection = store::collections::find(name)?;
    let thresholds = collection.policy.thresholds();
    let now = sampler::measure(&collection)?;
    let Value::Object(changes) = changes else {
        return Err(SqlError::invalid("changes must be a JSON object of node: health")
            .hint("For example {\"shard:primary\": 0} fails the primary; see ruvector_contracted_graph() for node names."));
    };
    let labels: Vec<String> = now.built.graph.nodes().iter().map(sampler::label).collect();
    let mut overrides = Overrides::new();
    for (label, health) in changes {
        if !labels.contains(label) {
            return Err(SqlError::invalid(format!(
                "no node \"{label}\" in the graph of \"{name}\""
            ))
            .hint(format!("Nodes: {}.", labels.join(", "))));
        }
        let health = health.as_f64().ok_or_else(|| {
            SqlError::invalid(format!(
                "the health of \"{label}\" must be a number in [0, 1]"
            ))
        })?;
        overrides.insert(label.clone(), health);
    }
    let then = Measurement::of(now.observed.clone(), &overrides)?;
    let summary = |m: &Measurement| {
        json!({
            "lambda_cut": m.integrity.lambda_cut,
            "lambda_norm": m.integrity.lambda_norm,
            "lambda2": m.lambda2,
            "level": thresholds.level(m.integrity.lambda_norm).as_str(),
            "witness_edges": m.witness_edges(),
        })
    };
    Ok(JsonB(json!({
        "collection": name,
        "changes": changes,
        "now": summary(&now),
        "simulated": summary(&then),
        "note": "level is the state one such sample calls for; the policy's hysteresis decides when the state would move",
    })))
}
