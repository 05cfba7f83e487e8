//! What a DBA asks about a collection: its status, a fresh measurement, and a
//! rebuild of its stored graph.

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::hysteresis::State;
use ruvector_integrity::sources::Overrides;
use serde_json::{json, Value};

use crate::errors::{Optional, OrRaise, SqlError, SqlResult};
use crate::jsonb::{JsonbArg, SMALL_DOCUMENT};
use crate::{clock, collections, gate, graph_builder, sampler, shmem};

fn unix_us_text(us: Option<i64>) -> Option<String> {
    us.map(|us| {
        Spi::get_one_with_args::<String>(
            "SELECT to_char(('epoch'::timestamptz + $1 * interval '1 microsecond') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[us.into()],
        )
        .ok()
        .flatten()
        .unwrap_or_default()
    })
}

#[pg_extern(schema = "ruvector", name = "_integrity_status")]
fn integrity_status(collection: &str) -> JsonB {
    status(collection).or_raise()
}

fn status(collection: &str) -> SqlResult<JsonB> {
    let row = collections::find(collection)?;
    let policy = row.policy()?;
    let details = Spi::get_one_with_args::<JsonB>(
        "SELECT jsonb_build_object(
             'lambda_nominal', lambda_nominal, 'lambda2', lambda2, 'witness_edges', witness_edges,
             'last_sample', last_sample, 'override_reason', override_reason, 'override_by', override_by,
             'last_error', last_error, 'last_error_at', last_error_at)
         FROM ruvector.integrity_state WHERE collection_id = $1",
        &[row.id.into()],
    )
    .optional()?
    .map_or(Value::Null, |j| j.0);
    let shared = shmem::shared()?;
    let now = clock::now_pg();
    crate::sync::ensure(shared);
    let held = shared.view(collection).map(|(_, v)| v);
    // Statements are gated only where shared memory holds the collection: in
    // the watched database, once the worker (or this backend) has loaded it.
    let enforced = held.is_some() && crate::gucs::INTEGRITY_ENABLED.get();
    let view = held.unwrap_or(row.view()?);
    let (state, stale) = gate::current_state(&view, now);
    let overridden = view.override_state.is_some() && now < view.override_until;
    let signals = view.policy.signals(state);
    let heartbeat = shared.heartbeat();
    Ok(JsonB(json!({
        "collection": collection,
        "table": format!("{}.{}", row.schema, row.table),
        "column": row.column,
        "dimensions": row.dimensions,
        "config": row.config,
        "state": state.as_str(),
        "enforced": enforced,
        "sampled_state": view.state.as_str(),
        "stale": stale,
        "lambda_cut": view.lambda_cut.is_finite().then_some(view.lambda_cut),
        "lambda_nominal": details["lambda_nominal"],
        "lambda_norm": view.lambda_norm.is_finite().then_some(view.lambda_norm),
        "lambda2": details["lambda2"],
        "witness_edges": details["witness_edges"],
        "last_sample": details["last_sample"],
        "sample_count": row.sample_count,
        "last_error": details["last_error"],
        "override": overridden.then(|| json!({
            "state": view.override_state.map(State::as_str),
            "until": unix_us_text(Some(clock::pg_to_unix(view.override_until))),
            "reason": details["override_reason"],
            "by": details["override_by"],
        })),
        "policy": {
            "name": row.policy_name,
            "threshold_high": policy.threshold_high,
            "threshold_low": policy.threshold_low,
        },
        "signals": {
            "pause_gnn_training": signals & 1 != 0,
            "pause_tier_management": signals & 2 != 0,
            "emergency_compact": signals & 4 != 0,
        },
        "gate": gate::stats_json(shared, collection),
        "worker": {
            "pid": shared.worker_pid(),
            "heartbeat": unix_us_text((heartbeat != 0).then(|| clock::pg_to_unix(heartbeat))),
            "audit": serde_json::from_str::<Value>(&shared.signing_note()).unwrap_or(Value::Null),
        },
    })))
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
        "solver_memory": {"limit_bytes": crate::gucs::SOLVER_MEMORY_LIMIT.get() as u64 * 1024,
                          "held_bytes": usage.solver_memory_held},
        "pending_events": {"tracked": usage.pending_tracked, "untracked": usage.pending_untracked},
    }))
}

