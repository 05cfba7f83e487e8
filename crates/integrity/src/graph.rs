//! The contracted operational graph of one collection: typed nodes with a health
//! score, typed undirected edges with a capacity and an error rate, and its
//! integrity numbers (λ, λ_nominal, λ_norm, the witness edges).
//!
//! This module validates every number at the edge, so NaN, ∞ or negative
//! metrics never reach a solver. It does not know where nodes come from: the
//! extension's graph builder reads them from the catalog and statistics views.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::control::Control;
use crate::{mincut, Error};

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A table or leaf partition holding the collection's vectors.
    Partition,
    /// An IVF list: where queries for one region of the space are routed.
    Centroid,
    /// A server holding partitions: the local primary or a foreign server.
    Shard,
    /// Something the collection's upkeep depends on: autovacuum, WAL archiving.
    MaintenanceDep,
    /// A standby that is expected to stream the shard's WAL.
    ReplicationTarget,
}

/// What an edge stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// Placement: a partition lives on a shard.
    PartitionLink,
    /// Routing: a centroid's vectors live in a partition.
    RoutingLink,
    /// Dependency: a shard relies on a maintenance service.
    Dependency,
    /// Replication: a shard streams to a standby.
    Replication,
}

impl NodeKind {
    pub const ALL: [NodeKind; 5] = [
        NodeKind::Partition,
        NodeKind::Centroid,
        NodeKind::Shard,
        NodeKind::MaintenanceDep,
        NodeKind::ReplicationTarget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Partition => "partition",
            NodeKind::Centroid => "centroid",
            NodeKind::Shard => "shard",
            NodeKind::MaintenanceDep => "maintenance_dep",
            NodeKind::ReplicationTarget => "replication_target",
        }
    }
}

impl EdgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::PartitionLink => "partition_link",
            EdgeKind::RoutingLink => "routing_link",
            EdgeKind::Dependency => "dependency",
            EdgeKind::Replication => "replication",
        }
    }
}

/// A node: its kind, a name unique within its kind, and a health in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub kind: NodeKind,
    pub name: String,
    pub health: f64,
}

/// An undirected edge between two node indices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub source: usize,
    pub target: usize,
    pub kind: EdgeKind,
    /// Nominal capacity, finite and ≥ 0.
    pub capacity: f64,
    /// Share of recent operations over this edge that failed, in [0, 1].
    pub error_rate: f64,
}

/// The graph. Build it with [`ContractedGraph::add_node`] and
/// [`ContractedGraph::add_edge`]; both refuse invalid numbers.
#[derive(Debug, Clone, Default)]
pub struct ContractedGraph {
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    index: HashMap<(NodeKind, String), usize>,
}

/// The integrity numbers of a graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Integrity {
    /// λ_cut: the minimum cut of the graph at its effective capacities.
    pub lambda_cut: f64,
    /// λ of the same topology with every health 1 and every error rate 0.
    pub lambda_nominal: f64,
    /// `lambda_cut / lambda_nominal`, in [0, 1]; 0 when the nominal graph is
    /// itself disconnected.
    pub lambda_norm: f64,
    /// Node indices on the reported side of the minimum cut.
    pub cut_side: Vec<usize>,
    /// Indices of the edges that cross the minimum cut.
    pub witness_edges: Vec<usize>,
}

fn check_unit(what: impl FnOnce() -> String, value: f64) -> Result<(), Error> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::InvalidNumber {
            what: what(),
            expected: "a number in [0, 1]",
            value,
        })
    }
}

