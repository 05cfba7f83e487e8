//! A network partition of a foreign shard, made by a loopback TCP proxy in
//! front of a real server: one that accepts and never answers (not a refused
//! port), and one that drops each connection in the middle of its exchange.
//! The worker's ticks go on, the collection goes critical with the shard as
//! witness, and comes back when the proxy heals.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ruvector_tests::*;

/// What the proxy does with each connection.
const FORWARD: u8 = 0;
/// Accepts, reads what comes, and never answers.
const BLACK_HOLE: u8 = 1;
/// Forwards the client's bytes, then closes before the server's answer.
const DROP_MID_EXCHANGE: u8 = 2;

/// A TCP proxy on a free loopback port to `target`, in a mode that can be
/// changed while it runs (connections under way follow it too).
struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let shared = mode.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let mode = shared.clone();
                std::thread::spawn(move || relay(client, target, &mode));
            }
        });
        Proxy { port, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

/// Relays one connection as the mode says, until either side closes.
fn relay(mut client: TcpStream, target: u16, mode: &AtomicU8) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    let _ = client.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = server.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buffer = [0u8; 8192];
    loop {
        let now = mode.load(Ordering::SeqCst);
        match client.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) if now != BLACK_HOLE => {
                if server.write_all(&buffer[..n]).is_err() {
                    break;
                }
                if now == DROP_MID_EXCHANGE {
                    break;
                }
            }
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        if now != FORWARD {
            continue;
        }
        match server.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if client.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

#[test]
fn a_shard_behind_a_partition_is_critical_and_named_and_comes_back_when_it_heals() {
    let remote = Cluster::start_without_extension("partition-remote", &[]);
    remote
        .client()
        .batch_execute("CREATE TABLE docs_remote (id bigint, embedding real[])")
        .unwrap();
    let proxy = Proxy::start(remote.port);
    let (_primary, mut db) = {
        let primary = Cluster::start("partition-primary", &[]);
        let mut db = primary.client();
        execute_each(
            &mut db,
            &format!(
                "CREATE EXTENSION postgres_fdw;
                 CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw
                     OPTIONS (host '127.0.0.1', port '{}', dbname '{DATABASE}', connect_timeout '2');
                 CREATE USER MAPPING FOR postgres SERVER remote OPTIONS (user 'postgres');
                 CREATE TABLE docs (id bigint, embedding real[]) PARTITION BY RANGE (id);
                 CREATE TABLE docs_local PARTITION OF docs FOR VALUES FROM (0) TO (1000);
                 CREATE FOREIGN TABLE docs_far PARTITION OF docs FOR VALUES FROM (1000) TO (2000)
                     SERVER remote OPTIONS (table_name 'docs_remote');
                 INSERT INTO docs SELECT i, ARRAY[i, i, i]::real[] FROM generate_series(0, 1999) i;
                 SELECT ruvector_register_collection('docs', 'docs', 'embedding', dimensions => 3);
                 SELECT ruvector_integrity_policy_set('docs', 'fast', '{{\"hysteresis\": {{\"restore_hold_seconds\": 2, \"cooldown_after_transition_seconds\": 1}}}}');",
                proxy.port
            ),
        );
        (primary, db)
    };
    wait_for_state(&mut db, "docs", "normal", 30);

    for (mode, what) in [
        (BLACK_HOLE, "accepts and never answers"),
        (DROP_MID_EXCHANGE, "drops the connection mid-exchange"),
    ] {
        proxy.set(mode);
        wait_for_state(&mut db, "docs", "critical", 30);
        let named = witnesses(&mut db, "docs");
        assert!(named.contains("shard:remote"), "{what}: {named}");
        // The worker's ticks go on: each probe is bounded by its timeout.
        let before = sample_count(&mut db, "docs");
        wait_for(
            30,
            &format!("two more samples while the proxy {what}"),
            || (sample_count(&mut db, "docs") >= before + 2).then_some(()),
        );
        proxy.set(FORWARD);
        wait_for_state(&mut db, "docs", "normal", 60);
    }
    drop(remote);
}
