//! The crate's one error type. Messages name the offending key or value so that
//! the extension can pass them to a DBA unchanged.

/// Everything that can go wrong in the core library.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A number that must be finite and within a range was not.
    #[error("{what} must be {expected}, got {}", readable(*value))]
    InvalidNumber {
        what: String,
        expected: &'static str,
        value: f64,
    },

    /// An edge refers to a node index the graph does not have.
    #[error("edge endpoint {index} is out of range: the graph has {nodes} nodes")]
    NodeOutOfRange { index: usize, nodes: usize },

    /// An edge given to a solver refers to a node index the graph does not have.
    #[error("edge {edge}: endpoint {endpoint} is out of range: the graph has {nodes} nodes")]
    EdgeOutOfRange {
        edge: usize,
        endpoint: usize,
        nodes: usize,
    },

    /// The capacities add up to more than the solvers can sum safely.
    #[error(
        "edge {edge}: capacity {capacity:e} brings the total capacity past {limit:e}, \
         where sums could overflow; scale the capacities down"
    )]
    CapacityOverflow {
        edge: usize,
        capacity: f64,
        limit: f64,
    },

    /// The input is larger than the solvers are allowed to take.
    #[error(
        "the graph has {count} {what}, more than the limit of {limit} (ruvector.solver_max_edges)"
    )]
    TooLarge {
        what: &'static str,
        count: usize,
        limit: usize,
    },

    /// An element of an edge list (see [`crate::edge_list`]) is not an edge.
    #[error("edge {edge}: {problem}")]
    Edge { edge: usize, problem: String },

    /// Memory for something sized by the input could not be had.
    #[error("out of memory for the {what}")]
    OutOfMemory { what: &'static str },

    /// The caller's interrupt hook stopped a solver.
    #[error("canceled: {0}")]
    Cancelled(String),

    /// A node was added twice under the same kind and name.
    #[error("duplicate node {kind}:{name}")]
    DuplicateNode { kind: &'static str, name: String },

    /// The graph has fewer than two nodes, so it has no cut.
    #[error("a graph needs at least two nodes to have a cut, it has {0}")]
    TooFewNodes(usize),

    /// A policy document or patch is invalid; `key` is its dotted path.
    #[error("invalid policy key \"{key}\": {reason}")]
    Policy { key: String, reason: String },

    /// An operation name that the gate does not know. Unknown operations are
    /// refused, never allowed.
    #[error("unknown operation \"{name}\"; valid operations are: {valid}")]
    UnknownOperation { name: String, valid: String },

    /// An audit payload, key or signature could not be encoded or decoded.
    #[error("audit: {0}")]
    Audit(String),

    /// A what-if change names a node the graph does not have.
    #[error("no node \"{0}\" in the graph")]
    UnknownNode(String),

    /// What was read about a collection does not fit together.
    #[error("{0}")]
    Source(String),

    /// An eigensolver did not converge.
    #[error("λ₂ did not converge: {0}")]
    Spectral(String),
}

/// A number as a DBA reads it: plain, or in scientific notation when it is very
/// large or very small (1e308 has 309 digits).
fn readable(x: f64) -> String {
    if x.is_finite() && x != 0.0 && !(1e-6..1e16).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

impl Error {
    pub(crate) fn policy(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Policy {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
