//! Replication targets: the standbys a DBA expects, each a
//! `replication_target` node joined to the primary.
//!
//! Expected standbys are the application names in `ruvector.expected_standbys`
//! plus those named in `synchronous_standby_names`, matched to
//! `pg_stat_replication.application_name` without regard to case (as
//! PostgreSQL's synchronous replication matches them). A standby nobody
//! declared is listed among the primary's observations and never lowers λ.
//!
//! After a failover, the settings a promoted standby carries may still name
//! it. An expected standby named as this server's `cluster_name` is this
//! server when this server writes on a timeline after the first (it was
//! promoted) and no standby of that name is connected: it is not counted,
//! and the primary's observations say to remove it from the settings
//! (`expected_standby_is_this_server`).
//!
//! A standby's health is that of its stream: 1 while `streaming` with replay
//! lag under half of `ruvector.replication_lag_budget`, falling linearly to
//! [`LAG_FLOOR`] at the budget and beyond, 0 when absent or not streaming —
//! except within `ruvector.startup_grace` of the server's start, when a
//! standby still reconnecting counts as healthy.
//!
//! The health sits on the `replication` edge primary–standby (capacity 1,
//! `error_rate` = 1 − health), not on the node: a lost copy is a broken
//! stream, and the other copies still hold the data. The expected standbys
//! are joined to each other by `replication` edges of capacity
//! [`PEERS`] / (n − 1), so that with n expected standbys:
//! - all lost: the standbys are cut off, λ_norm = 0, **critical**;
//! - some lost, at least one healthy: the cheapest cut around the lost ones
//!   costs k(n−k)/(n−1) · [`PEERS`] ≥ 0.4, λ_norm = 0.4, **stress**;
//! - one lagging at the budget (health 0.3): 0.3 + 0.4 = 0.7, **stress**; a
//!   sole standby at the budget: 0.3, **stress** (critical needs < 0.3).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ramp, Builder, Why};
use crate::graph::{EdgeKind, NodeKind};
use crate::Error;

/// Health of a standby streaming at or beyond the lag budget.
pub const LAG_FLOOR: f64 = 0.3;
/// Total capacity joining one expected standby to the others.
pub const PEERS: f64 = 0.4;
/// `ruvector.replication_lag_budget`'s default, bytes.
pub const DEFAULT_LAG_BUDGET: i64 = 64 << 20;

/// One row of `pg_stat_replication`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Standby {
    pub application_name: String,
    pub state: String,
    #[serde(default)]
    pub sync_state: Option<String>,
    #[serde(default)]
    pub client_addr: Option<String>,
    /// `pg_current_wal_lsn() - replay_lsn`; `None` when nothing was replayed yet.
    #[serde(default)]
    pub replay_lag_bytes: Option<i64>,
}

/// What replication looks like from the primary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replication {
    /// The setting `ruvector.expected_standbys`: a comma list of application names.
    #[serde(default)]
    pub expected_standbys: String,
    #[serde(default)]
    pub synchronous_standby_names: String,
    #[serde(default)]
    pub standbys: Vec<Standby>,
    pub lag_budget_bytes: i64,
    /// Whether the server started less than `ruvector.startup_grace` ago.
    #[serde(default)]
    pub in_startup_grace: bool,
    /// This server's `cluster_name`: the name it went by as a standby.
    #[serde(default)]
    pub this_server: String,
    /// The timeline this server writes on (1 until a promotion).
    #[serde(default)]
    pub timeline: u32,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            expected_standbys: String::new(),
            synchronous_standby_names: String::new(),
            standbys: Vec::new(),
            lag_budget_bytes: DEFAULT_LAG_BUDGET,
            in_startup_grace: false,
            this_server: String::new(),
            timeline: 1,
        }
    }
}

/// An expected standby and which settings name it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub name: String,
    pub declared_by: Vec<&'static str>,
}

/// The standby names of a comma list, `"quoted"` names kept whole (with `""`
/// for a quote), surrounding spaces trimmed, empty entries dropped.
fn split_names(list: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => names.push(std::mem::take(&mut current)),
            c if !quoted && c.is_whitespace() => {
                if !current.is_empty() {
                    current.push(' ');
                }
            }
            c => current.push(c),
        }
    }
    names.push(current);
    names
        .into_iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The standby names in a `synchronous_standby_names` value: `s1, s2`,
/// `[FIRST] n (s1, ...)` or `ANY n (s1, ...)`. `*` (any standby) names no one.
pub fn synchronous_names(setting: &str) -> Vec<String> {
    let s = setting.trim();
    let list = match (s.find('('), s.rfind(')')) {
        (Some(open), Some(close)) if open < close => {
            let head: Vec<String> = s[..open]
                .split_whitespace()
                .map(str::to_ascii_lowercase)
                .collect();
            let is_count = |w: &String| w.chars().all(|c| c.is_ascii_digit());
            let prefix_ok = match head.as_slice() {
                [n] => is_count(n),
                [k, n] => (k == "first" || k == "any") && is_count(n),
                _ => false,
            };
            if prefix_ok {
                &s[open + 1..close]
            } else {
                s
            }
        }
        _ => s,
    };
    split_names(list).into_iter().filter(|n| n != "*").collect()
}

