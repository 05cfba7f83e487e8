//! Why a collection is in its state and what brings it back, for
//! `ruvector_integrity_explain`: the minimum cut's witness components with the
//! health function, raw measurement and threshold behind each capacity; the
//! smallest set of components whose repair lifts `lambda_norm` to the recovery
//! level; how far the hysteresis has got; and what the policy refuses now.
//!
//! # The smallest repair, exactly
//!
//! Repairing a component means building the graph with its health at 1 (the
//! what-if overrides of [`crate::sources`]). `lambda_norm` only grows with
//! healths, so a set of components either lifts it to the target or none of
//! its subsets does. [`smallest_repair`] searches sets by size, smallest
//! first, and branches on the minimum cut: when a set S falls short, its
//! graph's minimum cut C is below the target, so any set T ⊇ S that works
//! raises the capacity of some edge crossing C, and some component of T \ S
//! changes such an edge. Only those components are tried next. An edge's
//! capacity depends on the healths of its two ends and on its error rate; a
//! component can change it when repairing it alone changes one of those
//! (a node's health, or an edge's error rate, is set by one override or
//! measured: a foreign partition's by its own or else its server's). That is
//! found once per component, by building the graph with it alone repaired.
//! The unit tests check the answer against every subset of nodes on random
//! collections. So the first size at which a set works is the smallest, and
//! among the sets of that size the one lifting `lambda_norm` highest is given.
//!
//! It is bounded, in time and memory: at most [`MAX_STEPS`] steps, each build
//! of the graph and each minimum cut counting the graph's nodes plus edges
//! (all of them check for interrupts); what a candidate can change is kept as
//! a list of edges. Past the bound it answers with every impaired component,
//! which always works, and says the answer is not proven smallest
//! (`exact: false`).

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt::{self, Write as _};

use serde::Serialize;
use serde_json::Value;

use crate::control::Control;
use crate::gate::{self, Decision, GateInput, Operation, Override, Rows};
use crate::graph::{EdgeKind, NodeKind};
use crate::hysteresis::{Controller, Move};
use crate::mincut;
use crate::policy::Policy;
use crate::sources::{self, Built, Observed, Overrides, Why};
use crate::state::State;
use crate::time::utc;
use crate::{Error, Micros, SECOND};

/// The bound of one search of the smallest repair, in steps: each build of
/// the graph and each minimum cut counts its nodes plus its edges (about
/// 500 minimum cuts of a graph of a thousand edges).
pub const MAX_STEPS: usize = 1 << 20;

/// A component the explanation names: its health and how it came about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    /// `kind:name`, as `ruvector_integrity_simulate` takes it.
    pub component: String,
    pub health: f64,
    /// The health function, the raw measurement and where its dead zone ends.
    pub health_function: Why,
    /// What a DBA does to repair it.
    pub remedy: String,
}

/// An edge across the minimum cut, at its nominal and effective capacity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CutEdge {
    pub source: String,
    pub target: String,
    pub kind: &'static str,
    pub nominal_capacity: f64,
    pub effective_capacity: f64,
}

/// The smallest set of components whose repair lifts `lambda_norm` to `target`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Repair {
    pub target: f64,
    /// Empty when the collection is there already, or when no repair of its
    /// components gets it there (`reachable` false).
    pub components: Vec<Component>,
    pub reachable: bool,
    /// `lambda_norm` once they are repaired.
    pub lambda_norm_after: f64,
    /// Whether the set is proven smallest (the search ended within its bound).
    pub exact: bool,
    /// Components whose health is below 1: the search's candidates.
    pub candidates: usize,
    pub cuts_solved: usize,
}

/// An operation the policy does not simply allow in the state in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refused {
    pub operation: &'static str,
    pub decision: &'static str,
    pub throttle_pct: u8,
    pub reason: String,
}

/// An operator's pin of the state.
#[derive(Debug, Clone, PartialEq)]
pub struct Pin {
    pub pin: Override,
    pub reason: Option<String>,
}

/// What the explanation is made from, besides the observations.
pub struct Context<'a> {
    pub collection: &'a str,
    pub policy: &'a Policy,
    pub controller: &'a Controller,
    pub last_sample: Option<Micros>,
    pub sample_interval_secs: u32,
    /// The state the samples set, as the gate reads it.
    pub sampled_state: State,
    /// The state the gate acts on and whether it is stale.
    pub in_force: (State, bool),
    pub pin: Option<Pin>,
    pub now: Micros,
}

