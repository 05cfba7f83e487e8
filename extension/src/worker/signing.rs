//! The worker's signing step: the key checked at start, the operators' key
//! requests acted on, the events backends left pending chained and signed a
//! batch per transaction, each batch followed by a checkpoint once durable.

use pgrx::prelude::*;
use ruvector_integrity::audit::Event;
use serde_json::json;

use super::{notification, transaction, Worker};
use crate::errors::SqlResult;
use crate::shmem::Shared;
use crate::store::events::Head;
use crate::{audit, clock, store};

impl Worker {
    /// Checks the key at start, acts on the operators' key requests, and
    /// signs what backends left pending, a batch per transaction, each
    /// followed by a checkpoint once it is durable.
    pub(super) fn sign_pending(&mut self, shared: Shared) {
        loop {
            let keys = &mut self.keys;
            let outbox = &self.outbox;
            let result = transaction("signing pending events", || {
                let mut changed = keys.prepare()?;
                keys.lock_current()?;
                let pending = audit::pending()?;
                changed |= keys.before_batch(&pending)?;
                let Some(signer) = keys.signer() else {
                    return Ok((false, None, Vec::new(), 0));
                };
                // A pending event committed and gone without a signature was
                // taken out of the table behind the worker's back (a superuser
                // under session_replication_role, a trigger switched off): the
                // chain records that it vanished.
                let (tracked, untracked) = shared.tracked_pending();
                let present = store::events::still_pending(&tracked)?;
                let mut settled: Vec<i64> = tracked
                    .into_iter()
                    .filter(|id| present.binary_search(id).is_err())
                    .collect();
                if !settled.is_empty() || untracked > 0 {
                    audit::append_signed(signer, &vanished(&settled, untracked))?;
                    changed = true;
                }
                let signed = audit::sign(signer, pending)?;
                settled.extend(signed.iter().map(|s| s.pending_id));
                for s in signed
                    .iter()
                    .filter(|s| s.event.event_type == "manual_override")
                {
                    let lambda_norm = shared
                        .view(&s.event.collection)
                        .map(|(_, v)| v.lambda_norm)
                        .filter(|x| x.is_finite());
                    outbox
                        .borrow_mut()
                        .push(notification(&s.event, Some(s.seq), lambda_norm));
                }
                let full = signed.len() as i64 >= audit::SIGNING_BATCH;
                let head = if changed || !signed.is_empty() {
                    store::events::head()?
                } else {
                    None
                };
                Ok((full, head, settled, untracked))
            });
            self.send_announced(result.is_ok());
            match result {
                Ok((full, head, settled, untracked)) => {
                    self.keys.committed();
                    shared.untrack_pending(&settled, untracked);
                    self.checkpoint(head);
                    if !full {
                        break;
                    }
                }
                Err(e) => {
                    self.keys.aborted();
                    self.warn_once("signing", e);
                    break;
                }
            }
        }
        let mut note = self.keys.note();
        note["witness"] = self.witness.note();
        shared.set_signing_note(&note.to_string());
    }

    /// Writes a checkpoint of `head` (committed and flushed).
    pub(super) fn checkpoint(&mut self, head: Option<Head>) {
        let (Some(head), Some(path), Some(signer), Some(root)) = (
            head,
            &self.checkpoint_path,
            self.keys.signer(),
            self.keys.root(),
        ) else {
            return;
        };
        match audit::write_checkpoint(signer, head, &root, path) {
            Ok(checkpoint) => self.witness.spool(&checkpoint, path),
            Err(e) => warning!(
                "ruvector: cannot write the audit checkpoint {}: {e}",
                path.display()
            ),
        }
    }

    /// Appends `event` signed (or pending when there is no key) and notifies
    /// listeners; returns the new head when it was signed.
    pub(super) fn record(
        &self,
        event: &Event,
        lambda_norm: Option<f64>,
    ) -> SqlResult<Option<Head>> {
        let seq = match self.keys.signer() {
            Some(signer) => Some(audit::append_signed(signer, event)?),
            None => {
                // Kept whole for when a key signs again: λ and the event's
                // own metadata, which a pending row has no columns for.
                let metadata: serde_json::Value = serde_json::from_str(&event.metadata)?;
                let kept = json!({"lambda_cut": event.lambda_cut, "lambda_norm": event.lambda_norm, "event": metadata});
                store::events::append_pending(&Event::new(
                    event.collection_id,
                    &event.collection,
                    &event.event_type,
                    event.previous_state.clone(),
                    event.new_state.clone(),
                    &kept,
                    event.created_at,
                ))?;
                None
            }
        };
        self.announce(notification(event, seq, lambda_norm));
        Ok(match seq {
            Some(_) => store::events::head()?,
            None => None,
        })
    }
}

/// The alert for pending events that left the table unsigned: their ids (the
/// first hundred), and how many more went untracked.
fn vanished(ids: &[i64], untracked: u64) -> Event {
    Event::new(
        None,
        "",
        "alert",
        None,
        None,
        &json!({
            "action": "pending_events_vanished",
            "count": ids.len(),
            "ids": &ids[..ids.len().min(100)],
            "untracked": untracked,
            "detail": "pending events committed in this server run left ruvector.pending_events without being signed; untracked ones were committed while the worker was too far behind to follow them",
        }),
        clock::now(),
    )
}
