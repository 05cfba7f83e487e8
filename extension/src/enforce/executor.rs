//! The executor hook: INSERT, UPDATE, DELETE and MERGE on a collection's
//! relations, decided in `ExecutorFinish`, when the statement has run and its
//! row count is exact, before its AFTER triggers fire and before it commits.
//! A refusal rolls the statement back whole.
//!
//! The target relations come from the plan (`resultRelations`), so a
//! statement is gated however it reaches the executor: from a client, a
//! function, a trigger, a view or a rule. A query with no target relation (a
//! read) costs one list check.

use pgrx::pg_sys;
use pgrx::pg_sys::ffi::pg_guard_ffi_boundary;
use pgrx::prelude::*;
use ruvector_integrity::gate::Operation;

use super::{collection_of, deletion, enforce, insertion};
use crate::errors::{OrRaise, SqlResult};

static mut PREV_EXECUTOR_FINISH: pg_sys::ExecutorFinish_hook_type = None;

pub fn install_hooks() {
    unsafe {
        PREV_EXECUTOR_FINISH = pg_sys::ExecutorFinish_hook;
        pg_sys::ExecutorFinish_hook = Some(executor_finish);
    }
}

/// The collections a plan writes into, by their relations' OIDs.
unsafe fn targets(plan: *mut pg_sys::PlannedStmt) -> Vec<String> {
    let mut collections = Vec::new();
    unsafe {
        let results = (*plan).resultRelations;
        if results.is_null() {
            return collections;
        }
        let rtable = (*plan).rtable;
        for i in 0..(*results).length as usize {
            let index = (*(*results).elements.add(i)).int_value as usize;
            let entry = (*(*rtable).elements.add(index - 1))
                .ptr_value
                .cast::<pg_sys::RangeTblEntry>();
            if let Some(gated) = collection_of((*entry).relid) {
                if !collections.contains(&gated.collection) {
                    collections.push(gated.collection);
                }
            }
        }
    }
    collections
}

/// The operations a statement of `command` that touched `rows` rows is.
/// `upserts`: an INSERT ... ON CONFLICT DO UPDATE. A query that writes through
/// a data-modifying WITH (a SELECT at the top) reports no row count of its
/// own: it is every bulk operation at once.
fn operations(command: pg_sys::CmdType::Type, rows: u64, upserts: bool) -> Vec<Operation> {
    use pg_sys::CmdType::*;
    let rows = Some(rows);
    match command {
        CMD_INSERT if upserts => insertion(rows)
            .into_iter()
            .chain([Operation::Update])
            .collect(),
        CMD_INSERT => insertion(rows).into_iter().collect(),
        CMD_UPDATE if rows != Some(0) => vec![Operation::Update],
        CMD_DELETE => deletion(rows).into_iter().collect(),
        CMD_MERGE if rows != Some(0) => insertion(rows)
            .into_iter()
            .chain([Operation::Update])
            .chain(deletion(rows))
            .collect(),
        CMD_SELECT => vec![
            Operation::BulkInsert,
            Operation::Update,
            Operation::BulkDelete,
        ],
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
        let collections = targets(plan);
        if collections.is_empty() {
            return Ok(());
        }
        let top = (*plan).planTree;
        let upserts = !top.is_null()
            && (*top).type_ == pg_sys::NodeTag::T_ModifyTable
            && (*top.cast::<pg_sys::ModifyTable>()).onConflictAction
                == pg_sys::OnConflictAction::ONCONFLICT_UPDATE;
        let rows = (*(*query).estate).es_processed;
        let operations = operations((*plan).commandType, rows, upserts);
        for collection in &collections {
            for &op in &operations {
                enforce(collection, op, Some(rows), false)?;
            }
        }
    }
    Ok(())
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_finish(query: *mut pg_sys::QueryDesc) {
    gate_modification(query).or_raise();
    unsafe {
        match PREV_EXECUTOR_FINISH {
            Some(prev) => pg_guard_ffi_boundary(|| prev(query)),
            None => pg_sys::standard_ExecutorFinish(query),
        }
    }
}
