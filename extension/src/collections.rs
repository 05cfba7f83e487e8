//! Registered collections: registration and unregistration, policies and
//! operator overrides, and loading a collection's row with its policy in force.
//!
//! Every change here happens in the caller's transaction: its audit event is
//! appended unsigned (the worker signs it), and shared memory learns of it only
//! when the transaction commits.

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::hysteresis::{Controller, State};
use ruvector_integrity::policy::Policy;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::errors::{Optional, OrRaise, SqlError, SqlResult};
use crate::jsonb::{JsonbArg, SMALL_DOCUMENT};
use crate::shmem::{self, CollectionView, RelationFlags, NAME_MAX};
use crate::{audit, clock, enforce, gucs, installation, xact};

const COLLECTIONS: &str = include_str!("../sql/queries/collections.sql");
const TABLE_INFO: &str = include_str!("../sql/queries/table_info.sql");
const UPSERT_POLICY: &str = include_str!("../sql/queries/upsert_policy.sql");

/// A collection's row, its state row and its policy in force.
#[derive(Debug, Clone, Deserialize)]
pub struct CollectionRow {
    pub id: i32,
    pub name: String,
    pub relid: i64,
    pub schema: String,
    pub table: String,
    pub column: String,
    pub dimensions: i32,
    pub distance_metric: String,
    /// The table's owner (`None` once the table is gone).
    pub owner: Option<i64>,
    pub config: Value,
    pub state: String,
    pub lambda_cut: Option<f64>,
    pub lambda_norm: Option<f64>,
    /// Unix µs.
    pub last_sample: Option<i64>,
    pub sample_count: i64,
    pub controller: Value,
    pub override_state: Option<String>,
    /// Unix µs.
    pub override_until: Option<i64>,
    pub policy_name: Option<String>,
    pub policy: Value,
}

impl CollectionRow {
    /// The policy in force; the default when every policy is disabled.
    pub fn policy(&self) -> SqlResult<Policy> {
        match self.policy_name {
            Some(_) => Policy::from_document(&self.policy).map_err(SqlError::from),
            None => Ok(Policy::default()),
        }
    }

    /// The hysteresis controller as stored, or a fresh one.
    pub fn controller(&self) -> Controller {
        serde_json::from_value(self.controller.clone()).unwrap_or_else(|_| Controller {
            state: State::parse(&self.state).unwrap_or(State::Unknown),
            ..Controller::default()
        })
    }

    pub fn relid(&self) -> pg_sys::Oid {
        pg_sys::Oid::from(self.relid as u32)
    }

    /// What shared memory should hold for this collection.
    pub fn view(&self) -> SqlResult<CollectionView> {
        let policy = self.policy()?;
        Ok(CollectionView {
            collection_id: self.id,
            relid: self.relid(),
            state: State::parse(&self.state).unwrap_or(State::Unknown),
            override_state: self.override_state.as_deref().and_then(State::parse),
            override_until: self.override_until.map_or(0, clock::unix_to_pg),
            last_sample_at: self.last_sample.map_or(0, clock::unix_to_pg),
            lambda_cut: self.lambda_cut.unwrap_or(f64::NAN),
            lambda_norm: self.lambda_norm.unwrap_or(f64::NAN),
            policy: policy.compile(),
        })
    }
}

/// Every registered collection, or the one named `name`.
pub fn load(name: Option<&str>) -> SqlResult<Vec<CollectionRow>> {
    let rows = Spi::get_one_with_args::<JsonB>(COLLECTIONS, &[name.into()])?
        .ok_or_else(|| SqlError::internal("the collections query returned nothing"))?;
    Ok(serde_json::from_value(rows.0)?)
}

/// The collection named `name`, or `42704 undefined_object`.
pub fn find(name: &str) -> SqlResult<CollectionRow> {
    load(Some(name))?
        .into_iter()
        .next()
        .ok_or_else(|| SqlError::unknown_collection(name))
}

/// The role that called into a SECURITY DEFINER wrapper.
pub fn caller() -> String {
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), true);
        if name.is_null() {
            "unknown".to_owned()
        } else {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        }
    }
}

