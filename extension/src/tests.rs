//! In-database tests: each function's contract and its errors, inside one
//! transaction that pgrx rolls back. What crosses sessions or needs the worker
//! is tested through a client in `tests/`.

use pgrx::prelude::*;

#[pg_test]
fn extension_is_preloaded_and_installed() {
    assert_eq!(
        Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'ruvector')"
        )
        .unwrap(),
        Some(true)
    );
}
