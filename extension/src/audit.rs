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
use ruvector_integrity::audit::export;
use ruvector_integrity::audit::keys::{self, KeyEvent, KEY_EVENT};
use ruvector_integrity::audit::{
    canonical_json, hex, ChainFault, Checkpoint, Context, Event, Fault, Fingerprint, Hash,
    SignedEntry, Signer, WitnessEdge,
};
use ruvector_integrity::{Micros, SECOND};
use serde_json::{json, Value};

use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::{clock, xact};

const AUDIT_ROWS: &str = include_str!("../sql/queries/audit_rows.sql");
const INSERT_EVENT: &str = include_str!("../sql/queries/insert_event.sql");

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

/// Where this process signs: the cluster and its current timeline.
pub fn context() -> Context {
    unsafe {
        Context {
            system_identifier: pg_sys::GetSystemIdentifier(),
            timeline: pg_sys::GetWALInsertionTimeLine(),
        }
    }
}

/// Appends an unsigned event in the caller's transaction.
pub fn append_pending(
    collection_id: Option<i32>,
    collection: &str,
    event_type: &str,
    previous_state: Option<&str>,
    new_state: Option<&str>,
    metadata: Value,
) -> SqlResult<()> {
    let id = Spi::get_one_with_args::<i64>(
        "INSERT INTO ruvector.pending_events
             (collection_id, collection_name, event_type, previous_state, new_state, metadata)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        &[
            collection_id.into(),
            collection.into(),
            event_type.into(),
            previous_state.into(),
            new_state.into(),
            JsonB(metadata).into(),
        ],
    )?;
    if let Some(id) = id {
        xact::appended_pending(id);
    }
    Ok(())
}

/// The last entry of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
    pub signed_at: Micros,
}

/// The chain's last entry, if it has any.
pub fn head() -> SqlResult<Option<Head>> {
    let row = Spi::get_three::<i64, Vec<u8>, i64>(
        "SELECT seq, entry_hash, (extract(epoch FROM signed_at) * 1000000)::bigint
         FROM ruvector.integrity_events ORDER BY seq DESC LIMIT 1",
    );
    match row {
        Err(pgrx::spi::Error::InvalidPosition) => Ok(None),
        Ok((Some(seq), Some(hash), Some(signed_at))) => Ok(Some(Head {
            seq: seq as u64,
            hash: hash
                .try_into()
                .map_err(|_| SqlError::internal("entry_hash is not 32 bytes"))?,
            signed_at,
        })),
        Ok(_) => Err(SqlError::internal(
            "the chain's last entry has NULL columns",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Chains, signs and appends `event`; returns its seq. Its `signed_at` never
/// goes back, even if the clock does.
pub fn append_signed(signer: &Signer, event: &Event) -> SqlResult<u64> {
    let payload = event.encode()?;
    let head = head()?;
    let signed_at = head.map_or(clock::now_unix(), |h| h.signed_at.max(clock::now_unix()));
    let context = context();
    let entry = signer.seal(head.map(|h| (h.seq, h.hash)), signed_at, context, payload);
    let metadata: Value = serde_json::from_str(&event.metadata)?;
    Spi::run_with_args(
        INSERT_EVENT,
        &[
            (entry.seq as i64).into(),
            event.collection_id.into(),
            event.collection.as_str().into(),
            event.event_type.as_str().into(),
            event.previous_state.as_deref().into(),
            event.new_state.as_deref().into(),
            event.lambda_cut.into(),
            event.lambda_norm.into(),
            event.lambda2.into(),
            JsonB(serde_json::to_value(&event.witness_edges)?).into(),
            JsonB(metadata).into(),
            entry.payload.clone().into(),
            entry.prev_hash.to_vec().into(),
            entry.entry_hash.to_vec().into(),
            entry.signature.clone().into(),
            entry.signer_id.as_str().into(),
            event.created_at.into(),
            entry.signed_at.into(),
            context.system_identifier.to_string().into(),
            (context.timeline as i32).into(),
        ],
    )?;
    Ok(entry.seq)
}

#[derive(serde::Deserialize)]
struct PendingRow {
    id: i64,
    collection_id: Option<i32>,
    collection_name: String,
    event_type: String,
    previous_state: Option<String>,
    new_state: Option<String>,
    metadata: Value,
    created_at: i64,
}

/// An event waiting for the worker's signature.
pub struct Pending {
    pub id: i64,
    pub event: Event,
    pub metadata: Value,
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
    let rows = Spi::get_one_with_args::<JsonB>(
        "SELECT coalesce(jsonb_agg(jsonb_build_object(
                 'id', id, 'collection_id', collection_id, 'collection_name', collection_name,
                 'event_type', event_type, 'previous_state', previous_state, 'new_state', new_state,
                 'metadata', metadata, 'created_at', (extract(epoch FROM created_at) * 1000000)::bigint)
                 ORDER BY id), '[]'::jsonb)
         FROM (SELECT * FROM ruvector.pending_events ORDER BY id LIMIT $1 FOR UPDATE) p",
        &[SIGNING_BATCH.into()],
    )?
    .map_or(Value::Array(vec![]), |j| j.0);
    let rows: Vec<PendingRow> = serde_json::from_value(rows)?;
    Ok(rows
        .into_iter()
        .map(|row| Pending {
            id: row.id,
            event: Event::new(
                row.collection_id,
                &row.collection_name,
                &row.event_type,
                row.previous_state,
                row.new_state,
                &row.metadata,
                row.created_at,
            ),
            metadata: row.metadata,
        })
        .collect())
}

/// Signs and chains `pending`, in order, and removes them from the pending
/// table. Runs in the worker's transaction.
pub fn sign(signer: &Signer, pending: Vec<Pending>) -> SqlResult<Vec<Signed>> {
    let mut signed = Vec::with_capacity(pending.len());
    for p in pending {
        let seq = append_signed(signer, &p.event)?;
        Spi::run_with_args(
            "DELETE FROM ruvector.pending_events WHERE id = $1",
            &[p.id.into()],
        )?;
        signed.push(Signed {
            seq,
            pending_id: p.id,
            event: p.event,
        });
    }
    Ok(signed)
}

/// Which of the pending events `ids` are still in `ruvector.pending_events`.
pub fn still_pending(ids: &[i64]) -> SqlResult<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let present = Spi::get_one_with_args::<Vec<i64>>(
        "SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM ruvector.pending_events WHERE id = ANY ($1)",
        &[ids.to_vec().into()],
    )?;
    Ok(present.unwrap_or_default())
}

