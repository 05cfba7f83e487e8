//! Time, in one type: the core's [`Micros`], microseconds since the Unix
//! epoch, everywhere in the extension (shared memory included). PostgreSQL
//! counts from 2000-01-01: its timestamps are converted here, and in the SQL
//! functions `ruvector._unix_us()` and `ruvector._at_unix_us()`
//! (`sql/bootstrap.sql`) for what queries read and write; nowhere else.

use pgrx::pg_sys;
use ruvector_integrity::{Micros, SECOND};

/// Microseconds between the Unix and PostgreSQL epochs.
const PG_EPOCH_OFFSET: Micros = 946_684_800 * SECOND;

/// Now.
pub fn now() -> Micros {
    // SAFETY: reads the system clock; no state.
    from_pg(unsafe { pg_sys::GetCurrentTimestamp() })
}

/// Now, to within the kernel's tick (a few milliseconds), read without a
/// system call: for the gate's decisions, which compare it with times
/// seconds apart (the last sample, an override's end) on every statement.
pub fn now_coarse() -> Micros {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the clock into `now`; CLOCK_REALTIME_COARSE exists on
    // every Linux this runs on.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) };
    now.tv_sec * SECOND + now.tv_nsec / 1000
}

/// A PostgreSQL timestamp (`TimestampTz`, µs since 2000-01-01).
pub fn from_pg(pg: pg_sys::TimestampTz) -> Micros {
    pg + PG_EPOCH_OFFSET
}

/// When the server started.
pub fn server_started() -> Micros {
    // SAFETY: set by the postmaster before any backend or worker starts.
    from_pg(unsafe { pg_sys::PgStartTime })
}
