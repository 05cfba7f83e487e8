//! `ruvector-audit`: verifies an exported audit log outside the database.
//!
//! ```text
//! psql -Atc "SELECT ruvector_audit_export()" > audit.json
//! ruvector-audit verify audit.json [--keys keys.json] [--checkpoint checkpoint.json]...
//! ruvector-audit show audit.json
//! ```
//!
//! `--keys` takes a JSON array of `{"id", "public_key" (hex), "expires_at",
//! "revoked_at"}` kept aside (for instance `SELECT jsonb_agg(...) FROM
//! ruvector.signing_keys` saved when the key was made) and trusts only those;
//! without it, the export's own key table is trusted. Each `--checkpoint` is a
//! checkpoint kept aside (from the server log or `ruvector_audit_checkpoint()`).
//! Exit status: 0 when everything verifies, 1 when it does not, 2 on bad usage.

use std::process::ExitCode;

use ruvector_integrity::audit::export::{Export, ExportedKey};
use ruvector_integrity::audit::{hex, Checkpoint, TrustedKey};

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn run(args: &[String]) -> Result<bool, String> {
    let (command, path) = match args {
        [command, path, ..] => (command.as_str(), path.as_str()),
        _ => {
            return Err(
                "usage: ruvector-audit verify|show EXPORT [--keys FILE] [--checkpoint FILE]..."
                    .into(),
            )
        }
    };
    let export = Export::parse(&read(path)?).map_err(|e| e.to_string())?;
    let mut keys: Option<Vec<TrustedKey>> = None;
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        let file = rest.next().ok_or_else(|| format!("{flag} needs a file"))?;
        let text = read(file)?;
        match flag.as_str() {
            "--keys" => {
                let exported: Vec<ExportedKey> =
                    serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
                keys = Some(exported.iter().map(TrustedKey::from).collect());
            }
            "--checkpoint" => {
                checkpoints.push(serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?)
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    match command {
        "verify" => match export.verify(keys.as_deref(), &checkpoints) {
            Ok(head) => {
                println!(
                    "ok: {} entries, head seq {} hash {}, {} checkpoint(s) agree",
                    export.entries.len(),
                    head.seq,
                    hex(&head.entry_hash),
                    checkpoints.len() + usize::from(export.checkpoint.is_some())
                );
                Ok(true)
            }
            Err(fault) => {
                println!("FAILED at {fault}");
                Ok(false)
            }
        },
        "show" => {
            for (seq, e) in export.events().map_err(|e| e.to_string())? {
                println!(
                    "{seq}\t{}\t{}\t{} -> {}\t{}",
                    e.collection,
                    e.event_type,
                    e.previous_state.as_deref().unwrap_or("-"),
                    e.new_state.as_deref().unwrap_or("-"),
                    e.metadata
                );
            }
            Ok(true)
        }
        other => Err(format!("unknown command {other}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("ruvector-audit: {message}");
            ExitCode::from(2)
        }
    }
}
