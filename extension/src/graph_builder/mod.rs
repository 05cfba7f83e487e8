//! Reads what a collection's contracted graph is built from: its partitions
//! and their statistics, its standbys, maintenance, the foreign servers and
//! Citus workers holding shards (probed over the network: [`shards`]), and
//! the IVF lists with a bounded drift sample of the vectors ([`ivf`]). The
//! graph itself is built in the core (`ruvector_integrity::sources`), where
//! every formula is tested.

mod ivf;
mod shards;

pub use shards::forget_probes;

use pgrx::PgSqlErrorCode;
use ruvector_integrity::sources::{self, Built, Observed, Overrides};

use crate::errors::{SqlError, SqlResult};
use crate::store::collections::Collection;
use crate::{gucs, store};

/// What the database says about `collection` now.
pub fn observe(collection: &Collection) -> SqlResult<Observed> {
    let found = store::sources::partitions(collection.relid)?;
    if !found.exists {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!(
                "the table of collection \"{}\" ({}) no longer exists",
                collection.name,
                collection.qualified_table()
            ),
        )
        .hint("Unregister the collection with ruvector_unregister_collection()."));
    }
    let shards = shards::read(collection.relid, &found.servers)?;
    let ivf = ivf::read(collection, &found.partitions)?;
    Ok(Observed {
        partitions: found.partitions,
        shards,
        replication: store::sources::replication(
            &gucs::expected_standbys(),
            gucs::REPLICATION_LAG_BUDGET.get() as i64 * 1024,
            gucs::STARTUP_GRACE.get() as f64,
        )?,
        maintenance: store::sources::maintenance()?,
        ivf,
    })
}

/// The graph of what was observed, with `overrides` imposed.
pub fn build(observed: &Observed, overrides: &Overrides) -> SqlResult<Built> {
    sources::build(observed, overrides).map_err(SqlError::from)
}
