//! Shards beyond the local primary: the foreign servers holding partitions
//! (probed when their wrapper is postgres_fdw) and, where Citus is installed
//! and the table is distributed, the Citus workers holding its placements.
//!
//! Probes run in parallel threads with a bounded timeout, outside any lock on
//! the collection (only catalogs were read), and each server is probed at most
//! once per worker tick: [`forget_probes`] starts a new tick.
//!
//! The Citus path reads `pg_dist_shard`, `pg_dist_placement` and
//! `pg_dist_node`; Citus is not installed on the machines this is tested on,
//! so that path is untested here (README, "Limits").

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::sources::probe::{self, Probe, Target};
use ruvector_integrity::sources::shards::Shard;
use serde::Deserialize;

use super::partitions::Server;
use crate::collections::CollectionRow;
use crate::errors::SqlResult;

/// The longest a probe of one server may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

thread_local! {
    static PROBES: RefCell<HashMap<Vec<Target>, Probe>> = RefCell::new(HashMap::new());
}

/// Forgets the probes of the last tick (or of the last SQL call).
pub fn forget_probes() {
    PROBES.with(|p| p.borrow_mut().clear());
}

#[derive(Deserialize)]
struct CitusWorker {
    host: String,
    port: i32,
}

/// Citus workers holding placements of `collection`'s table, when Citus is
/// installed (untested here: see the module's note).
fn citus_workers(collection: &CollectionRow) -> SqlResult<Vec<CitusWorker>> {
    let installed = Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus')",
    )?
    .unwrap_or(false);
    if !installed {
        return Ok(Vec::new());
    }
    let workers = Spi::get_one_with_args::<JsonB>(
        "SELECT coalesce(jsonb_agg(DISTINCT jsonb_build_object('host', n.nodename, 'port', n.nodeport)), '[]')
         FROM pg_catalog.pg_dist_shard s
         JOIN pg_catalog.pg_dist_placement p ON p.shardid = s.shardid
         JOIN pg_catalog.pg_dist_node n ON n.groupid = p.groupid
         WHERE s.logicalrelid = $1::pg_catalog.oid::pg_catalog.regclass AND n.isactive AND n.noderole = 'primary'",
        &[collection.relid().into()],
    )?;
    Ok(workers.map_or(Ok(Vec::new()), |w| serde_json::from_value(w.0))?)
}

/// Where libpq looks when no host is given: the first Unix socket directory
/// of this server (the same libpq defaults apply to postgres_fdw on it).
fn default_socket_dir() -> SqlResult<String> {
    let dirs = Spi::get_one::<String>("SELECT current_setting('unix_socket_directories')")?
        .unwrap_or_default();
    Ok(dirs
        .split(',')
        .map(str::trim)
        .find(|d| !d.is_empty())
        .unwrap_or("/tmp")
        .to_owned())
}

/// The shards holding `collection`'s partitions besides the primary, probed.
pub fn read(collection: &CollectionRow, servers: &[Server]) -> SqlResult<Vec<Shard>> {
    let mut shards = Vec::new();
    let mut targets: Vec<Option<Result<Vec<Target>, String>>> = Vec::new();
    let socket_dir = if servers.is_empty() {
        String::new()
    } else {
        default_socket_dir()?
    };
    for s in servers {
        shards.push(Shard {
            name: s.name.clone(),
            kind: s.fdw.clone(),
            probe: None,
        });
        targets.push((s.fdw == "postgres_fdw").then(|| {
            probe::targets(
                s.option("host"),
                s.option("hostaddr"),
                s.option("port"),
                &socket_dir,
            )
        }));
    }
    for w in citus_workers(collection)? {
        shards.push(Shard {
            name: format!("{}:{}", w.host, w.port),
            kind: "citus".into(),
            probe: None,
        });
        targets.push(Some(Ok(vec![Target {
            host: w.host,
            port: w.port as u16,
        }])));
    }

    // Probe what this tick has not probed yet, all at once.
    let unprobed: Vec<Vec<Target>> = PROBES.with(|cache| {
        let cache = cache.borrow();
        let mut unprobed: Vec<Vec<Target>> = Vec::new();
        for t in targets.iter().flatten().flatten() {
            if !cache.contains_key(t) && !unprobed.contains(t) {
                unprobed.push(t.clone());
            }
        }
        unprobed
    });
    let found = probe::probe_all(unprobed.clone(), PROBE_TIMEOUT);
    PROBES.with(|cache| cache.borrow_mut().extend(unprobed.into_iter().zip(found)));

    for (shard, targets) in shards.iter_mut().zip(targets) {
        shard.probe = match targets {
            None => None,
            Some(Ok(t)) => PROBES.with(|cache| cache.borrow().get(&t).cloned()),
            Some(Err(e)) => Some(Probe {
                reachable: false,
                latency_ms: 0.0,
                address: String::new(),
                error: Some(format!("cannot tell where the server is: {e}")),
            }),
        };
    }
    Ok(shards)
}
