//! The executor hooks.
//!
//! Searches, decided in `ExecutorStart`: a query that reads a collection's
//! relation is a search on that collection (an UPDATE, DELETE or MERGE reads
//! its targets; an INSERT does not). An admitted search holds a place in the
//! collection's live search count until its executor ends (or its
//! transaction or subtransaction does, or the backend exits). Not searches:
//! reads the extension makes for itself, plans only explained, parallel
//! workers (their leader is counted), autovacuum, walsenders, and any read on
//! a hot standby (no worker runs there to keep states current);
//! `ruvector.gate_searches = off` turns the search gate off.
//!
//! INSERT, UPDATE, DELETE and MERGE on a collection's relations, decided in
//! `ExecutorFinish`, when the statement has run, before its AFTER triggers
//! fire and before it commits. A refusal rolls the statement back whole.
//!
//! Each data-modifying node of the plan (the statement itself, and every
//! data-modifying WITH) is gated on its own target relations and on the
//! partitions rows were routed to, so a statement is gated however it
//! reaches the executor: from a client, a function, a trigger, a view or a
//! rule. Only the node that sets the statement's row count has an exact one;
//! the others (a data-modifying WITH, a rule's extra statement) are never
//! counted: the strictest batch rule. A query that writes nothing costs one
//! list check.

use pgrx::pg_sys;
use pgrx::prelude::*;
use ruvector_integrity::gate::{self, Command, Operation, Rows};

use super::{collection_of, decide, enforce, list};
use crate::errors::{OrRaise, SqlResult};
use crate::gate::Target;
use crate::{gucs, installation, xact};

/// The hooks that were installed before ours, set once in `_PG_init`.
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_FINISH: pg_sys::ExecutorFinish_hook_type = None;
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;

pub fn install_hooks() {
    // SAFETY: `_PG_init` runs once per process that loads the library,
    // before any query runs: nothing reads these statics concurrently.
    unsafe {
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EXECUTOR_FINISH = pg_sys::ExecutorFinish_hook;
        pg_sys::ExecutorFinish_hook = Some(executor_finish);
        PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end);
    }
}

/// Whether this executor's reads could be searches at all.
fn searches_gated(eflags: i32) -> bool {
    // SAFETY: reads the backend's process-wide state.
    unsafe {
        // A foreign key's check (the only code that runs with
        // SECURITY_NOFORCE_RLS) reads the referenced table: not a search.
        let (mut user, mut context) = (pg_sys::InvalidOid, 0);
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        gucs::GATE_SEARCHES.get()
            && gucs::INTEGRITY_ENABLED.get()
            && eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 == 0
            && pg_sys::ParallelWorkerNumber < 0
            && !pg_sys::am_walsender
            && pg_sys::MyBackendType != pg_sys::BackendType::B_AUTOVAC_WORKER
            && pg_sys::IsUnderPostmaster
            && !pg_sys::RecoveryInProgress()
            && context & pg_sys::SECURITY_NOFORCE_RLS as i32 == 0
            && !installation::is_reading_for_itself()
    }
}

/// # Safety
/// `query` is the executor's live `QueryDesc`.
unsafe fn gate_search(query: *mut pg_sys::QueryDesc, eflags: i32) -> SqlResult<()> {
    if !searches_gated(eflags) {
        return Ok(());
    }
    // Each collection read, and whether any of its reads is a plain one (not
    // only the target of the statement's own UPDATE, DELETE or MERGE).
    let mut collections: Vec<(Target, bool)> = Vec::new();
    // SAFETY: the plan and its range table belong to the running executor.
    unsafe {
        let plan = (*query).plannedstmt;
        if plan.is_null() {
            return Ok(());
        }
        // An UPDATE, DELETE or MERGE reads its targets (its WHERE clause sees
        // every row, whatever it then changes); an INSERT only what it selects
        // from. A written relation is locked RowExclusive, a read one less.
        use pg_sys::CmdType::*;
        let reads_targets = matches!((*plan).commandType, CMD_UPDATE | CMD_DELETE | CMD_MERGE);
        for rte in list::<pg_sys::RangeTblEntry>((*plan).rtable) {
            if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION {
                continue;
            }
            let plain = (*rte).rellockmode < pg_sys::RowExclusiveLock as i32;
            if !(plain || reads_targets) {
                continue;
            }
            if let Some(target) = collection_of((*rte).relid) {
                match collections.iter_mut().find(|(t, _)| t.same(&target)) {
                    Some((_, any_plain)) => *any_plain |= plain,
                    None => collections.push((target, plain)),
                }
            }
        }
    }
    for (target, plain) in &collections {
        // Part of a search this backend runs already (a function it calls):
        // neither decided nor counted again.
        if !crate::gate::join_search(target.slot, query as usize) {
            // A statement that only reads what it changes is not search
            // traffic: no throttle roll (its own operation is decided after).
            decide(
                target,
                Operation::Search,
                Rows::Later,
                !plain,
                query as usize,
                true,
            )?;
        }
    }
    Ok(())
}

/// # Safety
/// `query` is the executor's live `QueryDesc`.
#[pg_guard]
unsafe extern "C-unwind" fn check_search(query: *mut pg_sys::QueryDesc, eflags: i32) {
    // SAFETY: called from `executor_start` with its live QueryDesc.
    unsafe { gate_search(query, eflags) }.or_raise();
}

#[pg_guard]
extern "C-unwind" fn release_searches(query: *mut pg_sys::QueryDesc) {
    xact::release_executor(query as usize);
}

/// The integers a PostgreSQL integer `List` holds.
///
/// # Safety
/// `list` is NULL or a valid `List` of integers.
unsafe fn int_list(list: *mut pg_sys::List) -> Vec<usize> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: per the function's contract, `length` integer cells.
    unsafe {
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).int_value as usize)
            .collect()
    }
}

