//! The audit trail's rows: events waiting for the worker's signature,
//! signed entries (one row type, [`SignedRow`]), key events, the public keys
//! listed for reading, and the notifications listeners get.

use std::collections::BTreeMap;

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::audit::keys::{KeyEvent, KEY_EVENT};
use ruvector_integrity::audit::{
    canonical_json, Context, Event, Hash, SignedEntry, Signer, WitnessEdge,
};
use ruvector_integrity::Micros;
use serde::Deserialize;
use serde_json::Value;

use super::document;
use crate::errors::{Optional, SqlError, SqlResult};
use crate::xact;

/// Appends `event` unsigned, in the caller's transaction: the worker signs it
/// once it commits (and records it missing if it is gone before).
pub fn append_pending(event: &Event) -> SqlResult<()> {
    let metadata: Value = serde_json::from_str(&event.metadata)?;
    let id = Spi::get_one_with_args::<i64>(
        super::INSERT_PENDING,
        &[
            event.collection_id.into(),
            event.collection.as_str().into(),
            event.event_type.as_str().into(),
            event.previous_state.as_deref().into(),
            event.new_state.as_deref().into(),
            JsonB(metadata).into(),
            event.created_at.into(),
        ],
    )?;
    if let Some(id) = id {
        xact::appended_pending(id);
    }
    Ok(())
}

/// An event waiting for the worker's signature.
pub struct Pending {
    pub id: i64,
    pub event: Event,
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
    created_at: Micros,
}

/// The next `limit` pending events, oldest first, locked.
pub fn pending(limit: i64) -> SqlResult<Vec<Pending>> {
    let rows: Vec<PendingRow> = document(super::PENDING_BATCH, &[limit.into()])?;
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
        })
        .collect())
}

/// Removes pending event `id` (the worker, as it signs it).
pub fn delete_pending(id: i64) -> SqlResult<()> {
    Ok(Spi::run_with_args(super::DELETE_PENDING, &[id.into()])?)
}

/// Which of the pending events `ids` are still waiting, in order.
pub fn still_pending(ids: &[i64]) -> SqlResult<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(
        Spi::get_one_with_args::<Vec<i64>>(super::STILL_PENDING, &[ids.to_vec().into()])?
            .unwrap_or_default(),
    )
}

/// The chain's last entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
    pub signed_at: Micros,
}

/// The chain's last entry, if it has any.
pub fn head() -> SqlResult<Option<Head>> {
    let Some((seq, hash, signed_at)) = (match Spi::get_three::<i64, Vec<u8>, i64>(super::CHAIN_HEAD)
    {
        Err(pgrx::spi::Error::InvalidPosition) => None,
        row => Some(row?),
    }) else {
        return Ok(None);
    };
    match (seq, hash, signed_at) {
        (Some(seq), Some(hash), Some(signed_at)) => Ok(Some(Head {
            seq: seq as u64,
            hash: hash
                .try_into()
                .map_err(|_| SqlError::internal("entry_hash is not 32 bytes"))?,
            signed_at,
        })),
        _ => Err(SqlError::internal(
            "the chain's last entry has NULL columns",
        )),
    }
}

/// Where the chain's last entry was signed, if it has any.
pub fn head_context() -> SqlResult<Option<Context>> {
    let row = match Spi::get_two::<String, i32>(super::CHAIN_HEAD_CONTEXT) {
        Err(pgrx::spi::Error::InvalidPosition) => return Ok(None),
        row => row?,
    };
    match row {
        (Some(system), Some(timeline)) => Ok(Some(Context {
            system_identifier: system
                .parse()
                .map_err(|_| SqlError::internal("the last entry's system_identifier"))?,
            timeline: timeline as u32,
        })),
        _ => Ok(None),
    }
}

/// Whether this installation keeps successor keys: its SQL is 0.3.0's or
/// later (a new library runs against the old objects until `ALTER EXTENSION
/// ruvector UPDATE`).
pub fn keeps_successors() -> bool {
    let Some(installed) = crate::installation::installed() else {
        return false;
    };
    // SAFETY: a syscache lookup by name in the extension's schema.
    let table = unsafe { pg_sys::get_relname_relid(c"successor_keys".as_ptr(), installed.schema) };
    table != pg_sys::InvalidOid
}

