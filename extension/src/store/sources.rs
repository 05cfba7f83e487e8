//! What a collection's contracted graph is built from, as the catalog and the
//! statistics views tell it: partitions and their foreign servers, standbys,
//! maintenance, Citus workers; and every relation of every collection, for
//! shared memory's relation map.

use pgrx::prelude::*;
use ruvector_integrity::sources::maintenance::Maintenance;
use ruvector_integrity::sources::partitions::Partition;
use ruvector_integrity::sources::replication::Replication;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::document;
use crate::errors::SqlResult;

/// A table's leaf partitions, and the foreign servers some of them live on.
#[derive(Deserialize)]
pub struct Partitions {
    /// Whether the table exists.
    pub exists: bool,
    pub partitions: Vec<Partition>,
    pub servers: Vec<Server>,
}

/// A foreign server holding partitions, with its wrapper and options.
#[derive(Deserialize)]
pub struct Server {
    pub name: String,
    pub fdw: String,
    pub options: Option<Map<String, Value>>,
}

impl Server {
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.as_ref()?.get(name)?.as_str()
    }
}

/// The leaf partitions of table `relid` (the table itself when it is not
/// partitioned), read without locking them.
pub fn partitions(relid: pg_sys::Oid) -> SqlResult<Partitions> {
    document(super::PARTITIONS, &[relid.into()])
}

/// What replication looks like from here, for these settings.
pub fn replication(
    expected_standbys: &str,
    lag_budget_bytes: i64,
    startup_grace_secs: f64,
) -> SqlResult<Replication> {
    let timeline = crate::server::context().timeline as i64;
    document(
        super::REPLICATION,
        &[
            expected_standbys.into(),
            lag_budget_bytes.into(),
            startup_grace_secs.into(),
            timeline.into(),
        ],
    )
}

/// The autovacuum settings and the WAL archiver's statistics.
pub fn maintenance() -> SqlResult<Maintenance> {
    document(super::MAINTENANCE, &[])
}

/// A Citus worker.
#[derive(Deserialize)]
pub struct CitusWorker {
    pub host: String,
    pub port: i32,
}

/// The Citus workers holding placements of table `relid`, when Citus is
/// installed (untested here: Citus is not on these machines).
pub fn citus_workers(relid: pg_sys::Oid) -> SqlResult<Vec<CitusWorker>> {
    if !Spi::get_one::<bool>(super::CITUS_INSTALLED)?.unwrap_or(false) {
        return Ok(Vec::new());
    }
    document(super::CITUS_WORKERS, &[relid.into()])
}

/// Where libpq looks when no host is given: the first Unix socket directory
/// of this server (the same libpq defaults apply to postgres_fdw on it).
pub fn socket_directory() -> SqlResult<String> {
    let dirs = Spi::get_one::<String>(super::SOCKET_DIRECTORIES)?.unwrap_or_default();
    Ok(dirs
        .split(',')
        .map(str::trim)
        .find(|d| !d.is_empty())
        .unwrap_or("/tmp")
        .to_owned())
}

/// Every relation of every collection, by collection name, read without
/// locking them.
pub fn collection_relations() -> SqlResult<Vec<(String, Vec<pg_sys::Oid>)>> {
    #[derive(Deserialize)]
    struct Row {
        collection: String,
        relid: i64,
    }
    let rows: Vec<Row> = document(super::COLLECTION_RELATIONS, &[])?;
    let mut sets: Vec<(String, Vec<pg_sys::Oid>)> = Vec::new();
    for row in rows {
        let member = pg_sys::Oid::from(row.relid as u32);
        match sets.iter_mut().find(|(name, _)| *name == row.collection) {
            Some((_, set)) => set.push(member),
            None => sets.push((row.collection, vec![member])),
        }
    }
    Ok(sets)
}
