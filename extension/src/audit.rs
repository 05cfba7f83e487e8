//! The audit trail in the database.
//!
//! - Backends append events unsigned to `ruvector.pending_events`, in the
//!   caller's transaction ([`append_pending`]).
//! - The worker, which alone holds the key, chains and signs them into
//!   `ruvector.integrity_events` ([`sign_pending`]), appends its own state
//!   changes signed ([`append_signed`]), and after each commit writes a signed
//!   checkpoint of the head outside the table ([`write_checkpoint`]).
//! - Verification rebuilds every row's entry from its stored bytes, checks the
//!   chain with the core library, and compares each row's columns with the
//!   signed payload, so an edited column is caught too.

use std::path::{Path, PathBuf};

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::audit::export::{self, Export, ExportedEntry, ExportedKey};
use ruvector_integrity::audit::{
    canonical_json, from_hex, hex, verify_chain, verify_entry, ChainFault, Checkpoint, Event,
    Fault, Hash, KeyRing, SignedEntry, Signer, TrustedKey, WitnessEdge,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock;
use crate::errors::{Optional, OrRaise, SqlError, SqlResult};

const AUDIT_ROWS: &str = include_str!("../sql/queries/audit_rows.sql");
const SIGNING_KEYS: &str = include_str!("../sql/queries/signing_keys.sql");
const INSERT_EVENT: &str = include_str!("../sql/queries/insert_event.sql");

/// Appends an unsigned event in the caller's transaction.
pub fn append_pending(
    collection_id: Option<i32>,
    collection: &str,
    event_type: &str,
    previous_state: Option<&str>,
    new_state: Option<&str>,
    metadata: Value,
) -> SqlResult<()> {
    Spi::run_with_args(
        "INSERT INTO ruvector.pending_events
             (collection_id, collection_name, event_type, previous_state, new_state, metadata)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            collection_id.into(),
            collection.into(),
            event_type.into(),
            previous_state.into(),
            new_state.into(),
            JsonB(metadata).into(),
        ],
    )?;
    Ok(())
}

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

/// The chain's last seq and hash, if it has any entry.
pub fn head() -> SqlResult<Option<(u64, Hash)>> {
    let row = Spi::get_two::<i64, Vec<u8>>(
        "SELECT seq, entry_hash FROM ruvector.integrity_events ORDER BY seq DESC LIMIT 1",
    )
    .optional()?;
    Ok(match row {
        Some((Some(seq), Some(hash))) => Some((
            seq as u64,
            hash.try_into()
                .map_err(|_| SqlError::internal("entry_hash is not 32 bytes"))?,
        )),
        _ => None,
    })
}

/// Chains, signs and appends `event`; returns its seq.
pub fn append_signed(signer: &Signer, event: &Event) -> SqlResult<u64> {
    let payload = event.encode()?;
    let entry = signer.seal(head()?, clock::now_unix(), payload);
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
        ],
    )?;
    Ok(entry.seq)
}

#[derive(Deserialize)]
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

/// A pending event after the worker signed it.
pub struct Signed {
    pub seq: u64,
    pub event: Event,
}

/// Signs and chains every pending event, oldest first, and removes them from
/// the pending table. Runs in the worker's transaction.
pub fn sign_pending(signer: &Signer) -> SqlResult<Vec<Signed>> {
    let rows = Spi::get_one::<JsonB>(
        "SELECT coalesce(jsonb_agg(jsonb_build_object(
                 'id', id, 'collection_id', collection_id, 'collection_name', collection_name,
                 'event_type', event_type, 'previous_state', previous_state, 'new_state', new_state,
                 'metadata', metadata, 'created_at', (extract(epoch FROM created_at) * 1000000)::bigint)
                 ORDER BY id), '[]'::jsonb)
         FROM (SELECT * FROM ruvector.pending_events ORDER BY id FOR UPDATE) p",
    )?
    .map_or(Value::Array(vec![]), |j| j.0);
    let rows: Vec<PendingRow> = serde_json::from_value(rows)?;
    let mut signed = Vec::with_capacity(rows.len());
    for row in rows {
        let event = Event::new(
            row.collection_id,
            &row.collection_name,
            &row.event_type,
            row.previous_state,
            row.new_state,
            &row.metadata,
            row.created_at,
        );
        let seq = append_signed(signer, &event)?;
        Spi::run_with_args(
            "DELETE FROM ruvector.pending_events WHERE id = $1",
            &[row.id.into()],
        )?;
        signed.push(Signed { seq, event });
    }
    Ok(signed)
}

