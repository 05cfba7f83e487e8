//! Registered collections, their policies and overrides.

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::gate::Override;
use ruvector_integrity::hysteresis::Controller;
use ruvector_integrity::policy::Policy;
use ruvector_integrity::registration::TableFacts;
use ruvector_integrity::state::State;
use ruvector_integrity::Micros;
use serde::Deserialize;
use serde_json::Value;

use super::{document, template};
use crate::errors::{Optional, SqlError, SqlResult};
use crate::shmem::CollectionView;

/// A registered collection with its state row and the policy in force, each
/// field decoded once.
#[derive(Debug, Clone)]
pub struct Collection {
    pub id: i32,
    pub name: String,
    /// Its table, by OID: the names below are its current ones.
    pub relid: pg_sys::Oid,
    pub schema: String,
    pub table: String,
    pub column: String,
    pub dimensions: i32,
    pub distance_metric: String,
    /// The table's owner (`None` once the table is gone).
    pub owner: Option<pg_sys::Oid>,
    pub config: Value,
    /// The state of the last sample (not an override's).
    pub state: State,
    pub lambda_cut: Option<f64>,
    pub lambda_norm: Option<f64>,
    pub last_sample: Option<Micros>,
    pub sample_count: i64,
    pub controller: Controller,
    pub pin: Option<Override>,
    /// The policy in force: the enabled one of highest priority, or the
    /// default when every policy is disabled (`policy_name` is then `None`).
    pub policy_name: Option<String>,
    pub policy: Policy,
    /// What did not decode and was replaced by its default (see `Row::decode`).
    pub damage: Vec<String>,
}

/// A row of `collections.sql`, as it comes.
#[derive(Deserialize)]
struct Row {
    id: i32,
    name: String,
    relid: i64,
    schema: String,
    table: String,
    column: String,
    dimensions: i32,
    distance_metric: String,
    owner: Option<i64>,
    config: Value,
    state: String,
    lambda_cut: Option<f64>,
    lambda_norm: Option<f64>,
    last_sample: Option<Micros>,
    sample_count: i64,
    controller: Value,
    override_state: Option<String>,
    override_until: Option<Micros>,
    policy_name: Option<String>,
    policy: Option<Value>,
}

fn oid(value: i64) -> pg_sys::Oid {
    pg_sys::Oid::from(value as u32)
}

impl Row {
    /// The collection, whatever its stored fields hold: one that does not
    /// decode (a hand-edited row) is replaced by its default (the state
    /// unknown, a fresh controller, the default policy, no override) and
    /// named in `damage`, so that the collection stays gated and the worker
    /// says what it replaced.
    fn decode(self) -> Collection {
        let mut damage = Vec::new();
        let mut broken = |what: &str, why: String| {
            damage.push(format!("the stored {what} does not decode ({why})"))
        };
        let state = State::parse(&self.state).unwrap_or_else(|| {
            broken("state", self.state.clone());
            State::Unknown
        });
        let controller = serde_json::from_value(self.controller.clone()).unwrap_or_else(|e| {
            broken("hysteresis controller", e.to_string());
            Controller {
                state,
                ..Controller::default()
            }
        });
        let policy = match &self.policy {
            Some(document) => Policy::from_document(document).unwrap_or_else(|e| {
                broken("policy in force", e.to_string());
                Policy::default()
            }),
            None => Policy::default(),
        };
        let pin = match (&self.override_state, self.override_until) {
            (Some(s), Some(until)) => match State::parse(s) {
                Some(state) => Some(Override { state, until }),
                None => {
                    broken("override", s.clone());
                    None
                }
            },
            _ => None,
        };
        Collection {
            id: self.id,
            relid: oid(self.relid),
            schema: self.schema,
            table: self.table,
            column: self.column,
            dimensions: self.dimensions,
            distance_metric: self.distance_metric,
            owner: self.owner.map(oid),
            config: self.config,
            state,
            lambda_cut: self.lambda_cut,
            lambda_norm: self.lambda_norm,
            last_sample: self.last_sample,
            sample_count: self.sample_count,
            controller,
            pin,
            policy_name: self.policy_name,
            policy,
            damage,
            name: self.name,
        }
    }
}

impl Collection {
    /// `schema.table`, as messages name the table.
    pub fn qualified_table(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// What shared memory holds for this collection.
    pub fn view(&self) -> CollectionView {
        CollectionView {
            collection_id: self.id,
            relid: self.relid,
            state: self.state,
            pin: self.pin,
            last_sample: self.last_sample,
            lambda_cut: self.lambda_cut.unwrap_or(f64::NAN),
            lambda_norm: self.lambda_norm.unwrap_or(f64::NAN),
            policy: self.policy.compile(),
        }
    }
}

/// Every registered collection, or the one named `name`.
pub fn load(name: Option<&str>) -> SqlResult<Vec<Collection>> {
    let rows: Vec<Row> = document(super::COLLECTIONS, &[name.into()])?;
    Ok(rows.into_iter().map(Row::decode).collect())
}

/// The collection named `name`, or `42704 undefined_object`.
pub fn find(name: &str) -> SqlResult<Collection> {
    load(Some(name))?
        .into_iter()
        .next()
        .ok_or_else(|| SqlError::unknown_collection(name))
}

/// What registration reads of table `table` and its column `column`
/// (`None`: no such relation).
pub fn table_facts(table: pg_sys::Oid, column: &str) -> SqlResult<Option<TableFacts>> {
    Spi::get_one_with_args::<JsonB>(super::TABLE_INFO, &[table.into(), column.into()])
        .optional()?
        .map(|j| serde_json::from_value(j.0).map_err(SqlError::from))
        .transpose()
}

/// The length and number of dimensions of the first non-null array in
/// `column` of `table` (quoted and qualified), if it has one. Runs as whoever
/// calls it.
pub fn first_vector(table: &str, column: &str) -> SqlResult<Option<(Option<i32>, Option<i32>)>> {
    let query = template(super::FIRST_VECTOR, table, column, "");
    Spi::get_two::<i32, i32>(&query).optional()
}

/// The collection named `name`, or registered on `table`, if there is one.
pub fn duplicate(name: &str, table: pg_sys::Oid) -> SqlResult<Option<String>> {
    Spi::get_one_with_args::<String>(super::DUPLICATE_COLLECTION, &[name.into(), table.into()])
        .optional()
}

/// A collection to register.
pub struct NewCollection<'a> {
    pub name: &'a str,
    pub facts: &'a TableFacts,
    pub table: pg_sys::Oid,
    pub column: &'a str,
    pub dimensions: i32,
    pub distance_metric: &'a str,
    pub index_type: &'a str,
    pub config: &'a Value,
}

