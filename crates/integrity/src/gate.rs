//! The gate: may this operation run on this collection now? One rule for every
//! operation, decided from the collection's state and its compiled policy.
//!
//! 1. Stale or unknown state: high-risk work is deferred. Otherwise the rules
//!    below apply to the last state known; with no state known at all, low- and
//!    medium-risk work is allowed.
//! 2. An explicit decision in the state's `decisions` wins.
//! 3. The state's actions forbid the operation: high risk is deferred in normal
//!    and stress and rejected in critical; low and medium risk are rejected.
//! 4. A batch larger than `max_insert_batch_size` is rejected; a search beyond
//!    `max_concurrent_searches` is throttled (refused for this call).
//! 5. A throttle percentage above 0 for the operation (inserts, searches) makes
//!    it a `throttle`: refused at that rate, decided per call.
//! 6. Otherwise it is allowed.
//!
//! [`decide`] works on plain-old-data ([`CompiledPolicy`]) and allocates
//! nothing, so the extension runs it straight from shared memory.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::registration::{Refusal, RefusalKind};
use crate::state::State;
use crate::{Error, Micros};

/// Every operation the gate knows. Aliases map onto these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Operation {
    Search,
    Insert,
    BulkInsert,
    Delete,
    BulkDelete,
    Update,
    IndexBuild,
    Compaction,
    Replication,
    Backup,
    GnnTrain,
    TierManage,
    CentroidUpdate,
    ShardMove,
}

/// How much damage an operation can do to a collection that is already hurting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Risk {
    Low,
    Medium,
    High,
}

/// Every accepted name, canonical first, with the operation it means.
const NAMES: &[(&str, Operation)] = &[
    ("search", Operation::Search),
    ("read", Operation::Search),
    ("insert", Operation::Insert),
    ("point_insert", Operation::Insert),
    ("bulk_insert", Operation::BulkInsert),
    ("delete", Operation::Delete),
    ("point_delete", Operation::Delete),
    ("bulk_delete", Operation::BulkDelete),
    ("update", Operation::Update),
    ("index_build", Operation::IndexBuild),
    ("index_rewire", Operation::IndexBuild),
    ("index_rebuild", Operation::IndexBuild),
    ("hnsw_rewire", Operation::IndexBuild),
    ("compaction", Operation::Compaction),
    ("compression", Operation::Compaction),
    ("compact", Operation::Compaction),
    ("replication", Operation::Replication),
    ("backup", Operation::Backup),
    ("gnn_train", Operation::GnnTrain),
    ("tier_manage", Operation::TierManage),
    ("tier_demotion", Operation::TierManage),
    ("centroid_update", Operation::CentroidUpdate),
    ("shard_move", Operation::ShardMove),
];

impl Operation {
    pub const ALL: [Operation; 14] = [
        Operation::Search,
        Operation::Insert,
        Operation::BulkInsert,
        Operation::Delete,
        Operation::BulkDelete,
        Operation::Update,
        Operation::IndexBuild,
        Operation::Compaction,
        Operation::Replication,
        Operation::Backup,
        Operation::GnnTrain,
        Operation::TierManage,
        Operation::CentroidUpdate,
        Operation::ShardMove,
    ];

    /// The operation a name or alias means. Unknown names are an error that
    /// lists every valid name: the gate fails closed.
    pub fn parse(name: &str) -> Result<Operation, Error> {
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, op)| op)
            .ok_or_else(|| Error::UnknownOperation {
                name: name.to_owned(),
                valid: NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            })
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|&&(_, op)| op == self)
            .map(|(n, _)| *n)
            .expect("every operation has a name")
    }

    pub fn risk(self) -> Risk {
        use Operation::*;
        match self {
            Search | Insert | Delete | Replication | Backup => Risk::Low,
            BulkInsert | BulkDelete | Update | CentroidUpdate => Risk::Medium,
            IndexBuild | Compaction | TierManage | ShardMove | GnnTrain => Risk::High,
        }
    }

    fn is_insert(self) -> bool {
        matches!(self, Operation::Insert | Operation::BulkInsert)
    }

    /// What a role needs on a collection's table to ask the gate about this
    /// operation: what the statement it stands for would need. An answer, and
    /// a search's place in the concurrent count, are for those who could run it.
    pub fn needs(self) -> Needs {
        use Operation::*;
        match self {
            Search | Replication | Backup => Needs::Select,
            Insert | BulkInsert => Needs::Insert,
            Delete | BulkDelete => Needs::Delete,
            Update => Needs::Update,
            IndexBuild | Compaction | TierManage | ShardMove | GnnTrain | CentroidUpdate => {
                Needs::Ownership
            }
        }
    }
}

