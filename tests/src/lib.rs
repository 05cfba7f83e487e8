//! The integration harness: each test starts its own PostgreSQL 15 cluster on
//! loopback with ruvector preloaded (as the unprivileged runner when the tests
//! run as root), talks to it through a client, and stops it when dropped.
//!
//! Environment (set by scripts/test-integration):
//! - `RUVECTOR_TEST_CLUSTERS`: where clusters live (default target/clusters);
//! - `RUVECTOR_TEST_RUNNER`: the OS user that runs PostgreSQL (default: postgres
//!   when root, else the current user);
//! - `RUVECTOR_KEEP_CLUSTERS=1` keeps data directories for a post-mortem.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use postgres::{Client, NoTls};
pub use serde_json::{json, Value};

use ruvector_integrity::audit::{Context, Event, Signer};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The database every test cluster watches.
pub const DATABASE: &str = "ruvector_test";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

fn runner() -> Option<String> {
    match std::env::var("RUVECTOR_TEST_RUNNER") {
        Ok(user) if !user.is_empty() => Some(user),
        _ if is_root() => Some("postgres".into()),
        _ => None,
    }
}

/// A PostgreSQL program, to be run as the runner.
fn command(program: &str) -> Command {
    let path = format!("{PG_BIN}/{program}");
    let mut command = match runner() {
        Some(user) if is_root() => {
            let mut c = Command::new("runuser");
            c.args(["-u", &user, "--", &path]);
            c
        }
        _ => Command::new(&path),
    };
    // RUST_BACKTRACE would put Rust backtraces into the server's error messages.
    command.env_remove("RUST_BACKTRACE");
    command
}

/// Runs a PostgreSQL program as the runner; panics with its output on failure.
fn run(program: &str, args: &[&str]) -> String {
    let output = command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{text}"
    );
    text
}

