//! The ProcessUtility hook. It runs for every utility statement in every
//! database and for every role, so it asks one question first, from shared
//! memory and without SQL: does the statement touch a relation of a
//! collection (of this database)? When it does not, the hook does nothing.
//!
//! What each statement means is [`statements`](super::statements)' to say;
//! here, before it runs: permission first (a role that may not run the
//! statement meets PostgreSQL's error, not the gate's), then the gate, or the
//! refusal of a bypass (a superuser's is let through and written to the audit
//! trail as a `gate_bypass` event). After it runs: a COPY's row count against
//! the batch limit, a rewrite found by comparing files, a new partition
//! joining its collection, a detached one leaving.
//!
//! Never gated: anything in single-user mode or outside the postmaster,
//! `REINDEX SYSTEM`, and a superuser's database-wide sweeps (VACUUM FULL,
//! REINDEX DATABASE and CLUSTER without a table), which must always be able
//! to run.

use std::cell::RefCell;

use pgrx::pg_sys;
use pgrx::prelude::*;
use ruvector_integrity::gate::{self, Operation, Rows};
use serde_json::json;

use super::statements::{self, Effects};
use super::{collection_of, enforce, enforce_provisionally};
use crate::catalog::{self, text};
use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::gate::Target;
use crate::shmem::{self, SlotRef};
use crate::{installation, privileges, xact};

/// The hook that was installed before ours, set once in `_PG_init`.
static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

