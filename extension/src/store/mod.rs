//! The typed store: every SQL statement the extension runs is a file under
//! `sql/queries`, read here and nowhere else, and each is run through one
//! function of a submodule that returns core types, decoded once:
//!
//! - [`collections`]: registered collections with their state, the policy in
//!   force (parsed) and the hysteresis controller, policies and overrides;
//! - [`events`]: the audit trail, pending and signed (one signed-row type),
//!   key events, notifications;
//! - [`samples`]: what the worker records of each sample;
//! - [`graph`]: the stored contracted graph;
//! - [`sources`]: what a collection's graph is built from (partitions,
//!   standbys, maintenance, foreign servers), and what registration reads;
//! - [`ivf`]: IVF lists, and the vectors training and drift samples read.
//!
//! Statements that name a user's table (reading its vectors) are templates
//! whose `{table}`, `{column}` and `{method}` are filled in here, quoted: see
//! [`template`].
//!
//! Time crosses the boundary as Unix microseconds (`ruvector._unix_us()`,
//! `ruvector._at_unix_us()`), JSON documents as `jsonb`, decoded by serde.

pub mod collections;
pub mod events;
pub mod graph;
pub mod ivf;
pub mod samples;
pub mod sources;

use pgrx::prelude::*;
use pgrx::JsonB;
use serde::de::DeserializeOwned;

use crate::errors::{SqlError, SqlResult};

/// Every query, by name: `sql/queries/<name>.sql`.
macro_rules! queries {
    ($($name:ident = $file:literal;)*) => {
        $(const $name: &str = include_str!(concat!("../../sql/queries/", $file, ".sql"));)*
    };
}

queries! {
    ACTIVATE_POLICY = "activate_policy";
    AUDIT_ROWS = "audit_rows";
    CHAIN_HEAD = "chain_head";
    CHAIN_HEAD_CONTEXT = "chain_head_context";
    CITUS_INSTALLED = "citus_installed";
    CITUS_WORKERS = "citus_workers";
    COLLECTION_RELATIONS = "collection_relations";
    COLLECTIONS = "collections";
    DELETE_COLLECTION = "delete_collection";
    DELETE_GRAPH_EDGES = "delete_graph_edges";
    DELETE_GRAPH_NODES = "delete_graph_nodes";
    DELETE_IVF_LISTS = "delete_ivf_lists";
    DELETE_PENDING = "delete_pending";
    DRIFT_SAMPLE = "drift_sample";
    DROP_POLICY = "drop_policy";
    DROPPED_COLLECTIONS = "dropped_collections";
    DUPLICATE_COLLECTION = "duplicate_collection";
    INSERT_SUCCESSOR = "insert_successor";
    SUCCESSOR_SECRET = "successor_secret";
    END_OVERRIDE = "end_override";
    FIRST_VECTOR = "first_vector";
    GATE_SETTINGS = "gate_settings";
    GRAPH_DRAWING = "graph_drawing";
    INSERT_COLLECTION = "insert_collection";
    INSERT_EVENT = "insert_event";
    INSERT_IVF_LIST = "insert_ivf_list";
    INSERT_PENDING = "insert_pending";
    INSERT_SAMPLE = "insert_sample";
    IVF_CENTROIDS = "ivf_centroids";
    IVF_EVERY_VECTOR = "ivf_every_vector";
    IVF_LISTS = "ivf_lists";
    IVF_SAMPLE = "ivf_sample";
    IVF_TRAINED_AT = "ivf_trained_at";
    KEY_EVENTS = "key_events";
    LOCK_POLICIES = "lock_policies";
    LOCK_GRAPH = "lock_graph";
    LOCK_KEY = "lock_key";
    MAINTENANCE = "maintenance";
    NOTIFY = "notify";
    OVERRIDE_BY_SUPERUSER = "override_by_superuser";
    PARTITIONS = "partitions";
    PENDING_BATCH = "pending_batch";
    POLICIES = "policies";
    PRUNE_SAMPLES = "prune_samples";
    RECORD_SAMPLE = "record_sample";
    RECORD_SAMPLE_ERROR = "record_sample_error";
    REGISTER_KEY = "register_key";
    REPLICATION = "replication";
    REVOKE_KEY = "revoke_key";
    SET_GRAPH_TOPOLOGY = "set_graph_topology";
    SET_OVERRIDE = "set_override";
    SOCKET_DIRECTORIES = "socket_directories";
    STATUS_DETAILS = "status_details";
    STILL_PENDING = "still_pending";
    STORE_EDGES = "store_edges";
    STORE_GRAPH = "store_graph";
    STORED_POLICY = "stored_policy";
    TABLE_INFO = "table_info";
    UPDATE_ERROR_RATES = "update_error_rates";
    UPSERT_IVF_TRAINING = "upsert_ivf_training";
    UPSERT_POLICY = "upsert_policy";
}

/// A statement that names a user's table: `{table}`, `{column}` and
/// `{method}` filled in, in one pass over the template (so that nothing
/// filled in is read as a placeholder). `table` comes quoted; `column` is
/// quoted here; `method` is one of the extension's own words.
fn template(query: &str, table: &str, column: &str, method: &str) -> String {
    let column = pgrx::spi::quote_identifier(column);
    let mut filled = String::with_capacity(query.len() + table.len() + 2 * column.len());
    let mut rest = query;
    while let Some(at) = rest.find('{') {
        filled.push_str(&rest[..at]);
        rest = &rest[at..];
        let (value, placeholder) = [
            ("{table}", table),
            ("{column}", column.as_str()),
            ("{method}", method),
        ]
        .into_iter()
        .find(|(placeholder, _)| rest.starts_with(placeholder))
        .map_or(("{", "{"), |(placeholder, value)| (value, placeholder));
        filled.push_str(value);
        rest = &rest[placeholder.len()..];
    }
    filled.push_str(rest);
    filled
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn a_name_filled_into_a_template_is_never_read_as_a_placeholder() {
        let filled = super::template(
            "SELECT {column} FROM {table} TABLESAMPLE {method} (1) WHERE {column} IS NOT NULL",
            r#""s"."x{column}{method}""#,
            "e{table}",
            "SYSTEM",
        );
        assert_eq!(
            filled,
            r#"SELECT "e{table}" FROM "s"."x{column}{method}" TABLESAMPLE SYSTEM (1) WHERE "e{table}" IS NOT NULL"#
        );
    }
}

/// The one row, one `jsonb` column of `query`, decoded.
fn document<T: DeserializeOwned>(query: &str, args: &[pgrx::datum::DatumWithOid]) -> SqlResult<T> {
    let value = Spi::get_one_with_args::<JsonB>(query, args)?
        .ok_or_else(|| SqlError::internal("a query that returns a document returned none"))?;
    Ok(serde_json::from_value(value.0)?)
}
