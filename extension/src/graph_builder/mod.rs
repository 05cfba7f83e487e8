//! Reads what a collection's contracted graph is built from: one module per
//! source, each reading its part of [`Observed`] from the catalog, the
//! statistics views, the network (foreign servers' reachability) or, for IVF
//! drift, a bounded sample of the vectors. The graph itself is built in the
//! core (`ruvector_integrity::sources`), where every formula is tested.

mod ivf;
mod maintenance;
mod partitions;
mod replication;
mod shards;

pub use shards::forget_probes;

use ruvector_integrity::sources::{self, Built, Observed, Overrides};

use crate::collections::CollectionRow;
use crate::errors::{SqlError, SqlResult};

/// What the database says about `collection` now.
pub fn observe(collection: &CollectionRow) -> SqlResult<Observed> {
    let (partitions, servers) = partitions::read(collection)?;
    let shards = shards::read(collection, &servers)?;
    let ivf = ivf::read(collection, &partitions)?;
    Ok(Observed {
        partitions,
        shards,
        replication: replication::read()?,
        maintenance: maintenance::read()?,
        ivf,
    })
}

/// The graph of what was observed, with `overrides` imposed.
pub fn build(observed: &Observed, overrides: &Overrides) -> SqlResult<Built> {
    sources::build(observed, overrides).map_err(SqlError::from)
}
