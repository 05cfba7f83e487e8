//! Time: PostgreSQL counts microseconds from 2000-01-01, the core library from
//! 1970-01-01. Shared memory holds PostgreSQL time (so it compares with
//! `GetCurrentTimestamp()` directly); everything handed to the core is Unix time.

use pgrx::pg_sys;
use ruvector_integrity::{Micros, SECOND};

/// Microseconds between the Unix and PostgreSQL epochs.
const PG_EPOCH_OFFSET: i64 = 946_684_800 * SECOND;

/// Now, in PostgreSQL microseconds.
pub fn now_pg() -> i64 {
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// Now, in Unix microseconds.
pub fn now_unix() -> Micros {
    pg_to_unix(now_pg())
}

pub fn pg_to_unix(pg: i64) -> Micros {
    pg + PG_EPOCH_OFFSET
}

pub fn unix_to_pg(unix: Micros) -> i64 {
    unix - PG_EPOCH_OFFSET
}