fn check_name(name: &str) -> SqlResult<()> {
    let valid_chars = name.bytes().enumerate().all(|(i, b)| {
        b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && matches!(b, b'.' | b':' | b'-'))
    });
    if name.is_empty() || name.len() > NAME_MAX || !valid_chars {
        return Err(SqlError::invalid(format!("invalid collection name \"{name}\""))
            .detail("A name has 1 to 63 ASCII letters, digits and _ . : - characters, and starts with a letter, digit or _."));
    }
    Ok(())
}

fn one_of(what: &str, value: &str, valid: &[&str]) -> SqlResult<()> {
    if valid.contains(&value) {
        Ok(())
    } else {
        Err(SqlError::invalid(format!("invalid {what} \"{value}\""))
            .hint(format!("Valid values: {}.", valid.join(", "))))
    }
}

#[derive(Deserialize)]
struct TableInfo {
    schema: String,
    table: String,
    relkind: String,
    persistence: String,
    is_partition: bool,
    inherits: bool,
    inherited: bool,
    column_type_oid: Option<i64>,
    column_type: Option<String>,
    column_typmod: Option<i32>,
    pgvector: bool,
    database: String,
}

impl TableInfo {
    fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// Refuses what cannot be a collection's table: views, materialized views,
    /// foreign tables (their rows live elsewhere: a foreign table can be a
    /// partition), and temporary tables (they vanish with their session).
    fn check_kind(&self) -> SqlResult<()> {
        let refused = match self.relkind.as_str() {
            "r" | "p" => None,
            "v" => Some("a view"),
            "m" => Some("a materialized view"),
            "f" => Some("a foreign table"),
            _ => Some("not a table"),
        };
        if let Some(what) = refused {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("\"{}\" is {what}: a collection's table must be a table or a partitioned table", self.qualified()),
            )
            .hint("A foreign table can hold a collection's rows as a partition of a partitioned table."));
        }
        if self.persistence == "t" {
            return Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("\"{}\" is a temporary table: it cannot be a collection", self.qualified()),
            )
            .detail("A temporary table disappears with the session that made it, and no other session or the worker can see it."));
        }
        // The gate knows a collection by its table and the partitions under
        // it: rows that reach the table through a parent, or live in an
        // inheritance child, would pass it by.
        let family = if self.is_partition {
            Some("is a partition: register the partitioned table at the top of its tree")
        } else if self.inherits {
            Some("inherits from another table, whose scans and writes would reach it past the gate")
        } else if self.inherited {
            Some("has inheritance children, whose rows would be the collection's past the gate")
        } else {
            None
        };
        match family {
            Some(why) => Err(SqlError::new(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("\"{}\" {why}", self.qualified()),
            )
            .hint("A collection's table is a plain table or the root of a partitioned table.")),
            None => Ok(()),
        }
    }
}

/// Refuses a caller who does not own `table`: registering a table puts
/// triggers on it and lets its collection's state refuse its owner's work.
fn check_owner(table: pg_sys::Oid, info: &TableInfo) -> SqlResult<()> {
    let owns = unsafe { pg_sys::pg_class_ownercheck(table, pg_sys::GetOuterUserId()) };
    if owns {
        return Ok(());
    }
    Err(SqlError::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!(
            "must be owner of table {} to register it as a collection",
            info.qualified()
        ),
    )
    .hint("Ask the table's owner (or a superuser) to register it."))
}

/// Refuses a caller who may not change how `row`'s collection is gated:
/// unregistering it, its policy and its overrides are its table's owner's
/// (or a superuser's), as registering it was.
pub fn check_may_change(row: &CollectionRow, what: &str) -> SqlResult<()> {
    let table = row.relid();
    let exists = unsafe {
        pg_sys::SearchSysCacheExists(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            pg_sys::Datum::from(table),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        )
    };
    // (A collection whose table is gone guards nothing any more.)
    if !exists || unsafe { pg_sys::pg_class_ownercheck(table, pg_sys::GetOuterUserId()) } {
        return Ok(());
    }
    Err(SqlError::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!(
            "must be owner of table {}.{} to {what} collection \"{}\"",
            row.schema, row.table, row.name
        ),
    )
    .hint("Ask the table's owner (or a superuser)."))
}