/// The expected standbys, in the order the settings name them, each once;
/// not this server itself (see [`named_self`]).
pub fn expected(replication: &Replication) -> Vec<Expected> {
    let mut all = named(replication);
    all.retain(|e| !is_this_server(replication, &e.name));
    all
}

fn is_this_server(replication: &Replication, name: &str) -> bool {
    replication.timeline > 1
        && !replication.this_server.is_empty()
        && name.eq_ignore_ascii_case(&replication.this_server)
        && row_of(replication, name).is_none()
}

/// What a DBA must change when the settings expect this server as a
/// standby (it was promoted): `None` when they do not.
pub fn named_self(replication: &Replication) -> Option<Value> {
    let e = named(replication)
        .into_iter()
        .find(|e| is_this_server(replication, &e.name))?;
    Some(json!({
        "name": e.name,
        "declared_by": e.declared_by,
        "hint": format!(
            "this server (cluster_name {}) was a standby and is the primary now: remove it from {} and name the standbys of this primary there",
            replication.this_server,
            e.declared_by.join(" and ")
        ),
    }))
}

/// Every name the settings expect, in their order, each once.
fn named(replication: &Replication) -> Vec<Expected> {
    let mut out: Vec<Expected> = Vec::new();
    let named = split_names(&replication.expected_standbys)
        .into_iter()
        .map(|n| (n, "ruvector.expected_standbys"))
        .chain(
            synchronous_names(&replication.synchronous_standby_names)
                .into_iter()
                .map(|n| (n, "synchronous_standby_names")),
        );
    for (name, by) in named {
        match out.iter_mut().find(|e| e.name.eq_ignore_ascii_case(&name)) {
            Some(e) if !e.declared_by.contains(&by) => e.declared_by.push(by),
            Some(_) => {}
            None => out.push(Expected {
                name,
                declared_by: vec![by],
            }),
        }
    }
    out
}

/// The best row for `name`: streaming before anything else, then least lag.
fn row_of<'a>(replication: &'a Replication, name: &str) -> Option<&'a Standby> {
    replication
        .standbys
        .iter()
        .filter(|s| s.application_name.eq_ignore_ascii_case(name))
        .min_by_key(|s| {
            (
                s.state != "streaming",
                s.replay_lag_bytes.unwrap_or(i64::MAX),
            )
        })
}

/// The health of an expected standby's stream, and why.
pub fn stream_health(replication: &Replication, row: Option<&Standby>) -> (f64, &'static str) {
    let budget = replication.lag_budget_bytes.max(1) as f64;
    match row {
        Some(s) if s.state == "streaming" => {
            let lag = s.replay_lag_bytes.map_or(budget, |l| l.max(0) as f64);
            let health = ramp(lag, budget / 2.0, budget, LAG_FLOOR);
            (health, if health < 1.0 { "lagging" } else { "streaming" })
        }
        _ if replication.in_startup_grace => (1.0, "reconnecting within the startup grace"),
        Some(_) => (0.0, "not streaming"),
        None => (0.0, "absent"),
    }
}

/// The standbys nobody declared, for the primary's observations.
pub fn undeclared(replication: &Replication) -> Vec<Value> {
    let expected = expected(replication);
    replication
        .standbys
        .iter()
        .filter(|s| {
            !expected
                .iter()
                .any(|e| e.name.eq_ignore_ascii_case(&s.application_name))
        })
        .map(|s| json!(s))
        .collect()
}

pub(crate) fn add(b: &mut Builder, replication: &Replication, primary: usize) -> Result<(), Error> {
    let expected = expected(replication);
    let mut nodes = Vec::with_capacity(expected.len());
    for e in &expected {
        let row = row_of(replication, &e.name);
        let (measured, status) = stream_health(replication, row);
        let health = b.health(NodeKind::ReplicationTarget, &e.name, measured);
        let mut data = json!({
            "status": status, "health": health, "declared_by": e.declared_by,
            "lag_budget_bytes": replication.lag_budget_bytes, "seen": row,
        });
        if health != measured {
            data["measured_health"] = measured.into();
        }
        let why = Why {
            function: "standby_stream",
            measured: json!({"status": status, "replay_lag_bytes": row.and_then(|r| r.replay_lag_bytes)}),
            healthy_while: format!(
                "it streams with replay lag <= {} bytes (falls to {LAG_FLOOR} at {} bytes; 0 when absent or not streaming)",
                replication.lag_budget_bytes / 2,
                replication.lag_budget_bytes
            ),
        };
        // The node stays whole; its stream carries the health.
        let node = b.raw_node(NodeKind::ReplicationTarget, &e.name, 1.0, data, why)?;
        b.built
            .graph
            .add_edge(primary, node, EdgeKind::Replication, 1.0, 1.0 - health)?;
        nodes.push(node);
    }
    if nodes.len() >= 2 {
        let peer = PEERS / (nodes.len() - 1) as f64;
        for (i, &a) in nodes.iter().enumerate() {
            for &c in &nodes[i + 1..] {
                b.built
                    .graph
                    .add_edge(a, c, EdgeKind::Replication, peer, 0.0)?;
            }
        }
    }
    Ok(())
}
