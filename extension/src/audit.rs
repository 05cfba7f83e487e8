//! The audit trail in the database.
//!
//! - Backends append events unsigned to `ruvector.pending_events`, in the
//!   caller's transaction ([`append_pending`]).
//! - The worker, which alone holds the key, chains and signs them into
//!   `ruvector.integrity_events` ([`pending`], [`sign`]), appends its own events
//!   signed ([`append_signed`]), and once they are durable writes a signed
//!   checkpoint of the head outside the table ([`write_checkpoint`]).
//! - Verification streams the log through the core's verifier in seq order,
//!   the keys coming from the chain itself (never from `ruvector.signing_keys`,
//!   which whoever can write the tables could change), and compares each row's
//!   columns with its signed payload, so an edited column is caught too. The
//!   checkpoint file kept outside the table pins the root and the head.

use std::io::Write;
use std::path::{Path, PathBuf};

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::audit::chain::{verify_alone, ChainVerifier, Trust, Verdict};
use ruvector_integrity::audit::export::{self, ExportedEntry};
use ruvector_integrity::audit::keys;
use ruvector_integrity::audit::{
    hex, ChainFault, Checkpoint, Context, Event, Fault, Fingerprint, Signer,
};
use ruvector_integrity::SECOND;
use serde_json::{json, Value};

use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::store::events::{Head, Pending, SignedRow};
use crate::{catalog, clock, gucs, installation, privileges, server, shmem, store};

/// Rows read per query while verifying: memory stays bounded.
const PAGE: i64 = 2_000;

/// Pending events signed per transaction.
pub const SIGNING_BATCH: i64 = 1_000;

/// Pending events are append-only for everyone but the worker, which deletes
/// each one in the transaction that signs it into the chain.
#[pg_schema]
mod ruvector {
    use pgrx::heap_tuple::PgHeapTuple;
    use pgrx::heap_tuple::PgHeapTupleError;
    use pgrx::prelude::*;
    use pgrx::AllocatedByPostgres;

    use crate::errors::SqlError;

    #[pg_trigger]
    fn _guard_pending_event<'a>(
        trigger: &'a PgTrigger<'a>,
    ) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgHeapTupleError> {
        let deleting = matches!(trigger.op(), Ok(PgTriggerOperation::Delete));
        // SAFETY: reads the process's own pid.
        let by_worker =
            crate::shmem::shared().is_ok_and(|s| s.worker_pid() == unsafe { pg_sys::MyProcPid });
        if deleting && by_worker {
            return Ok(trigger.old());
        }
        SqlError::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "ruvector.pending_events is append-only",
        )
        .detail(format!(
            "{} refused: pending events leave the table only when the integrity worker signs them into the chain.",
            if deleting { "DELETE" } else { "UPDATE" }
        ))
        .hint("Check the audit trail with ruvector_verify_audit_chain().")
        .raise()
    }
}

/// Chains, signs and appends `event`; returns its seq. Its `signed_at` never
/// goes back, even if the clock does.
pub fn append_signed(signer: &Signer, event: &Event) -> SqlResult<u64> {
    let payload = event.encode()?;
    let head = store::events::head()?;
    let signed_at = head.map_or(clock::now(), |h| h.signed_at.max(clock::now()));
    let context = server::context();
    let entry = signer.seal(head.map(|h| (h.seq, h.hash)), signed_at, context, payload);
    store::events::insert_signed(&entry, event)?;
    Ok(entry.seq)
}

/// A pending event after the worker signed it.
pub struct Signed {
    pub seq: u64,
    /// Its id in `ruvector.pending_events`, where it no longer is.
    pub pending_id: i64,
    pub event: Event,
}

/// The next (up to [`SIGNING_BATCH`]) pending events, oldest first, locked:
/// one snapshot, so that what the worker acts on is what it signs.
pub fn pending() -> SqlResult<Vec<Pending>> {
    store::events::pending(SIGNING_BATCH)
}

