//! Maintenance dependencies of the primary: autovacuum, and WAL archiving where
//! it is configured (the backup path), each joined to the primary by a
//! `dependency` edge of capacity 1.
//!
//! A dependency that is off or failing scores [`IMPAIRED`]: the collection keeps
//! serving, but its upkeep or its backups are at risk, which is stress, never
//! critical. The archiver is failing when its last failure is newer than its
//! last success.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Builder, Why};
use crate::graph::{EdgeKind, NodeKind};
use crate::Error;

/// Health of a dependency that is off or failing.
pub const IMPAIRED: f64 = 0.5;

/// The settings and `pg_stat_archiver` counters the dependencies are judged by.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Maintenance {
    pub autovacuum: bool,
    pub track_counts: bool,
    pub archive_mode: String,
    pub archived_count: i64,
    pub failed_count: i64,
    /// µs since the epoch.
    pub last_archived: Option<i64>,
    pub last_failed: Option<i64>,
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance {
            autovacuum: true,
            track_counts: true,
            archive_mode: "off".into(),
            archived_count: 0,
            failed_count: 0,
            last_archived: None,
            last_failed: None,
        }
    }
}

pub(crate) fn add(b: &mut Builder, seen: &Maintenance, primary: usize) -> Result<(), Error> {
    let works = seen.autovacuum && seen.track_counts;
    let autovacuum = b.node(
        NodeKind::MaintenanceDep,
        "autovacuum",
        if works { 1.0 } else { IMPAIRED },
        json!({"type": "vacuum", "autovacuum": seen.autovacuum, "track_counts": seen.track_counts}),
        Why {
            function: "autovacuum",
            measured: json!({"autovacuum": seen.autovacuum, "track_counts": seen.track_counts}),
            healthy_while: format!("autovacuum and track_counts are on ({IMPAIRED} otherwise)"),
        },
    )?;
    b.built
        .graph
        .add_edge(primary, autovacuum, EdgeKind::Dependency, 1.0, 0.0)?;
    if seen.archive_mode != "off" {
        let failing = match (seen.last_failed, seen.last_archived) {
            (Some(failed), Some(archived)) => failed > archived,
            (Some(_), None) => true,
            _ => false,
        };
        let archiving = b.node(
            NodeKind::MaintenanceDep,
            "wal_archiving",
            if failing { IMPAIRED } else { 1.0 },
            json!({
                "type": "backup", "archive_mode": seen.archive_mode, "failing": failing,
                "archived_count": seen.archived_count, "failed_count": seen.failed_count,
            }),
            Why {
                function: "wal_archiving",
                measured: json!({"failing": failing, "last_archived_unix_us": seen.last_archived,
                                 "last_failed_unix_us": seen.last_failed}),
                healthy_while: format!(
                    "the last archive attempt succeeded ({IMPAIRED} while the last failure is newer than the last success)"
                ),
            },
        )?;
        b.built
            .graph
            .add_edge(primary, archiving, EdgeKind::Dependency, 1.0, 0.0)?;
    }
    Ok(())
}