/// The number of dimensions of the first non-null vector of a `real[]`
/// column, read as the caller (it is their table: whatever its reading runs,
/// runs with their rights). Vectors are one-dimensional arrays.
fn dimensions_from_data(info: &TableInfo, column: &str) -> SqlResult<Option<i32>> {
    let query = format!(
        "SELECT pg_catalog.array_length({col}, 1), pg_catalog.array_ndims({col}) FROM {tbl} WHERE {col} IS NOT NULL LIMIT 1",
        col = pgrx::spi::quote_identifier(column),
        tbl = pgrx::spi::quote_qualified_identifier(&info.schema, &info.table),
    );
    let first = crate::enforce::internal(|| {
        installation::as_caller(|| Spi::get_two::<i32, i32>(&query).optional())
    })?;
    match first {
        Some((length, Some(1))) => Ok(length),
        Some((_, ndims)) => Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!(
                "column \"{column}\" holds {}-dimensional arrays, not vectors",
                ndims.unwrap_or(0)
            ),
        )
        .hint("A vector is a one-dimensional real[].")),
        None => Ok(None),
    }
}

/// `pg_type` OID of `real[]`.
const FLOAT4_ARRAY: i64 = 1021;

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
    let config = config.small("config", SMALL_DOCUMENT).or_raise();
    register(
        name,
        table,
        column,
        dimensions,
        distance_metric,
        index_type,
        config,
    )
    .or_raise()
}

