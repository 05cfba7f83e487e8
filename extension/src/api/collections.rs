//! Registering and unregistering collections: `ruvector_register_collection`,
//! `ruvector_unregister_collection`, and the `sql_drop` event trigger that
//! unregisters a collection whose table was dropped.
//!
//! Every change happens in the caller's transaction: its audit event is
//! appended unsigned (the worker signs it), and shared memory learns of it
//! only when the transaction commits. What a collection may be is the core's
//! to say (`ruvector_integrity::registration`), from the facts read here.

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::audit::Event;
use ruvector_integrity::policy::Policy;
use ruvector_integrity::registration::{self, DISTANCE_METRICS, INDEX_TYPES};
use serde_json::{json, Value};

use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::jsonb::{JsonbArg, SMALL_DOCUMENT};
use crate::store::collections::{Collection, NewCollection};
use crate::{catalog, clock, installation, privileges, shmem, store, xact};

/// The lock a registration takes on the table and each partition:
/// SHARE UPDATE EXCLUSIVE conflicts with ATTACH and DETACH PARTITION and
/// CREATE TABLE ... PARTITION OF (on the parent and the partition), not with
/// reads and writes.
const REGISTRATION_LOCK: pg_sys::LOCKMODE = pg_sys::ShareUpdateExclusiveLock as pg_sys::LOCKMODE;

/// An `audit` event about `collection`, by the caller, stamped now.
fn audit_event(
    id: i32,
    collection: &str,
    previous: Option<&str>,
    new: Option<&str>,
    metadata: &Value,
) -> Event {
    Event::new(
        Some(id),
        collection,
        "audit",
        previous.map(str::to_owned),
        new.map(str::to_owned),
        metadata,
        clock::now(),
    )
}

#[pg_extern(schema = "ruvector", name = "_register_collection")]
fn register_collection(
    name: &str,
    table: pg_sys::Oid,
    column: &str,
    dimensions: Option<i32>,
    distance_metric: &str,
    index_type: &str,
    config: JsonbArg,
) -> JsonB {
    let registered = || -> SqlResult<JsonB> {
        let config = config.small("config", SMALL_DOCUMENT)?;
        registration::check_name(name)?;
        registration::check_choice("distance_metric", distance_metric, &DISTANCE_METRICS)?;
        registration::check_choice("index_type", index_type, &INDEX_TYPES)?;
        if !config.is_object() {
            return Err(SqlError::invalid("config must be a JSON object"));
        }
        // A registration and the DDL that would put the table under a parent or
        // change its partitions (ATTACH, DETACH, CREATE TABLE ... PARTITION OF)
        // take conflicting locks: whichever comes second waits for the first to
        // end, and a registration then sees the table as that DDL left it. Only
        // the caller's own table is locked (ownership is checked first), so nobody
        // queues a lock on someone else's table through here.
        let owned = catalog::exists(table) && privileges::owns(table, privileges::caller());
        if owned {
            catalog::lock(table, REGISTRATION_LOCK);
        }
        // (Again once locked: an ALTER ... OWNER may have committed meanwhile.)
        let owned =
            owned && catalog::exists(table) && privileges::owns(table, privileges::caller());
        let facts = store::collections::table_facts(table, column)?.ok_or_else(|| {
            SqlError::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("relation with OID {} does not exist", u32::from(table)),
            )
        })?;
        facts.check_kind()?;
        if !owned {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!(
                    "must be owner of table {} to register it as a collection",
                    facts.qualified()
                ),
            )
            .hint("Ask the table's owner (or a superuser) to register it."));
        }
        // Seen through the catalog caches, which the lock brought up to date
        // whatever the caller's isolation level: a table that became a partition
        // while this registration waited is refused.
        if catalog::is_partition(table) {
            return Err(registration::partition(&facts.qualified()).into());
        }
        facts.check_column(column)?;
        // The first vector is read as the table's owner, in a restricted
        // context (whatever its reading runs, a type's cast to real[] included,
        // runs with the owner's rights, even when a superuser registers), and
        // is no search.
        let first = if facts.needs_a_vector(dimensions) {
            let qualified = pgrx::spi::quote_qualified_identifier(&facts.schema, &facts.table);
            installation::reading_for_itself(|| {
                installation::as_role(catalog::owner(table), || {
                    store::collections::first_vector(&qualified, column)
                })
            })?
        } else {
            None
        };
        let dimensions = facts.dimensions(column, dimensions, first)?;
        // One collection per table: the relation map sends each relation to one
        // collection's gate. Checked by OID, so a renamed table is the same table.
        if let Some(existing) = store::collections::duplicate(name, table)? {
            let (message, hint) = if existing == name {
                (
                    format!("collection \"{name}\" is already registered"),
                    "Choose another name, or unregister it first.",
                )
            } else {
                (
                    format!(
                        "table {} is already registered as collection \"{existing}\"",
                        facts.qualified()
                    ),
                    "A table holds one collection; unregister the other first.",
                )
            };
            return Err(
                SqlError::new(PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT, message).hint(hint),
            );
        }
        let relations = catalog::partition_tree(table, REGISTRATION_LOCK);
        xact::reserve(1, relations.len())?;

        let new = NewCollection {
            name,
            facts: &facts,
            table,
            column,
            dimensions,
            distance_metric,
            index_type,
            config: &config,
        };
        let id = store::collections::insert(&new, &Policy::default())?;
        let metadata = json!({
            "action": "register",
            "table": facts.qualified(),
            "column": column,
            "dimensions": dimensions,
            "distance_metric": distance_metric,
            "index_type": index_type,
            "by": privileges::caller_name(),
        });
        store::events::append_pending(&audit_event(id, name, None, Some("unknown"), &metadata))?;
        let view = store::collections::find(name)?.view();
        xact::register_at_commit(name, view, relations);
        xact::wake_worker_at_commit();
        Ok(JsonB(json!({
            "id": id,
            "name": name,
            "table": facts.qualified(),
            "column": column,
            "dimensions": dimensions,
            "distance_metric": distance_metric,
            "index_type": index_type,
            "config": config,
            "state": "unknown",
            "policy": "default",
        })))
    };
    registered().or_raise()
}

