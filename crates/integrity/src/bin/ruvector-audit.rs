//! `ruvector-audit`: verifies an exported audit log outside the database.
//!
//! ```text
//! psql -XAtc "SELECT ruvector_audit_export()" > audit.jsonl
//! ruvector-audit verify audit.jsonl [--root FINGERPRINT]... [--checkpoint FILE]... [--witness DIR]...
//! ruvector-audit show audit.jsonl
//! ```
//!
//! `--root` is the fingerprint of a root key kept aside, taken from a source
//! an attacker cannot write (`ruvector_audit_checkpoint()` over a connection
//! you trust, or the checkpoint file in the data directory; not the server
//! log, where any role can write a look-alike line). Each `--checkpoint` is a
//! checkpoint kept aside: the log must agree with it (its head, its fork, its
//! root at that seq), but the root it names is not trusted for being there,
//! since whoever holds a key can sign a checkpoint naming any root.
//! `--witness DIR` takes every `*.json` file in DIR as a `--checkpoint` (those
//! of a root given with `--root`, when there is one): the checkpoints
//! `ruvector.checkpoint_command` shipped out of the server, which a key holder
//! who rewrites and re-signs history afterwards cannot change (`--root` alone
//! accepts such a history). Copy the directory before taking the export: a
//! checkpoint beyond the export's last entry reads as a cut tail. Without
//! `--root`, the log's own root is taken on trust, and the verdict says so.
//! `-` reads the export from standard input.
//!
//! Exit status: 0 when everything verified against a root kept aside; 3 when
//! it verified against the root the export itself names (pass `--root`); 1
//! when it does not verify (the first bad seq is named); 2 on bad usage or an
//! unreadable export.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

use ruvector_integrity::audit::chain::Trust;
use ruvector_integrity::audit::export::{self, Failure};
use ruvector_integrity::audit::{from_hex_array, hex, Checkpoint};

const USAGE: &str =
    "usage: ruvector-audit verify EXPORT [--root FINGERPRINT]... [--checkpoint FILE]... [--witness DIR]...\n       ruvector-audit show EXPORT";

fn open(path: &str) -> Result<Box<dyn BufRead>, String> {
    if path == "-" {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    Ok(Box::new(std::io::BufReader::new(file)))
}

/// A checkpoint kept aside, from its file.
fn checkpoint(file: &Path) -> Result<Checkpoint, String> {
    let shown = file.display();
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {shown}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{shown}: not a checkpoint: {e}"))
}

fn trust(options: &[String]) -> Result<Trust, String> {
    let mut trust = Trust::default();
    let mut witnessed = Vec::new();
    let mut rest = options.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--root" => trust.roots.push(
                from_hex_array(value.trim())
                    .ok_or_else(|| format!("--root {value}: not a fingerprint (64 hex digits)"))?,
            ),
            "--checkpoint" => trust.checkpoints.push(checkpoint(Path::new(value))?),
            "--witness" => {
                let mut files: Vec<_> = std::fs::read_dir(value)
                    .map_err(|e| format!("cannot read {value}: {e}"))?
                    .map(|entry| entry.map(|e| e.path()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("cannot read {value}: {e}"))?;
                files.retain(|f| f.extension().is_some_and(|x| x == "json"));
                files.sort();
                if files.is_empty() {
                    return Err(format!("--witness {value}: no checkpoint (*.json) there"));
                }
                for file in files {
                    witnessed.push(checkpoint(&file)?);
                }
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    // A witness directory may hold checkpoints of an earlier installation of
    // the extension (another root): with roots kept aside, only theirs count.
    let kept = witnessed.len();
    witnessed.retain(|c| {
        trust.roots.is_empty() || from_hex_array(&c.root).is_some_and(|r| trust.roots.contains(&r))
    });
    if witnessed.len() < kept {
        println!(
            "note: {} witnessed checkpoint(s) of other roots left aside",
            kept - witnessed.len()
        );
    }
    trust.checkpoints.extend(witnessed);
    Ok(trust)
}

fn verify(path: &str, options: &[String]) -> Result<ExitCode, String> {
    let trust = trust(options)?;
    let kept = trust.checkpoints.len();
    match export::verify(open(path)?, trust) {
        Ok(verdict) => {
            println!(
                "ok: {} entries, head seq {} hash {}, {} checkpoint(s) agree",
                verdict.entries,
                verdict.head.seq,
                hex(&verdict.head.entry_hash),
                verdict.checkpoints
            );
            for (seq, root) in &verdict.roots {
                let how = if *seq == 1 { "root" } else { "re-rooted" };
                println!("{how} at seq {seq}: fingerprint {}", hex(root));
            }
            if verdict.root_pinned || verdict.roots.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "NOTE: the root was taken from the export itself ({kept} checkpoint(s) kept aside); pass --root with the fingerprint you kept to trust it"
                );
                Ok(ExitCode::from(3))
            }
        }
        Err(Failure::Chain(fault)) => {
            println!("FAILED at {fault}");
            Ok(ExitCode::from(1))
        }
        Err(Failure::Unreadable(e)) => Err(e.to_string()),
    }
}

fn show(path: &str) -> Result<ExitCode, String> {
    for event in export::events(open(path)?) {
        let (seq, e) = event.map_err(|e| e.to_string())?;
        println!(
            "{seq}\t{}\t{}\t{} -> {}\t{}",
            e.collection,
            e.event_type,
            e.previous_state.as_deref().unwrap_or("-"),
            e.new_state.as_deref().unwrap_or("-"),
            e.metadata
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [command, path, options @ ..] if command == "verify" => verify(path, options),
        [command, path] if command == "show" => show(path),
        _ => Err(USAGE.to_owned()),
    };
    result.unwrap_or_else(|message| {
        eprintln!("ruvector-audit: {message}");
        ExitCode::from(2)
    })
}