/// Signs and chains `pending`, in order, and removes them from the pending
/// table. Runs in the worker's transaction.
pub fn sign(signer: &Signer, pending: Vec<Pending>) -> SqlResult<Vec<Signed>> {
    let mut signed = Vec::with_capacity(pending.len());
    for p in pending {
        let seq = append_signed(signer, &p.event)?;
        store::events::delete_pending(p.id)?;
        signed.push(Signed {
            seq,
            pending_id: p.id,
            event: p.event,
        });
    }
    Ok(signed)
}

/// Where the latest signed checkpoint of this database's chain is kept: outside
/// the table, in the data directory, so that rows cut off the end show. One file
/// per installation of the extension: a dropped and re-created extension starts
/// a new chain, and the old file stays as evidence of the old one.
pub fn checkpoint_path() -> SqlResult<PathBuf> {
    installation_file("ruvector_audit_checkpoint")
}

/// Where the worker notes, every few seconds, that it is alive: at its next
/// start it records in the chain when it last was (see [`installation_file`]).
pub fn alive_path() -> SqlResult<PathBuf> {
    installation_file("ruvector_worker_alive")
}

/// `<prefix>_<database oid>_<extension oid>.json` in the data directory: a
/// file of this installation of the extension.
fn installation_file(prefix: &str) -> SqlResult<PathBuf> {
    let installed = installation::installed()
        .ok_or_else(|| SqlError::internal("the ruvector extension is not installed"))?;
    // SAFETY: the data directory, set before any backend or worker starts.
    let data_dir = unsafe { catalog::text(pg_sys::DataDir) };
    Ok(PathBuf::from(data_dir).join(format!(
        "{prefix}_{}_{}.json",
        u32::from(catalog::database()),
        u32::from(installed.extension)
    )))
}

/// Signs the head and writes it to `path` durably (a temporary file, synced,
/// renamed, and the directory synced), and to the server log. The caller has
/// committed the entries it covers with a flushed commit.
pub fn write_checkpoint(
    signer: &Signer,
    head: Head,
    root: &Fingerprint,
    path: &Path,
) -> std::io::Result<Checkpoint> {
    let checkpoint = signer.checkpoint(head.seq, head.hash, clock::now(), server::context(), root);
    let text = serde_json::to_string(&checkpoint).map_err(std::io::Error::other)?;
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(directory) = path.parent() {
        std::fs::File::open(directory)?.sync_all()?;
    }
    pgrx::log!("ruvector: audit checkpoint {text}");
    Ok(checkpoint)
}

/// The checkpoint file of this installation, if there is one.
pub fn read_checkpoint() -> SqlResult<Option<Checkpoint>> {
    let Ok(text) = std::fs::read_to_string(checkpoint_path()?) else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_str(&text).map_err(|e| {
        SqlError::internal(format!("the audit checkpoint does not parse: {e}"))
    })?))
}

/// Whether a signed row's columns say what its signed payload says.
fn check_columns(row: &SignedRow) -> Result<(), ChainFault> {
    let seq = row.entry.seq;
    let fault = |detail: String| ChainFault::new(seq, Fault::Modified, detail);
    let columns = row.columns.as_ref().map_err(|e| fault(e.clone()))?;
    let signed = Event::decode(&row.entry.payload)
        .map_err(|e| fault(format!("the payload does not decode: {e}")))?;
    match signed.first_difference(columns) {
        Some(field) => Err(fault(format!(
            "the row's {field} differs from its signed payload"
        ))),
        None => Ok(()),
    }
}

/// Reads the log in pages of [`PAGE`] rows after `after` (or only `only`),
/// handing each row to `each`; stops at its first error.
fn for_each_row<E>(
    only: Option<i64>,
    mut each: impl FnMut(Result<SignedRow, (u64, String)>) -> Result<(), E>,
) -> SqlResult<Result<(), E>> {
    let mut after = 0i64;
    loop {
        check_for_interrupts!();
        let (read, last) = match store::events::signed_rows(after, only, PAGE, &mut each)? {
            Ok(page) => page,
            Err(e) => return Ok(Err(e)),
        };
        if only.is_some() || read < PAGE as usize {
            return Ok(Ok(()));
        }
        after = last;
    }
}