/// A table privilege, or the table's ownership (see [`Operation::needs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Select,
    Insert,
    Delete,
    Update,
    Ownership,
}

impl Needs {
    pub fn as_str(self) -> &'static str {
        match self {
            Needs::Select => "SELECT",
            Needs::Insert => "INSERT",
            Needs::Delete => "DELETE",
            Needs::Update => "UPDATE",
            Needs::Ownership => "ownership",
        }
    }
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }
}

/// A decision a policy can impose on one operation in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum ForcedDecision {
    Allow = 1,
    Defer = 2,
    Reject = 3,
}

impl ForcedDecision {
    pub fn parse(name: &str) -> Option<ForcedDecision> {
        match name {
            "allow" => Some(ForcedDecision::Allow),
            "defer" => Some(ForcedDecision::Defer),
            "reject" => Some(ForcedDecision::Reject),
            _ => None,
        }
    }
}

/// One state's actions in fixed-size form (see `policy::Actions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct CompiledActions {
    /// Bit `op as u32` is set when the state's flags permit `op`.
    pub permitted: u32,
    /// `ForcedDecision as u8` per operation, 0 for none.
    pub forced: [u8; Operation::ALL.len()],
    pub throttle_inserts_pct: u8,
    pub throttle_searches_pct: u8,
    /// Bits: 1 pause_gnn_training, 2 pause_tier_management, 4 emergency_compact.
    pub signals: u8,
    /// 0 is unlimited.
    pub max_concurrent_searches: u32,
    /// 0 is unlimited.
    pub max_insert_batch_size: u32,
}

/// Whether one more search may start while `live` run, under a limit of
/// `limit` at once (0: no limit). The verdict and the place a search takes in
/// shared memory both ask this.
pub fn under_search_limit(live: u32, limit: u32) -> bool {
    limit == 0 || live < limit
}

/// A policy in the fixed-size form kept in shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct CompiledPolicy {
    /// Normal, stress, critical.
    pub actions: [CompiledActions; 3],
    pub defer_retry_secs: u32,
}

impl CompiledPolicy {
    fn for_state(&self, state: State) -> &CompiledActions {
        match state {
            State::Critical => &self.actions[2],
            State::Stress => &self.actions[1],
            State::Normal | State::Unknown => &self.actions[0],
        }
    }

    /// The most searches that may run at once in `state` (0 is unlimited).
    pub fn max_concurrent_searches(&self, state: State) -> u32 {
        if state == State::Unknown {
            0
        } else {
            self.for_state(state).max_concurrent_searches
        }
    }

    /// The signal bits of a state (see [`CompiledActions::signals`]).
    pub fn signals(&self, state: State) -> u8 {
        if state == State::Unknown {
            0
        } else {
            self.for_state(state).signals
        }
    }
}

/// What the gate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Throttle,
    Defer,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Throttle => "throttle",
            Decision::Defer => "defer",
            Decision::Reject => "reject",
        }
    }
}

