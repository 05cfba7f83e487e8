//! Bringing shared memory in line with the tables: the collections' slots
//! and the relation map. The worker does it on every tick; a backend does it
//! itself when the worker has not done it since the server started (the
//! worker is late, or stalled), so that no relation of a collection goes
//! ungated in the meantime.

use std::cell::Cell;

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use crate::collections::{self, CollectionRow};
use crate::errors::{OrRaise, SqlResult};
use crate::shmem::{RelationFlags, Shared};
use crate::{gucs, installation};

const COLLECTION_RELATIONS: &str = include_str!("../sql/queries/collection_relations.sql");

/// Every relation of every collection, by collection name.
pub type CollectionRelations = Vec<(String, Vec<(pg_sys::Oid, RelationFlags)>)>;

fn relations() -> SqlResult<CollectionRelations> {
    #[derive(serde::Deserialize)]
    struct Row {
        collection: String,
        relid: i64,
        root: bool,
    }
    let rows: Vec<Row> = serde_json::from_value(
        Spi::get_one::<JsonB>(COLLECTION_RELATIONS)?.map_or(Value::Array(vec![]), |j| j.0),
    )?;
    let mut sets: CollectionRelations = Vec::new();
    for row in rows {
        let relation = (
            pg_sys::Oid::from(row.relid as u32),
            RelationFlags { root: row.root },
        );
        match sets.iter_mut().find(|(name, _)| *name == row.collection) {
            Some((_, set)) => set.push(relation),
            None => sets.push((row.collection, vec![relation])),
        }
    }
    Ok(sets)
}

/// What a refresh could not fit in shared memory.
#[derive(Default)]
pub struct Overflow {
    pub collections: Vec<String>,
    pub relations: bool,
}

/// Reads the collections and their relations and brings shared memory in
/// line with them; returns the collections, and what did not fit. Needs a
/// transaction; runs as whoever calls it (the worker is a superuser; a
/// backend goes through [`ensure`]).
pub fn refresh(shared: Shared) -> SqlResult<(Vec<CollectionRow>, Overflow)> {
    let seen = shared.versions();
    let seen_relations = shared.relations_version();
    let rows = collections::load(None)?;
    let relations = relations()?;
    let views = rows
        .iter()
        .filter_map(|r| r.view().ok().map(|v| (r.name.clone(), v)))
        .collect();
    let overflow = Overflow {
        collections: shared.sync(views, &seen),
        relations: !shared.sync_relations(&relations, seen_relations),
    };
    shared.mark_synced();
    Ok((rows, overflow))
}

thread_local! {
    /// Whether this backend's database is the one the worker watches (the
    /// only one that can hold collections), once known.
    static WATCHED: Cell<Option<bool>> = const { Cell::new(None) };
    static REFRESHING: Cell<bool> = const { Cell::new(false) };
}

fn watched_database() -> bool {
    if let Some(known) = WATCHED.with(Cell::get) {
        return known;
    }
    let name = unsafe { pg_sys::get_database_name(pg_sys::MyDatabaseId) };
    let here = !name.is_null()
        && unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy()
            == gucs::integrity_database();
    WATCHED.with(|w| w.set(Some(here)));
    here
}

/// Fills shared memory from the tables unless that was done since the server
/// started; true when it did. Only in the watched database with the extension
/// installed (and not while it is being created, nor on a standby, where
/// nothing is written and no worker keeps states current), as the extension's
/// owner.
/// A failure (a cancel, a timeout) fails the caller's statement: a relation
/// must not pass for ungated because the map could not be read.
pub fn ensure(shared: Shared) -> bool {
    if shared.synced()
        || REFRESHING.with(Cell::get)
        || unsafe {
            pg_sys::creating_extension
                || !pg_sys::IsTransactionState()
                || pg_sys::RecoveryInProgress()
        }
        || !watched_database()
    {
        return false;
    }
    let Some(installed) = installation::installed() else {
        return false;
    };
    REFRESHING.with(|r| r.set(true));
    let refreshed = PgTryBuilder::new(|| installation::as_owner(installed, || refresh(shared)))
        .finally(|| REFRESHING.with(|r| r.set(false)))
        .execute();
    refreshed.or_raise();
    true
}