/// Whether the event `seq` is intact on its own: its hash, its signature by
/// the key the chain says must sign it, and its columns.
#[pg_extern(schema = "ruvector", name = "_verify_event")]
fn verify_event(seq: i64) -> Option<bool> {
    let events = store::events::key_events(Some(seq)).or_raise();
    let mut verdict = None;
    for_each_row(Some(seq), |row| -> Result<(), ()> {
        verdict = Some(row.is_ok_and(|row| {
            keys::signer_at(&events, row.entry.seq)
                .is_some_and(|key| verify_alone(&row.entry, key).is_ok())
                && check_columns(&row).is_ok()
        }));
        Ok(())
    })
    .or_raise()
    .ok()?;
    verdict
}

/// What the checkpoint file kept outside the table says, as verification
/// warnings: none, or one that is behind the chain.
fn checkpoint_warnings(checkpoint: Option<&Checkpoint>, head: Option<Head>) -> Vec<String> {
    match (checkpoint, head) {
        (None, Some(_)) => vec![
            "no checkpoint file: rows cut off the end of the log could not be detected (the worker writes one after each batch it signs)".to_owned(),
        ],
        (Some(c), Some(h)) if c.seq < h.seq && clock::now() - h.signed_at > 60 * SECOND => vec![format!(
            "the checkpoint file covers seq {} but the chain reaches seq {}: the worker has not written a checkpoint since",
            c.seq, h.seq
        )],
        _ => Vec::new(),
    }
}

/// Verifies the whole chain (keys from the chain, root and head pinned by the
/// checkpoint file), and every row's columns; names the first bad seq and why.
pub fn verify_all() -> SqlResult<Value> {
    let checkpoint = read_checkpoint()?;
    // The checkpoint binds the chain up to its seq, root included.
    let trust = Trust {
        roots: Vec::new(),
        checkpoints: checkpoint.iter().cloned().collect(),
    };
    let mut verifier = ChainVerifier::new(trust);
    let mut column_fault: Option<ChainFault> = None;
    let read = for_each_row(None, |row| {
        let row = row.map_err(|(seq, detail)| verifier.unreadable(seq, &detail))?;
        if column_fault.is_none() {
            column_fault = check_columns(&row).err();
        }
        verifier.push(&row.entry)
    })?;
    let outcome: Result<Verdict, ChainFault> = read.and_then(|()| verifier.finish());
    let first_fault = match (outcome.as_ref().err(), column_fault) {
        (Some(a), Some(b)) => Some(if b.seq < a.seq { b } else { a.clone() }),
        (Some(a), None) => Some(a.clone()),
        (None, b) => b,
    };
    let checkpoint_json = checkpoint.as_ref().map(|c| {
        json!({"seq": c.seq, "signed_at_unix_us": c.signed_at, "signer_id": c.signer_id,
               "system_identifier": c.context.system_identifier.to_string(), "timeline": c.context.timeline})
    });
    let warnings = checkpoint_warnings(checkpoint.as_ref(), store::events::head()?);
    Ok(match (first_fault, outcome) {
        (None, Ok(verdict)) => json!({
            "ok": true,
            "entries": verdict.entries,
            "head_seq": verdict.head.seq,
            "head_hash": hex(&verdict.head.entry_hash),
            "root_fingerprint": verdict.roots.last().map(|(_, f)| hex(f)),
            "roots": verdict.roots.iter().map(|(seq, f)| json!({"seq": seq, "fingerprint": hex(f)})).collect::<Vec<_>>(),
            "current_key": verdict.current_key,
            "checkpoint": checkpoint_json,
            "warnings": warnings,
        }),
        (Some(f), _) | (None, Err(f)) => json!({
            "ok": false,
            "first_bad_seq": f.seq,
            "fault": f.fault.as_str(),
            "detail": f.detail,
            "checkpoint": checkpoint_json,
            "warnings": warnings,
        }),
    })
}

#[pg_extern(schema = "ruvector", name = "_verify_audit_chain")]
fn verify_audit_chain() -> JsonB {
    JsonB(verify_all().or_raise())
}

