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

use pgrx::pg_sys;
use ruvector_integrity::sources::probe::{self, Probe, Target};
use ruvector_integrity::sources::shards::Shard;

use crate::errors::SqlResult;
use crate::store::{self, sources::Server};

/// The longest a probe of one server may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

thread_local! {
    static PROBES: RefCell<HashMap<Vec<Target>, Probe>> = RefCell::new(HashMap::new());
}

/// Forgets the probes of the last tick (or of the last SQL call).
pub fn forget_probes() {
    PROBES.with(|p| p.borrow_mut().clear());
}

/// The shards holding the partitions of table `relid` besides the primary,
/// probed.
pub fn read(relid: pg_sys::Oid, servers: &[Server]) -> SqlResult<Vec<Shard>> {
    let mut shards = Vec::new();
    let mut targets: Vec<Option<Result<Vec<Target>, String>>> = Vec::new();
    let socket_dir = if servers.is_empty() {
        String::new()
    } else {
        store::sources::socket_directory()?
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
    for w in store::sources::citus_workers(relid)? {
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
