//! Metrics as a user scrapes them: the real prometheus-postgres-exporter
//! (Debian's package, installed by scripts/setup) with ruvector's queries file
//! (monitoring/ruvector-queries.yaml), on loopback, over HTTP.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use ruvector_tests::*;

/// The running exporter, stopped when dropped.
struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `GET /metrics` answers on `port`, if anything listens.
fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The value of series `name` whose labels include each of `labels`.
fn value(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn the_exporter_serves_every_documented_series() {
    let (cluster, mut db) = cluster_with_docs("metrics", &[]);
    db.batch_execute("CREATE ROLE exporter LOGIN IN ROLE ruvector_reader")
        .unwrap();
    pin(&mut db, "stress");
    for _ in 0..3 {
        db.batch_execute("SELECT ruvector_integrity_allowed('docs', 'search')")
            .unwrap();
    }
    wait_signed(&mut db);
    // (Waiting for a state asks the gate too: the count is what the view says.)
    let searches: i64 = db
        .query_one(
            "SELECT count FROM ruvector.integrity_gate_stats
             WHERE collection = 'docs' AND operation = 'search' AND decision = 'allowed'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(searches >= 3);

    let port = free_port();
    let queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring/ruvector-queries.yaml");
    let _exporter = Exporter(
        Command::new("prometheus-postgres-exporter")
            .args([
                format!("--web.listen-address=127.0.0.1:{port}"),
                format!("--extend.query-path={}", queries.display()),
                "--disable-default-metrics".into(),
                "--disable-settings-metrics".into(),
                "--no-collector.database".into(),
                "--no-collector.bgwriter".into(),
            ])
            .env(
                "DATA_SOURCE_NAME",
                format!(
                    "host=127.0.0.1 port={} user=exporter dbname={DATABASE} sslmode=disable",
                    cluster.port
                ),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-postgres-exporter (Debian package, installed by scripts/setup)"),
    );
    let metrics = wait_for(30, "the exporter to serve ruvector's series", || {
        scrape(port).filter(|m| m.contains("\nruvector_audit_head_seq"))
    });
    let docs = r#"collection="docs""#;
    assert_eq!(
        value(
            &metrics,
            "ruvector_collection_state",
            &[docs, r#"database="ruvector_test""#]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, "ruvector_collection_sampled_state", &[docs]),
        Some(0.0)
    );
    assert_eq!(
        value(&metrics, "ruvector_collection_lambda_norm", &[docs]),
        Some(1.0)
    );
    assert_eq!(
        value(&metrics, "ruvector_collection_overridden", &[docs]),
        Some(1.0)
    );
    assert_eq!(
        value(&metrics, "ruvector_collection_enforced", &[docs]),
        Some(1.0)
    );
    assert!(value(&metrics, "ruvector_collection_sample_count", &[docs]) >= Some(1.0));
    assert_eq!(
        value(
            &metrics,
            "ruvector_gate_decisions_total",
            &[docs, r#"operation="search""#, r#"decision="allowed""#]
        ),
        Some(searches as f64)
    );
    let head = value(&metrics, "ruvector_audit_head_seq", &[]).unwrap();
    let signed: i64 = db
        .query_one("SELECT max(seq) FROM ruvector.integrity_events", &[])
        .unwrap()
        .get(0);
    assert!(head >= 1.0 && head <= signed as f64, "{head} {signed}");
    assert_eq!(
        value(&metrics, "ruvector_audit_pending_events", &[]),
        Some(0.0)
    );

    // Every series docs/metrics.md names is served, and every one served is
    // documented.
    let documented =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md"))
            .unwrap();
    let documented: BTreeSet<&str> = documented
        .lines()
        .filter_map(|l| l.strip_prefix("| `ruvector_"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let served: BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("ruvector_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    assert_eq!(documented, served, "{metrics}");
}