impl ContractedGraph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// Index of the node of this kind and name, if there is one.
    pub fn find(&self, kind: NodeKind, name: &str) -> Option<usize> {
        self.index.get(&(kind, name.to_owned())).copied()
    }

    /// Adds a node; `health` must be in [0, 1]. Returns its index.
    pub fn add_node(
        &mut self,
        kind: NodeKind,
        name: impl Into<String>,
        health: f64,
    ) -> Result<usize, Error> {
        let name = name.into();
        check_unit(
            || format!("the health of {}:{}", kind.as_str(), name),
            health,
        )?;
        if self.index.contains_key(&(kind, name.clone())) {
            return Err(Error::DuplicateNode {
                kind: kind.as_str(),
                name,
            });
        }
        self.index.insert((kind, name.clone()), self.nodes.len());
        self.nodes.push(Node { kind, name, health });
        Ok(self.nodes.len() - 1)
    }

    /// Changes the health of node `index` (for what-if questions); `health`
    /// must be in [0, 1].
    pub fn set_health(&mut self, index: usize, health: f64) -> Result<(), Error> {
        let nodes = self.nodes.len();
        let node = self
            .nodes
            .get_mut(index)
            .ok_or(Error::NodeOutOfRange { index, nodes })?;
        check_unit(
            || format!("the health of {}:{}", node.kind.as_str(), node.name),
            health,
        )?;
        node.health = health;
        Ok(())
    }

    /// Adds an undirected edge. Parallel edges are kept and add up in the cut.
    pub fn add_edge(
        &mut self,
        source: usize,
        target: usize,
        kind: EdgeKind,
        capacity: f64,
        error_rate: f64,
    ) -> Result<usize, Error> {
        for index in [source, target] {
            if index >= self.nodes.len() {
                return Err(Error::NodeOutOfRange {
                    index,
                    nodes: self.nodes.len(),
                });
            }
        }
        let label = || {
            self.label(&Edge {
                source,
                target,
                kind,
                capacity,
                error_rate,
            })
        };
        if !capacity.is_finite() || capacity < 0.0 {
            return Err(Error::InvalidNumber {
                what: format!("the capacity of the {}", label()),
                expected: "a finite number ≥ 0",
                value: capacity,
            });
        }
        check_unit(|| format!("the error rate of the {}", label()), error_rate)?;
        self.edges.push(Edge {
            source,
            target,
            kind,
            capacity,
            error_rate,
        });
        Ok(self.edges.len() - 1)
    }

    /// The edge a solver error refers to by index, named by its kinds and ends.
    fn named(&self, error: Error) -> Error {
        match error {
            Error::CapacityOverflow {
                edge,
                capacity,
                limit,
            } if edge < self.edges.len() => Error::InvalidNumber {
                what: format!("the capacity of the {}", self.label(&self.edges[edge])),
                expected: if limit == mincut::MAX_TOTAL_CAPACITY {
                    "small enough that all capacities sum to at most 1e300"
                } else {
                    "smaller"
                },
                value: capacity,
            },
            other => other,
        }
    }

    fn label(&self, edge: &Edge) -> String {
        format!(
            "{} edge {}:{} - {}:{}",
            edge.kind.as_str(),
            self.nodes[edge.source].kind.as_str(),
            self.nodes[edge.source].name,
            self.nodes[edge.target].kind.as_str(),
            self.nodes[edge.target].name
        )
    }

    /// SHA-256 of the graph's shape: its nodes' kinds and names and its edges'
    /// ends, kinds and nominal capacities, in order (not healths or error
    /// rates). Equal fingerprints mean the same nodes and edges at the same
    /// positions.
    pub fn topology(&self) -> [u8; 32] {
        self.fingerprint(false)
    }

    /// SHA-256 of the whole graph: its topology, and with `numbers` every
    /// health and error rate too. Equal fingerprints mean equal integrity.
    pub fn fingerprint(&self, numbers: bool) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update([numbers as u8]);
        hash.update((self.nodes.len() as u64).to_le_bytes());
        hash.update((self.edges.len() as u64).to_le_bytes());
        for n in &self.nodes {
            hash.update([n.kind as u8]);
            hash.update((n.name.len() as u64).to_le_bytes());
            hash.update(n.name.as_bytes());
            if numbers {
                hash.update(n.health.to_bits().to_le_bytes());
            }
        }
        for e in &self.edges {
            hash.update((e.source as u64).to_le_bytes());
            hash.update((e.target as u64).to_le_bytes());
            hash.update([e.kind as u8]);
            hash.update(e.capacity.to_bits().to_le_bytes());
            if numbers {
                hash.update(e.error_rate.to_bits().to_le_bytes());
            }
        }
        hash.finalize().into()
    }

    /// `capacity · (1 − error_rate) · min(health of its two ends)`: an edge is only
    /// as good as its weaker end.
    pub fn effective_capacity(&self, edge: &Edge) -> f64 {
        let health = self.nodes[edge.source]
            .health
            .min(self.nodes[edge.target].health);
        edge.capacity * (1.0 - edge.error_rate) * health
    }

    /// The weighted edge list the solvers take: effective capacities, or the
    /// nominal ones (health 1, error 0).
    pub fn weighted_edges(&self, nominal: bool) -> Vec<(u32, u32, f64)> {
        self.edges
            .iter()
            .map(|e| {
                let weight = if nominal {
                    e.capacity
                } else {
                    self.effective_capacity(e)
                };
                (e.source as u32, e.target as u32, weight)
            })
            .collect()
    }

    /// λ_cut, λ_nominal, λ_norm and the witness edges. Needs at least two nodes.
    /// Runs with the default limits and no interrupt hook; see
    /// [`ContractedGraph::integrity_with`].
    pub fn integrity(&self) -> Result<Integrity, Error> {
        self.integrity_with(&mut Control::default())
    }

    /// [`ContractedGraph::integrity`] under `control` (both minimum cuts run
    /// under it).
    pub fn integrity_with(&self, control: &mut Control) -> Result<Integrity, Error> {
        let n = self.nodes.len();
        let effective = self.weighted_edges(false);
        let cut = mincut::min_cut_with(n, &effective, control)
            .map_err(|e| self.named(e))?
            .ok_or(Error::TooFewNodes(n))?;
        let nominal_edges = self.weighted_edges(true);
        // A graph at full health is its own nominal graph.
        let nominal = if nominal_edges == effective {
            cut.clone()
        } else {
            mincut::min_cut_with(n, &nominal_edges, control)
                .map_err(|e| self.named(e))?
                .ok_or(Error::TooFewNodes(n))?
        };
        let lambda_norm = if nominal.value > 0.0 {
            (cut.value / nominal.value).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let witness_edges = (0..self.edges.len())
            .filter(|&i| cut.side[self.edges[i].source] != cut.side[self.edges[i].target])
            .collect();
        Ok(Integrity {
            lambda_cut: cut.value,
            lambda_nominal: nominal.value,
            lambda_norm,
            cut_side: cut.side_vertices(),
            witness_edges,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One partition on the primary, which depends on autovacuum and archiving.
    fn single_partition(partition_health: f64, archiver_health: f64) -> ContractedGraph {
        let mut g = ContractedGraph::new();
        let p = g
            .add_node(NodeKind::Partition, "public.items", partition_health)
            .unwrap();
        let s = g.add_node(NodeKind::Shard, "primary", 1.0).unwrap();
        let av = g
            .add_node(NodeKind::MaintenanceDep, "autovacuum", 1.0)
            .unwrap();
        let ar = g
            .add_node(NodeKind::MaintenanceDep, "wal_archiving", archiver_health)
            .unwrap();
        g.add_edge(p, s, EdgeKind::PartitionLink, 1.0, 0.0).unwrap();
        g.add_edge(s, av, EdgeKind::Dependency, 1.0, 0.0).unwrap();
        g.add_edge(s, ar, EdgeKind::Dependency, 1.0, 0.0).unwrap();
        g
    }

    #[test]
    fn the_topology_is_the_shape_not_the_health() {
        let g = single_partition(1.0, 1.0);
        let mut sick = single_partition(0.2, 0.5);
        assert_eq!(g.topology(), sick.topology());
        sick.add_edge(0, 1, EdgeKind::PartitionLink, 1.0, 0.5)
            .unwrap();
        assert_ne!(g.topology(), sick.topology());
        let mut heavier = ContractedGraph::new();
        let a = heavier
            .add_node(NodeKind::Partition, "public.items", 1.0)
            .unwrap();
        let b = heavier.add_node(NodeKind::Shard, "primary", 1.0).unwrap();
        heavier
            .add_edge(a, b, EdgeKind::PartitionLink, 2.0, 0.0)
            .unwrap();
        let mut lighter = heavier.clone();
        lighter.edges[0].capacity = 1.0;
        assert_ne!(heavier.topology(), lighter.topology());
    }

    #[test]
    fn healthy_graph_has_lambda_norm_exactly_one() {
        let integrity = single_partition(1.0, 1.0).integrity().unwrap();
        assert_eq!(integrity.lambda_norm, 1.0);
        assert_eq!(integrity.lambda_cut, integrity.lambda_nominal);
    }

    #[test]
    fn weakest_end_scales_the_edge_and_is_the_witness() {
        let g = single_partition(1.0, 0.5);
        let integrity = g.integrity().unwrap();
        assert_eq!(integrity.lambda_cut, 0.5);
        assert_eq!(integrity.lambda_norm, 0.5);
        assert_eq!(integrity.witness_edges, vec![2]);
        assert_eq!(integrity.cut_side, vec![3]);
    }

    #[test]
    fn failed_node_disconnects_and_gives_zero() {
        let integrity = single_partition(0.0, 1.0).integrity().unwrap();
        assert_eq!(integrity.lambda_cut, 0.0);
        assert_eq!(integrity.lambda_norm, 0.0);
        assert_eq!(integrity.witness_edges, vec![0]);
    }

    #[test]
    fn error_rate_scales_capacity() {
        let mut g = single_partition(1.0, 1.0);
        g.add_edge(0, 1, EdgeKind::PartitionLink, 1.0, 0.5).unwrap();
        // partition—shard is now 1 + 0.5 against a nominal 2; the leaves still cut at 1.
        let integrity = g.integrity().unwrap();
        assert_eq!(integrity.lambda_cut, 1.0);
        assert_eq!(integrity.lambda_nominal, 1.0);
    }

    #[test]
    fn invalid_numbers_are_refused_with_their_name() {
        let mut g = ContractedGraph::new();
        let err = g
            .add_node(NodeKind::Shard, "primary", f64::NAN)
            .unwrap_err();
        assert!(
            err.to_string().contains("the health of shard:primary"),
            "{err}"
        );
        let a = g.add_node(NodeKind::Shard, "primary", 1.0).unwrap();
        let b = g.add_node(NodeKind::Partition, "t", 1.0).unwrap();
        assert!(g
            .add_edge(a, b, EdgeKind::PartitionLink, -1.0, 0.0)
            .is_err());
        assert!(g
            .add_edge(a, b, EdgeKind::PartitionLink, f64::INFINITY, 0.0)
            .is_err());
        assert!(g.add_edge(a, b, EdgeKind::PartitionLink, 1.0, 1.5).is_err());
        assert!(g.add_edge(a, 7, EdgeKind::PartitionLink, 1.0, 0.0).is_err());
        assert!(matches!(
            g.add_node(NodeKind::Shard, "primary", 1.0),
            Err(Error::DuplicateNode { .. })
        ));
        assert!(g.edges().is_empty());
    }

    #[test]
    fn what_if_a_node_fails() {
        let mut g = single_partition(1.0, 1.0);
        g.set_health(1, 0.0).unwrap();
        assert_eq!(g.integrity().unwrap().lambda_norm, 0.0);
        assert!(g.set_health(1, 1.5).is_err());
        assert!(g.set_health(9, 1.0).is_err());
    }

    #[test]
    fn capacities_that_could_overflow_are_refused_by_name() {
        let mut g = single_partition(1.0, 1.0);
        g.add_edge(1, 3, EdgeKind::Dependency, 1e308, 0.0).unwrap();
        g.add_edge(1, 2, EdgeKind::Dependency, 1e308, 0.0).unwrap();
        let err = g.integrity().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the capacity of the dependency edge shard:primary - maintenance_dep:wal_archiving \
             must be small enough that all capacities sum to at most 1e300, got 1e308"
        );
    }

    #[test]
    fn integrity_runs_under_the_callers_control() {
        let g = single_partition(1.0, 0.5);
        let mut hook = || Err(Error::Cancelled("statement timeout".into()));
        let mut control = Control::default().with_interrupt(&mut hook);
        assert_eq!(
            g.integrity_with(&mut control),
            Err(Error::Cancelled("statement timeout".into()))
        );
        let mut control = Control::new(crate::control::Limits { max_edges: 2 });
        assert!(matches!(
            g.integrity_with(&mut control),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn one_node_has_no_integrity() {
        let mut g = ContractedGraph::new();
        g.add_node(NodeKind::Shard, "primary", 1.0).unwrap();
        assert_eq!(g.integrity(), Err(Error::TooFewNodes(1)));
    }
}