fn register(
    name: &str,
    table: pg_sys::Oid,
    column: &str,
    dimensions: Option<i32>,
    distance_metric: &str,
    index_type: &str,
    config: Value,
) -> SqlResult<JsonB> {
    check_name(name)?;
    one_of(
        "distance_metric",
        distance_metric,
        &["l2", "cosine", "ip", "l1"],
    )?;
    one_of("index_type", index_type, &["hnsw", "ivfflat", "flat"])?;
    if !config.is_object() {
        return Err(SqlError::invalid("config must be a JSON object"));
    }
    // A registration and the DDL that would put the table under a parent or
    // change its partitions (ATTACH, DETACH, CREATE TABLE ... PARTITION OF)
    // take conflicting locks: whichever comes second waits for the first to
    // end, and a registration then sees the table as that DDL left it. Only
    // the caller's own table is locked (ownership is checked first), so nobody
    // queues a lock on someone else's table through here.
    let owned = unsafe { pg_sys::pg_class_ownercheck(table, pg_sys::GetOuterUserId()) };
    if owned {
        unsafe { pg_sys::LockRelationOid(table, REGISTRATION_LOCK) };
    }
    let info: TableInfo =
        Spi::get_one_with_args::<JsonB>(TABLE_INFO, &[table.into(), column.into()])
            .optional()?
            .map(|j| serde_json::from_value(j.0))
            .transpose()?
            .ok_or_else(|| {
                SqlError::new(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                    format!("relation with OID {} does not exist", u32::from(table)),
                )
            })?;
    let home = gucs::integrity_database();
    if info.database != home {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("collections can only be registered in database \"{home}\", not \"{}\"", info.database),
        )
        .hint("The integrity worker watches the database named by ruvector.integrity_database; set it and restart the server to watch another."));
    }
    info.check_kind()?;
    check_owner(table, &info)?;
    // Seen through the catalog caches, which the lock brought up to date
    // whatever the caller's isolation level: a table that became a partition
    // while this registration waited is refused.
    if unsafe { pg_sys::get_rel_relispartition(table) } {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!(
                "\"{}\" is a partition: register the partitioned table at the top of its tree",
                info.qualified()
            ),
        ));
    }
    let column_type = info.column_type.clone().ok_or_else(|| {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!(
                "column \"{column}\" of \"{}\" does not exist",
                info.qualified()
            ),
        )
    })?;
    // By the type's OID (and pgvector's by its extension): a type of the same
    // name in another schema is not a vector.
    let is_real_array = info.column_type_oid == Some(FLOAT4_ARRAY);
    if !is_real_array && !info.pgvector {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("column \"{column}\" is of type {column_type}, not a vector"),
        )
        .hint("A collection's column is real[] (or pgvector's vector where it is installed)."));
    }
    let dimensions = match dimensions {
        Some(d) => Some(d),
        None if info.pgvector => info.column_typmod.filter(|&m| m > 0),
        None => dimensions_from_data(&info, column)?,
    }
    .ok_or_else(|| {
        SqlError::invalid(
            "dimensions is required: the column has no type modifier and no vectors yet",
        )
        .hint("Pass dimensions => N.")
    })?;
    if !(1..=16_000).contains(&dimensions) {
        return Err(SqlError::invalid(format!(
            "dimensions must be between 1 and 16000, got {dimensions}"
        )));
    }
    // One collection per table: the relation map sends each relation to one
    // collection's gate. Checked by OID, so a renamed table is the same table.
    let duplicate = Spi::get_one_with_args::<String>(
        "SELECT c.name FROM ruvector.collections c
         WHERE c.name = $1 OR c.table_oid = $2::pg_catalog.oid::pg_catalog.regclass
         ORDER BY c.name = $1 DESC LIMIT 1",
        &[name.into(), table.into()],
    )
    .optional()?;
    if let Some(existing) = duplicate {
        let (message, hint) = if existing == name {
            (
                format!("collection \"{name}\" is already registered"),
                "Choose another name, or unregister it first.",
            )
        } else {
            (
                format!(
                    "table {} is already registered as collection \"{existing}\"",
                    info.qualified()
                ),
                "A table holds one collection; unregister the other first.",
            )
        };
        return Err(SqlError::new(PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT, message).hint(hint));
    }
    let relations = relations_of(table, REGISTRATION_LOCK);
    xact::reserve(1, relations.len())?;

    let id = Spi::get_one_with_args::<i32>(
        "INSERT INTO ruvector.collections
             (name, table_schema, table_name, column_name, table_oid, dimensions, distance_metric, index_type, config)
         VALUES ($1, $2, $3, $4, $5::pg_catalog.oid::pg_catalog.regclass, $6, $7, $8, $9) RETURNING id",
        &[
            name.into(),
            info.schema.as_str().into(),
            info.table.as_str().into(),
            column.into(),
            table.into(),
            dimensions.into(),
            distance_metric.into(),
            index_type.into(),
            JsonB(config.clone()).into(),
        ],
    )?
    .ok_or_else(|| SqlError::internal("INSERT returned no id"))?;
    Spi::run_with_args(
        "INSERT INTO ruvector.integrity_state (collection_id) VALUES ($1)",
        &[id.into()],
    )?;
    let policy = Policy::default();
    Spi::run_with_args(
        UPSERT_POLICY,
        &[
            id.into(),
            "default".into(),
            JsonB(serde_json::to_value(&policy)?).into(),
        ],
    )?;
    audit::append_pending(
        Some(id),
        name,
        "audit",
        None,
        Some("unknown"),
        json!({
            "action": "register",
            "table": info.qualified(),
            "column": column,
            "dimensions": dimensions,
            "distance_metric": distance_metric,
            "index_type": index_type,
            "by": caller(),
        }),
    )?;
    let view = find(name)?.view()?;
    xact::register_at_commit(name, view, relations);
    xact::wake_worker_at_commit();
    Ok(JsonB(json!({
        "id": id,
        "name": name,
        "table": info.qualified(),
        "column": column,
        "dimensions": dimensions,
        "distance_metric": distance_metric,
        "index_type": index_type,
        "config": config,
        "state": "unknown",
        "policy": "default",
    })))
}

#[pg_extern(schema = "ruvector", name = "_unregister_collection")]
fn unregister_collection(name: &str) -> JsonB {
    unregister(name).or_raise()
}

fn unregister(name: &str) -> SqlResult<JsonB> {
    let row = find(name)?;
    check_may_change(&row, "unregister")?;
    forget(&row, None)?;
    Ok(JsonB(
        json!({"name": name, "unregistered": true, "events_kept": true}),
    ))
}

/// Removes `row`'s collection (its audit events stay) and writes the audited
/// event; `why` says why when it is not an operator's unregistration.
fn forget(row: &CollectionRow, why: Option<&str>) -> SqlResult<()> {
    Spi::run_with_args(
        "DELETE FROM ruvector.collections WHERE id = $1",
        &[row.id.into()],
    )?;
    audit::append_pending(
        Some(row.id),
        &row.name,
        "audit",
        Some(&row.state),
        None,
        json!({"action": "unregister", "table": format!("{}.{}", row.schema, row.table), "why": why, "by": caller()}),
    )?;
    xact::forget_at_commit(&row.name);
    xact::wake_worker_at_commit();
    Ok(())
}