/// What became of one gated call, as the gate's statistics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    /// Allowed (a throttle whose roll let it through included).
    Allowed,
    /// Refused by a throttle or by the concurrent search limit.
    Throttled,
    Deferred,
    Rejected,
    /// Refused, but let through by an operator's `ruvector.integrity_bypass`.
    Bypassed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Allowed,
        Outcome::Throttled,
        Outcome::Deferred,
        Outcome::Rejected,
        Outcome::Bypassed,
    ];

    /// The outcome of `verdict` for a call that `allowed` says went through
    /// (or not), before any bypass.
    pub fn of(verdict: &Verdict, allowed: bool) -> Outcome {
        match (allowed, verdict.decision) {
            (true, _) | (false, Decision::Allow) => Outcome::Allowed,
            (false, Decision::Throttle) => Outcome::Throttled,
            (false, Decision::Defer) => Outcome::Deferred,
            (false, Decision::Reject) => Outcome::Rejected,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Throttled => "throttled",
            Outcome::Deferred => "deferred",
            Outcome::Rejected => "rejected",
            Outcome::Bypassed => "bypassed",
        }
    }
}

/// Why the gate decided as it did. Formatting it is the only allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Permitted,
    Forced,
    Forbidden,
    Throttled,
    ConcurrencyLimit {
        limit: u32,
    },
    BatchTooLarge {
        rows: u64,
        limit: u32,
    },
    /// Rows added where no count can be had, under a batch limit.
    BatchOfUnknownSize {
        limit: u32,
    },
    Stale,
    NoSampleYet,
}

/// The gate's verdict for one operation, before the per-call throttle roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub operation: Operation,
    pub decision: Decision,
    /// Share of calls refused: 100 for reject and defer, 0 for allow.
    pub throttle_pct: u8,
    pub retry_after_secs: u32,
    pub state: State,
    pub stale: bool,
    pub reason: Reason,
}

/// The state as the gate sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateInput {
    /// The last state known (`Unknown` before the first sample).
    pub state: State,
    /// The worker has not sampled the collection recently enough.
    pub stale: bool,
    /// Searching transactions on the collection right now, this one excluded.
    pub live_searches: u32,
    /// Rows the statement adds, for inserts.
    pub rows: Rows,
}

/// How many rows an insert adds, as the gate can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// Counted: the statement ran, or its size was given.
    Counted(u64),
    /// Not counted yet, and a later check will count them (a COPY looked at
    /// before it runs, an application asking the gate ahead of a statement):
    /// the batch limit is left to that check.
    Later,
    /// No count will ever be had (a data-modifying WITH, a COPY inside a SQL
    /// function, an attached partition's rows): under a batch limit, the
    /// strictest answer, as if the batch were over it.
    Unseen,
}

/// Decides `op` under `policy` for a collection in `input`'s state.
pub fn decide(policy: &CompiledPolicy, input: GateInput, op: Operation) -> Verdict {
    let verdict = |decision, throttle_pct, retry_after_secs, reason| Verdict {
        operation: op,
        decision,
        throttle_pct,
        retry_after_secs,
        state: input.state,
        stale: input.stale || input.state == State::Unknown,
        reason,
    };
    let defer = |reason| verdict(Decision::Defer, 100, policy.defer_retry_secs, reason);
    let reject = |reason| verdict(Decision::Reject, 100, 0, reason);
    let allow = |reason| verdict(Decision::Allow, 0, 0, reason);

    if op.risk() == Risk::High && (input.stale || input.state == State::Unknown) {
        return defer(if input.state == State::Unknown {
            Reason::NoSampleYet
        } else {
            Reason::Stale
        });
    }
    if input.state == State::Unknown {
        return allow(Reason::NoSampleYet);
    }
    let actions = policy.for_state(input.state);
    match actions.forced[op as usize] {
        1 => return allow(Reason::Forced),
        2 => return defer(Reason::Forced),
        3 => return reject(Reason::Forced),
        _ => {}
    }
    if actions.permitted & (1 << op as u32) == 0 {
        return match (op.risk(), input.state) {
            (Risk::High, State::Normal | State::Stress) => defer(Reason::Forbidden),
            _ => reject(Reason::Forbidden),
        };
    }
    let limit = actions.max_insert_batch_size;
    if op.is_insert() && limit > 0 {
        match input.rows {
            Rows::Counted(rows) if rows > limit as u64 => {
                return reject(Reason::BatchTooLarge { rows, limit })
            }
            Rows::Unseen => return reject(Reason::BatchOfUnknownSize { limit }),
            _ => {}
        }
    }
    if op == Operation::Search {
        let limit = actions.max_concurrent_searches;
        if !under_search_limit(input.live_searches, limit) {
            return verdict(
                Decision::Throttle,
                100,
                1,
                Reason::ConcurrencyLimit { limit },
            );
        }
    }
    let pct = match op {
        Operation::Search => actions.throttle_searches_pct,
        op if op.is_insert() => actions.throttle_inserts_pct,
        _ => 0,
    };
    if pct > 0 {
        verdict(Decision::Throttle, pct.min(100), 1, Reason::Throttled)
    } else {
        allow(Reason::Permitted)
    }
}

