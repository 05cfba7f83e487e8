//! The audit signing key: a file of 32 raw bytes that only the worker reads,
//! and its public half in `ruvector.signing_keys`.
//!
//! The file is created with mode 0600 when missing and refused when anyone but
//! its owner (the server's user) could read it. No function, setting, log line
//! or error here ever shows the secret bytes.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use pgrx::prelude::*;
use ruvector_integrity::audit::Signer;
use serde_json::json;

use crate::audit;
use crate::collections::caller;
use crate::errors::{Optional, OrRaise, SqlError, SqlResult};

/// Reads the key at `path`, or creates it there if there is none. The error is
/// a sentence for the server log.
pub fn load_or_create(path: &Path) -> Result<Signer, String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signer = Signer::generate().map_err(|e| e.to_string())?;
            write_new(path, &signer)
                .map_err(|e| format!("cannot create the signing key file {shown}: {e}"))?;
            pgrx::log!("ruvector: created signing key {} in {shown}", signer.id());
            Ok(signer)
        }
        Err(e) => Err(format!("cannot read the signing key file {shown}: {e}")),
        Ok(meta) => {
            if meta.mode() & 0o077 != 0 {
                return Err(format!(
                    "refusing the signing key file {shown}: its mode is {:04o}, readable by others; run chmod 600 on it",
                    meta.mode() & 0o7777
                ));
            }
            let euid = unsafe { libc_geteuid() };
            if meta.uid() != euid {
                return Err(format!(
                    "refusing the signing key file {shown}: it belongs to uid {}, not to the server's uid {euid}",
                    meta.uid()
                ));
            }
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read the signing key file {shown}: {e}"))?;
            let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                format!(
                    "refusing the signing key file {shown}: it holds {} bytes, not 32",
                    bytes.len()
                )
            })?;
            Ok(Signer::from_secret(&secret))
        }
    }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Writes a new key file: created exclusively, mode 0600, synced.
fn write_new(path: &Path, signer: &Signer) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&signer.secret())?;
    file.sync_all()
}

/// Replaces the key file with `signer`'s key (written aside, then renamed).
fn replace(path: &Path, signer: &Signer) -> std::io::Result<()> {
    let temporary = path.with_extension("new");
    let _ = std::fs::remove_file(&temporary);
    write_new(&temporary, signer)?;
    std::fs::rename(&temporary, path)
}

/// Records `signer`'s public key, once.
pub fn register(signer: &Signer, description: &str) -> SqlResult<()> {
    Spi::run_with_args(
        "INSERT INTO ruvector.signing_keys (id, public_key, description) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO NOTHING",
        &[
            signer.id().into(),
            signer.public_key().to_vec().into(),
            description.into(),
        ],
    )?;
    Ok(())
}

/// Whether the key `id` has been revoked.
pub fn is_revoked(id: &str) -> SqlResult<bool> {
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT revoked_at IS NOT NULL FROM ruvector.signing_keys WHERE id = $1",
        &[id.into()],
    )
    .optional()?
    .unwrap_or(false))
}

/// Whether an operator asked for a new key.
pub fn rotation_requested() -> SqlResult<bool> {
    Ok(Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM ruvector.pending_events WHERE event_type = 'audit' AND metadata->>'action' = 'rotate_signing_key')",
    )?
    .unwrap_or(false))
}

/// Makes a new key, puts it in the key file and the table, retires `old`, and
/// records the rotation signed by the new key. Runs in the worker.
pub fn rotate(old: &Signer, path: &Path, why: &str) -> SqlResult<Signer> {
    let new = Signer::generate()?;
    replace(path, &new).map_err(|e| {
        SqlError::internal(format!(
            "cannot write the new signing key to {}: {e}",
            path.display()
        ))
    })?;
    register(&new, &format!("rotated from {} ({why})", old.id()))?;
    Spi::run_with_args(
        "UPDATE ruvector.signing_keys SET expires_at = clock_timestamp() WHERE id = $1 AND expires_at IS NULL",
        &[old.id().into()],
    )?;
    let metadata = json!({"action": "signing_key_rotated", "previous_key": old.id(), "key": new.id(), "why": why});
    let event = ruvector_integrity::audit::Event::new(
        None,
        "",
        "audit",
        None,
        None,
        &metadata,
        crate::clock::now_unix(),
    );
    audit::append_signed(&new, &event)?;
    pgrx::log!(
        "ruvector: rotated the signing key from {} to {} ({why})",
        old.id(),
        new.id()
    );
    Ok(new)
}

/// Records an operator's key request for the worker, which acts on it and signs
/// it on its next tick.
fn request(metadata: serde_json::Value) -> SqlResult<()> {
    audit::append_pending(None, "", "audit", None, None, metadata)?;
    crate::xact::wake_worker_at_commit();
    Ok(())
}

#[pg_extern(schema = "ruvector", name = "_rotate_signing_key")]
fn rotate_signing_key(reason: Option<&str>) -> pgrx::JsonB {
    request(json!({"action": "rotate_signing_key", "reason": reason, "by": caller()})).or_raise();
    pgrx::JsonB(json!({"requested": true, "note": "the worker makes the new key on its next tick"}))
}

#[pg_extern(schema = "ruvector", name = "_revoke_signing_key")]
fn revoke_signing_key(key_id: &str, reason: &str) -> pgrx::JsonB {
    revoke(key_id, reason).or_raise()
}

fn revoke(key_id: &str, reason: &str) -> SqlResult<pgrx::JsonB> {
    if reason.trim().is_empty() {
        return Err(SqlError::invalid("a revocation needs a reason"));
    }
    let revoked = Spi::get_one_with_args::<String>(
        "UPDATE ruvector.signing_keys SET revoked_at = clock_timestamp(), revocation_reason = $2
         WHERE id = $1 AND revoked_at IS NULL RETURNING id",
        &[key_id.into(), reason.into()],
    )
    .optional()?;
    if revoked.is_none() {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("no unrevoked signing key has id \"{key_id}\""),
        )
        .hint("SELECT id, revoked_at FROM ruvector.signing_keys;"));
    }
    request(
        json!({"action": "revoke_signing_key", "key": key_id, "reason": reason, "by": caller()}),
    )?;
    Ok(pgrx::JsonB(
        json!({"revoked": key_id, "note": "events it signed after now no longer verify; the worker moves to a new key"}),
    ))
}
