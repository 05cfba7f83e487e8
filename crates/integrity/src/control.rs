//! How far a solver may go and how it is stopped: the size [`Limits`] checked
//! before anything is allocated, and the interrupt hook that every long loop of
//! the solvers calls every few thousand steps ([`Control`]).
//!
//! This module owns no state beyond one call: a [`Control`] is made per call,
//! so a hook that unwinds (PostgreSQL's interrupt check raises an ERROR that
//! unwinds through Rust) leaves nothing half-updated behind.

use crate::Error;

/// The largest input the solvers take by default: 10 million edges. The min cut
/// peaks at 70 to 130 bytes per edge (measured by `make bench`: both directions
/// of every edge, the contracted copy, the flow state), λ₂ at about 40 bytes
/// per edge plus 300 per node, so this is about 1 GB of memory and from a few
/// seconds to a minute of work on this class of machine; beyond it a caller
/// must raise the limit knowingly (`ruvector.solver_max_edges`).
pub const DEFAULT_MAX_EDGES: usize = 10_000_000;

/// Work units (edge or vertex visits, each a few nanoseconds) between two calls
/// of the interrupt hook: 16,384 units are at most a few tenths of a
/// millisecond, far below the 100 ms in which a cancel must take effect, and
/// make the hook's own cost negligible.
pub(crate) const CHECK_INTERVAL: u64 = 1 << 14;

/// What a solver may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Inputs with more edges are refused before any allocation. A graph built
    /// from its edges has at most twice as many nodes, so nodes are bounded by
    /// `2 · max_edges` (and at least 2).
    pub max_edges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_edges: DEFAULT_MAX_EDGES,
        }
    }
}

impl Limits {
    /// Refuses a graph with more edges than `max_edges`, or more nodes than its
    /// edges could have: `2 · max_edges`.
    pub fn check(&self, nodes: usize, edges: usize) -> Result<(), Error> {
        if edges > self.max_edges {
            return Err(Error::TooLarge {
                what: "edges",
                count: edges,
                limit: self.max_edges,
            });
        }
        let max_nodes = self.max_edges.saturating_mul(2).max(2);
        if nodes > max_nodes {
            return Err(Error::TooLarge {
                what: "nodes",
                count: nodes,
                limit: max_nodes,
            });
        }
        Ok(())
    }
}

/// The interrupt hook: returns `Err` (normally [`Error::Cancelled`]) to stop the
/// solver, which then returns that error. It may also unwind.
pub type Interrupt<'a> = dyn FnMut() -> Result<(), Error> + 'a;

/// The limits and the interrupt hook of one solver call.
///
/// ```
/// use ruvector_integrity::control::{Control, Limits};
/// use ruvector_integrity::{mincut, Error};
///
/// let mut calls = 0;
/// let mut hook = || {
///     calls += 1;
///     Ok::<(), Error>(())
/// };
/// let mut control = Control::new(Limits { max_edges: 1_000 }).with_interrupt(&mut hook);
/// let cut = mincut::min_cut_with(3, &[(0, 1, 1.0), (1, 2, 1.0)], &mut control)?;
/// assert_eq!(cut.unwrap().value, 1.0);
/// # Ok::<(), Error>(())
/// ```
pub struct Control<'a> {
    limits: Limits,
    interrupt: Option<&'a mut Interrupt<'a>>,
    work: u64,
}

impl Default for Control<'_> {
    fn default() -> Self {
        Control::new(Limits::default())
    }
}

impl<'a> Control<'a> {
    /// Default limits are [`Limits::default`]; no hook.
    pub fn new(limits: Limits) -> Self {
        Control {
            limits,
            interrupt: None,
            work: 0,
        }
    }

    /// Calls `hook` every few thousand steps of every long loop.
    pub fn with_interrupt(mut self, hook: &'a mut Interrupt<'a>) -> Self {
        self.interrupt = Some(hook);
        self
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Accounts for `units` of work and calls the hook once every
    /// [`CHECK_INTERVAL`] units.
    #[inline]
    pub(crate) fn work(&mut self, units: usize) -> Result<(), Error> {
        self.work += units as u64;
        if self.work >= CHECK_INTERVAL {
            self.check()
        } else {
            Ok(())
        }
    }

    /// Calls the hook now.
    pub(crate) fn check(&mut self) -> Result<(), Error> {
        self.work = 0;
        match self.interrupt.as_mut() {
            Some(hook) => hook(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_more_edges_or_nodes_than_allowed() {
        let limits = Limits { max_edges: 10 };
        assert_eq!(limits.check(20, 10), Ok(()));
        assert_eq!(
            limits.check(3, 11),
            Err(Error::TooLarge {
                what: "edges",
                count: 11,
                limit: 10
            })
        );
        assert_eq!(
            limits.check(21, 1),
            Err(Error::TooLarge {
                what: "nodes",
                count: 21,
                limit: 20
            })
        );
        assert_eq!(Limits { max_edges: 0 }.check(2, 0), Ok(()));
    }

    #[test]
    fn the_hook_runs_once_per_interval_of_work() {
        let mut calls = 0;
        let mut hook = || {
            calls += 1;
            Ok(())
        };
        {
            let mut control = Control::default().with_interrupt(&mut hook);
            for _ in 0..10 {
                control.work(CHECK_INTERVAL as usize / 2).unwrap();
            }
        }
        assert_eq!(calls, 5);
    }

    #[test]
    fn the_hooks_error_is_returned() {
        let mut hook = || Err(Error::Cancelled("statement timeout".into()));
        let mut control = Control::default().with_interrupt(&mut hook);
        assert_eq!(control.work(1), Ok(()));
        assert_eq!(
            control.work(CHECK_INTERVAL as usize),
            Err(Error::Cancelled("statement timeout".into()))
        );
    }
}
