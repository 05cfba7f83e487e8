//! The worker's sampling step: each collection that is due is measured, its
//! hysteresis controller fed, its state and sample stored, and a state change
//! appended to the chain as one signed event; overrides whose time is up are
//! ended; old samples are pruned now and then.

use pgrx::prelude::*;
use ruvector_integrity::audit::Event;
use ruvector_integrity::hysteresis::Transition;
use ruvector_integrity::{Micros, SECOND};
use serde_json::{json, Value};

use super::{transaction, Worker};
use crate::errors::{SqlError, SqlResult};
use crate::shmem::{CollectionView, Shared};
use crate::store::collections::Collection;
use crate::store::events::Head;
use crate::store::samples::Sample;
use crate::{clock, gucs, sampler, store};

/// How often old samples are pruned.
const PRUNE_EVERY: Micros = 600 * SECOND;

/// What a sample changed, for shared memory and the log.
struct Sampled {
    view: CollectionView,
    transition: Option<Transition>,
    /// The witness edges, for the log: "source -- target, ...".
    witness: String,
}

/// An event about `collection`, stamped now.
fn event(
    collection: &Collection,
    event_type: &str,
    previous: Option<&str>,
    new: Option<&str>,
    metadata: Value,
) -> Event {
    Event::new(
        Some(collection.id),
        &collection.name,
        event_type,
        previous.map(str::to_owned),
        new.map(str::to_owned),
        &metadata,
        clock::now(),
    )
}

impl Worker {
    /// When `collection` is next due (`None`: never sampled by this worker,
    /// so now).
    pub(super) fn due(&self, collection: &Collection) -> Option<Micros> {
        let interval = collection
            .policy
            .sample_interval_secs
            .unwrap_or(gucs::SAMPLE_INTERVAL.get() as u32) as Micros;
        self.last_sampled
            .get(&collection.id)
            .map(|&last| last + interval * SECOND)
    }

    /// Ends `collection`'s override once its time is up, with a signed event.
    pub(super) fn end_override(&mut self, shared: Shared, collection: &Collection) {
        let result = transaction("ending an override", || {
            let Some(pinned) = store::collections::end_expired_override(collection.id)? else {
                return Ok(None);
            };
            let event = event(
                collection,
                "manual_override",
                Some(pinned.as_str()),
                Some(collection.state.as_str()),
                json!({"action": "expired", "state": pinned.as_str()}),
            );
            self.record(&event, None).map(Some)
        });
        self.send_announced(result.is_ok());
        match result {
            Ok(Some(head)) => {
                shared.update(&collection.name, |v| v.pin = None);
                self.checkpoint(head);
            }
            Ok(None) => {}
            Err(e) => warning!("ruvector: collection \"{}\": {e}", collection.name),
        }
    }

    pub(super) fn sample(&mut self, shared: Shared, collection: &Collection) {
        self.last_sampled.insert(collection.id, clock::now());
        let sampled = transaction("sampling", || self.take_sample(collection));
        self.send_announced(sampled.is_ok());
        match sampled {
            Ok((sampled, head)) => {
                self.last_errors.remove(&collection.id);
                shared.record_sample(&collection.name, &sampled.view);
                if let Some(t) = sampled.transition {
                    // One line per state change; quiet samples log nothing.
                    log!(
                        "ruvector: collection \"{}\" went from {} to {} (lambda_norm {:.4}, witness: {})",
                        collection.name,
                        t.from.as_str(),
                        t.to.as_str(),
                        sampled.view.lambda_norm,
                        sampled.witness
                    );
                }
                self.checkpoint(head);
            }
            Err(e) => {
                // Logged once per distinct error, not every tick; the latest is
                // always in ruvector_integrity_status().
                if self.last_errors.get(&collection.id) != Some(&e) {
                    warning!("ruvector: collection \"{}\": {e}", collection.name);
                    self.last_errors.insert(collection.id, e.clone());
                }
                let _ = transaction("recording a sampling error", || {
                    store::samples::record_error(collection.id, &e)
                });
            }
        }
    }

    fn take_sample(&self, collection: &Collection) -> SqlResult<(Sampled, Option<Head>)> {
        let started = std::time::Instant::now();
        let measurement = sampler::measure(collection)?;
        let policy = &collection.policy;
        let mut controller = collection.controller.clone();
        let now = clock::now();
        let integrity = &measurement.integrity;
        let transition = controller
            .try_observe(
                integrity.lambda_norm,
                now,
                &policy.thresholds(),
                &policy.hysteresis,
            )
            .map_err(SqlError::from)?;
        let witness_edges = measurement.witness_edges();
        let graph = &measurement.built.graph;
        measurement.store(collection.id, false)?;
        store::samples::record(&Sample {
            collection_id: collection.id,
            at: now,
            integrity,
            lambda2: measurement.lambda2,
            witness_edges: &witness_edges,
            controller: &controller,
            nodes: graph.nodes().len(),
            edges: graph.edges().len(),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        })?;
        let head = match transition {
            Some(t) => {
                let mut event = event(
                    collection,
                    "state_change",
                    Some(t.from.as_str()),
                    Some(t.to.as_str()),
                    json!({
                        "direction": t.direction(),
                        "lambda_nominal": integrity.lambda_nominal,
                        "threshold_high": policy.threshold_high,
                        "threshold_low": policy.threshold_low,
                        "policy": collection.policy_name,
                        "samples_below_high": controller.below_high,
                        "samples_below_low": controller.below_low,
                    }),
                );
                event.lambda_cut = Some(integrity.lambda_cut);
                event.lambda_norm = Some(integrity.lambda_norm);
                event.lambda2 = Some(measurement.lambda2);
                event.witness_edges = witness_edges.clone();
                self.record(&event, Some(integrity.lambda_norm))?
            }
            None => None,
        };
        let mut view = collection.view();
        view.state = controller.state;
        view.last_sample = Some(now);
        view.lambda_cut = integrity.lambda_cut;
        view.lambda_norm = integrity.lambda_norm;
        let witness = witness_edges
            .iter()
            .map(|e| format!("{} -- {}", e.source, e.target))
            .collect::<Vec<_>>()
            .join(", ");
        Ok((
            Sampled {
                view,
                transition,
                witness,
            },
            head,
        ))
    }

    /// Prunes old samples now and then.
    pub(super) fn housekeeping(&mut self) {
        let now = clock::now();
        if now - self.last_prune >= PRUNE_EVERY {
            self.last_prune = now;
            let retention = gucs::SAMPLE_RETENTION.get() as f64;
            if let Err(e) = transaction("pruning samples", || store::samples::prune(retention)) {
                warning!("ruvector: {e}");
            }
        }
    }
}
