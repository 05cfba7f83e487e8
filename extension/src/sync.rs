//! Bringing shared memory in line with the tables: the collections' slots
//! and the relation map. The worker does it on every tick; a backend does it
//! itself when the worker has not done it since the server started (the
//! worker is late, or stalled), so that no relation of a collection goes
//! ungated in the meantime.

use std::cell::Cell;

use pgrx::prelude::*;

use crate::errors::{OrRaise, SqlResult};
use crate::shmem::Shared;
use crate::store::collections::Collection;
use crate::{installation, store};

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
pub fn refresh(shared: Shared) -> SqlResult<(Vec<Collection>, Overflow)> {
    let seen = shared.versions();
    let seen_relations = shared.relations_version();
    let collections = store::collections::load(None)?;
    let relations = store::sources::collection_relations()?;
    let views = collections
        .iter()
        .map(|c| (c.name.clone(), c.view()))
        .collect();
    let overflow = Overflow {
        collections: shared.sync(views, &seen),
        relations: !shared.sync_relations(&relations, seen_relations),
    };
    shared.mark_synced();
    Ok((collections, overflow))
}

thread_local! {
    static REFRESHING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this backend may fill shared memory now: in a transaction, not
/// while the extension is being created, nor on a standby (where nothing is
/// written and no worker keeps states current).
fn may_refresh() -> bool {
    // SAFETY: reads the backend's transaction and recovery state.
    unsafe {
        !pg_sys::creating_extension && pg_sys::IsTransactionState() && !pg_sys::RecoveryInProgress()
    }
}

/// Fills shared memory from the tables unless that was done since the server
/// started; true when it did. Only where the extension is installed, as the
/// extension's owner.
/// A failure (a cancel, a timeout) fails the caller's statement: a relation
/// must not pass for ungated because the map could not be read.
pub fn ensure(shared: Shared) -> bool {
    if shared.synced() || REFRESHING.with(Cell::get) || !may_refresh() {
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