/// Registers `new` with its state row and `policy` as `default`; its id.
pub fn insert(new: &NewCollection, policy: &Policy) -> SqlResult<i32> {
    let id = Spi::get_one_with_args::<i32>(
        super::INSERT_COLLECTION,
        &[
            new.name.into(),
            new.facts.schema.as_str().into(),
            new.facts.table.as_str().into(),
            new.column.into(),
            new.table.into(),
            new.dimensions.into(),
            new.distance_metric.into(),
            new.index_type.into(),
            JsonB(new.config.clone()).into(),
        ],
    )?
    .ok_or_else(|| SqlError::internal("INSERT returned no id"))?;
    upsert_policy(id, "default", policy)?;
    Ok(id)
}

/// Removes collection `id` (its audit events stay).
pub fn delete(id: i32) -> SqlResult<()> {
    Ok(Spi::run_with_args(super::DELETE_COLLECTION, &[id.into()])?)
}

/// The collections whose table is one of `relids`.
pub fn on_tables(relids: &[pg_sys::Oid]) -> SqlResult<Vec<String>> {
    Ok(Spi::get_one_with_args::<Vec<String>>(
        super::DROPPED_COLLECTIONS,
        &[relids.to_vec().into()],
    )?
    .unwrap_or_default())
}

/// The stored policy `name` of collection `id`, if there is one.
pub fn stored_policy(id: i32, name: &str) -> SqlResult<Option<Policy>> {
    Spi::get_one_with_args::<JsonB>(super::STORED_POLICY, &[id.into(), name.into()])
        .optional()?
        .map(|j| Policy::from_document(&j.0).map_err(SqlError::from))
        .transpose()
}

/// Creates or replaces policy `name` of collection `id`; a new one is in force.
pub fn upsert_policy(id: i32, name: &str, policy: &Policy) -> SqlResult<()> {
    Spi::run_with_args(
        super::UPSERT_POLICY,
        &[
            id.into(),
            name.into(),
            JsonB(serde_json::to_value(policy)?).into(),
        ],
    )?;
    Ok(())
}

/// A stored policy of a collection, as `policies.sql` lists it.
#[derive(Deserialize)]
pub struct StoredPolicy {
    pub name: String,
    pub enabled: bool,
    pub priority: i32,
    /// The policy document (see `Policy::from_document`), as stored.
    pub policy: Value,
    pub updated_at: Micros,
}

/// Every stored policy of collection `id`, the one in force first.
pub fn policies(id: i32) -> SqlResult<Vec<StoredPolicy>> {
    document(super::POLICIES, &[id.into()])
}

/// Locks collection `id` against concurrent changes to its policies, to the
/// end of the transaction: take it before reading which policy is in force.
pub fn lock_policies(id: i32) -> SqlResult<()> {
    Spi::run_with_args(super::LOCK_POLICIES, &[id.into()])?;
    Ok(())
}

/// Puts policy `name` of collection `id` in force; false when it has none
/// of that name.
pub fn activate_policy(id: i32, name: &str) -> SqlResult<bool> {
    Ok(
        Spi::get_one_with_args::<i32>(super::ACTIVATE_POLICY, &[id.into(), name.into()])
            .optional()?
            .is_some(),
    )
}

/// Deletes policy `name` of collection `id`; returns its document (`None`:
/// it has none of that name).
pub fn drop_policy(id: i32, name: &str) -> SqlResult<Option<Value>> {
    Ok(
        Spi::get_one_with_args::<JsonB>(super::DROP_POLICY, &[id.into(), name.into()])
            .optional()?
            .map(|j| j.0),
    )
}

/// Whether the override in force on collection `id` was set by a superuser.
pub fn pinned_by_superuser(id: i32) -> SqlResult<bool> {
    Ok(
        Spi::get_one_with_args::<bool>(super::OVERRIDE_BY_SUPERUSER, &[id.into()])
            .optional()?
            .unwrap_or(false),
    )
}

/// Pins collection `id` to `pin` (or clears the pin), saying why and who.
pub fn set_override(id: i32, pin: Option<Override>, reason: &str, by: &str) -> SqlResult<()> {
    Spi::run_with_args(
        super::SET_OVERRIDE,
        &[
            id.into(),
            pin.map(|p| p.state.as_str()).into(),
            pin.map(|p| p.until).into(),
            reason.into(),
            by.into(),
        ],
    )?;
    Ok(())
}

/// Ends collection `id`'s override if its time is up: the state it pinned.
pub fn end_expired_override(id: i32) -> SqlResult<Option<State>> {
    Ok(
        Spi::get_one_with_args::<String>(super::END_OVERRIDE, &[id.into()])
            .optional()?
            .and_then(|s| State::parse(&s)),
    )
}