impl Verdict {
    /// The verdict for a search turned away because `limit` searches run
    /// already (found when it tried to take its place).
    pub fn over_search_limit(self, limit: u32) -> Verdict {
        Verdict {
            decision: Decision::Throttle,
            throttle_pct: 100,
            retry_after_secs: 1,
            reason: Reason::ConcurrencyLimit { limit },
            ..self
        }
    }

    /// Whether this call may proceed, given `roll`, uniform in [0, 1): a throttle
    /// of p% refuses the calls whose roll falls below p/100.
    pub fn allowed(&self, roll: f64) -> bool {
        match self.decision {
            Decision::Allow => true,
            Decision::Throttle => roll * 100.0 >= self.throttle_pct as f64,
            Decision::Defer | Decision::Reject => false,
        }
    }

    pub fn risk(&self) -> Risk {
        self.operation.risk()
    }
}

impl fmt::Display for Verdict {
    /// The reason, in words a DBA reads in an error message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (op, state) = (self.operation.name(), self.state.as_str());
        match self.reason {
            Reason::Permitted => write!(f, "{op} is permitted in state {state}"),
            Reason::Forced => write!(
                f,
                "the policy sets {op} to {} in state {state}",
                self.decision.as_str()
            ),
            Reason::Forbidden => write!(
                f,
                "the policy forbids {op} ({} risk) in state {state}",
                self.operation.risk().as_str()
            ),
            Reason::Throttled => write!(
                f,
                "{op} is throttled at {}% in state {state}",
                self.throttle_pct
            ),
            Reason::ConcurrencyLimit { limit } => {
                write!(
                    f,
                    "the limit of {limit} concurrent searches in state {state} is reached"
                )
            }
            Reason::BatchTooLarge { rows, limit } => write!(
                f,
                "a batch of {rows} rows exceeds max_insert_batch_size {limit} in state {state}"
            ),
            Reason::BatchOfUnknownSize { limit } => write!(
                f,
                "a batch of rows that cannot be counted may exceed max_insert_batch_size {limit} in state {state}"
            ),
            Reason::Stale => write!(
                f,
                "the integrity state is stale (no recent sample), so {} risk work waits",
                self.operation.risk().as_str()
            ),
            Reason::NoSampleYet => write!(f, "no integrity sample has been taken yet"),
        }
    }
}

/// An operator's pin of a collection's state, and when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Override {
    pub state: State,
    pub until: Micros,
}

/// The longest an override may last.
pub const MAX_OVERRIDE_SECS: f64 = 7.0 * 86_400.0;

impl Override {
    /// Whether the pin holds at `now` (it ends at `until`).
    pub fn in_force(&self, now: Micros) -> bool {
        now < self.until
    }

    /// The pin an operator asks for at `now`: `state` (normal, stress or
    /// critical) for `ttl_secs`, up to [`MAX_OVERRIDE_SECS`]; no state clears
    /// the pin (`None`).
    pub fn requested(
        state: Option<&str>,
        ttl_secs: Option<f64>,
        now: Micros,
    ) -> Result<Option<Override>, Refusal> {
        let Some(name) = state else {
            return Ok(None);
        };
        let state = match State::parse(name) {
            Some(State::Unknown) | None => {
                return Err(Refusal::new(
                    RefusalKind::InvalidValue,
                    format!("invalid override state \"{name}\""),
                )
                .hint("Valid states: normal, stress, critical; NULL clears the override."))
            }
            Some(state) => state,
        };
        let ttl = ttl_secs
            .ok_or_else(|| Refusal::new(RefusalKind::InvalidValue, "an override needs a ttl"))?;
        if !(ttl > 0.0 && ttl <= MAX_OVERRIDE_SECS) {
            return Err(Refusal::new(
                RefusalKind::InvalidValue,
                format!("ttl must be more than 0 and at most 7 days, got {ttl} s"),
            ));
        }
        Ok(Some(Override {
            state,
            until: now + (ttl * 1e6) as Micros,
        }))
    }
}

