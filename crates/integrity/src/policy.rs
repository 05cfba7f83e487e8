//! The per-collection policy: thresholds, hysteresis, and what each state
//! permits. Defaults are the v2 design's default policy.
//!
//! A policy is stored and shown as JSON. Updates are partial: a patch names only
//! the keys it changes, objects merge key by key, and every key is checked
//! against the schema, so an unknown key or an out-of-range value is an error
//! that names the key by its dotted path and leaves the policy as it was.
//!
//! This module does not decide anything about an operation: [`crate::gate`]
//! does, from [`Policy::compile`]'s fixed-size form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::gate::{CompiledActions, CompiledPolicy, ForcedDecision, Operation};
use crate::state::State;
use crate::Error;

/// The two thresholds `lambda_norm` is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub high: f64,
    pub low: f64,
}

impl Thresholds {
    /// The state one sample calls for on its own: normal at or above `high`,
    /// critical below `low`, stress between. (Hysteresis decides when the state
    /// actually moves.)
    pub fn level(&self, lambda_norm: f64) -> State {
        if lambda_norm < self.low {
            State::Critical
        } else if lambda_norm < self.high {
            State::Stress
        } else {
            State::Normal
        }
    }
}

/// How many samples and how much time each transition needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hysteresis {
    /// Consecutive samples below `threshold_high` to go from normal to stress.
    pub degrade_samples: u32,
    /// Consecutive samples below `threshold_low` to reach critical.
    pub critical_samples: u32,
    /// How far above a threshold `lambda_norm` must be to count toward recovery.
    pub restore_threshold_offset: f64,
    /// How long it must stay there before one recovery step.
    pub restore_hold_seconds: u32,
    /// No transition within this long of the previous one.
    pub cooldown_after_transition_seconds: u32,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis {
            degrade_samples: 3,
            critical_samples: 2,
            restore_threshold_offset: 0.1,
            restore_hold_seconds: 300,
            cooldown_after_transition_seconds: 60,
        }
    }
}

/// What one state permits. Field names are the v2 design's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actions {
    pub allow_reads: bool,
    pub allow_single_insert: bool,
    pub allow_bulk_insert: bool,
    pub allow_delete: bool,
    pub allow_update: bool,
    pub allow_index_rewire: bool,
    pub allow_compression: bool,
    pub allow_replication: bool,
    pub allow_backup: bool,
    /// Moving a partition to another shard (not in the v2 list; added here).
    pub allow_shard_move: bool,
    /// Share of inserts refused, 0–100.
    pub throttle_inserts_pct: u8,
    /// Share of searches refused, 0–100.
    pub throttle_searches_pct: u8,
    /// Searching transactions allowed at once; `null` is unlimited.
    pub max_concurrent_searches: Option<u32>,
    /// Rows one INSERT or COPY may add; `null` is unlimited.
    pub max_insert_batch_size: Option<u32>,
    /// Signals for components outside this extension (published, not enforced
    /// here, except that they refuse `gnn_train` and `tier_manage`).
    pub pause_gnn_training: bool,
    pub pause_tier_management: bool,
    pub emergency_compact: bool,
    /// Explicit decisions that replace the rule for an operation in this state:
    /// `{"index_build": "allow"}`. Values: allow, defer, reject.
    #[serde(default)]
    pub decisions: BTreeMap<String, ForcedDecision>,
}

impl Actions {
    /// Everything allowed, nothing throttled, no signal: the v2 normal state.
    pub fn permissive() -> Self {
        Actions {
            allow_reads: true,
            allow_single_insert: true,
            allow_bulk_insert: true,
            allow_delete: true,
            allow_update: true,
            allow_index_rewire: true,
            allow_compression: true,
            allow_replication: true,
            allow_backup: true,
            allow_shard_move: true,
            throttle_inserts_pct: 0,
            throttle_searches_pct: 0,
            max_concurrent_searches: None,
            max_insert_batch_size: None,
            pause_gnn_training: false,
            pause_tier_management: false,
            emergency_compact: false,
            decisions: BTreeMap::new(),
        }
    }