/// Keeps the secret of successor key `signer` (and no earlier one's).
pub fn keep_successor(signer: &Signer) -> SqlResult<()> {
    Spi::run_with_args(
        super::INSERT_SUCCESSOR,
        &[signer.id().into(), signer.secret().to_vec().into()],
    )?;
    Ok(())
}

/// The successor key `id`, if its secret is here.
pub fn successor(id: &str) -> SqlResult<Option<Signer>> {
    let secret =
        Spi::get_one_with_args::<Vec<u8>>(super::SUCCESSOR_SECRET, &[id.into()]).optional()?;
    let Some(secret) = secret else {
        return Ok(None);
    };
    let secret: [u8; 32] = secret
        .try_into()
        .map_err(|_| SqlError::internal("a successor's secret is not 32 bytes"))?;
    Ok(Some(Signer::from_secret(&secret)).filter(|s| s.id() == id))
}

/// Appends `entry`, the signed and chained `event`.
pub fn insert_signed(entry: &SignedEntry, event: &Event) -> SqlResult<()> {
    let metadata: Value = serde_json::from_str(&event.metadata)?;
    Spi::run_with_args(
        super::INSERT_EVENT,
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
            entry.context.system_identifier.to_string().into(),
            (entry.context.timeline as i32).into(),
        ],
    )?;
    Ok(())
}

/// The key events of the chain, in seq order (up to `seq` when given).
pub fn key_events(up_to: Option<i64>) -> SqlResult<Vec<(u64, KeyEvent)>> {
    Spi::connect(|client| {
        let rows = client.select(super::KEY_EVENTS, None, &[KEY_EVENT.into(), up_to.into()])?;
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

/// One row of `ruvector.integrity_events`: the entry as signed, and the
/// event its columns tell (or why they cannot).
pub struct SignedRow {
    pub entry: SignedEntry,
    pub columns: Result<Event, String>,
}

/// A row of `audit_rows.sql`, by column position (its SELECT list's order).
fn signed_row(row: &pgrx::spi::SpiHeapTupleData) -> Result<SignedRow, (u64, String)> {
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
    Ok(SignedRow { entry, columns })
}

/// Hands the signed rows after seq `after` (or only seq `only`), up to
/// `limit` of them in seq order, to `each`, stopping at its first error;
/// returns how many it read and the last seq.
pub fn signed_rows<E>(
    after: i64,
    only: Option<i64>,
    limit: i64,
    each: &mut impl FnMut(Result<SignedRow, (u64, String)>) -> Result<(), E>,
) -> SqlResult<Result<(usize, i64), E>> {
    Spi::connect(|client| {
        let rows = client.select(
            super::AUDIT_ROWS,
            None,
            &[after.into(), only.into(), limit.into()],
        )?;
        let (mut read, mut last) = (0, after);
        for row in rows {
            read += 1;
            last = row.get::<i64>(1)?.unwrap_or(last);
            if let Err(e) = each(signed_row(&row)) {
                return Ok(Err(e));
            }
        }
        Ok(Ok((read, last)))
    })
}

/// Lists `signer`'s public key, introduced at seq `introduced`.
pub fn register_key(signer: &Signer, introduced: u64, description: &str) -> SqlResult<()> {
    Spi::run_with_args(
        super::REGISTER_KEY,
        &[
            signer.id().into(),
            signer.public_key().to_vec().into(),
            description.into(),
            (introduced as i64).into(),
        ],
    )?;
    Ok(())
}

/// Marks key `id` revoked; false when there is no such unrevoked key.
pub fn revoke_key(id: &str, reason: &str) -> SqlResult<bool> {
    Ok(
        Spi::get_one_with_args::<String>(super::REVOKE_KEY, &[id.into(), reason.into()])
            .optional()?
            .is_some(),
    )
}

/// Locks key `id`'s row, waiting for a revocation in flight.
pub fn lock_key(id: &str) -> SqlResult<()> {
    Ok(Spi::run_with_args(super::LOCK_KEY, &[id.into()])?)
}

/// Tells listeners of `ruvector_integrity` about a change.
pub fn notify(payload: &Value) -> SqlResult<()> {
    Ok(Spi::run_with_args(
        super::NOTIFY,
        &[payload.to_string().as_str().into()],
    )?)
}

/// The settings the gate runs under, as this process sees them.
pub fn gate_settings() -> SqlResult<BTreeMap<String, String>> {
    document(super::GATE_SETTINGS, &[])
}
