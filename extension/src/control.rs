//! Running the core's long computations (the solvers, k-means) inside a
//! backend: bounded by `ruvector.solver_max_edges`, and checking for a cancel
//! or a `statement_timeout` every few thousand steps (the check raises the
//! ERROR, which unwinds through the computation).

use pgrx::check_for_interrupts;
use ruvector_integrity::control::{Control, Limits};
use ruvector_integrity::Error;

use crate::errors::{SqlError, SqlResult};
use crate::gucs;

/// Runs `solve` under the backend's limits and interrupts.
pub fn controlled<R>(solve: impl FnOnce(&mut Control) -> Result<R, Error>) -> SqlResult<R> {
    let mut hook = || -> Result<(), Error> {
        check_for_interrupts!();
        Ok(())
    };
    let limits = Limits {
        max_edges: gucs::SOLVER_MAX_EDGES.get() as usize,
    };
    let mut control = Control::new(limits).with_interrupt(&mut hook);
    solve(&mut control).map_err(SqlError::from)
}