/// The lock a registration takes on the table and each partition:
/// SHARE UPDATE EXCLUSIVE conflicts with ATTACH and DETACH PARTITION and
/// CREATE TABLE ... PARTITION OF (on the parent and the partition), not with
/// reads and writes.
const REGISTRATION_LOCK: pg_sys::LOCKMODE = pg_sys::ShareUpdateExclusiveLock as pg_sys::LOCKMODE;

/// The relations of the registered table `table`: itself and every
/// partition, each locked with `lock`.
pub fn relations_of(
    table: pg_sys::Oid,
    lock: pg_sys::LOCKMODE,
) -> Vec<(pg_sys::Oid, RelationFlags)> {
    let mut relations = enforce::tree(table, lock);
    for (relid, flags) in &mut relations {
        flags.root = *relid == table;
    }
    relations
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
    let dropped = Spi::get_one_with_args::<Vec<String>>(
        "SELECT coalesce(array_agg(name), '{}') FROM ruvector.collections WHERE table_oid::pg_catalog.oid = ANY ($1)",
        &[relids.to_vec().into()],
    )?
    .unwrap_or_default();
    for name in dropped {
        forget(&find(&name)?, Some("its table was dropped"))?;
    }
    if !mapped.is_empty() {
        xact::at_commit(move |shared| shared.remove_relations(&mapped));
    }
    Ok(())
}

#[pg_extern(schema = "ruvector", name = "_policy_set")]
fn policy_set(collection: &str, policy_name: &str, patch: JsonbArg) -> JsonB {
    let patch = patch.small("a policy", SMALL_DOCUMENT).or_raise();
    set_policy(collection, policy_name, &patch).or_raise()
}

fn set_policy(collection: &str, policy_name: &str, patch: &Value) -> SqlResult<JsonB> {
    if policy_name.is_empty() || policy_name.len() > 63 {
        return Err(SqlError::invalid("a policy name has 1 to 63 bytes"));
    }
    let row = find(collection)?;
    check_may_change(&row, "set a policy of")?;
    let stored = Spi::get_one_with_args::<JsonB>(
        "SELECT jsonb_build_object(
             'threshold_high', threshold_high, 'threshold_low', threshold_low,
             'normal_actions', normal_actions, 'stress_actions', stress_actions,
             'critical_actions', critical_actions, 'hysteresis', hysteresis,
             'defer_retry_secs', defer_retry_secs, 'sample_interval_secs', sample_interval_secs)
         FROM ruvector.integrity_policies WHERE collection_id = $1 AND name = $2",
        &[row.id.into(), policy_name.into()],
    )
    .optional()?;
    let base = match &stored {
        Some(document) => Policy::from_document(&document.0)?,
        None => Policy::default(),
    };
    let policy = base.merged(patch).map_err(|e| {
        SqlError::from(e).hint("Patch keys: threshold_high, threshold_low, normal_actions, stress_actions, critical_actions, hysteresis, defer_retry_secs, sample_interval_secs; see the README for each state's action keys.")
    })?;
    let document = serde_json::to_value(&policy)?;
    Spi::run_with_args(
        UPSERT_POLICY,
        &[
            row.id.into(),
            policy_name.into(),
            JsonB(document.clone()).into(),
        ],
    )?;
    let now_row = find(collection)?;
    let active = now_row.policy_name.as_deref() == Some(policy_name);
    audit::append_pending(
        Some(row.id),
        collection,
        "policy_update",
        None,
        None,
        json!({"policy": policy_name, "created": stored.is_none(), "patch": patch, "in_force": active, "by": caller()}),
    )?;
    let view = now_row.view()?;
    let name = collection.to_owned();
    xact::at_commit(move |shared| {
        shared.update(&name, |v| {
            v.policy = view.policy;
        })
    });
    Ok(JsonB(json!({
        "collection": collection,
        "policy": policy_name,
        "in_force": active,
        "document": document,
    })))
}

