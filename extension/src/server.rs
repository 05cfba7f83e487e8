//! This server, as the audit trail names it: its cluster's system identifier
//! and the WAL timeline it writes on (a promotion starts a new one).

use pgrx::pg_sys;
use ruvector_integrity::audit::Context;

/// Where this process signs and observes from: the cluster and its current
/// timeline.
pub fn context() -> Context {
    // SAFETY: reads the control file's identifier and the WAL insertion
    // timeline, both set before any backend or worker runs.
    unsafe {
        Context {
            system_identifier: pg_sys::GetSystemIdentifier(),
            timeline: pg_sys::GetWALInsertionTimeLine(),
        }
    }
}