pub fn install_hook() {
    // SAFETY: `_PG_init` runs once per process that loads the library,
    // before any statement runs: nothing reads these statics concurrently.
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// The collection `relid` belongs to, while ruvector is installed here (a
/// relation in the map of a database whose extension was just dropped, before
/// the worker noticed, is nobody's).
fn mine(relid: pg_sys::Oid) -> Option<Target> {
    collection_of(relid).filter(|_| installation::installed().is_some())
}

/// Every relation of every collection of this database, with its
/// collection (none when ruvector is not installed here).
fn every_relation() -> Vec<(pg_sys::Oid, Target)> {
    let Ok(shared) = shmem::shared() else {
        return Vec::new();
    };
    if installation::installed().is_none() {
        return Vec::new();
    }
    shared
        .relations_of_database()
        .into_iter()
        .filter_map(|(relid, slot)| Some((relid, Target::shared(slot, shared.view_at(slot)?))))
        .collect()
}

/// The gate decisions of one statement: each operation once per collection.
struct Decisions {
    /// The collection a COPY writes into: its bulk insert is counted once its
    /// rows are (see [`after`]).
    copied: Option<Target>,
    done: Vec<(Operation, Target)>,
}

impl Decisions {
    fn gate(&mut self, op: Operation, target: Target) -> SqlResult<()> {
        if self.done.iter().any(|(o, t)| *o == op && t.same(&target)) {
            return Ok(());
        }
        if op == Operation::BulkInsert && self.copied.as_ref().is_some_and(|c| c.same(&target)) {
            enforce_provisionally(&target, op)?;
        } else {
            // The rows an attached or foreign partition brings are never
            // counted: the strictest batch rule.
            enforce(&target, op, Rows::Unseen, false)?;
        }
        self.done.push((op, target));
        Ok(())
    }
}

/// Checks a statement's effects before it runs.
///
/// Permission first: where the role lacks what PostgreSQL will ask of it for
/// the statement (owning the table, INSERT for a COPY), the gate neither
/// decides, nor counts, nor names the collection: PostgreSQL refuses the
/// statement itself, as it would on any other table.
fn before(fx: &Effects, tag: &str) -> SqlResult<()> {
    if fx.drops_extension {
        crate::audit::check_drop()?;
    }
    if let Some(vacated) = fx.vacated_database {
        vacate(vacated.database, tag);
    }
    let role = privileges::current();
    let owns = |relid: pg_sys::Oid| catalog::exists(relid) && privileges::owns(relid, role);
    let database_owner = privileges::owns_database(role);
    for &(relid, what) in fx.bypasses.iter().filter(|(r, _)| owns(*r)) {
        if let Some(target) = mine(relid) {
            refuse_or_record_bypass(&target, tag, what, relid)?;
        }
    }
    let mut decisions = Decisions {
        copied: fx.copy_into.and_then(mine),
        done: Vec::new(),
    };
    for &(op, relid) in &fx.gated {
        if !catalog::exists(relid) {
            continue; // PostgreSQL's to report
        }
        let permitted = if fx.copy_into == Some(relid) {
            privileges::may_insert(relid, role)
        } else {
            owns(relid) || (fx.database_owner_may && database_owner)
        };
        if let Some(target) = mine(relid).filter(|_| permitted) {
            decisions.gate(op, target)?;
        }
    }
    for &(relid, what) in &fx.repointed {
        if let Some(target) = mine(relid).filter(|_| catalog::is_foreign(relid) && owns(relid)) {
            refuse_or_record_bypass(&target, tag, what, relid)?;
        }
    }
    // Statements that reach every collection relation of a schema, a
    // tablespace, a server or a type, each for the roles PostgreSQL lets run it.
    // (An object that does not exist is PostgreSQL's to report.)
    let gated_schema = fx
        .gated_schema
        .filter(|&(_, namespace)| privileges::owns_schema(namespace, role));
    let renamed_schema = fx
        .renamed_schema
        .filter(|&namespace| privileges::owns_schema(namespace, role));
    let altered_server = fx
        .altered_server
        .filter(|&server| privileges::may_use_server(server, role));
    let altered_type = fx
        .altered_type
        .filter(|&(type_id, _)| privileges::owns_type(type_id, role));
    let sweeping = gated_schema.is_some()
        || renamed_schema.is_some()
        || fx.owned_sweep.is_some()
        || fx.moved_tablespace.is_some()
        || altered_server.is_some()
        || altered_type.is_some();
    if !sweeping {
        return Ok(());
    }
    for (relid, target) in every_relation() {
        let namespace = catalog::namespace(relid);
        if let Some((op, _)) = gated_schema.filter(|&(_, schema)| schema == namespace) {
            decisions.gate(op, target.clone())?;
        }
        if renamed_schema == Some(namespace) && catalog::is_foreign(relid) {
            let what = "ALTER SCHEMA ... RENAME (of a foreign partition's schema)";
            refuse_or_record_bypass(&target, tag, what, relid)?;
        }
        if let Some(op) = fx.owned_sweep.filter(|_| database_owner || owns(relid)) {
            decisions.gate(op, target.clone())?;
        }
        if fx
            .moved_tablespace
            .is_some_and(|space| in_tablespace(relid, space))
            && owns(relid)
        {
            decisions.gate(Operation::Compaction, target.clone())?;
        }
        let on_server = |server| catalog::is_foreign(relid) && catalog::server_of(relid) == server;
        if altered_server.is_some_and(on_server) {
            let what = "ALTER SERVER or USER MAPPING (of a foreign partition's server)";
            refuse_or_record_bypass(&target, tag, what, relid)?;
        }
        if let Some((_, what)) =
            altered_type.filter(|&(type_id, _)| catalog::typed_table_type(relid) == type_id)
        {
            refuse_or_record_bypass(&target, tag, what, relid)?;
        }
    }
    Ok(())
}

/// Whether `relid` lives in tablespace `space`.
fn in_tablespace(relid: pg_sys::Oid, space: pg_sys::Oid) -> bool {
    let here = catalog::tablespace(relid);
    // SAFETY: reads the backend's database default tablespace, set at connection.
    space == here
        || (here == pg_sys::InvalidOid && space == unsafe { pg_sys::MyDatabaseTableSpace })
}

/// The files of every collection relation of this database, when the
/// statement is to be watched for rewrites.
fn files_before(fx: &Effects) -> Vec<(pg_sys::Oid, pg_sys::Oid, SlotRef)> {
    if !fx.watch_rewrites {
        return Vec::new();
    }
    every_relation()
        .into_iter()
        .filter_map(|(relid, target)| Some((relid, catalog::file_node(relid), target.slot?)))
        .collect()
}

/// A statement that would move rows of a collection past its gate: refused
/// unless the role is a superuser, whose statement is audited instead.
fn refuse_or_record_bypass(
    target: &Target,
    tag: &str,
    what: &str,
    relid: pg_sys::Oid,
) -> SqlResult<()> {
    if privileges::is_superuser(privileges::current()) {
        return super::append_bypass_events([(
            target.name(),
            json!({
                "statement": tag,
                "action": what,
                "relation": catalog::name(relid),
                "by": privileges::caller_name(),
            }),
        )]);
    }
    Err(SqlError::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!(
            "ruvector refused {what} on \"{}\": it would move rows of collection \"{}\" past its integrity gate",
            catalog::name(relid),
            target.name()
        ),
    )
    .detail("Rows that enter or leave a collection this way are never put through its gate; only a superuser may do it.")
    .hint("Ask a superuser (each such statement of theirs is written to the audit trail), or unregister the collection with ruvector_unregister_collection()."))
}