/// The first line of `ruvector_audit_export()`: the format and the latest
/// checkpoint (`export::Header`). The entries follow, one per line.
#[pg_extern(schema = "ruvector", name = "_audit_export_header")]
fn audit_export_header() -> String {
    let header = export::Header {
        format: export::FORMAT.to_owned(),
        checkpoint: read_checkpoint().or_raise(),
    };
    serde_json::to_string(&header).or_raise()
}

/// One entry's line of `ruvector_audit_export()` (`export::ExportedEntry`),
/// from its row's columns: the format has one definition, the core's, used
/// here and by the verifier that reads it. Notes in shared memory that the
/// entry was exported (see [`check_drop`]).
#[allow(clippy::too_many_arguments)]
#[pg_extern(
    schema = "ruvector",
    name = "_audit_export_line",
    volatile,
    parallel_safe
)]
fn audit_export_line(
    seq: i64,
    prev_hash: Vec<u8>,
    entry_hash: Vec<u8>,
    signed_at_us: i64,
    system_identifier: &str,
    timeline: i32,
    payload: Vec<u8>,
    signer_id: String,
    signature: Vec<u8>,
) -> String {
    // Bytes are exported as they are (hex of whatever is there), and a
    // system identifier beyond 64 bits as 0: the verifier reading the
    // export names the entry.
    let exported = ExportedEntry {
        seq: seq as u64,
        prev_hash: hex(&prev_hash),
        entry_hash: hex(&entry_hash),
        signed_at: signed_at_us,
        context: Context {
            system_identifier: system_identifier.parse().unwrap_or_default(),
            timeline: timeline as u32,
        },
        payload: hex(&payload),
        signer_id,
        signature: hex(&signature),
    };
    let line = serde_json::to_string(&exported).or_raise();
    if let (true, Ok(shared), Some(installed)) =
        (seq > 0, shmem::shared(), installation::installed())
    {
        shared.note_exported(installed.extension, exported.seq);
    }
    line
}

/// Refuses `DROP EXTENSION ruvector` (with `55000`) while the signed trail
/// holds entries that `ruvector_audit_export()` has not produced since the
/// server started, unless a superuser set `ruvector.allow_unexported_drop`.
/// Only for the extension's owner: anyone else meets PostgreSQL's refusal.
/// A guard-rail against a mistake, not a control: the owner is a superuser.
pub fn check_drop() -> SqlResult<()> {
    let Some(installed) = installation::installed() else {
        return Ok(());
    };
    if gucs::ALLOW_UNEXPORTED_DROP.get()
        || !privileges::owns_extension(installed.extension, privileges::current())
    {
        return Ok(());
    }
    // No entry is signed between the check and the drop.
    // SAFETY: a catalog lookup by name in the extension's own schema.
    let events =
        unsafe { pg_sys::get_relname_relid(c"integrity_events".as_ptr(), installed.schema) };
    if events != pg_sys::InvalidOid {
        catalog::lock(events, pg_sys::ShareLock as pg_sys::LOCKMODE);
    }
    let Some(head) = installation::as_owner(installed, store::events::head)? else {
        return Ok(());
    };
    let exported = shmem::shared().map_or(0, |s| s.exported_through(installed.extension));
    if head.seq <= exported {
        return Ok(());
    }
    Err(SqlError::new(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "dropping ruvector would delete {} signed audit entries that were never exported (seq {} to {})",
            head.seq - exported,
            exported + 1,
            head.seq
        ),
    )
    .detail("Entries count as exported once ruvector_audit_export() produced them since the server started.")
    .hint("Export the trail first, to a file kept elsewhere: \\copy (SELECT ruvector_audit_export()) TO 'audit.jsonl'. Or, as a superuser, SET ruvector.allow_unexported_drop = on."))
}

/// The latest signed checkpoint and the chain's root fingerprint, for
/// keeping a copy elsewhere.
#[pg_extern(schema = "ruvector", name = "_audit_checkpoint")]
fn audit_checkpoint() -> Option<JsonB> {
    let checkpoint = read_checkpoint().or_raise()?;
    let mut value = serde_json::to_value(&checkpoint).or_raise();
    value["root_fingerprint"] = json!(checkpoint.root);
    Some(JsonB(value))
}
