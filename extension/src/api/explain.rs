//! `ruvector_integrity_explain(collection)`: why the collection is in its
//! state and what brings it back, as JSON and as text for psql. The reasoning
//! is `ruvector_integrity::explain`'s; this module gathers what it reads: a
//! fresh observation (as `ruvector_integrity_simulate` takes one), the state
//! the gate acts on, the controller's counts and the policy.

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::explain::{self, Context, Explanation, Pin};

use crate::control::controlled;
use crate::errors::{OrRaise, SqlResult};
use crate::{clock, graph_builder, gucs, shmem, store, sync};

#[pg_extern(schema = "ruvector", name = "_integrity_explain")]
fn integrity_explain(collection: &str) -> JsonB {
    let explanation = explained(collection).or_raise();
    JsonB(serde_json::to_value(explanation).expect("an explanation is plain JSON"))
}

#[pg_extern(schema = "ruvector", name = "_integrity_explain_text")]
fn integrity_explain_text(collection: &str) -> String {
    explained(collection).or_raise().to_string()
}

fn explained(name: &str) -> SqlResult<Explanation> {
    graph_builder::forget_probes();
    let collection = store::collections::find(name)?;
    let observed = graph_builder::observe(&collection)?;
    let now = clock::now();
    let held = shmem::shared().ok().and_then(|shared| {
        sync::ensure(shared);
        shared.view(name).map(|(_, view)| view)
    });
    let view = held.unwrap_or_else(|| collection.view());
    let pin = match view.pin.filter(|p| p.in_force(now)) {
        Some(pin) => Some(Pin {
            pin,
            reason: store::samples::details(collection.id)?.override_reason,
        }),
        None => None,
    };
    let context = Context {
        collection: name,
        policy: &collection.policy,
        controller: &collection.controller,
        last_sample: collection.last_sample,
        sample_interval_secs: collection
            .policy
            .sample_interval_secs
            .unwrap_or(gucs::SAMPLE_INTERVAL.get().max(1) as u32),
        sampled_state: view.state,
        in_force: view.in_force(now),
        pin,
        now,
    };
    controlled(|control| explain::explain(&observed, &context, control))
}