/// The answer of `ruvector_integrity_explain`. Its JSON is its serde form;
/// `Display` renders it as text for psql.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub collection: String,
    /// The state the gate acts on now.
    pub state: State,
    /// The state the samples set (an override may hide it).
    pub sampled_state: State,
    pub stale: bool,
    #[serde(rename = "override")]
    pub pin: Option<Value>,
    /// λ measured now (not at the last sample).
    pub lambda_cut: f64,
    pub lambda_nominal: f64,
    pub lambda_norm: f64,
    /// The state this measurement calls for on its own.
    pub level: State,
    pub threshold_high: f64,
    pub threshold_low: f64,
    pub cut: Vec<CutEdge>,
    /// The components below full health on the cut's edges.
    pub witness_components: Vec<Component>,
    pub repair: Repair,
    pub hysteresis: Hysteresis,
    pub refused: Vec<Refused>,
    pub limits: Limits,
}

/// The policy's limits in the state in force (`None`: no limit).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limits {
    pub max_insert_batch_size: Option<u32>,
    pub max_concurrent_searches: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hysteresis {
    pub moves: Vec<Move>,
    /// When the cooldown of the last transition ends, while it lasts.
    pub cooldown_until: Option<String>,
    pub sample_interval_secs: u32,
}

/// The level `lambda_norm` must reach for the state to come back to normal:
/// `threshold_high` plus the recovery offset (at most 1), computed as the
/// hysteresis computes it.
pub fn recovery_target(policy: &Policy) -> f64 {
    (policy.threshold_high + policy.hysteresis.restore_threshold_offset).min(1.0)
}

/// Explains the collection observed in `observed` under `context`.
pub fn explain(
    observed: &Observed,
    context: &Context,
    control: &mut Control,
) -> Result<Explanation, Error> {
    let built = sources::build(observed, &Overrides::new())?;
    let graph = &built.graph;
    let integrity = graph.integrity_with(control)?;
    let thresholds = context.policy.thresholds();
    let labels: Vec<String> = graph
        .nodes()
        .iter()
        .map(|n| sources::label(n.kind, &n.name))
        .collect();

    let mut cut = Vec::new();
    let mut witness = Vec::new();
    for &i in &integrity.witness_edges {
        let e = &graph.edges()[i];
        cut.push(CutEdge {
            source: labels[e.source].clone(),
            target: labels[e.target].clone(),
            kind: e.kind.as_str(),
            nominal_capacity: e.capacity,
            effective_capacity: graph.effective_capacity(e),
        });
        for end in [e.source, e.target] {
            if impaired(&built, end) && !witness.contains(&end) {
                witness.push(end);
            }
        }
    }
    let component = |i: usize| describe(&built, i, context.collection);

    let target = recovery_target(context.policy);
    let repair = smallest_repair(observed, target, MAX_STEPS, control)?;
    let repair = Repair {
        components: repair.set.iter().map(|&i| component(i)).collect(),
        // As a DBA writes it: 0.7 + 0.1 is 0.8, not 0.7999999999999999.
        target: (target * 1e9).round() / 1e9,
        ..repair.summary
    };

    let (state, stale) = context.in_force;
    let hysteresis = &context.policy.hysteresis;
    let cooldown_end = context
        .controller
        .last_transition
        .map(|at| at + hysteresis.cooldown_after_transition_seconds as Micros * SECOND);
    let compiled = context.policy.compile();
    let input = GateInput {
        state,
        stale,
        live_searches: 0,
        rows: Rows::Later,
    };
    let refused = Operation::ALL
        .iter()
        .map(|&op| gate::decide(&compiled, input, op))
        .filter(|v| v.decision != Decision::Allow)
        .map(|v| Refused {
            operation: v.operation.name(),
            decision: v.decision.as_str(),
            throttle_pct: v.throttle_pct,
            reason: v.to_string(),
        })
        .collect();

    Ok(Explanation {
        collection: context.collection.to_owned(),
        state,
        sampled_state: context.sampled_state,
        stale,
        pin: context.pin.as_ref().map(|p| {
            serde_json::json!({"state": p.pin.state, "until": utc(p.pin.until), "reason": p.reason})
        }),
        lambda_cut: integrity.lambda_cut,
        lambda_nominal: integrity.lambda_nominal,
        lambda_norm: integrity.lambda_norm,
        level: thresholds.level(integrity.lambda_norm),
        threshold_high: thresholds.high,
        threshold_low: thresholds.low,
        cut,
        witness_components: witness.into_iter().map(component).collect(),
        repair,
        hysteresis: Hysteresis {
            moves: context.controller.progress(
                context.last_sample,
                context.sample_interval_secs as Micros * SECOND,
                context.now,
                &thresholds,
                hysteresis,
            ),
            cooldown_until: cooldown_end.filter(|&end| end > context.now).map(utc),
            sample_interval_secs: context.sample_interval_secs,
        },
        refused,
        // Before the first sample the gate applies no limit.
        limits: match state {
            State::Unknown => Limits {
                max_insert_batch_size: None,
                max_concurrent_searches: None,
            },
            state => Limits {
                max_insert_batch_size: context.policy.actions(state).max_insert_batch_size,
                max_concurrent_searches: context.policy.actions(state).max_concurrent_searches,
            },
        },
    })
}