/// The key events of the chain, in seq order (up to `seq` when given).
pub fn key_events(up_to: Option<i64>) -> SqlResult<Vec<(u64, KeyEvent)>> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT seq, payload FROM ruvector.integrity_events
             WHERE event_type = $1 AND ($2::bigint IS NULL OR seq <= $2) ORDER BY seq",
            None,
            &[KEY_EVENT.into(), up_to.into()],
        )?;
        let mut events = Vec::new();
        for row in rows {
            let seq = row.get::<i64>(1)?.unwrap_or_default() as u64;
            let payload = row.get::<Vec<u8>>(2)?.unwrap_or_default();
            let key = Event::decode(&payload)
                .and_then(|e| KeyEvent::of(&e))
                .map_err(|e| SqlError::internal(format!("the key event at seq {seq}: {e}")))?;
            events.extend(key.map(|k| (seq, k)));
        }
        Ok(events)
    })
}

/// The OID of this database's installation of the extension: a dropped and
/// re-created extension has a new one, and a new chain.
pub fn extension_oid() -> SqlResult<pg_sys::Oid> {
    Spi::get_one::<pg_sys::Oid>(
        "SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'ruvector'",
    )?
    .ok_or_else(|| SqlError::internal("the ruvector extension is not installed"))
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
    let extension = extension_oid()?;
    let data_dir = unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) };
    Ok(PathBuf::from(&*data_dir.to_string_lossy()).join(format!(
        "{prefix}_{}_{}.json",
        u32::from(unsafe { pg_sys::MyDatabaseId }),
        u32::from(extension)
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
    let checkpoint = signer.checkpoint(head.seq, head.hash, clock::now_unix(), context(), root);
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

/// One row of `ruvector.integrity_events`, as read for verification.
struct EventRow {
    entry: SignedEntry,
    /// The event as the row's columns tell it (or why they cannot).
    columns: Result<Event, String>,
}

/// One row of [`AUDIT_ROWS`], by column position (its SELECT list's order).
fn event_row(row: &pgrx::spi::SpiHeapTupleData) -> Result<EventRow, (u64, String)> {
    let seq = row.get::<i64>(1).ok().flatten().unwrap_or_default() as u64;
    let bad = |what: &str| (seq, format!("the row's {what} is missing or malformed"));
    let text = |at: usize| row.get::<String>(at).ok().flatten();
    let bytes = |at: usize| row.get::<Vec<u8>>(at).ok().flatten();
    let number = |at: usize| row.get::<i64>(at).ok().flatten();
    let float = |at: usize| row.get::<f64>(at).ok().flatten();
    let hash = |at: usize, what: &str| {
        bytes(at)
            .and_then(|b| Hash::try_from(b).ok())
            .ok_or_else(|| bad(what))
    };
    let entry = SignedEntry {
        seq,
        prev_hash: hash(2, "prev_hash")?,
        entry_hash: hash(3, "entry_hash")?,
        signed_at: number(4).ok_or_else(|| bad("signed_at"))?,
        context: Context {
            system_identifier: text(5)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("system_identifier"))?,
            timeline: row
                .get::<i32>(6)
                .ok()
                .flatten()
                .ok_or_else(|| bad("timeline"))? as u32,
        },
        payload: bytes(7).ok_or_else(|| bad("payload"))?,
        signer_id: text(8).ok_or_else(|| bad("signer_id"))?,
        signature: bytes(9).ok_or_else(|| bad("signature"))?,
    };
    let columns = (|| {
        let witness: Vec<WitnessEdge> = serde_json::from_str(&text(18).unwrap_or_default())
            .map_err(|e| format!("the row's witness_edges do not parse: {e}"))?;
        let metadata: Value = serde_json::from_str(&text(19).unwrap_or_default())
            .map_err(|e| format!("the row's metadata does not parse: {e}"))?;
        Ok(Event {
            collection_id: row.get::<i32>(10).ok().flatten(),
            collection: text(11).unwrap_or_default(),
            event_type: text(12).unwrap_or_default(),
            previous_state: text(13),
            new_state: text(14),
            lambda_cut: float(15),
            lambda_norm: float(16),
            lambda2: float(17),
            witness_edges: witness,
            metadata: canonical_json(&metadata),
            created_at: number(20).unwrap_or_default(),
        })
    })();
    Ok(EventRow { entry, columns })
}

impl EventRow {
    /// Whether the columns say what the signed payload says.
    fn check_columns(&self) -> Result<(), ChainFault> {
        let seq = self.entry.seq;
        let fault = |detail: String| ChainFault::new(seq, Fault::Modified, detail);
        let columns = self.columns.as_ref().map_err(|e| fault(e.clone()))?;
        let signed = Event::decode(&self.entry.payload)
            .map_err(|e| fault(format!("the payload does not decode: {e}")))?;
        match signed.first_difference(columns) {
            Some(field) => Err(fault(format!(
                "the row's {field} differs from its signed payload"
            ))),
            None => Ok(()),
        }
    }
}

/// Reads the log in pages of [`PAGE`] rows after `after` (or only `only`),
/// handing each row to `each`; stops at its first error.
fn for_each_row<E>(
    only: Option<i64>,
    mut each: impl FnMut(Result<EventRow, (u64, String)>) -> Result<(), E>,
) -> SqlResult<Result<(), E>> {
    let mut after = 0i64;
    loop {
        let page = Spi::connect(|client| -> SqlResult<Result<(usize, i64), E>> {
            let rows =
                client.select(AUDIT_ROWS, None, &[after.into(), only.into(), PAGE.into()])?;
            let (mut read, mut last) = (0, after);
            for row in rows {
                read += 1;
                last = row.get::<i64>(1)?.unwrap_or(last);
                if let Err(e) = each(event_row(&row)) {
                    return Ok(Err(e));
                }
            }
            Ok(Ok((read, last)))
        })?;
        let (read, last) = match page {
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
    let events = key_events(Some(seq)).or_raise();
    let mut verdict = None;
    for_each_row(Some(seq), |row| -> Result<(), ()> {
        verdict = Some(row.is_ok_and(|row| {
            keys::signer_at(&events, row.entry.seq)
                .is_some_and(|key| verify_alone(&row.entry, key).is_ok())
                && row.check_columns().is_ok()
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
        (Some(c), Some(h)) if c.seq < h.seq && clock::now_unix() - h.signed_at > 60 * SECOND => vec![format!(
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
            column_fault = row.check_columns().err();
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
    let warnings = checkpoint_warnings(checkpoint.as_ref(), head()?);
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
/// checkpoint. The entries follow, one per line, from SQL.
#[pg_extern(schema = "ruvector", name = "_audit_export_header")]
fn audit_export_header() -> JsonB {
    let header = export::Header {
        format: export::FORMAT.to_owned(),
        checkpoint: read_checkpoint().or_raise(),
    };
    JsonB(serde_json::to_value(header).or_raise())
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
