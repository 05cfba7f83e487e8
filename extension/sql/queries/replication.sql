-- What replication looks like from here: the settings that name expected
-- standbys and pg_stat_replication, with each standby's replay lag in bytes.
-- $1 ruvector.expected_standbys, $2 the lag budget in bytes, $3 the startup
-- grace in seconds, $4 the timeline this server writes on.
SELECT jsonb_build_object(
    'expected_standbys', $1,
    'synchronous_standby_names', current_setting('synchronous_standby_names'),
    'lag_budget_bytes', $2,
    'in_startup_grace', clock_timestamp() - pg_postmaster_start_time() < make_interval(secs => $3),
    'this_server', current_setting('cluster_name'),
    'timeline', $4,
    'standbys', coalesce((SELECT jsonb_agg(jsonb_build_object(
        'application_name', r.application_name,
        'state', r.state,
        'sync_state', r.sync_state,
        'client_addr', host(r.client_addr),
        'replay_lag_bytes', CASE WHEN NOT pg_is_in_recovery()
                                 THEN pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint END
    ) ORDER BY r.pid) FROM pg_stat_replication r), '[]'::jsonb))