/// Whether node `i` is below full health: its own health, or for a standby
/// the stream that carries it.
fn impaired(built: &Built, i: usize) -> bool {
    let graph = &built.graph;
    graph.nodes()[i].health < 1.0
        || (graph.nodes()[i].kind == NodeKind::ReplicationTarget
            && graph
                .edges()
                .iter()
                .any(|e| e.kind == EdgeKind::Replication && e.target == i && e.error_rate > 0.0))
}

fn describe(built: &Built, i: usize, collection: &str) -> Component {
    let node = &built.graph.nodes()[i];
    let data = &built.node_data[i];
    let health = match node.kind {
        NodeKind::ReplicationTarget => data["health"].as_f64().unwrap_or(node.health),
        _ => node.health,
    };
    let name = &node.name;
    let remedy = match node.kind {
        NodeKind::ReplicationTarget => format!(
            "bring standby \"{name}\" back to streaming, or, if it is gone for good, remove it from {}",
            data["declared_by"]
                .as_array()
                .map(|by| by.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" and "))
                .unwrap_or_default()
        ),
        NodeKind::Shard => format!(
            "make foreign server \"{name}\" answer: the server, the network between, its user mapping"
        ),
        NodeKind::Partition => match data["server"].as_str() {
            Some(server) => format!("repair its server, shard:{server}"),
            None => format!("VACUUM {name}"),
        },
        NodeKind::Centroid => format!(
            "retrain the IVF lists: SELECT ruvector_ivf_train('{collection}', <lists>)"
        ),
        NodeKind::MaintenanceDep if name == "autovacuum" => {
            "turn autovacuum and track_counts on".to_owned()
        }
        NodeKind::MaintenanceDep => {
            "fix archive_command: pg_stat_archiver's last_failed_wal names the WAL file that fails"
                .to_owned()
        }
    };
    Component {
        component: sources::label(node.kind, name),
        health,
        health_function: built.why[i].clone(),
        remedy,
    }
}

/// A search's answer: the set (node indices) and the summary around it.
pub struct Found {
    pub set: Vec<usize>,
    pub summary: Repair,
}