    /// The v2 stress state: no bulk insert, half the inserts, GNN training paused.
    pub fn v2_stress() -> Self {
        Actions {
            allow_bulk_insert: false,
            max_insert_batch_size: Some(100),
            throttle_inserts_pct: 50,
            pause_gnn_training: true,
            ..Actions::permissive()
        }
    }

    /// The v2 critical state: reads, replication and backup only.
    pub fn v2_critical() -> Self {
        Actions {
            allow_single_insert: false,
            allow_bulk_insert: false,
            allow_delete: false,
            allow_update: false,
            allow_index_rewire: false,
            allow_compression: false,
            allow_shard_move: false,
            throttle_inserts_pct: 100,
            throttle_searches_pct: 20,
            max_concurrent_searches: Some(10),
            pause_gnn_training: true,
            pause_tier_management: true,
            emergency_compact: true,
            ..Actions::permissive()
        }
    }

    /// Whether this state's flags permit `op` (before throttles and limits).
    pub fn permits(&self, op: Operation) -> bool {
        use Operation::*;
        match op {
            Search => self.allow_reads,
            Insert => self.allow_single_insert,
            BulkInsert => self.allow_bulk_insert,
            Delete | BulkDelete => self.allow_delete,
            Update => self.allow_update,
            IndexBuild | CentroidUpdate => self.allow_index_rewire,
            Compaction => self.allow_compression,
            Replication => self.allow_replication,
            Backup => self.allow_backup,
            GnnTrain => !self.pause_gnn_training,
            TierManage => !self.pause_tier_management,
            ShardMove => self.allow_shard_move,
        }
    }

    fn compile(&self) -> CompiledActions {
        let mut compiled = CompiledActions {
            permitted: 0,
            forced: [0; Operation::ALL.len()],
            throttle_inserts_pct: self.throttle_inserts_pct,
            throttle_searches_pct: self.throttle_searches_pct,
            signals: u8::from(self.pause_gnn_training)
                | u8::from(self.pause_tier_management) << 1
                | u8::from(self.emergency_compact) << 2,
            max_concurrent_searches: self.max_concurrent_searches.unwrap_or(0),
            max_insert_batch_size: self.max_insert_batch_size.unwrap_or(0),
        };
        for op in Operation::ALL {
            if self.permits(op) {
                compiled.permitted |= 1 << op as u32;
            }
        }
        for (name, decision) in &self.decisions {
            let op = Operation::parse(name).expect("decision keys are validated operation names");
            compiled.forced[op as usize] = *decision as u8;
        }
        compiled
    }
}

/// A collection's policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub threshold_high: f64,
    pub threshold_low: f64,
    pub normal_actions: Actions,
    pub stress_actions: Actions,
    pub critical_actions: Actions,
    pub hysteresis: Hysteresis,
    /// `retry_after_secs` of a deferred operation.
    pub defer_retry_secs: u32,
    /// Sampling interval for this collection; `null` follows
    /// `ruvector.integrity_sample_interval`.
    pub sample_interval_secs: Option<u32>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            threshold_high: 0.8,
            threshold_low: 0.3,
            normal_actions: Actions::permissive(),
            stress_actions: Actions::v2_stress(),
            critical_actions: Actions::v2_critical(),
            hysteresis: Hysteresis::default(),
            defer_retry_secs: 300,
            sample_interval_secs: None,
        }
    }
}

/// The keys of an actions object and the kind of value each takes.
fn action_key_kind(key: &str) -> Option<ValueKind> {
    Some(match key {
        "throttle_inserts_pct" | "throttle_searches_pct" => ValueKind::Integer {
            min: 0,
            max: 100,
            nullable: false,
        },
        "max_concurrent_searches" | "max_insert_batch_size" => ValueKind::Integer {
            min: 1,
            max: u32::MAX as u64,
            nullable: true,
        },
        "decisions" => ValueKind::Decisions,
        key if key.starts_with("allow_")
            || key.starts_with("pause_")
            || key == "emergency_compact" =>
        {
            let known = serde_json::to_value(Actions::permissive()).expect("serializable");
            known.get(key)?;
            ValueKind::Bool
        }
        _ => return None,
    })
}