/// Runs `body` with an active snapshot, pushing one if the utility statement
/// runs without (VACUUM does): SPI needs one.
pub(super) fn with_snapshot<R>(body: impl FnOnce() -> SqlResult<R>) -> SqlResult<R> {
    // SAFETY: the snapshot pushed here is popped here, around `body`; an
    // ERROR in between is cleaned up by the transaction's abort.
    unsafe {
        let needs_snapshot = !pg_sys::ActiveSnapshotSet();
        if needs_snapshot {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        let result = body();
        if needs_snapshot {
            pg_sys::PopActiveSnapshot();
        }
        result
    }
}

/// Acts on what the statement changed, after it ran (its locks still held,
/// its effects still undone by an error). `rows`: what a COPY wrote (not
/// counted when it ran inside a SQL function, which passes no completion).
fn after(flight: &InFlight, rows: Rows) -> SqlResult<()> {
    let fx = &flight.fx;
    if let Some(target) = fx.copy_into.and_then(collection_of) {
        // Passed the gate before it ran; now its size is known.
        match gate::insertion(rows) {
            Some(op) => enforce(&target, op, rows, true)?,
            None => crate::gate::count_allowed(target.slot, Operation::BulkInsert),
        }
    }
    // A rewrite, however the statement spelled it (a serial column, a
    // domain's default, ALTER TYPE ... CASCADE), changed a relation's file.
    let mut rewritten: Vec<SlotRef> = Vec::new();
    for &(relid, before, slot) in &flight.files {
        let changed = before != pg_sys::InvalidOid && catalog::file_node(relid) != before;
        if changed && !rewritten.contains(&slot) {
            if let Some(target) = collection_of(relid) {
                enforce(&target, Operation::Compaction, Rows::Later, false)?;
            }
            rewritten.push(slot);
        }
    }
    if let Some((parent, range)) = fx.new_partition {
        if let Some(target) = collection_of(parent) {
            // (CREATE TABLE IF NOT EXISTS may have created nothing: the name
            // must now be a partition of that parent.)
            // SAFETY: the statement's own RangeVar, alive for the statement.
            let partition = unsafe { statements::relid_of(range) };
            if partition != pg_sys::InvalidOid && catalog::partition_parent(partition) == parent {
                let relations = catalog::partition_tree(partition, pg_sys::NoLock as _);
                xact::reserve(0, relations.len())?;
                xact::add_relations_at_commit(&target.name(), relations);
            }
        }
    }
    let detached: Vec<pg_sys::Oid> = fx
        .detached
        .iter()
        .filter(|&&p| collection_of(p).is_some())
        .flat_map(|&p| catalog::partition_tree(p, pg_sys::NoLock as _))
        .collect();
    if !detached.is_empty() {
        xact::remove_relations_at_commit(detached);
    }
    if fx.drops_extension {
        xact::at_commit(|shared| shared.clear_database());
    }
    if fx.creates_extension && installation::installed().is_some() {
        xact::at_commit(|shared| shared.want_worker());
    }
    if let Some(vacated) = fx.vacated_database.filter(|v| v.dropped) {
        xact::at_commit(move |_| crate::keys::forget_database_key(vacated.database));
    }
    Ok(())
}

/// How long the launcher leaves a vacated database without a worker: the
/// statement that asked has had its chance by then (DROP DATABASE waits
/// 5 s for other sessions to leave).
const HOLD_OFF: i64 = 15 * ruvector_integrity::SECOND;

/// Stops the integrity worker of `database` (if it has one) for the
/// statement `tag`, and waits, up to 10 s, for it to leave, so that a
/// statement that needs the database without connections can run. The
/// launcher starts it again after [`HOLD_OFF`] if the database is still there.
fn vacate(database: pg_sys::Oid, tag: &str) {
    let Ok(shared) = shmem::shared() else {
        return;
    };
    let pid = shared.hold_off_worker(database, crate::clock::now() + HOLD_OFF);
    if pid == 0 {
        return;
    }
    // SAFETY: a syscache lookup of a database the caller owns.
    let name = unsafe { text(pg_sys::get_database_name(database)) };
    pgrx::log!(
        "ruvector: stopping the integrity worker of database \"{name}\" (pid {pid}) for {tag} by role \"{}\"",
        privileges::caller_name()
    );
    for _ in 0..100 {
        if shared.worker_gone(database, pid) {
            return;
        }
        // SAFETY: waits on this backend's own latch for 100 ms; interrupts
        // (a cancel) are served after each wait.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                100,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
    pgrx::notice!(
        "ruvector: the integrity worker of database \"{name}\" (pid {pid}) has not stopped after 10 s: it is finishing a step"
    );
}

/// A statement between its check and its after-work: its effects, and the
/// files of the collection relations before it ran.
struct InFlight {
    fx: Effects,
    files: Vec<(pg_sys::Oid, pg_sys::Oid, SlotRef)>,
}

thread_local! {
    /// Statements in flight, by nesting depth (a utility statement can run
    /// another one).
    static IN_FLIGHT: RefCell<Vec<InFlight>> = const { RefCell::new(Vec::new()) };
}

/// Forgets statements an error cut short; called at transaction end.
pub fn forget_in_flight() {
    IN_FLIGHT.with(|f| f.borrow_mut().clear());
}

/// Works out and checks a statement's effects before it runs; returns the
/// depth of what it left for [`utility_after`], 0 when nothing.
///
/// # Safety
/// `pstmt` is the statement PostgreSQL is about to run.
#[pg_guard]
unsafe extern "C-unwind" fn utility_before(
    pstmt: *mut pg_sys::PlannedStmt,
    context: pg_sys::ProcessUtilityContext::Type,
) -> usize {
    // SAFETY: per the function's contract; the statement's tree lives for
    // the statement.
    unsafe {
        // Single-user mode and bootstrap: catalog repair must always work.
        if !pg_sys::IsUnderPostmaster {
            return 0;
        }
        let stmt = (*pstmt).utilityStmt;
        let mut fx = statements::effects(stmt);
        if context != pg_sys::ProcessUtilityContext::PROCESS_UTILITY_TOPLEVEL {
            // (PostgreSQL runs none of them from a function.)
            fx.vacated_database = None;
        }
        if fx.is_empty() {
            return 0;
        }
        before(&fx, &text(pg_sys::CreateCommandName(stmt))).or_raise();
        let files = files_before(&fx);
        IN_FLIGHT.with(|f| {
            let mut f = f.borrow_mut();
            f.push(InFlight { fx, files });
            f.len()
        })
    }
}

/// # Safety
/// `qc` is NULL or the completion the statement just filled.
#[pg_guard]
unsafe extern "C-unwind" fn utility_after(depth: usize, qc: *mut pg_sys::QueryCompletion) {
    let flight = IN_FLIGHT.with(|f| {
        let mut f = f.borrow_mut();
        f.truncate(depth);
        (f.len() == depth).then(|| f.pop()).flatten()
    });
    if let Some(flight) = flight {
        let rows = if qc.is_null() {
            Rows::Unseen
        } else {
            // SAFETY: per the function's contract.
            Rows::Counted(unsafe { (*qc).nprocessed })
        };
        after(&flight, rows).or_raise();
    }
}

unsafe extern "C-unwind" {
    /// PostgreSQL's own, unwrapped: an error in it is PostgreSQL's longjmp,
    /// not a Rust panic (pgrx's binding would turn it into one).
    /// `tcop/utility.h`: `extern void standard_ProcessUtility(PlannedStmt
    /// *pstmt, const char *queryString, bool readOnlyTree,
    /// ProcessUtilityContext context, ParamListInfo params, QueryEnvironment
    /// *queryEnv, DestReceiver *dest, QueryCompletion *qc);`
    #[link_name = "standard_ProcessUtility"]
    fn standard_process_utility(
        pstmt: *mut pg_sys::PlannedStmt,
        query_string: *const std::ffi::c_char,
        read_only_tree: bool,
        context: pg_sys::ProcessUtilityContext::Type,
        params: pg_sys::ParamListInfo,
        query_env: *mut pg_sys::QueryEnvironment,
        dest: *mut pg_sys::DestReceiver,
        qc: *mut pg_sys::QueryCompletion,
    );
}

/// The hook itself holds no Rust value while PostgreSQL runs the statement,
/// and is not guarded: the statement's own errors pass through untouched
/// (with their context, position and names), as through a C hook.
///
/// # Safety
/// Called by PostgreSQL as `ProcessUtility_hook`, with its live arguments.
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: ours before and after, the previous hook (or PostgreSQL's own)
    // in between, with the arguments PostgreSQL passed.
    unsafe {
        let depth = utility_before(pstmt, context);
        let run = PREV_PROCESS_UTILITY.unwrap_or(standard_process_utility);
        run(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        );
        if depth > 0 {
            utility_after(depth, qc);
        }
    }
}
