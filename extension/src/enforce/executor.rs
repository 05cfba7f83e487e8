//! The executor hooks.
//!
//! Searches, decided in `ExecutorStart`: a query that reads a collection's
//! relation is a search on that collection (an UPDATE, DELETE or MERGE reads
//! its targets; an INSERT does not). An
//! admitted search holds a place in the collection's live search count until
//! its executor ends (or its transaction or subtransaction does, or the
//! backend exits). Not searches: reads the extension makes for itself, plans
//! only explained, parallel workers (their leader is counted), autovacuum,
//! walsenders, and any read on a hot standby (no worker runs there to keep
//! states current); `ruvector.gate_searches = off` turns the search gate off.
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
//! the others (a data-modifying WITH, a rule's extra statement) are counted as
//! bulk. A query that writes nothing costs one list check.

use pgrx::pg_sys;
use pgrx::prelude::*;
use ruvector_integrity::gate::{Operation, Rows};

use super::{collection_of, decide, deletion, enforce, insertion, is_internal, list};
use crate::errors::{OrRaise, SqlResult};
use crate::{gate, gucs, xact};

static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_FINISH: pg_sys::ExecutorFinish_hook_type = None;
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;

pub fn install_hooks() {
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
            && !is_internal()
    }
}

fn gate_search(query: *mut pg_sys::QueryDesc, eflags: i32) -> SqlResult<()> {
    if !searches_gated(eflags) {
        return Ok(());
    }
    // Each collection read, and whether any of its reads is a plain one (not
    // only the target of the statement's own UPDATE, DELETE or MERGE).
    let mut collections: Vec<(String, bool)> = Vec::new();
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
            if let Some(gated) = collection_of((*rte).relid) {
                match collections.iter_mut().find(|(c, _)| *c == gated.collection) {
                    Some((_, any_plain)) => *any_plain |= plain,
                    None => collections.push((gated.collection, plain)),
                }
            }
        }
    }
    for (collection, plain) in &collections {
        // Part of a search this backend runs already (a function it calls):
        // neither decided nor counted again.
        if !gate::join_search(collection, query as usize) {
            // A statement that only reads what it changes is not search
            // traffic: no throttle roll (its own operation is decided after).
            decide(
                collection,
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

#[pg_guard]
unsafe extern "C-unwind" fn check_search(query: *mut pg_sys::QueryDesc, eflags: i32) {
    gate_search(query, eflags).or_raise();
}

#[pg_guard]
unsafe extern "C-unwind" fn release_searches(query: *mut pg_sys::QueryDesc) {
    xact::release_executor(query as usize);
}

unsafe fn int_list(list: *mut pg_sys::List) -> Vec<usize> {
    if list.is_null() {
        return Vec::new();
    }
    unsafe {
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).int_value as usize)
            .collect()
    }
}

/// The operations a node of `command` that touched `rows` rows is.
/// `upserts`: an INSERT ... ON CONFLICT DO UPDATE.
fn operations(command: pg_sys::CmdType::Type, rows: Rows, upserts: bool) -> Vec<Operation> {
    use pg_sys::CmdType::*;
    let touched = rows != Rows::Counted(0);
    match command {
        CMD_INSERT => insertion(rows)
            .into_iter()
            .chain((upserts && touched).then_some(Operation::Update))
            .collect(),
        CMD_UPDATE if touched => vec![Operation::Update],
        CMD_DELETE => deletion(rows).into_iter().collect(),
        CMD_MERGE if touched => insertion(rows)
            .into_iter()
            .chain([Operation::Update])
            .chain(deletion(rows))
            .collect(),
        _ => Vec::new(),
    }
}

fn gate_modification(query: *mut pg_sys::QueryDesc) -> SqlResult<()> {
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
            let exact = (*node).canSetTag && (*plan).canSetTag;
            // The others' rows are never counted: the strictest rule.
            let rows = if exact {
                Rows::Counted((*estate).es_processed)
            } else {
                Rows::Unseen
            };
            let upserts = (*node).onConflictAction == pg_sys::OnConflictAction::ONCONFLICT_UPDATE;
            let mut targets: Vec<pg_sys::Oid> = int_list((*node).resultRelations)
                .into_iter()
                .map(relid_at)
                .collect();
            if matches!(
                (*node).operation,
                pg_sys::CmdType::CMD_INSERT | pg_sys::CmdType::CMD_MERGE
            ) {
                targets.extend(&routed);
            }
            let mut collections: Vec<String> = Vec::new();
            for gated in targets.into_iter().filter_map(collection_of) {
                if !collections.contains(&gated.collection) {
                    collections.push(gated.collection);
                }
            }
            for collection in &collections {
                for op in operations((*node).operation, rows, upserts) {
                    enforce(collection, op, rows, false)?;
                }
            }
        }
    }
    Ok(())
}

#[pg_guard]
unsafe extern "C-unwind" fn check_modification(query: *mut pg_sys::QueryDesc) {
    gate_modification(query).or_raise();
}

unsafe extern "C-unwind" {
    /// PostgreSQL's own, unwrapped (see `utility::standard_process_utility`).
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
unsafe extern "C-unwind" fn executor_start(query: *mut pg_sys::QueryDesc, eflags: i32) {
    unsafe {
        match PREV_EXECUTOR_START {
            Some(prev) => prev(query, eflags),
            None => standard_executor_start(query, eflags),
        }
        check_search(query, eflags);
    }
}

unsafe extern "C-unwind" fn executor_end(query: *mut pg_sys::QueryDesc) {
    unsafe {
        release_searches(query);
        match PREV_EXECUTOR_END {
            Some(prev) => prev(query),
            None => standard_executor_end(query),
        }
    }
}

/// Not guarded, and holding no Rust value while PostgreSQL finishes the
/// statement: its own errors (a foreign key, an AFTER trigger) pass through
/// untouched, as through a C hook.
unsafe extern "C-unwind" fn executor_finish(query: *mut pg_sys::QueryDesc) {
    unsafe {
        check_modification(query);
        match PREV_EXECUTOR_FINISH {
            Some(prev) => prev(query),
            None => standard_executor_finish(query),
        }
    }
}