/// The core's command of a plan node's.
fn command(operation: pg_sys::CmdType::Type) -> Option<Command> {
    use pg_sys::CmdType::*;
    match operation {
        CMD_INSERT => Some(Command::Insert),
        CMD_UPDATE => Some(Command::Update),
        CMD_DELETE => Some(Command::Delete),
        CMD_MERGE => Some(Command::Merge),
        _ => None,
    }
}

/// # Safety
/// `query` is the executor's live `QueryDesc`, its statement run.
unsafe fn gate_modification(query: *mut pg_sys::QueryDesc) -> SqlResult<()> {
    // SAFETY: the plan, its range table and the estate belong to the running
    // executor; the ModifyTable nodes are the plan's own.
    unsafe {
        let plan = (*query).plannedstmt;
        if plan.is_null() || (*plan).resultRelations.is_null() || pg_sys::ParallelWorkerNumber >= 0
        {
            return Ok(());
        }
        let estate = (*query).estate;
        let rtable = list::<pg_sys::RangeTblEntry>((*plan).rtable);
        let relid_at = |index: usize| {
            rtable
                .get(index.wrapping_sub(1))
                .map_or(pg_sys::InvalidOid, |&e| (*e).relid)
        };
        let routed: Vec<pg_sys::Oid> =
            list::<pg_sys::ResultRelInfo>((*estate).es_tuple_routing_result_relations)
                .into_iter()
                .map(|r| (*(*r).ri_RelationDesc).rd_id)
                .collect();
        // A data-modifying node is the top of the plan or of a WITH's subplan.
        let tops = std::iter::once((*plan).planTree).chain(list::<pg_sys::Plan>((*plan).subplans));
        for top in tops.filter(|p| !p.is_null() && (**p).type_ == pg_sys::NodeTag::T_ModifyTable) {
            let node = top.cast::<pg_sys::ModifyTable>();
            let Some(command) = command((*node).operation) else {
                continue;
            };
            // The others' rows are never counted: the strictest rule.
            let rows = if (*node).canSetTag && (*plan).canSetTag {
                Rows::Counted((*estate).es_processed)
            } else {
                Rows::Unseen
            };
            let upserts = (*node).onConflictAction == pg_sys::OnConflictAction::ONCONFLICT_UPDATE;
            let mut targets: Vec<pg_sys::Oid> = int_list((*node).resultRelations)
                .into_iter()
                .map(relid_at)
                .collect();
            if matches!(command, Command::Insert | Command::Merge) {
                targets.extend(&routed);
            }
            let mut collections: Vec<Target> = Vec::new();
            for target in targets.into_iter().filter_map(collection_of) {
                if !collections.iter().any(|t| t.same(&target)) {
                    collections.push(target);
                }
            }
            for target in &collections {
                for op in gate::operations(command, rows, upserts) {
                    enforce(target, op, rows, false)?;
                }
            }
        }
    }
    Ok(())
}

/// # Safety
/// `query` is the executor's live `QueryDesc`, its statement run.
#[pg_guard]
unsafe extern "C-unwind" fn check_modification(query: *mut pg_sys::QueryDesc) {
    // SAFETY: called from `executor_finish` with its live QueryDesc.
    unsafe { gate_modification(query) }.or_raise();
}

unsafe extern "C-unwind" {
    /// PostgreSQL's own, unwrapped (see `utility::standard_process_utility`).
    /// `executor/executor.h`: `extern void standard_ExecutorStart(QueryDesc
    /// *queryDesc, int eflags);` and likewise Finish and End.
    #[link_name = "standard_ExecutorStart"]
    fn standard_executor_start(query: *mut pg_sys::QueryDesc, eflags: i32);
    #[link_name = "standard_ExecutorFinish"]
    fn standard_executor_finish(query: *mut pg_sys::QueryDesc);
    #[link_name = "standard_ExecutorEnd"]
    fn standard_executor_end(query: *mut pg_sys::QueryDesc);
}

/// A search is decided once PostgreSQL has started the executor (and checked
/// the role's privileges: a role that may not read the table learns nothing
/// from the gate); a refusal raises before a row is read. An admitted search
/// is released by `executor_end`, or by the abort of what it ran in.
///
/// # Safety
/// Called by PostgreSQL as `ExecutorStart_hook`, with its live arguments.
unsafe extern "C-unwind" fn executor_start(query: *mut pg_sys::QueryDesc, eflags: i32) {
    // SAFETY: the previous hook (or PostgreSQL's own), then ours, with the
    // arguments PostgreSQL passed.
    unsafe {
        PREV_EXECUTOR_START.unwrap_or(standard_executor_start)(query, eflags);
        check_search(query, eflags);
    }
}

/// # Safety
/// Called by PostgreSQL as `ExecutorEnd_hook`, with its live argument.
unsafe extern "C-unwind" fn executor_end(query: *mut pg_sys::QueryDesc) {
    // SAFETY: as `executor_start`.
    unsafe {
        release_searches(query);
        PREV_EXECUTOR_END.unwrap_or(standard_executor_end)(query);
    }
}

/// Not guarded, and holding no Rust value while PostgreSQL finishes the
/// statement: its own errors (a foreign key, an AFTER trigger) pass through
/// untouched, as through a C hook.
///
/// # Safety
/// Called by PostgreSQL as `ExecutorFinish_hook`, with its live argument.
unsafe extern "C-unwind" fn executor_finish(query: *mut pg_sys::QueryDesc) {
    // SAFETY: as `executor_start`.
    unsafe {
        check_modification(query);
        PREV_EXECUTOR_FINISH.unwrap_or(standard_executor_finish)(query);
    }
}
