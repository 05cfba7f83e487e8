//! The settings the gate runs under, in the chain: recorded at each worker
//! start (with when the server started and when a worker of this
//! installation was last alive, so that a time without the gate, or with the
//! worker elsewhere, shows as a gap), and whenever they change (the gate
//! switched off by `ruvector.integrity_enabled`, say).

use std::collections::BTreeMap;

use ruvector_integrity::audit::Event;
use ruvector_integrity::{Micros, SECOND};
use serde_json::{json, Value};

use super::{transaction, Worker};
use crate::{clock, store};

/// How often the worker notes that it is alive (a small file write): the
/// precision with which its next start can tell when it stopped.
const ALIVE_NOTE_EVERY: Micros = 10 * SECOND;

/// What the chain records of the settings now, given what it recorded last
/// (`None`: nothing yet by this worker); `None` when nothing changed.
fn record_of(
    before: Option<&BTreeMap<String, String>>,
    settings: &BTreeMap<String, String>,
    last_alive: Option<Micros>,
) -> Option<Value> {
    match before {
        None => Some(json!({
            "action": "worker_started",
            "settings": settings,
            "server_started_unix_us": clock::server_started(),
            "last_alive_unix_us": last_alive,
        })),
        Some(before) if before != settings => {
            let changed: BTreeMap<&String, (Option<&String>, Option<&String>)> = before
                .keys()
                .chain(settings.keys())
                .filter(|k| before.get(*k) != settings.get(*k))
                .map(|k| (k, (before.get(k), settings.get(k))))
                .collect();
            Some(json!({"action": "settings", "settings": settings, "changed": changed}))
        }
        Some(_) => None,
    }
}

impl Worker {
    /// Records the settings in the chain if they changed (or at start), then
    /// notes that the worker is alive.
    pub(super) fn record_settings(&mut self) {
        let Some(alive_path) = self.alive_path.clone() else {
            return;
        };
        let settings = match transaction("reading settings", store::events::gate_settings) {
            Ok(settings) => settings,
            Err(e) => return self.warn_once("settings", e),
        };
        let last_alive = || {
            std::fs::read_to_string(&alive_path)
                .ok()
                .and_then(|text| text.trim().parse::<Micros>().ok())
        };
        let before = self.recorded_settings.as_ref();
        let last_alive = if before.is_none() { last_alive() } else { None };
        if let Some(metadata) = record_of(before, &settings, last_alive) {
            let event = Event::new(None, "", "audit", None, None, &metadata, clock::now());
            let recorded = transaction("recording settings", || self.record(&event, None));
            self.send_announced(recorded.is_ok());
            match recorded {
                Ok(head) => {
                    self.recorded_settings = Some(settings);
                    self.checkpoint(head);
                }
                Err(e) => return self.warn_once("settings", e),
            }
        }
        let now = clock::now();
        if now - self.last_alive_note >= ALIVE_NOTE_EVERY {
            self.last_alive_note = now;
            if let Err(e) = std::fs::write(&alive_path, now.to_string()) {
                self.warn_once(
                    "alive",
                    format!("cannot write {}: {e}", alive_path.display()),
                );
            }
        }
    }
}