/// The state the gate acts on at `now`, and whether it is stale: an
/// override in force, else the last sample's state (unknown before the
/// first); stale without an override in force when no sample was taken
/// within `stale_after`.
pub fn state_in_force(
    sampled: State,
    last_sample: Option<Micros>,
    pin: Option<Override>,
    stale_after: Micros,
    now: Micros,
) -> (State, bool) {
    if let Some(pin) = pin.filter(|p| p.in_force(now)) {
        return (pin.state, false);
    }
    match last_sample {
        None => (State::Unknown, true),
        Some(at) => (sampled, now - at > stale_after),
    }
}

/// What a data-modifying statement (a node of its plan) does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Insert,
    Update,
    Delete,
    Merge,
}

/// The operation adding `rows` rows is (none: nothing added). Rows that are
/// not counted are a bulk insert.
pub fn insertion(rows: Rows) -> Option<Operation> {
    match rows {
        Rows::Counted(0) => None,
        Rows::Counted(1) => Some(Operation::Insert),
        _ => Some(Operation::BulkInsert),
    }
}

/// The operation removing `rows` rows is (none: nothing removed).
pub fn deletion(rows: Rows) -> Option<Operation> {
    match rows {
        Rows::Counted(0) => None,
        Rows::Counted(1) => Some(Operation::Delete),
        _ => Some(Operation::BulkDelete),
    }
}