/// Where the latest signed checkpoint of this database's chain is kept: outside
/// the table, in the data directory, so that rows cut off the end show. One file
/// per installation of the extension: a dropped and re-created extension starts
/// a new chain, and the old file stays as evidence of the old one.
pub fn checkpoint_path() -> SqlResult<PathBuf> {
    let extension =
        Spi::get_one::<pg_sys::Oid>("SELECT oid FROM pg_extension WHERE extname = 'ruvector'")?
            .ok_or_else(|| SqlError::internal("the ruvector extension is not installed"))?;
    let data_dir = unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) };
    Ok(PathBuf::from(&*data_dir.to_string_lossy()).join(format!(
        "ruvector_audit_checkpoint_{}_{}.json",
        u32::from(unsafe { pg_sys::MyDatabaseId }),
        u32::from(extension)
    )))
}

/// Signs the current head and writes it to `path` (atomically), and to the
/// server log.
pub fn write_checkpoint(
    signer: &Signer,
    head: (u64, Hash),
    path: &Path,
) -> std::io::Result<Checkpoint> {
    let checkpoint = signer.checkpoint(head.0, head.1, clock::now_unix());
    let text = serde_json::to_string(&checkpoint).expect("a checkpoint serializes");
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, &text)?;
    std::fs::File::open(&temporary)?.sync_all()?;
    std::fs::rename(&temporary, path)?;
    pgrx::log!("ruvector: audit checkpoint {text}");
    Ok(checkpoint)
}

fn read_checkpoint() -> SqlResult<Option<Checkpoint>> {
    let Ok(text) = std::fs::read_to_string(checkpoint_path()?) else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_str(&text).map_err(|e| {
        SqlError::internal(format!("the audit checkpoint does not parse: {e}"))
    })?))
}

fn key_rows() -> SqlResult<Vec<ExportedKey>> {
    Ok(serde_json::from_value(
        Spi::get_one::<JsonB>(SIGNING_KEYS)?.map_or(Value::Null, |j| j.0),
    )?)
}

/// The keys in `ruvector.signing_keys`, as the verifier trusts them.
pub fn key_ring() -> SqlResult<KeyRing> {
    Ok(KeyRing::new(key_rows()?.iter().map(TrustedKey::from)))
}

#[derive(Deserialize)]
struct EventRow {
    seq: i64,
    collection_id: Option<i32>,
    collection_name: String,
    event_type: String,
    previous_state: Option<String>,
    new_state: Option<String>,
    lambda_cut: Option<f64>,
    lambda_norm: Option<f64>,
    lambda2: Option<f64>,
    witness_edges: Vec<WitnessEdge>,
    metadata: Value,
    payload: String,
    prev_hash: String,
    entry_hash: String,
    signature: String,
    signer_id: String,
    created_at: i64,
    signed_at: i64,
}

fn hash_of(text: &str) -> Hash {
    from_hex(text)
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; 32])
}

impl EventRow {
    fn exported(&self) -> ExportedEntry {
        ExportedEntry {
            seq: self.seq as u64,
            prev_hash: self.prev_hash.clone(),
            entry_hash: self.entry_hash.clone(),
            signed_at: self.signed_at,
            payload: self.payload.clone(),
            signer_id: self.signer_id.clone(),
            signature: self.signature.clone(),
        }
    }

    fn entry(&self) -> SignedEntry {
        SignedEntry {
            seq: self.seq as u64,
            prev_hash: hash_of(&self.prev_hash),
            entry_hash: hash_of(&self.entry_hash),
            signed_at: self.signed_at,
            payload: from_hex(&self.payload).unwrap_or_default(),
            signer_id: self.signer_id.clone(),
            signature: from_hex(&self.signature).unwrap_or_default(),
        }
    }