pub fn chown_to_runner(path: &Path) {
    if let (Some(user), true) = (runner(), is_root()) {
        let status = Command::new("chown")
            .arg("-R")
            .arg(&user)
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// A TCP port on loopback that nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running cluster.
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
}

impl Cluster {
    /// Starts a fresh cluster named `name` with ruvector preloaded, a 1-second
    /// sample interval, and these extra postgresql.conf lines; creates the test
    /// database and the extension in it.
    pub fn start(name: &str, settings: &[&str]) -> Cluster {
        let cluster = Cluster::start_without_extension(name, settings);
        cluster
            .client()
            .batch_execute("CREATE EXTENSION ruvector")
            .unwrap();
        cluster
    }

    /// Like [`Cluster::start`], but the test database is left without the
    /// extension.
    pub fn start_without_extension(name: &str, settings: &[&str]) -> Cluster {
        let cluster = Cluster::init(name, settings);
        cluster.pg_ctl_start();
        run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &cluster.port.to_string(),
                "-U",
                "postgres",
                DATABASE,
            ],
        );
        cluster
    }

    /// Initializes the cluster without starting it.
    pub fn init(name: &str, settings: &[&str]) -> Cluster {
        let root = std::env::var("RUVECTOR_TEST_CLUSTERS")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/clusters"));
        let dir = root.join(format!("it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        chown_to_runner(&dir);
        let data = dir.join("data");
        run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        let port = free_port();
        let mut conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             shared_preload_libraries = 'ruvector'\n\
             ruvector.integrity_sample_interval = 1\nfsync = off\n",
            dir.display()
        );
        for line in settings {
            conf.push_str(line);
            conf.push('\n');
        }
        let path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&conf);
        std::fs::write(&path, text).unwrap();
        Cluster { dir, port }
    }

    /// A copy of this running cluster made with `pg_basebackup -R` under
    /// `name`, on a port of its own, with these extra settings; not started.
    /// Started, it is a streaming standby of this one until promoted.
    pub fn base_backup(&self, name: &str, settings: &[&str]) -> Cluster {
        let dir = self
            .dir
            .with_file_name(format!("it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        chown_to_runner(&dir);
        let data = dir.join("data");
        run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
                "-R",
                "--checkpoint=fast",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        let port = free_port();
        let mut conf = format!(
            "\nport = {port}\nunix_socket_directories = '{}'\n",
            dir.display()
        );
        for line in settings {
            conf.push_str(line);
            conf.push('\n');
        }
        let path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&conf);
        std::fs::write(&path, text).unwrap();
        chown_to_runner(&dir);
        Cluster { dir, port }
    }

    /// Promotes a standby to a primary (a new timeline).
    pub fn promote(&self) {
        run(
            "pg_ctl",
            &["-D", self.data_dir().to_str().unwrap(), "-w", "promote"],
        );
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn pg_ctl_start(&self) {
        run(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().unwrap(),
                "-l",
                self.log_path().to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    pub fn stop(&self) {
        run(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    pub fn restart(&self) {
        self.stop();
        self.pg_ctl_start();
    }

    /// Runs a PostgreSQL client program (pg_dump, psql...) of this
    /// installation as the runner, against this cluster's test database.
    pub fn client_program(&self, program: &str, args: &[&str]) -> String {
        let port = self.port.to_string();
        let mut all = vec![
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            DATABASE,
        ];
        all.extend_from_slice(args);
        run(program, &all)
    }

    /// Runs `input` through the server in single-user mode (the cluster must be
    /// stopped) on `database`; returns what it printed.
    pub fn single_user(&self, database: &str, input: &str) -> String {
        use std::io::Write;
        let mut child = command("postgres")
            .args([
                "--single",
                "-D",
                self.data_dir().to_str().unwrap(),
                database,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("postgres --single");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "postgres --single failed:\n{text}");
        text
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the server has become ready `times` times since it was
    /// made (its log says so): 2 after one crash. A connection made before
    /// the postmaster noticed a crash would be ended by the restart.
    pub fn wait_ready(&self, times: usize) {
        wait_for(60, "the server to be ready again", || {
            let ready = self
                .log()
                .matches("database system is ready to accept connections")
                .count();
            (ready >= times).then_some(())
        });
    }

    /// The signing key file of the database `db` is connected to.
    pub fn key_path(&self, db: &mut Client) -> PathBuf {
        let oid: u32 = db
            .query_one(
                "SELECT oid FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .unwrap()
            .get(0);
        self.data_dir().join(format!("ruvector_signing.key.{oid}"))
    }

    pub fn client(&self) -> Client {
        self.client_as("postgres")
    }

    pub fn client_as(&self, user: &str) -> Client {
        self.connect(user, DATABASE)
    }

    /// A client connected as `user` to `database`.
    pub fn connect(&self, user: &str, database: &str) -> Client {
        let config = format!(
            "host=127.0.0.1 port={} user={user} dbname={database}",
            self.port
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect(&config, NoTls) {
                Ok(client) => return client,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => panic!("cannot connect as {user}: {e}"),
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
        if std::env::var("RUVECTOR_KEEP_CLUSTERS").is_err() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most `seconds`.
pub fn wait_for<T>(seconds: u64, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {seconds} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An error as a person reads it: its SQLSTATE and message when the server
/// sent one (`postgres::Error`'s own text is only "db error").
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// The first column of the first row of `sql`, as JSON.
pub fn json(client: &mut Client, sql: &str) -> Value {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .get(0)
}

/// Runs each statement of `script` (statements end with `;` at the end of a
/// line) on its own, outside a transaction block, as psql would.
pub fn execute_each(client: &mut Client, script: &str) {
    for sql in script.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        client
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    }
}

/// The first row of `sql`, tried again while the gate throttles it (53000),
/// as a client of a collection in stress or critical should.
pub fn query_one_retrying(client: &mut Client, sql: &str) -> postgres::Row {
    for _ in 0..100 {
        match client.query_one(sql, &[]) {
            Err(e) if e.code().is_some_and(|c| c.code() == "53000") => {
                std::thread::sleep(Duration::from_millis(20))
            }
            result => return result.unwrap_or_else(|e| panic!("{sql}: {}", describe(&e))),
        }
    }
    panic!("{sql}: throttled 100 times in a row")
}

/// The SQLSTATE and message of the error `sql` raises.
pub fn error(client: &mut Client, sql: &str) -> (String, String) {
    let e = client
        .batch_execute(sql)
        .expect_err(&format!("expected an error from {sql}"));
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {e}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// A table `name` of `rows` 3-dimensional vectors, registered as a collection.
pub fn collection(client: &mut Client, name: &str, rows: i32) {
    client
        .batch_execute(&format!(
            "CREATE TABLE {name} (id bigserial PRIMARY KEY, embedding real[]);
             INSERT INTO {name} (embedding) SELECT ARRAY[i, i + 1, i + 2]::real[] FROM generate_series(1, {rows}) i;
             SELECT ruvector_register_collection('{name}', '{name}', 'embedding');"
        ))
        .unwrap();
}

/// The state the gate reports for `name` (shared memory, as any session sees it).
pub fn state(client: &mut Client, name: &str) -> String {
    json(
        client,
        &format!("SELECT ruvector_integrity_gate('{name}', 'search')"),
    )["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until `name` is in `expected` state.
pub fn wait_for_state(client: &mut Client, name: &str, expected: &str, seconds: u64) {
    wait_for(seconds, &format!("{name} to be {expected}"), || {
        (state(client, name) == expected).then_some(())
    });
}

/// A started cluster named `name` with collection `docs` (10 vectors)
/// registered and sampled to normal, and a client connected to it.
pub fn cluster_with_docs(name: &str, settings: &[&str]) -> (Cluster, Client) {
    let cluster = Cluster::start(name, settings);
    let mut db = cluster.client();
    collection(&mut db, "docs", 10);
    wait_for_state(&mut db, "docs", "normal", 30);
    (cluster, db)
}

/// Pins collection `docs` to `state` for an hour, as an operator would.
pub fn pin(db: &mut Client, state: &str) {
    db.execute(
        "SELECT ruvector_integrity_override('docs', $1, '1 hour', 'test')",
        &[&state],
    )
    .unwrap();
}

/// Waits until the worker has signed every event backends left pending.
pub fn wait_signed(db: &mut Client) {
    wait_for(15, "pending events to be signed", || {
        let pending: i64 = db
            .query_one("SELECT count(*) FROM ruvector.pending_events", &[])
            .unwrap()
            .get(0);
        (pending == 0).then_some(())
    });
}

/// The worker's last heartbeat, as `collection`'s status reports it.
pub fn heartbeat(db: &mut Client, collection: &str) -> Value {
    json(
        db,
        &format!("SELECT ruvector_integrity_status('{collection}') -> 'worker' -> 'heartbeat'"),
    )
}

/// Waits until the worker has run one whole tick that began after this call:
/// whatever was committed before the call, the worker has seen (signed what
/// was pending, synced shared memory, sampled what was due) by the time this
/// returns. Ticks are sequential, and each beats when it begins: the second
/// beat after the call ends the first tick that began after it.
pub fn wait_worker_tick(db: &mut Client, collection: &str) {
    let mut beat = heartbeat(db, collection);
    for step in ["a worker tick to begin", "that tick to end"] {
        let seen = beat.clone();
        beat = wait_for(30, step, || {
            Some(heartbeat(db, collection)).filter(|b| *b != seen)
        });
    }
}

/// Waits until the backend `pid` waits for a lock.
pub fn wait_blocked_on_lock(db: &mut Client, pid: i32) {
    wait_for(30, "the backend to wait for a lock", || {
        db.query_opt(
            "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
            &[&pid],
        )
        .unwrap()
    });
}

/// Makes table `g` holding, in column `edges`, an unweighted cycle of
/// 1,000,000 nodes plus a random perfect matching: a cubic graph (1.5 million
/// edges) whose exact min cut (3) and λ₂ take seconds. The seed makes it the
/// same graph every run (a matching that paired neighbours of the cycle would
/// make a cut of 2 that is found at once).
pub const CUBIC_GRAPH: &str = "
    SELECT setseed(0.3);
    CREATE TABLE g AS SELECT jsonb_agg(e) AS edges FROM (
        SELECT jsonb_build_object('source', i, 'target', (i + 1) % 1000000) e FROM generate_series(0, 999999) i
        UNION ALL
        SELECT jsonb_build_object('source', a, 'target', b) FROM (
            SELECT row_number() OVER () r, i a, lead(i) OVER () b
            FROM (SELECT i FROM generate_series(0, 999999) i ORDER BY random()) x) y
        WHERE r % 2 = 1) z";

/// Appends an event signed by `signer` after the chain's head, as someone who
/// can write the tables (and holds that key) would; returns its seq.
pub fn append_forged(db: &mut Client, signer: &Signer, signed_at: Option<i64>) -> i64 {
    let row = db
        .query_one(
            "SELECT seq, entry_hash, (extract(epoch FROM signed_at) * 1000000)::bigint,
                    system_identifier::text, timeline
             FROM ruvector.integrity_events ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .unwrap();
    let (seq, hash, last_signed): (i64, Vec<u8>, i64) = (row.get(0), row.get(1), row.get(2));
    let context = Context {
        system_identifier: row.get::<_, String>(3).parse().unwrap(),
        timeline: row.get::<_, i32>(4) as u32,
    };
    let event = Event::new(
        None,
        "",
        "audit",
        None,
        None,
        &json!({"forged": true}),
        last_signed,
    );
    let signed_at = signed_at.unwrap_or(last_signed + 1);
    let entry = signer.seal(
        Some((seq as u64, hash.try_into().unwrap())),
        signed_at,
        context,
        event.encode().unwrap(),
    );
    db.execute(
        "INSERT INTO ruvector.integrity_events
             (seq, collection_name, event_type, metadata, payload, prev_hash, entry_hash, signature, signer_id,
              created_at, signed_at, system_identifier, timeline)
         VALUES ($1, '', 'audit', '{\"forged\": true}', $2, $3, $4, $5, $6,
                 'epoch'::timestamptz + $7::bigint * interval '1 microsecond',
                 'epoch'::timestamptz + $8::bigint * interval '1 microsecond', $9::text::numeric, $10)",
        &[
            &(entry.seq as i64),
            &entry.payload,
            &entry.prev_hash.to_vec(),
            &entry.entry_hash.to_vec(),
            &entry.signature,
            &entry.signer_id,
            &last_signed,
            &signed_at,
            &context.system_identifier.to_string(),
            &(context.timeline as i32),
        ],
    )
    .unwrap();
    entry.seq as i64
}

/// The exported audit trail, as `psql -Atc "SELECT ruvector_audit_export()"`
/// writes it.
pub fn exported(db: &mut Client) -> String {
    db.query("SELECT ruvector_audit_export()", &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The collection's `ruvector_integrity_status`.
pub fn status(db: &mut Client, name: &str) -> Value {
    json(db, &format!("SELECT ruvector_integrity_status('{name}')"))
}

/// How many samples the collection has taken.
pub fn sample_count(db: &mut Client, name: &str) -> i64 {
    status(db, name)["sample_count"].as_i64().unwrap()
}

/// The collection's witness edges, as text.
pub fn witnesses(db: &mut Client, name: &str) -> String {
    status(db, name)["witness_edges"].to_string()
}

/// The server's clock, seconds since the epoch.
pub fn now_epoch(db: &mut Client) -> f64 {
    db.query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
        .unwrap()
        .get(0)
}

/// Waits until these application names stream from the primary.
pub fn wait_streaming(db: &mut Client, names: &[&str]) {
    wait_for(60, &format!("{names:?} to stream"), || {
        let streaming: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name = ANY($1)",
                &[&names],
            )
            .unwrap()
            .get(0);
        (streaming == names.len() as i64).then_some(())
    });
}