fn hysteresis_key_kind(key: &str) -> Option<ValueKind> {
    Some(match key {
        "degrade_samples" | "critical_samples" => ValueKind::Integer {
            min: 1,
            max: 1000,
            nullable: false,
        },
        "restore_threshold_offset" => ValueKind::Unit,
        "restore_hold_seconds" => ValueKind::Integer {
            min: 0,
            max: 7 * 86_400,
            nullable: false,
        },
        "cooldown_after_transition_seconds" => ValueKind::Integer {
            min: 0,
            max: 86_400,
            nullable: false,
        },
        _ => return None,
    })
}

fn policy_key_kind(key: &str) -> Option<ValueKind> {
    Some(match key {
        "threshold_high" | "threshold_low" => ValueKind::Unit,
        "normal_actions" | "stress_actions" | "critical_actions" => {
            ValueKind::Object(action_key_kind)
        }
        "hysteresis" => ValueKind::Object(hysteresis_key_kind),
        "defer_retry_secs" => ValueKind::Integer {
            min: 1,
            max: 86_400,
            nullable: false,
        },
        "sample_interval_secs" => ValueKind::Integer {
            min: 1,
            max: 86_400,
            nullable: true,
        },
        _ => return None,
    })
}

#[derive(Clone, Copy)]
enum ValueKind {
    Bool,
    /// A number in [0, 1].
    Unit,
    Integer {
        min: u64,
        max: u64,
        nullable: bool,
    },
    Object(fn(&str) -> Option<ValueKind>),
    /// An object from operation names to allow / defer / reject / null.
    Decisions,
}

/// Merges `patch` into `target` after checking it against `kind_of`; `path` is
/// the dotted path of `target`, for error messages.
fn merge_checked(
    target: &mut Map<String, Value>,
    patch: &Value,
    kind_of: fn(&str) -> Option<ValueKind>,
    path: &str,
) -> Result<(), Error> {
    let Value::Object(patch) = patch else {
        let what = if path.is_empty() { "the policy" } else { path };
        return Err(Error::policy(what, "must be a JSON object"));
    };
    for (key, value) in patch {
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let kind = kind_of(key).ok_or_else(|| Error::policy(&full, "unknown key"))?;
        match kind {
            ValueKind::Bool if value.is_boolean() => {}
            ValueKind::Bool => {
                return Err(Error::policy(
                    &full,
                    format!("must be true or false, got {value}"),
                ))
            }
            ValueKind::Unit => match value.as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => {}
                _ => {
                    return Err(Error::policy(
                        &full,
                        format!("must be a number between 0 and 1, got {value}"),
                    ))
                }
            },
            ValueKind::Integer { nullable: true, .. } if value.is_null() => {}
            ValueKind::Integer { min, max, .. } => match value.as_u64() {
                Some(x) if (min..=max).contains(&x) => {}
                _ => {
                    return Err(Error::policy(
                        &full,
                        format!("must be an integer between {min} and {max}, got {value}"),
                    ))
                }
            },
            ValueKind::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(slot) = slot else {
                    unreachable!("policy objects serialize as objects")
                };
                merge_checked(slot, value, inner, &full)?;
                continue;
            }
            ValueKind::Decisions => {
                let Value::Object(entries) = value else {
                    return Err(Error::policy(
                        &full,
                        "must be an object of operation: decision",
                    ));
                };
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(slot) = slot else {
                    unreachable!("decisions serialize as an object")
                };
                for (op_name, decision) in entries {
                    let op = Operation::parse(op_name)
                        .map_err(|e| Error::policy(format!("{full}.{op_name}"), e.to_string()))?;
                    match decision {
                        Value::Null => {
                            slot.remove(op.name());
                        }
                        Value::String(d) if ForcedDecision::parse(d).is_some() => {
                            slot.insert(op.name().to_owned(), decision.clone());
                        }
                        _ => {
                            return Err(Error::policy(
                                format!("{full}.{op_name}"),
                                format!(
                                "must be \"allow\", \"defer\", \"reject\" or null, got {decision}"
                            ),
                            ))
                        }
                    }
                }
                continue;
            }
        }
        target.insert(key.clone(), value.clone());
    }
    Ok(())
}

