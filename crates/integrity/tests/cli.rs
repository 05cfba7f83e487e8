//! `ruvector-audit verify`'s verdicts and exit statuses, as a script sees them.

use std::process::Command;

use ruvector_integrity::audit::export::verify as verify_export;
use ruvector_integrity::audit::export::{ExportedEntry, Header, FORMAT};
use ruvector_integrity::audit::keys::{KeyAction, KeyEvent};
use ruvector_integrity::audit::{hex, Context, Event, SignedEntry, Signer};

/// An export of a root entry and three events signed by `signer`.
fn export(signer: &Signer) -> String {
    export_saying(signer, "as it happened")
}

/// As [`export`], the last event saying `last`.
fn export_saying(signer: &Signer, last: &str) -> String {
    let context = Context {
        system_identifier: 7,
        timeline: 1,
    };
    let root = KeyEvent::new(KeyAction::Root, &signer.public_key(), None, "first key");
    let mut entries: Vec<SignedEntry> =
        vec![signer.seal(None, 10, context, root.to_event(10).encode().unwrap())];
    for i in 0..3 {
        let event = Event::new(
            Some(1),
            "docs",
            "audit",
            None,
            None,
            &serde_json::json!({"i": i, "said": if i == 2 { last } else { "" }}),
            i,
        );
        let last = entries.last().unwrap();
        let entry = signer.seal(
            Some((last.seq, last.entry_hash)),
            11 + i,
            context,
            event.encode().unwrap(),
        );
        entries.push(entry);
    }
    let header = Header {
        format: FORMAT.into(),
        checkpoint: None,
    };
    std::iter::once(serde_json::to_string(&header).unwrap())
        .chain(
            entries
                .iter()
                .map(|e| serde_json::to_string(&ExportedEntry::of(e)).unwrap()),
        )
        .collect::<Vec<_>>()
        .join("\n")
}

fn verify(file: &std::path::Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ruvector-audit"))
        .arg("verify")
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

#[test]
fn the_exit_status_says_whether_the_root_was_kept_aside() {
    let dir = std::env::temp_dir().join(format!("ruvector-audit-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let signer = Signer::from_secret(&[9; 32]);
    let file = dir.join("audit.jsonl");
    std::fs::write(&file, export(&signer)).unwrap();
    let root = hex(&signer.fingerprint());

    let (status, out) = verify(&file, &[]);
    assert_eq!(status, 3, "{out}");
    assert!(out.contains("taken from the export itself"), "{out}");
    assert!(out.contains(&root), "the verdict prints the root: {out}");
    assert_eq!(verify(&file, &["--root", &root]).0, 0);
    let wrong = hex(&Signer::from_secret(&[8; 32]).fingerprint());
    let (status, out) = verify(&file, &["--root", &wrong]);
    assert_eq!(status, 1, "{out}");
    assert!(out.contains("untrusted_root"), "{out}");
    assert_eq!(verify(&file, &["--root", "not-hex"]).0, 2);
    std::fs::write(&file, "not an export").unwrap();
    assert_eq!(verify(&file, &[]).0, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The attacker's side of a trust anchor: a chain rewritten under a key of
/// their own, and a checkpoint signed with it that names their root (as a
/// look-alike line written to the server log with RAISE LOG would). The
/// checkpoint agrees with the forged log, but its root is not a trust anchor:
/// only `--root` is.
#[test]
fn a_checkpoint_alone_never_makes_its_own_root_trusted() {
    let dir = std::env::temp_dir().join(format!("ruvector-audit-forged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let genuine = Signer::from_secret(&[9; 32]);
    let forger = Signer::from_secret(&[6; 32]);
    let file = dir.join("forged.jsonl");
    let forged = export(&forger);
    std::fs::write(&file, &forged).unwrap();
    // The forger's checkpoint of their own head, naming their own root.
    let verdict = verify_export(forged.as_bytes(), Default::default()).unwrap();
    let checkpoint = forger.checkpoint(
        verdict.head.seq,
        verdict.head.entry_hash,
        20,
        Context {
            system_identifier: 7,
            timeline: 1,
        },
        &forger.fingerprint(),
    );
    let kept = dir.join("checkpoint.json");
    std::fs::write(&kept, serde_json::to_string(&checkpoint).unwrap()).unwrap();

    let (status, out) = verify(&file, &["--checkpoint", kept.to_str().unwrap()]);
    assert_eq!(
        status, 3,
        "a checkpoint's own root is not kept aside: {out}"
    );
    assert!(out.contains("taken from the export itself"), "{out}");
    // With the genuine root kept aside, the forgery is refused.
    let (status, out) = verify(
        &file,
        &[
            "--checkpoint",
            kept.to_str().unwrap(),
            "--root",
            &hex(&genuine.fingerprint()),
        ],
    );
    assert_eq!(status, 1, "{out}");
    assert!(out.contains("untrusted_root"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A key holder rewrites the last entry and re-signs it: the history still
/// verifies against the root, but not against the checkpoints shipped out of
/// the server before the rewrite.
#[test]
fn a_witness_refuses_a_history_re_signed_with_the_stolen_key() {
    let dir = std::env::temp_dir().join(format!("ruvector-audit-witness-{}", std::process::id()));
    let witness = dir.join("witness");
    std::fs::create_dir_all(&witness).unwrap();
    let signer = Signer::from_secret(&[9; 32]);
    let root = hex(&signer.fingerprint());
    let context = Context {
        system_identifier: 7,
        timeline: 1,
    };
    // The worker's checkpoints of seq 2 and of the head (seq 4), shipped.
    let honest = export(&signer);
    let checkpoint_of = |text: &str, seq: u64| {
        let mut at = text.lines().skip(1).map(|l| {
            serde_json::from_str::<ExportedEntry>(l)
                .unwrap()
                .signed_entry()
                .unwrap()
        });
        let entry = at.find(|e| e.seq == seq).unwrap();
        signer.checkpoint(seq, entry.entry_hash, 20, context, &signer.fingerprint())
    };
    for seq in [2, 4] {
        std::fs::write(
            witness.join(format!("ruvector_audit_checkpoint_1_2_{seq:020}.json")),
            serde_json::to_string(&checkpoint_of(&honest, seq)).unwrap(),
        )
        .unwrap();
    }
    let w = witness.to_str().unwrap();
    let file = dir.join("audit.jsonl");
    std::fs::write(&file, &honest).unwrap();
    let (status, out) = verify(&file, &["--root", &root, "--witness", w]);
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("2 checkpoint(s) agree"), "{out}");

    std::fs::write(&file, export_saying(&signer, "rewritten")).unwrap();
    let (status, out) = verify(&file, &["--root", &root]);
    println!("--root alone, exit {status}:\n{out}");
    assert_eq!(
        status, 0,
        "the root alone accepts the re-signed history: {out}"
    );
    let (status, out) = verify(&file, &["--root", &root, "--witness", w]);
    println!("--root and --witness, exit {status}:\n{out}");
    assert_eq!(status, 1, "{out}");
    assert!(
        out.contains("seq 4") && out.contains("checkpoint_mismatch"),
        "{out}"
    );

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_eq!(verify(&file, &["--witness", empty.to_str().unwrap()]).0, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
