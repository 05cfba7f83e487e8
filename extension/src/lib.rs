use pgrx::prelude::*;

::pgrx::pg_module_magic!();

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        error!("ruvector must be loaded via shared_preload_libraries");
    }
}

#[pg_extern]
fn ruvector_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn version_is_reported() {
        assert_eq!(
            Spi::get_one::<&str>("SELECT ruvector.ruvector_version()").unwrap(),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries='ruvector'"]
    }
}
