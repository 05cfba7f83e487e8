//! A witness outside the database: `ruvector.checkpoint_command` ships every
//! signed checkpoint out of the server, retried until it succeeds. A history
//! rewritten and re-signed with the stolen key verifies against the root
//! alone, and not against the checkpoints shipped before the rewrite.

use std::path::PathBuf;

use ruvector_integrity::audit::chain::Trust;
use ruvector_integrity::audit::export::{self, Failure};
use ruvector_integrity::audit::{from_hex_array, Checkpoint, Context, Fault, Signer};
use ruvector_tests::*;

fn witness_note(db: &mut Client) -> Value {
    json(db, "SELECT ruvector_integrity_status('docs')")["worker"]["audit"]["witness"].clone()
}

fn head(db: &mut Client) -> i64 {
    db.query_one("SELECT max(seq) FROM ruvector.integrity_events", &[])
        .unwrap()
        .get(0)
}

fn shipped(dir: &PathBuf) -> Vec<Checkpoint> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect()
}

#[test]
fn a_history_re_signed_with_the_stolen_key_fails_against_the_shipped_checkpoints() {
    let witness = std::env::temp_dir().join(format!("ruvector-witness-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&witness);
    let w = witness.display();
    let command = format!("ruvector.checkpoint_command = 'test -d {w} && cp %p {w}/%f'");
    let (cluster, mut db) = cluster_with_docs("witness", &[&command]);

    // Nowhere to ship to yet: the checkpoints wait, and the status says why.
    let note = wait_for(30, "the command to fail", || {
        Some(witness_note(&mut db)).filter(|n| n["failing"].is_string())
    });
    assert!(note["waiting"].as_u64().unwrap() > 0, "{note}");
    assert!(cluster
        .log()
        .contains("ruvector.checkpoint_command: checkpoint"));

    // The place appears: what waited is shipped, in order, and what follows.
    std::fs::create_dir_all(&witness).unwrap();
    chown_to_runner(&witness);
    pin(&mut db, "stress");
    wait_signed(&mut db);
    let head = head(&mut db);
    wait_for(30, "the head's checkpoint shipped", || {
        let n = witness_note(&mut db);
        (n["shipped_seq"] == head && n["waiting"] == 0 && n["failing"].is_null()).then_some(())
    });
    let checkpoints = shipped(&witness);
    assert!(checkpoints.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(checkpoints.last().unwrap().seq, head as u64);
    assert!(
        checkpoints.len() as u64 > note["waiting"].as_u64().unwrap(),
        "what waited while it failed was shipped too"
    );
    let verdict = json(&mut db, "SELECT ruvector_verify_audit_chain()");
    let root = from_hex_array(verdict["root_fingerprint"].as_str().unwrap()).unwrap();

    // Someone who can read the key file (a superuser, pg_read_server_files)
    // rewrites the head entry, re-signs it, and re-signs the checkpoint file
    // in the data directory to match.
    let stolen = Signer::from_secret(
        &std::fs::read(cluster.key_path(&mut db))
            .unwrap()
            .try_into()
            .unwrap(),
    );
    db.batch_execute(&format!(
        "ALTER TABLE ruvector.integrity_events DISABLE TRIGGER USER;
         DELETE FROM ruvector.integrity_events WHERE seq = {head};
         ALTER TABLE ruvector.integrity_events ENABLE TRIGGER USER;"
    ))
    .unwrap();
    assert_eq!(append_forged(&mut db, &stolen, None), head);
    let row = db
        .query_one(
            "SELECT entry_hash, system_identifier::text, timeline FROM ruvector.integrity_events WHERE seq = $1",
            &[&head],
        )
        .unwrap();
    let context = Context {
        system_identifier: row.get::<_, String>(1).parse().unwrap(),
        timeline: row.get::<_, i32>(2) as u32,
    };
    let hash: Vec<u8> = row.get(0);
    let resigned = stolen.checkpoint(head as u64, hash.try_into().unwrap(), 1, context, &root);
    let local = std::fs::read_dir(cluster.data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ruvector_audit_checkpoint_")
        })
        .unwrap();
    std::fs::write(&local, serde_json::to_string(&resigned).unwrap()).unwrap();

    // The root alone accepts the rewritten history; the witnesses refuse it,
    // at the seq that was rewritten.
    let text = exported(&mut db);
    let trust = |checkpoints| Trust {
        roots: vec![root],
        checkpoints,
    };
    export::verify(text.as_bytes(), trust(Vec::new())).unwrap_or_else(|f| panic!("{f:?}"));
    match export::verify(text.as_bytes(), trust(checkpoints)) {
        Err(Failure::Chain(fault)) => {
            assert_eq!(
                (fault.seq, fault.fault),
                (head as u64, Fault::CheckpointMismatch)
            )
        }
        other => panic!("the witnesses accepted a rewritten history: {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&witness);
}