impl Policy {
    /// This policy with `patch` merged in, validated as a whole.
    pub fn merged(&self, patch: &Value) -> Result<Policy, Error> {
        let Value::Object(mut document) = serde_json::to_value(self).expect("a policy serializes")
        else {
            unreachable!("a policy serializes as an object")
        };
        merge_checked(&mut document, patch, policy_key_kind, "")?;
        let policy: Policy = serde_json::from_value(Value::Object(document))
            .map_err(|e| Error::policy("the policy", e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    /// A policy from a stored document; missing keys take the defaults.
    pub fn from_document(document: &Value) -> Result<Policy, Error> {
        Policy::default().merged(document)
    }

    /// The checks that involve more than one key.
    pub fn validate(&self) -> Result<(), Error> {
        if self.threshold_low >= self.threshold_high {
            return Err(Error::policy(
                "threshold_low",
                format!(
                    "must be below threshold_high ({} is not below {})",
                    self.threshold_low, self.threshold_high
                ),
            ));
        }
        let restore = self.threshold_high + self.hysteresis.restore_threshold_offset;
        if restore > 1.0 {
            return Err(Error::policy(
                "hysteresis.restore_threshold_offset",
                format!(
                    "threshold_high + restore_threshold_offset is {restore}, above 1: lambda_norm never exceeds 1, so stress could never recover"
                ),
            ));
        }
        Ok(())
    }

    pub fn thresholds(&self) -> crate::policy::Thresholds {
        Thresholds {
            high: self.threshold_high,
            low: self.threshold_low,
        }
    }

    pub fn actions(&self, state: State) -> &Actions {
        match state {
            State::Critical => &self.critical_actions,
            State::Stress => &self.stress_actions,
            State::Normal | State::Unknown => &self.normal_actions,
        }
    }

    /// The fixed-size form the gate reads from shared memory.
    pub fn compile(&self) -> CompiledPolicy {
        CompiledPolicy {
            actions: [
                self.normal_actions.compile(),
                self.stress_actions.compile(),
                self.critical_actions.compile(),
            ],
            defer_retry_secs: self.defer_retry_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_sample_calls_for_the_level_its_thresholds_say() {
        let t = Policy::default().thresholds();
        assert_eq!(t.level(1.0), State::Normal);
        assert_eq!(t.level(0.8), State::Normal);
        assert_eq!(t.level(0.79), State::Stress);
        assert_eq!(t.level(0.3), State::Stress);
        assert_eq!(t.level(0.29), State::Critical);
    }

    #[test]
    fn default_is_the_v2_default_policy() {
        let p = Policy::default();
        assert_eq!((p.threshold_high, p.threshold_low), (0.8, 0.3));
        assert!(!p.stress_actions.allow_bulk_insert && p.stress_actions.allow_single_insert);
        assert_eq!(p.stress_actions.throttle_inserts_pct, 50);
        assert!(
            p.critical_actions.allow_reads
                && p.critical_actions.allow_replication
                && p.critical_actions.allow_backup
        );
        assert!(!p.critical_actions.allow_single_insert && !p.critical_actions.allow_index_rewire);
        assert_eq!(p.critical_actions.max_concurrent_searches, Some(10));
        assert_eq!(p.hysteresis, Hysteresis::default());
    }

    #[test]
    fn partial_update_merges_into_the_current_policy() {
        let p = Policy::default()
            .merged(&json!({
                "threshold_high": 0.7,
                "stress_actions": {"throttle_inserts_pct": 75},
                "hysteresis": {"restore_hold_seconds": 5}
            }))
            .unwrap();
        assert_eq!(p.threshold_high, 0.7);
        assert_eq!(p.threshold_low, 0.3);
        assert_eq!(p.stress_actions.throttle_inserts_pct, 75);
        // Omitted keys of a patched object keep their values (the seed replaced them with {}).
        assert!(!p.stress_actions.allow_bulk_insert);
        assert!(p.stress_actions.pause_gnn_training);
        assert_eq!(p.hysteresis.degrade_samples, 3);
        assert_eq!(p.hysteresis.restore_hold_seconds, 5);
    }

    #[test]
    fn the_seed_example_policy_applies() {
        let p = Policy::default()
            .merged(&json!({
                "threshold_high": 0.7,
                "threshold_low": 0.2,
                "stress_actions": {"allow_bulk_insert": false, "throttle_inserts_pct": 75, "pause_gnn_training": true}
            }))
            .unwrap();
        assert_eq!(p.threshold_low, 0.2);
        assert_eq!(p.stress_actions.throttle_inserts_pct, 75);
    }

    fn error_key(patch: Value) -> String {
        match Policy::default().merged(&patch) {
            Err(Error::Policy { key, .. }) => key,
            other => panic!("expected a policy error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_keys_are_named_by_path() {
        assert_eq!(error_key(json!({"threshold_hgh": 0.7})), "threshold_hgh");
        assert_eq!(
            error_key(json!({"stress_actions": {"allow_everything": true}})),
            "stress_actions.allow_everything"
        );
        assert_eq!(
            error_key(json!({"hysteresis": {"samples": 3}})),
            "hysteresis.samples"
        );
        assert_eq!(
            error_key(json!({"critical_actions": {"decisions": {"fly": "allow"}}})),
            "critical_actions.decisions.fly"
        );
    }

    #[test]
    fn out_of_range_values_are_named_by_path() {
        assert_eq!(error_key(json!({"threshold_high": 1.5})), "threshold_high");
        assert_eq!(error_key(json!({"threshold_low": -0.1})), "threshold_low");
        assert_eq!(
            error_key(json!({"stress_actions": {"throttle_inserts_pct": 150}})),
            "stress_actions.throttle_inserts_pct"
        );
        assert_eq!(
            error_key(json!({"critical_actions": {"max_concurrent_searches": 0}})),
            "critical_actions.max_concurrent_searches"
        );
        assert_eq!(
            error_key(json!({"normal_actions": {"allow_reads": "yes"}})),
            "normal_actions.allow_reads"
        );
        assert_eq!(
            error_key(json!({"hysteresis": {"degrade_samples": 0}})),
            "hysteresis.degrade_samples"
        );
        assert_eq!(
            error_key(json!({"stress_actions": {"decisions": {"bulk_insert": "maybe"}}})),
            "stress_actions.decisions.bulk_insert"
        );
        assert_eq!(error_key(json!({"stress_actions": 3})), "stress_actions");
        assert_eq!(error_key(json!([1, 2])), "the policy");
    }

    #[test]
    fn thresholds_must_be_ordered_and_recoverable() {
        assert_eq!(error_key(json!({"threshold_low": 0.8})), "threshold_low");
        assert_eq!(
            error_key(json!({"threshold_high": 0.95})),
            "hysteresis.restore_threshold_offset"
        );
        assert!(Policy::default()
            .merged(
                &json!({"threshold_high": 0.95, "hysteresis": {"restore_threshold_offset": 0.05}})
            )
            .is_ok());
    }

    #[test]
    fn nullable_limits_can_be_cleared() {
        let p = Policy::default()
            .merged(&json!({"critical_actions": {"max_concurrent_searches": null}}))
            .unwrap();
        assert_eq!(p.critical_actions.max_concurrent_searches, None);
    }

    #[test]
    fn decisions_use_canonical_names_and_null_removes() {
        let p = Policy::default()
            .merged(&json!({"critical_actions": {"decisions": {"hnsw_rewire": "allow", "compact": "defer"}}}))
            .unwrap();
        assert_eq!(
            p.critical_actions.decisions.get("index_build"),
            Some(&ForcedDecision::Allow)
        );
        assert_eq!(
            p.critical_actions.decisions.get("compaction"),
            Some(&ForcedDecision::Defer)
        );
        let p = p
            .merged(&json!({"critical_actions": {"decisions": {"index_rebuild": null}}}))
            .unwrap();
        assert_eq!(p.critical_actions.decisions.len(), 1);
    }

    #[test]
    fn stored_documents_round_trip() {
        let p = Policy::default()
            .merged(&json!({"defer_retry_secs": 60}))
            .unwrap();
        let stored = serde_json::to_value(&p).unwrap();
        assert_eq!(Policy::from_document(&stored).unwrap(), p);
        assert_eq!(
            Policy::from_document(&json!({})).unwrap(),
            Policy::default()
        );
    }
}