#[pg_extern(schema = "ruvector", name = "_override")]
fn integrity_override(
    collection: &str,
    state: Option<&str>,
    ttl_secs: Option<f64>,
    reason: Option<&str>,
) -> JsonB {
    set_override(collection, state, ttl_secs, reason).or_raise()
}

/// The longest an override may last.
const MAX_OVERRIDE_SECS: f64 = 7.0 * 86_400.0;

fn set_override(
    collection: &str,
    state: Option<&str>,
    ttl_secs: Option<f64>,
    reason: Option<&str>,
) -> SqlResult<JsonB> {
    let row = find(collection)?;
    check_may_change(&row, "override the state of")?;
    // A superuser's pin is lifted or replaced by a superuser only.
    let pinned_by_superuser = Spi::get_one_with_args::<bool>(
        "SELECT r.rolsuper FROM ruvector.integrity_state s
         JOIN pg_catalog.pg_roles r ON r.rolname = s.override_by
         WHERE s.collection_id = $1 AND s.override_state IS NOT NULL AND s.override_until > now()",
        &[row.id.into()],
    )
    .optional()?
    .unwrap_or(false);
    if pinned_by_superuser && !unsafe { pg_sys::superuser_arg(pg_sys::GetOuterUserId()) } {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("the state of collection \"{collection}\" was pinned by a superuser"),
        )
        .hint("Only a superuser can change or clear it."));
    }
    let reason = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            SqlError::invalid("an override needs a reason")
                .hint("Say why, for the audit log: reason => 'failover drill'.")
        })?;
    let pinned = match state {
        None => None,
        Some(s) => match State::parse(s) {
            Some(State::Unknown) | None => {
                return Err(SqlError::invalid(format!("invalid override state \"{s}\""))
                    .hint("Valid states: normal, stress, critical; NULL clears the override."))
            }
            Some(state) => Some(state),
        },
    };
    let until = match pinned {
        None => None,
        Some(_) => {
            let ttl = ttl_secs.ok_or_else(|| SqlError::invalid("an override needs a ttl"))?;
            if !(ttl > 0.0 && ttl <= MAX_OVERRIDE_SECS) {
                return Err(SqlError::invalid(format!(
                    "ttl must be more than 0 and at most 7 days, got {ttl} s"
                )));
            }
            Some(clock::now_unix() + (ttl * 1e6) as i64)
        }
    };
    let now_pg = clock::now_pg();
    let previous = shmem::shared()
        .ok()
        .and_then(|s| s.view(collection))
        .map(|(_, v)| v.effective_state(now_pg))
        .unwrap_or_else(|| State::parse(&row.state).unwrap_or(State::Unknown));
    Spi::run_with_args(
        "UPDATE ruvector.integrity_state
         SET override_state = $2,
             override_until = CASE WHEN $3::bigint IS NULL THEN NULL
                                   ELSE 'epoch'::timestamptz + $3::bigint * interval '1 microsecond' END,
             override_reason = $4, override_by = $5, updated_at = now()
         WHERE collection_id = $1",
        &[
            row.id.into(),
            pinned.map(State::as_str).into(),
            until.into(),
            reason.into(),
            caller().as_str().into(),
        ],
    )?;
    let new_state = pinned.unwrap_or_else(|| State::parse(&row.state).unwrap_or(State::Unknown));
    audit::append_pending(
        Some(row.id),
        collection,
        "manual_override",
        Some(previous.as_str()),
        Some(new_state.as_str()),
        json!({
            "action": if pinned.is_some() { "set" } else { "clear" },
            "state": pinned.map(State::as_str),
            "ttl_secs": ttl_secs.filter(|_| pinned.is_some()),
            "until_unix_us": until,
            "reason": reason,
            "by": caller(),
        }),
    )?;
    let name = collection.to_owned();
    let override_until = until.map_or(0, clock::unix_to_pg);
    xact::at_commit(move |shared| {
        shared.update(&name, |v| {
            v.override_state = pinned;
            v.override_until = override_until;
        })
    });
    xact::wake_worker_at_commit();
    Ok(JsonB(json!({
        "collection": collection,
        "previous_state": previous.as_str(),
        "state": new_state.as_str(),
        "override": pinned.is_some(),
        "until_unix_us": until,
        "reason": reason,
    })))
}