/// The smallest set of components of the collection `observed` describes
/// whose repair (health 1) lifts `lambda_norm` to at least `target`, within
/// `budget` steps (see [`MAX_STEPS`]); see the module's
/// documentation for how it stays exact and bounded.
pub fn smallest_repair(
    observed: &Observed,
    target: f64,
    budget: usize,
    control: &mut Control,
) -> Result<Found, Error> {
    let base = sources::build(observed, &Overrides::new())?;
    let graph = &base.graph;
    let n = graph.nodes().len();
    let labels: Vec<String> = graph
        .nodes()
        .iter()
        .map(|node| sources::label(node.kind, &node.name))
        .collect();
    let build = |set: &[usize], control: &mut Control| -> Result<Built, Error> {
        control.work(graph.edges().len() + n)?;
        let overrides: Overrides = set.iter().map(|&i| (labels[i].clone(), 1.0)).collect();
        sources::build(observed, &overrides)
    };
    let nominal_edges = graph.weighted_edges(true);
    let nominal = mincut::min_cut_with(n, &nominal_edges, control)?
        .ok_or(Error::TooFewNodes(n))?
        .value;

    // One build or one minimum cut, in steps of the budget.
    let step = graph.edges().len() + n;
    let spent = Cell::new(0);
    let cuts = Cell::new(0);
    let evaluate = |set: &[usize], control: &mut Control| -> Result<(f64, Vec<bool>), Error> {
        spent.set(spent.get() + 2 * step);
        let edges = build(set, control)?.graph.weighted_edges(false);
        let cut = mincut::min_cut_with(n, &edges, control)?.ok_or(Error::TooFewNodes(n))?;
        cuts.set(cuts.get() + 1);
        let norm = if nominal > 0.0 {
            (cut.value / nominal).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let crossing = graph
            .edges()
            .iter()
            .map(|e| cut.side[e.source] != cut.side[e.target])
            .collect();
        Ok((norm, crossing))
    };
    let candidates: Vec<usize> = (0..n).filter(|&i| impaired(&base, i)).collect();
    let answer = |set: Vec<usize>, norm: f64, exact: bool| Found {
        set,
        summary: Repair {
            target,
            components: Vec::new(),
            reachable: true,
            lambda_norm_after: norm,
            exact,
            candidates: candidates.len(),
            cuts_solved: cuts.get(),
        },
    };

    let (norm, crossing) = evaluate(&[], control)?;
    if norm >= target {
        return Ok(answer(Vec::new(), norm, true));
    }
    let (best, _) = evaluate(&candidates, control)?;
    if best < target {
        let mut found = answer(Vec::new(), best, true);
        found.summary.reachable = false;
        return Ok(found);
    }
    // Past the budget: every candidate, which works.
    if candidates.len() * step > budget {
        return Ok(answer(candidates.clone(), best, false));
    }
    // Which edges each candidate can change: those whose ends' health or
    // whose own error rate it changes, repaired alone. (Whether an edge's
    // capacity changes also depends on its other end, so capacities are not
    // compared: a node's health and an edge's error rate are each set by one
    // override, or measured.)
    let mut touches: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &c in &candidates {
        spent.set(spent.get() + step);
        let alone = build(&[c], control)?;
        let (now, then) = (graph, &alone.graph);
        let changed = |x: usize| now.nodes()[x].health != then.nodes()[x].health;
        touches[c] = (0..now.edges().len())
            .filter(|&e| {
                let (a, b) = (&now.edges()[e], &then.edges()[e]);
                changed(a.source) || changed(a.target) || a.error_rate != b.error_rate
            })
            .collect();
    }
    // The sets one candidate larger than `set` worth trying: with a
    // candidate that can change an edge of `crossing`, its minimum cut.
    let mut seen: HashSet<Vec<usize>> = HashSet::new();
    let mut grow = |set: &[usize], crossing: &[bool], next: &mut Vec<Vec<usize>>| {
        for &c in &candidates {
            if !set.contains(&c) && touches[c].iter().any(|&e| crossing[e]) {
                let mut grown = set.to_vec();
                grown.push(c);
                grown.sort_unstable();
                if seen.insert(grown.clone()) {
                    next.push(grown);
                }
            }
        }
    };
    let mut level = Vec::new();
    grow(&[], &crossing, &mut level);
    while !level.is_empty() {
        let mut works: Option<(Vec<usize>, f64)> = None;
        let mut next = Vec::new();
        for set in &level {
            if spent.get() + 2 * step > budget {
                // A set of this size works and no smaller one does: the
                // smallest, though perhaps not the best of its size.
                return Ok(match works {
                    Some((set, norm)) => answer(set, norm, true),
                    None => answer(candidates.clone(), best, false),
                });
            }
            let (norm, crossing) = evaluate(set, control)?;
            if norm >= target {
                if works.as_ref().is_none_or(|(_, best)| norm > *best) {
                    works = Some((set.clone(), norm));
                }
            } else if works.is_none() {
                grow(set, &crossing, &mut next);
            }
        }
        if let Some((set, norm)) = works {
            return Ok(answer(set, norm, true));
        }
        level = next;
    }
    unreachable!("repairing every candidate reaches the target, so some level has a set that does")
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let n = |x: f64| format!("{:.3}", x);
        let _ = write!(out, "{}: {}", self.collection, self.state.as_str());
        if let Some(pin) = &self.pin {
            let _ = write!(
                out,
                " (an override until {}; the samples say {})",
                pin["until"].as_str().unwrap_or("?"),
                self.sampled_state.as_str()
            );
        } else if self.stale {
            out.push_str(" (stale: no recent sample)");
        }
        let _ = writeln!(
            out,
            "\nnow: lambda_norm {} (lambda_cut {} of nominal {}), a level of {}; threshold_high {}, threshold_low {}",
            n(self.lambda_norm),
            n(self.lambda_cut),
            n(self.lambda_nominal),
            self.level.as_str(),
            self.threshold_high,
            self.threshold_low
        );
        if self
            .cut
            .iter()
            .all(|e| e.effective_capacity >= e.nominal_capacity)
        {
            out.push_str("\nwhy: every edge of the minimum cut is at full capacity\n");
        } else {
            let _ = writeln!(
                out,
                "\nwhy: the minimum cut crosses {} edge(s)",
                self.cut.len()
            );
            for e in &self.cut {
                let _ = writeln!(
                    out,
                    "  {} - {} ({}): capacity {} of {}",
                    e.source,
                    e.target,
                    e.kind,
                    n(e.effective_capacity),
                    n(e.nominal_capacity)
                );
            }
            for c in &self.witness_components {
                write_component(&mut out, c);
            }
        }
        let r = &self.repair;
        if !r.reachable {
            let _ = writeln!(
                out,
                "\nwhat brings it back: no repair of its components lifts lambda_norm to {} (at most {})",
                r.target,
                n(r.lambda_norm_after)
            );
        } else if r.components.is_empty() {
            let _ = writeln!(
                out,
                "\nwhat brings it back: nothing to repair; lambda_norm is at or above {}",
                r.target
            );
        } else {
            let _ = writeln!(
                out,
                "\nwhat brings it back: repair {} component(s), lambda_norm {} -> {} (>= {}; {}, {} of {} candidates, {} cuts)",
                r.components.len(),
                n(self.lambda_norm),
                n(r.lambda_norm_after),
                r.target,
                if r.exact { "the smallest such set" } else { "not proven smallest" },
                r.components.len(),
                r.candidates,
                r.cuts_solved
            );
            for c in &r.components {
                if !self.witness_components.contains(c) {
                    write_component(&mut out, c);
                }
            }
            // One line per remedy: one retraining repairs every list.
            let mut remedies: Vec<(&str, Vec<&str>)> = Vec::new();
            for c in &r.components {
                match remedies.iter_mut().find(|(remedy, _)| *remedy == c.remedy) {
                    Some((_, names)) => names.push(&c.component),
                    None => remedies.push((&c.remedy, vec![&c.component])),
                }
            }
            for (remedy, names) in remedies {
                let _ = writeln!(out, "  to do, for {}: {remedy}", names.join(", "));
            }
        }
        let _ = writeln!(
            out,
            "\nhysteresis (a sample every {} s):",
            self.hysteresis.sample_interval_secs
        );
        for m in &self.hysteresis.moves {
            let progress = match (
                m.samples_seen,
                m.samples_needed,
                m.held_seconds,
                m.hold_seconds,
            ) {
                (Some(seen), Some(needed), _, _) => format!("{seen} of {needed} so far"),
                (_, _, Some(held), Some(hold)) => format!("held {held} s of {hold} s"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  to {}: {}; {}; earliest {}",
                m.to.as_str(),
                m.needs,
                progress,
                utc(m.earliest)
            );
        }
        if let Some(until) = &self.hysteresis.cooldown_until {
            let _ = writeln!(out, "  no transition before {until} (cooldown)");
        }
        if let Some(pin) = &self.pin {
            let _ = writeln!(
                out,
                "  an override holds the state at {} until {} ({})",
                pin["state"].as_str().unwrap_or("?"),
                pin["until"].as_str().unwrap_or("?"),
                pin["reason"].as_str().unwrap_or("no reason given")
            );
        }
        if self.refused.is_empty()
            && self.limits
                == (Limits {
                    max_insert_batch_size: None,
                    max_concurrent_searches: None,
                })
        {
            let _ = writeln!(
                out,
                "\nthe policy in {}: everything allowed",
                self.state.as_str()
            );
        } else {
            let _ = writeln!(out, "\nthe policy in {}:", self.state.as_str());
            for decision in ["reject", "defer", "throttle"] {
                let ops: Vec<String> = self
                    .refused
                    .iter()
                    .filter(|r| r.decision == decision)
                    .map(|r| match decision {
                        "throttle" => format!("{} ({}% turned away)", r.operation, r.throttle_pct),
                        _ => r.operation.to_owned(),
                    })
                    .collect();
                if !ops.is_empty() {
                    let _ = writeln!(out, "  {decision}: {}", ops.join(", "));
                }
            }
        }
        if let Some(rows) = self.limits.max_insert_batch_size {
            let _ = writeln!(out, "  at most {rows} rows per INSERT or COPY");
        }
        if let Some(searches) = self.limits.max_concurrent_searches {
            let _ = writeln!(out, "  at most {searches} concurrent searches");
        }
        f.write_str(out.trim_end())
    }
}

fn write_component(out: &mut String, c: &Component) {
    let h = &c.health_function;
    let _ = writeln!(
        out,
        "    {}: health {:.3} by {}; measured {}; healthy while {}",
        c.component, c.health, h.function, h.measured, h.healthy_while
    );
}

#[cfg(test)]
mod tests;
