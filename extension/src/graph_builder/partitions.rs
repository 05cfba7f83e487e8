//! Partitions: the leaves of the collection's table with their statistics,
//! and the foreign servers some of them live on.

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::sources::partitions::Partition;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::collections::CollectionRow;
use crate::errors::{SqlError, SqlResult};

const PARTITIONS: &str = include_str!("../../sql/queries/partitions.sql");

#[derive(Deserialize)]
struct Found {
    exists: bool,
    partitions: Vec<Partition>,
    servers: Vec<Server>,
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

pub fn read(collection: &CollectionRow) -> SqlResult<(Vec<Partition>, Vec<Server>)> {
    let found = Spi::get_one_with_args::<JsonB>(PARTITIONS, &[collection.relid().into()])?
        .ok_or_else(|| SqlError::internal("the partitions query returned nothing"))?;
    let found: Found = serde_json::from_value(found.0)?;
    if !found.exists {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!(
                "the table of collection \"{}\" ({}.{}) no longer exists",
                collection.name, collection.schema, collection.table
            ),
        )
        .hint("Unregister the collection with ruvector_unregister_collection()."));
    }
    Ok((found.partitions, found.servers))
}
