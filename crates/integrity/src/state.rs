//! A collection's integrity state, as the controller decides it, the gate acts
//! on it and the audit trail records it. This module owns the states and their
//! names, nothing of how a state is reached or what it permits.

use serde::{Deserialize, Serialize};

/// The integrity state of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum State {
    /// No sample yet since the collection was registered or the server started.
    Unknown,
    Normal,
    Stress,
    Critical,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Normal => "normal",
            State::Stress => "stress",
            State::Critical => "critical",
        }
    }

    pub fn parse(name: &str) -> Option<State> {
        [
            State::Unknown,
            State::Normal,
            State::Stress,
            State::Critical,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// The state one recovery step below this one.
    pub(crate) fn recovered(self) -> State {
        match self {
            State::Critical => State::Stress,
            _ => State::Normal,
        }
    }
}