/// Measures the collection now, without changing its state (state changes are
/// the worker's, which holds the signing key), and asks the worker to take a
/// real sample on its next tick.
#[pg_extern(schema = "ruvector", name = "_integrity_sample")]
fn integrity_sample(collection: &str) -> JsonB {
    graph_builder::forget_probes();
    let row = collections::find(collection).or_raise();
    collections::check_may_change(&row, "sample").or_raise();
    let measurement = sampler::measure(&row).or_raise();
    if let Ok(shared) = shmem::shared() {
        shared.request_sample(collection);
        shared.wake_worker();
    }
    let mut summary = measurement.summary();
    summary["collection"] = json!(collection);
    summary["state"] = json!(row.state);
    JsonB(summary)
}

/// Rebuilds and stores the collection's contracted graph now.
#[pg_extern(schema = "ruvector", name = "_rebuild_contracted_graph")]
fn rebuild_contracted_graph(collection: &str) -> JsonB {
    rebuild(collection).or_raise()
}

fn rebuild(collection: &str) -> SqlResult<JsonB> {
    graph_builder::forget_probes();
    let row = collections::find(collection)?;
    // Storing the graph locks the collection's state row until the caller's
    // transaction ends: the table's owner's call, as changing its policy is.
    collections::check_may_change(&row, "rebuild the graph of")?;
    let measurement = sampler::measure(&row)?;
    measurement.store(row.id, true)?;
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

/// What-if: λ and the state the sample would call for if the named nodes had
/// these healths (0 is failed), without touching the live state.
#[pg_extern(schema = "ruvector", name = "_integrity_simulate")]
fn integrity_simulate(collection: &str, changes: JsonbArg) -> JsonB {
    let changes = changes.small("changes", SMALL_DOCUMENT).or_raise();
    simulate(collection, &changes).or_raise()
}

fn simulate(collection: &str, changes: &Value) -> SqlResult<JsonB> {
    graph_builder::forget_probes();
    let row = collections::find(collection)?;
    let thresholds = row.policy()?.thresholds();
    let now = sampler::measure(&row)?;
    let Value::Object(changes) = changes else {
        return Err(SqlError::invalid("changes must be a JSON object of node: health")
            .hint("For example {\"shard:primary\": 0} fails the primary; see ruvector_contracted_graph() for node names."));
    };
    let mut overrides = Overrides::new();
    for (label, health) in changes {
        if !now
            .built
            .graph
            .nodes()
            .iter()
            .any(|n| sampler::label(n) == *label)
        {
            let known: Vec<String> = now.built.graph.nodes().iter().map(sampler::label).collect();
            return Err(SqlError::invalid(format!(
                "no node \"{label}\" in the graph of \"{collection}\""
            ))
            .hint(format!("Nodes: {}.", known.join(", "))));
        }
        let health = health.as_f64().ok_or_else(|| {
            SqlError::invalid(format!(
                "the health of \"{label}\" must be a number in [0, 1]"
            ))
        })?;
        overrides.insert(label.clone(), health);
    }
    let then = sampler::Measurement::of(now.observed.clone(), &overrides)?;
    let summary = |m: &sampler::Measurement| {
        json!({
            "lambda_cut": m.integrity.lambda_cut,
            "lambda_norm": m.integrity.lambda_norm,
            "lambda2": m.lambda2,
            "level": thresholds.level(m.integrity.lambda_norm).as_str(),
            "witness_edges": m.witness_edges(),
        })
    };
    Ok(JsonB(json!({
        "collection": collection,
        "changes": changes,
        "now": summary(&now),
        "simulated": summary(&then),
        "note": "level is the state one such sample calls for; the policy's hysteresis decides when the state would move",
    })))
}