/// Refuses a caller who may not change how `collection` is gated.
pub fn require_owner(collection: &Collection, what: &str) -> SqlResult<()> {
    privileges::require_owner(
        collection.relid,
        &collection.qualified_table(),
        what,
        &collection.name,
    )
}

#[pg_extern(schema = "ruvector", name = "_unregister_collection")]
fn unregister_collection(name: &str) -> JsonB {
    let collection = store::collections::find(name).or_raise();
    require_owner(&collection, "unregister").or_raise();
    forget(&collection, None).or_raise();
    JsonB(json!({"name": name, "unregistered": true, "events_kept": true}))
}

/// Removes `collection` (its audit events stay) and writes the audited
/// event; `why` says why when it is not an operator's unregistration.
fn forget(collection: &Collection, why: Option<&str>) -> SqlResult<()> {
    store::collections::delete(collection.id)?;
    let metadata = json!({
        "action": "unregister",
        "table": collection.qualified_table(),
        "why": why,
        "by": privileges::caller_name(),
    });
    let event = audit_event(
        collection.id,
        &collection.name,
        Some(collection.state.as_str()),
        None,
        &metadata,
    );
    store::events::append_pending(&event)?;
    xact::forget_at_commit(&collection.name);
    xact::wake_worker_at_commit();
    Ok(())
}

/// Called by the `sql_drop` event trigger with every table a statement
/// dropped: a registered table's collection is unregistered (audited), and
/// dropped partitions leave the relation map.
#[pg_extern(schema = "ruvector", name = "_forget_dropped_relations")]
fn forget_dropped_relations(relids: Vec<pg_sys::Oid>) {
    forget_dropped(&relids).or_raise()
}

fn forget_dropped(relids: &[pg_sys::Oid]) -> SqlResult<()> {
    // Every DROP of any table in the database comes here: one that is none of
    // a collection's relations costs a shared look-up each, and nothing more.
    let shared = shmem::shared()?;
    let mapped: Vec<pg_sys::Oid> = relids
        .iter()
        .copied()
        .filter(|&relid| shared.relation(relid).is_some())
        .collect();
    if mapped.is_empty() && shared.synced() {
        return Ok(());
    }
    for name in store::collections::on_tables(relids)? {
        forget(
            &store::collections::find(&name)?,
            Some("its table was dropped"),
        )?;
    }
    if !mapped.is_empty() {
        xact::remove_relations_at_commit(mapped);
    }
    Ok(())
}