/// The operations a statement node of `command` that touched `rows` rows
/// stands for. `upserts`: an INSERT ... ON CONFLICT DO UPDATE (each row may be
/// an update); a MERGE may insert, update and delete.
pub fn operations(command: Command, rows: Rows, upserts: bool) -> Vec<Operation> {
    let touched = rows != Rows::Counted(0);
    match command {
        Command::Insert => insertion(rows)
            .into_iter()
            .chain((upserts && touched).then_some(Operation::Update))
            .collect(),
        Command::Update if touched => vec![Operation::Update],
        Command::Delete => deletion(rows).into_iter().collect(),
        Command::Merge if touched => insertion(rows)
            .into_iter()
            .chain([Operation::Update])
            .chain(deletion(rows))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_override_is_a_known_state_for_a_bounded_time() {
        use super::*;
        let now = 1_000 * crate::SECOND;
        assert_eq!(Override::requested(None, Some(60.0), now), Ok(None));
        assert_eq!(
            Override::requested(Some("critical"), Some(60.0), now),
            Ok(Some(Override {
                state: State::Critical,
                until: now + 60 * crate::SECOND
            }))
        );
        for (state, ttl, says) in [
            ("unknown", Some(60.0), "invalid override state"),
            ("broken", Some(60.0), "invalid override state"),
            ("stress", None, "needs a ttl"),
            ("stress", Some(0.0), "ttl must be"),
            ("stress", Some(f64::NAN), "ttl must be"),
            ("stress", Some(MAX_OVERRIDE_SECS + 1.0), "ttl must be"),
        ] {
            let refusal = Override::requested(Some(state), ttl, now).unwrap_err();
            assert_eq!(refusal.kind, RefusalKind::InvalidValue);
            assert!(
                refusal.message.contains(says),
                "{state} {ttl:?}: {}",
                refusal.message
            );
        }
        let longest = Override::requested(Some("normal"), Some(MAX_OVERRIDE_SECS), now)
            .unwrap()
            .unwrap();
        assert!(longest.in_force(now + 7 * 86_400 * crate::SECOND - 1));
        assert!(!longest.in_force(now + 7 * 86_400 * crate::SECOND));
    }

    use super::*;
    use crate::policy::Policy;

    fn input(state: State) -> GateInput {
        GateInput {
            state,
            stale: false,
            live_searches: 0,
            rows: Rows::Later,
        }
    }

    fn decide_default(state: State, op: Operation) -> Verdict {
        decide(&Policy::default().compile(), input(state), op)
    }

    #[test]
    fn every_operation_in_every_state_follows_the_rule() {
        use Decision::*;
        use Operation::*;
        // (operation, normal, stress, critical) under the v2 default policy.
        let matrix = [
            (Search, Allow, Allow, Throttle),
            (Insert, Allow, Throttle, Reject),
            (BulkInsert, Allow, Reject, Reject),
            (Delete, Allow, Allow, Reject),
            (BulkDelete, Allow, Allow, Reject),
            (Update, Allow, Allow, Reject),
            (IndexBuild, Allow, Allow, Reject),
            (Compaction, Allow, Allow, Reject),
            (Replication, Allow, Allow, Allow),
            (Backup, Allow, Allow, Allow),
            (GnnTrain, Allow, Defer, Reject),
            (TierManage, Allow, Allow, Reject),
            (CentroidUpdate, Allow, Allow, Reject),
            (ShardMove, Allow, Allow, Reject),
        ];
        assert_eq!(matrix.len(), Operation::ALL.len());
        for (op, normal, stress, critical) in matrix {
            for (state, expected) in [
                (State::Normal, normal),
                (State::Stress, stress),
                (State::Critical, critical),
            ] {
                let v = decide_default(state, op);
                assert_eq!(v.decision, expected, "{} in {}", op.name(), state.as_str());
            }
        }
    }

    #[test]
    fn throttle_percentages_come_from_the_state() {
        assert_eq!(
            decide_default(State::Stress, Operation::Insert).throttle_pct,
            50
        );
        assert_eq!(
            decide_default(State::Critical, Operation::Search).throttle_pct,
            20
        );
        assert_eq!(
            decide_default(State::Normal, Operation::Insert).throttle_pct,
            0
        );
    }

    #[test]
    fn throttle_refuses_calls_at_its_rate() {
        let v = decide_default(State::Stress, Operation::Insert);
        let allowed = (0..1000).filter(|i| v.allowed(*i as f64 / 1000.0)).count();
        assert_eq!(allowed, 500);
        assert!(decide_default(State::Normal, Operation::Insert).allowed(0.0));
        assert!(!decide_default(State::Critical, Operation::Insert).allowed(0.99));
    }

    #[test]
    fn high_risk_forbidden_in_stress_is_deferred_with_the_policy_retry() {
        let policy = Policy::default()
            .merged(&serde_json::json!({"stress_actions": {"allow_index_rewire": false}, "defer_retry_secs": 120}))
            .unwrap()
            .compile();
        let v = decide(&policy, input(State::Stress), Operation::IndexBuild);
        assert_eq!((v.decision, v.retry_after_secs), (Decision::Defer, 120));
        assert!(
            v.to_string()
                .contains("forbids index_build (high risk) in state stress"),
            "{v}"
        );
    }

    #[test]
    fn stale_state_defers_high_risk_and_keeps_the_rest_of_the_last_state() {
        let policy = Policy::default().compile();
        let stale = GateInput {
            stale: true,
            ..input(State::Normal)
        };
        assert_eq!(
            decide(&policy, stale, Operation::IndexBuild).decision,
            Decision::Defer
        );
        let search = decide(&policy, stale, Operation::Search);
        assert_eq!(search.decision, Decision::Allow);
        assert!(search.stale);
        let critical = GateInput {
            stale: true,
            ..input(State::Critical)
        };
        assert_eq!(
            decide(&policy, critical, Operation::Insert).decision,
            Decision::Reject
        );
    }

    #[test]
    fn unknown_state_allows_low_and_medium_and_defers_high() {
        let policy = Policy::default().compile();
        for (op, expected) in [
            (Operation::Search, Decision::Allow),
            (Operation::BulkInsert, Decision::Allow),
            (Operation::Compaction, Decision::Defer),
        ] {
            let v = decide(&policy, input(State::Unknown), op);
            assert_eq!(v.decision, expected);
            assert!(v.stale);
            assert_eq!(v.state, State::Unknown);
        }
    }

    #[test]
    fn explicit_decisions_override_the_rule() {
        let policy = Policy::default()
            .merged(&serde_json::json!({
                "critical_actions": {"decisions": {"index_build": "allow"}},
                "normal_actions": {"decisions": {"bulk_insert": "defer"}}
            }))
            .unwrap()
            .compile();
        assert_eq!(
            decide(&policy, input(State::Critical), Operation::IndexBuild).decision,
            Decision::Allow
        );
        let v = decide(&policy, input(State::Normal), Operation::BulkInsert);
        assert_eq!((v.decision, v.reason), (Decision::Defer, Reason::Forced));
    }

    #[test]
    fn each_operation_needs_what_its_statement_would() {
        use Operation::*;
        let needs = |ops: &[Operation]| ops.iter().map(|o| o.needs()).collect::<Vec<_>>();
        assert_eq!(needs(&[Search, Replication, Backup]), [Needs::Select; 3]);
        assert_eq!(needs(&[Insert, BulkInsert]), [Needs::Insert; 2]);
        assert_eq!(needs(&[Delete, BulkDelete]), [Needs::Delete; 2]);
        assert_eq!(Update.needs(), Needs::Update);
        for op in Operation::ALL {
            if op.risk() == Risk::High || op == CentroidUpdate {
                assert_eq!(op.needs(), Needs::Ownership, "{}", op.name());
            }
        }
    }

    #[test]
    fn batch_limit_rejects_large_inserts_only() {
        let policy = Policy::default()
            .merged(&serde_json::json!({"normal_actions": {"max_insert_batch_size": 100}}))
            .unwrap()
            .compile();
        let rows = |n| GateInput {
            rows: Rows::Counted(n),
            ..input(State::Normal)
        };
        assert_eq!(
            decide(&policy, rows(100), Operation::BulkInsert).decision,
            Decision::Allow
        );
        let v = decide(&policy, rows(101), Operation::BulkInsert);
        assert_eq!(v.decision, Decision::Reject);
        assert_eq!(
            v.to_string(),
            "a batch of 101 rows exceeds max_insert_batch_size 100 in state normal"
        );
        // Rows that will be counted later are left to that check; rows that
        // never will be are over any limit.
        let later = GateInput {
            rows: Rows::Later,
            ..input(State::Normal)
        };
        assert_eq!(
            decide(&policy, later, Operation::BulkInsert).decision,
            Decision::Allow
        );
        let unseen = GateInput {
            rows: Rows::Unseen,
            ..input(State::Normal)
        };
        let v = decide(&policy, unseen, Operation::BulkInsert);
        assert_eq!(
            (v.decision, v.reason),
            (Decision::Reject, Reason::BatchOfUnknownSize { limit: 100 })
        );
        // Without a limit, an uncounted batch is like any other.
        let unlimited = Policy::default().compile();
        assert_eq!(
            decide(&unlimited, unseen, Operation::BulkInsert).decision,
            Decision::Allow
        );
    }

    #[test]
    fn a_search_may_start_below_the_limit_and_always_without_one() {
        assert!(under_search_limit(0, 0));
        assert!(under_search_limit(u32::MAX, 0));
        assert!(under_search_limit(1, 2));
        assert!(!under_search_limit(2, 2));
        assert!(!under_search_limit(3, 2));
    }

    #[test]
    fn concurrent_search_limit_throttles_the_call_beyond_it() {
        let policy = Policy::default().compile();
        let busy = GateInput {
            live_searches: 10,
            ..input(State::Critical)
        };
        let v = decide(&policy, busy, Operation::Search);
        assert_eq!(v.decision, Decision::Throttle);
        assert!(!v.allowed(0.99));
        assert_eq!(Outcome::of(&v, false), Outcome::Throttled);
    }

    #[test]
    fn outcomes_count_what_happened_to_the_call() {
        let policy = Policy::default().compile();
        let critical = |op| decide(&policy, input(State::Critical), op);
        let throttled = critical(Operation::Search);
        assert_eq!(throttled.decision, Decision::Throttle);
        assert_eq!(Outcome::of(&throttled, true), Outcome::Allowed);
        assert_eq!(Outcome::of(&throttled, false), Outcome::Throttled);
        let bulk = critical(Operation::BulkInsert);
        assert_eq!(Outcome::of(&bulk, bulk.allowed(0.5)), Outcome::Rejected);
        let stale = GateInput {
            stale: true,
            ..input(State::Normal)
        };
        let index = decide(&policy, stale, Operation::IndexBuild);
        assert_eq!(Outcome::of(&index, index.allowed(0.5)), Outcome::Deferred);
        let names: Vec<_> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            names,
            ["allowed", "throttled", "deferred", "rejected", "bypassed"]
        );
    }

    #[test]
    fn aliases_map_to_their_operation_and_unknown_names_fail_closed() {
        assert_eq!(
            Operation::parse("hnsw_rewire").unwrap(),
            Operation::IndexBuild
        );
        assert_eq!(Operation::parse("compact").unwrap(), Operation::Compaction);
        assert_eq!(Operation::parse("read").unwrap(), Operation::Search);
        assert_eq!(
            Operation::parse("tier_demotion").unwrap(),
            Operation::TierManage
        );
        let err = Operation::parse("drop_everything").unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with(
            "unknown operation \"drop_everything\"; valid operations are: search, read,"
        ));
        for op in Operation::ALL {
            assert!(message.contains(op.name()));
        }
    }

    #[test]
    fn risk_classes_are_the_spec_ones() {
        use Operation::*;
        for op in [Search, Insert, Delete] {
            assert_eq!(op.risk(), Risk::Low);
        }
        for op in [BulkInsert, BulkDelete, Update, CentroidUpdate] {
            assert_eq!(op.risk(), Risk::Medium);
        }
        for op in [IndexBuild, Compaction, TierManage, ShardMove, GnnTrain] {
            assert_eq!(op.risk(), Risk::High);
        }
    }

    #[test]
    fn an_override_in_force_wins_and_is_never_stale() {
        let pin = Some(Override {
            state: State::Critical,
            until: 100,
        });
        assert_eq!(
            state_in_force(State::Normal, Some(0), pin, 10, 50),
            (State::Critical, false)
        );
        // Its end is the end of it.
        assert_eq!(
            state_in_force(State::Normal, Some(95), pin, 10, 100),
            (State::Normal, false)
        );
        assert_eq!(
            state_in_force(State::Normal, Some(0), pin, 10, 100),
            (State::Normal, true)
        );
        // Before the first sample: unknown, and stale.
        assert_eq!(
            state_in_force(State::Normal, None, None, 10, 100),
            (State::Unknown, true)
        );
        assert_eq!(
            state_in_force(State::Stress, Some(90), None, 10, 100),
            (State::Stress, false)
        );
        assert_eq!(
            state_in_force(State::Stress, Some(89), None, 10, 100),
            (State::Stress, true)
        );
    }

    #[test]
    fn a_statement_is_the_operations_its_rows_make() {
        use Command::*;
        let rows = Rows::Counted;
        assert_eq!(operations(Insert, rows(0), false), []);
        assert_eq!(operations(Insert, rows(1), false), [Operation::Insert]);
        assert_eq!(
            operations(Insert, rows(2), true),
            [Operation::BulkInsert, Operation::Update]
        );
        assert_eq!(
            operations(Insert, Rows::Unseen, false),
            [Operation::BulkInsert]
        );
        assert_eq!(operations(Update, rows(0), false), []);
        assert_eq!(operations(Update, rows(5), false), [Operation::Update]);
        assert_eq!(operations(Delete, rows(1), false), [Operation::Delete]);
        assert_eq!(operations(Delete, rows(7), false), [Operation::BulkDelete]);
        assert_eq!(
            operations(Merge, rows(3), false),
            [
                Operation::BulkInsert,
                Operation::Update,
                Operation::BulkDelete
            ]
        );
        assert_eq!(operations(Merge, rows(0), false), []);
    }
}
