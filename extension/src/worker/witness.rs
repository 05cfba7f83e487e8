//! Witnesses outside the server: each signed checkpoint is shipped by
//! `ruvector.checkpoint_command`, as WAL is by `archive_command`. Whoever can
//! read the signing key (a superuser, `pg_read_server_files`) can re-sign a
//! rewritten history that verifies against the root; a checkpoint shipped
//! before the rewrite cannot be re-signed, and `ruvector-audit verify
//! --witness DIR` refuses a log that disagrees with any of them.
//!
//! Each checkpoint the worker writes while a command is set is copied, synced,
//! to `ruvector_witness/` in the data directory, named after its installation,
//! seq and entry hash (`ruvector_audit_checkpoint_<database>_<extension>_<seq>_<hash>.json`:
//! two forks of one chain never share a name). Every tick the worker runs the
//! command for its database's copies in seq order (`%p` the copy's path, `%f`
//! its name, `%d` the database's OID, `%%` a `%`); a copy goes when the
//! command exits 0, and the first failure stops the round, to be tried again
//! next tick. A command runs at most `ruvector.worker_statement_timeout`, in a
//! process group of its own that is killed whole after that; a tick ships for
//! at most [`TICK_BUDGET`], and leaves the rest to the next.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgrx::pg_sys;
use pgrx::prelude::*;
use ruvector_integrity::audit::Checkpoint;
use serde_json::{json, Value};

use crate::{catalog, gucs};

/// The longest one tick spends shipping.
const TICK_BUDGET: Duration = Duration::from_secs(10);

/// What the worker shipped, and what waits.
#[derive(Default)]
pub struct Shipping {
    /// The seq of the last checkpoint the command took.
    shipped_seq: Option<u64>,
    /// Checkpoints waiting for the command.
    waiting: usize,
    /// Why the last try failed, while it does.
    failing: Option<String>,
}

impl Shipping {
    /// What the status shows (`null` when no command is set).
    pub fn note(&self) -> Value {
        match gucs::checkpoint_command() {
            None => Value::Null,
            Some(_) => json!({
                "shipped_seq": self.shipped_seq, "waiting": self.waiting, "failing": self.failing,
            }),
        }
    }

    /// Keeps a copy of `checkpoint` (written to `file`) for the command, if
    /// one is set.
    pub fn spool(&mut self, checkpoint: &Checkpoint, file: &Path) {
        if gucs::checkpoint_command().is_none() {
            return;
        }
        if let Err(e) = spool(checkpoint, file) {
            self.fail(format!(
                "cannot keep a copy of checkpoint {}: {e}",
                checkpoint.seq
            ));
        }
    }

    /// Runs the command for every copy of this installation (whose
    /// checkpoint file is `file`) that waits, oldest first; stops at the first
    /// failure, or when `stopping` says the worker must leave.
    pub fn ship(&mut self, file: &Path, stopping: impl Fn() -> bool) {
        let Some(command) = gucs::checkpoint_command() else {
            return;
        };
        let waiting = match waiting(file) {
            Ok(waiting) => waiting,
            Err(e) => return self.fail(format!("cannot list {}: {e}", spool_dir().display())),
        };
        self.waiting = waiting.len();
        let started = Instant::now();
        for (seq, copy) in waiting {
            if started.elapsed() > TICK_BUDGET {
                return;
            }
            if let Err(e) = run(&command, &copy, &stopping) {
                return self.fail(format!("checkpoint {seq}: {e}"));
            }
            if let Err(e) = std::fs::remove_file(&copy) {
                return self.fail(format!(
                    "cannot remove {} once shipped: {e}",
                    copy.display()
                ));
            }
            self.shipped_seq = Some(seq);
            self.waiting -= 1;
            if self.failing.take().is_some() {
                log!("ruvector: ruvector.checkpoint_command succeeded again");
            }
        }
    }

    /// Records a failure, logged once while it stays the same.
    fn fail(&mut self, why: String) {
        if self.failing.as_ref() != Some(&why) {
            warning!("ruvector: ruvector.checkpoint_command: {why}; tried again on the next tick");
        }
        self.failing = Some(why);
    }
}

fn spool_dir() -> PathBuf {
    // SAFETY: the data directory, set before any worker starts.
    let data_dir = unsafe { catalog::text(pg_sys::DataDir) };
    PathBuf::from(data_dir).join("ruvector_witness")
}

/// `<checkpoint file's stem>_`: the start of this installation's copies.
fn copy_prefix(file: &Path) -> String {
    format!(
        "{}_",
        file.file_stem().unwrap_or_default().to_string_lossy()
    )
}

/// `<prefix><seq, 20 digits>_<the entry hash's first 16 hex digits>.json`:
/// names sort by seq.
fn copy_name(file: &Path, checkpoint: &Checkpoint) -> String {
    let hash = ruvector_integrity::audit::hex(&checkpoint.entry_hash);
    format!(
        "{}{:020}_{}.json",
        copy_prefix(file),
        checkpoint.seq,
        &hash[..16]
    )
}

fn spool(checkpoint: &Checkpoint, file: &Path) -> std::io::Result<()> {
    let dir = spool_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(copy_name(file, checkpoint));
    let temporary = path.with_extension("tmp");
    let mut out = std::fs::File::create(&temporary)?;
    out.write_all(serde_json::to_string(checkpoint)?.as_bytes())?;
    out.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    std::fs::File::open(&dir)?.sync_all()
}

/// This installation's copies, by seq.
fn waiting(file: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let prefix = copy_prefix(file);
    let dir = spool_dir();
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let seq = name
            .strip_prefix(&prefix)
            .filter(|rest| rest.ends_with(".json"))
            .and_then(|rest| rest.split('_').next())
            .and_then(|seq| seq.parse::<u64>().ok());
        if let Some(seq) = seq {
            found.push((seq, dir.join(name)));
        }
    }
    found.sort();
    Ok(found)
}

/// The command with `%p`, `%f`, `%d` and `%%` replaced, as `archive_command`'s.
fn expand(command: &str, copy: &Path) -> String {
    let name = copy.file_name().unwrap_or_default().to_string_lossy();
    let mut out = String::with_capacity(command.len() + 64);
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('p') => out.push_str(&copy.to_string_lossy()),
            Some('f') => out.push_str(&name),
            Some('d') => out.push_str(&u32::from(catalog::database()).to_string()),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Runs the command for `copy`; `Err` says why it did not succeed.
fn run(command: &str, copy: &Path, stopping: impl Fn() -> bool) -> Result<(), String> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(expand(command, copy))
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    // The command and whatever it started, killed together.
    let kill = |child: &mut std::process::Child| {
        // SAFETY: a signal to the process group the child leads.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
    };
    let limit = gucs::WORKER_STATEMENT_TIMEOUT.get();
    let deadline = (limit > 0).then(|| Instant::now() + Duration::from_millis(limit as u64));
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("the command failed ({status})")),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            kill(&mut child);
            return Err(format!(
                "the command ran longer than {limit} ms and was killed"
            ));
        }
        if stopping() {
            kill(&mut child);
            return Err("the worker is stopping".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
