//! IVF lists: each trained list (`ruvector.ivf_lists`, written by
//! `ruvector_ivf_train`) is a `centroid` node joined to the partitions that
//! hold its vectors by `routing_link` edges whose capacities are the shares it
//! holds there (they sum to 1 per list).
//!
//! Health is the list's quality, the least of three ramps, each with a dead
//! zone and a floor of [`DRIFT_FLOOR`] (badly drifted lists route searches
//! poorly: stress, never critical):
//! - growth since training, `g = max(0, live − trained) / trained` rows:
//!   1 up to [`GROWTH_HEALTHY`], [`DRIFT_FLOOR`] at [`GROWTH_WORST`];
//! - distance growth, `r` = mean distance of a bounded random sample to its
//!   nearest centroid, divided by the mean distance at training: 1 up to
//!   [`DISTANCE_HEALTHY`], [`DRIFT_FLOOR`] at [`DISTANCE_WORST`] (ignored when
//!   the sample has fewer than [`MIN_SAMPLE`] rows);
//! - imbalance, `u` = the list's vectors / the mean per list at training: 1 up
//!   to [`IMBALANCE_HEALTHY`], [`DRIFT_FLOOR`] at [`IMBALANCE_WORST`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ramp, Builder, Why};
use crate::graph::{EdgeKind, NodeKind};
use crate::Error;

pub const GROWTH_HEALTHY: f64 = 0.2;
pub const GROWTH_WORST: f64 = 1.0;
pub const DISTANCE_HEALTHY: f64 = 1.25;
pub const DISTANCE_WORST: f64 = 2.0;
pub const IMBALANCE_HEALTHY: f64 = 10.0;
pub const IMBALANCE_WORST: f64 = 50.0;
pub const DRIFT_FLOOR: f64 = 0.5;
/// Fewer sampled rows than this say nothing about distance growth.
pub const MIN_SAMPLE: i64 = 32;

/// One trained list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct List {
    pub list_id: i32,
    pub vector_count: i64,
    pub mean_distance: f64,
    /// Partition relid → vectors of this list there, at training.
    pub partition_counts: HashMap<i64, i64>,
}

/// Distance of the vectors now: a bounded sample assigned to the centroids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftSample {
    pub rows: i64,
    pub mean_distance: f64,
}

/// The trained lists and what changed since.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ivf {
    pub lists: Vec<List>,
    pub trained_rows: i64,
    /// Mean distance of every trained vector to its centroid.
    pub trained_mean_distance: f64,
    /// Rows now: `pg_stat_all_tables.n_live_tup` of the local partitions,
    /// plus what the foreign ones held at training.
    pub live_rows: i64,
    #[serde(default)]
    pub sample: Option<DriftSample>,
}

/// The collection-wide part of the lists' health: (growth g, ratio r, health).
pub fn drift(ivf: &Ivf) -> (f64, Option<f64>, f64) {
    let trained = ivf.trained_rows.max(1) as f64;
    let growth = (ivf.live_rows - ivf.trained_rows).max(0) as f64 / trained;
    let ratio = ivf
        .sample
        .as_ref()
        .filter(|s| s.rows >= MIN_SAMPLE && ivf.trained_mean_distance > 0.0)
        .map(|s| s.mean_distance / ivf.trained_mean_distance);
    let health =
        ramp(growth, GROWTH_HEALTHY, GROWTH_WORST, DRIFT_FLOOR).min(ratio.map_or(1.0, |r| {
            ramp(r, DISTANCE_HEALTHY, DISTANCE_WORST, DRIFT_FLOOR)
        }));
    (growth, ratio, health)
}

/// Adds a centroid per list with vectors in partitions of the graph
/// (`placed`: relid → node); lists with none are left out.
pub(crate) fn add(b: &mut Builder, ivf: &Ivf, placed: &HashMap<i64, usize>) -> Result<(), Error> {
    let (growth, ratio, drift_health) = drift(ivf);
    let per_list = ivf.trained_rows.max(1) as f64 / ivf.lists.len().max(1) as f64;
    for list in &ivf.lists {
        let mut routes: Vec<(usize, i64)> = list
            .partition_counts
            .iter()
            .filter(|&(_, &count)| count > 0)
            .filter_map(|(relid, &count)| placed.get(relid).map(|&node| (node, count)))
            .collect();
        let routed: i64 = routes.iter().map(|r| r.1).sum();
        if routed == 0 {
            continue;
        }
        routes.sort_unstable();
        let imbalance = list.vector_count as f64 / per_list;
        let health = drift_health.min(ramp(
            imbalance,
            IMBALANCE_HEALTHY,
            IMBALANCE_WORST,
            DRIFT_FLOOR,
        ));
        let node = b.node(
            NodeKind::Centroid,
            &list.list_id.to_string(),
            health,
            json!({
                "vector_count": list.vector_count, "mean_distance": list.mean_distance,
                "imbalance": imbalance, "growth": growth, "distance_ratio": ratio,
            }),
            Why {
                function: "ivf_drift",
                measured: json!({"growth": growth, "distance_ratio": ratio, "imbalance": imbalance}),
                healthy_while: format!(
                    "growth <= {GROWTH_HEALTHY}, distance_ratio <= {DISTANCE_HEALTHY} and imbalance <= {IMBALANCE_HEALTHY} \
                     (each falls to {DRIFT_FLOOR} at {GROWTH_WORST}, {DISTANCE_WORST} and {IMBALANCE_WORST}; the least counts)"
                ),
            },
        )?;
        for (partition, count) in routes {
            b.built.graph.add_edge(
                node,
                partition,
                EdgeKind::RoutingLink,
                count as f64 / routed as f64,
                0.0,
            )?;
        }
    }
    Ok(())
}