    /// The event as the row's columns tell it.
    fn columns(&self) -> Event {
        Event {
            collection_id: self.collection_id,
            collection: self.collection_name.clone(),
            event_type: self.event_type.clone(),
            previous_state: self.previous_state.clone(),
            new_state: self.new_state.clone(),
            lambda_cut: self.lambda_cut,
            lambda_norm: self.lambda_norm,
            lambda2: self.lambda2,
            witness_edges: self.witness_edges.clone(),
            metadata: canonical_json(&self.metadata),
            created_at: self.created_at,
        }
    }

    /// Whether the columns say what the signed payload says.
    fn check_columns(&self) -> Result<(), ChainFault> {
        let fault = |detail: String| ChainFault {
            seq: self.seq as u64,
            fault: Fault::Modified,
            detail,
        };
        let signed = Event::decode(&self.entry().payload)
            .map_err(|e| fault(format!("the payload does not decode: {e}")))?;
        match signed.first_difference(&self.columns()) {
            Some(field) => Err(fault(format!(
                "the row's {field} differs from its signed payload"
            ))),
            None => Ok(()),
        }
    }
}

fn event_rows(seq: Option<i64>) -> SqlResult<Vec<EventRow>> {
    let rows = Spi::get_one_with_args::<JsonB>(AUDIT_ROWS, &[seq.into()])?
        .map_or(Value::Array(vec![]), |j| j.0);
    Ok(serde_json::from_value(rows)?)
}

/// Whether the event `seq` is intact: hash, signature, and columns.
#[pg_extern(schema = "ruvector", name = "_verify_event")]
fn verify_event(seq: i64) -> Option<bool> {
    let rows = event_rows(Some(seq)).or_raise();
    let row = rows.first()?;
    let keys = key_ring().or_raise();
    Some(verify_entry(&row.entry(), &keys).is_ok() && row.check_columns().is_ok())
}

/// Verifies the whole chain, its columns, and the checkpoint kept outside the
/// table; names the first bad seq and why.
#[pg_extern(schema = "ruvector", name = "_verify_audit_chain")]
fn verify_audit_chain() -> JsonB {
    let rows = event_rows(None).or_raise();
    let keys = key_ring().or_raise();
    let checkpoint = read_checkpoint().or_raise();
    let entries: Vec<SignedEntry> = rows.iter().map(EventRow::entry).collect();
    let chain = verify_chain(&entries, &keys, checkpoint.as_slice());
    let columns = rows
        .iter()
        .map(EventRow::check_columns)
        .find_map(Result::err);
    let first_fault = match (chain.as_ref().err(), columns) {
        (Some(a), Some(b)) => Some(if b.seq < a.seq { b } else { a.clone() }),
        (Some(a), None) => Some(a.clone()),
        (None, b) => b,
    };
    let checkpoint_json = checkpoint
        .as_ref()
        .map(|c| json!({"seq": c.seq, "signed_at_unix_us": c.signed_at, "signer_id": c.signer_id}));
    JsonB(match first_fault {
        None => {
            let head = chain.expect("no fault means the chain verified");
            json!({
                "ok": true,
                "entries": rows.len(),
                "head_seq": head.seq,
                "head_hash": hex(&head.entry_hash),
                "checkpoint": checkpoint_json,
            })
        }
        Some(f) => json!({
            "ok": false,
            "entries": rows.len(),
            "first_bad_seq": f.seq,
            "fault": f.fault.as_str(),
            "detail": f.detail,
            "checkpoint": checkpoint_json,
        }),
    })
}

/// The whole log, its keys and its latest checkpoint, for `ruvector-audit
/// verify` to check outside the database.
#[pg_extern(schema = "ruvector", name = "_audit_export")]
fn audit_export() -> JsonB {
    let export = Export {
        format: export::FORMAT.to_owned(),
        entries: event_rows(None)
            .or_raise()
            .iter()
            .map(EventRow::exported)
            .collect(),
        keys: key_rows().or_raise(),
        checkpoint: read_checkpoint().or_raise(),
    };
    JsonB(serde_json::to_value(export).expect("an export serializes"))
}

/// The latest signed checkpoint, for keeping a copy elsewhere.
#[pg_extern(schema = "ruvector", name = "_audit_checkpoint")]
fn audit_checkpoint() -> Option<JsonB> {
    read_checkpoint()
        .or_raise()
        .map(|c| JsonB(serde_json::to_value(c).expect("a checkpoint serializes")))
}
