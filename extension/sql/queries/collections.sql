-- Every registered collection (or the one named $1) with its state and the
-- policy in force, as one JSON array. Times are Unix microseconds. The table's
-- names are its current ones, found by OID (the stored ones go stale on a
-- rename), or the stored ones once the table is gone.
SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', c.id,
        'name', c.name,
        'relid', c.table_oid::oid::bigint,
        'schema', coalesce((SELECT n.nspname FROM pg_class k JOIN pg_namespace n ON n.oid = k.relnamespace
                            WHERE k.oid = c.table_oid), c.table_schema),
        'table', coalesce((SELECT k.relname FROM pg_class k WHERE k.oid = c.table_oid), c.table_name),
        'column', c.column_name,
        'dimensions', c.dimensions,
        'distance_metric', c.distance_metric,
        'owner', (SELECT k.relowner::bigint FROM pg_class k WHERE k.oid = c.table_oid),
        'config', c.config,
        'state', s.state,
        'lambda_cut', s.lambda_cut,
        'lambda_norm', s.lambda_norm,
        'last_sample', (extract(epoch FROM s.last_sample) * 1000000)::bigint,
        'sample_count', s.sample_count,
        'controller', s.controller,
        'override_state', s.override_state,
        'override_until', (extract(epoch FROM s.override_until) * 1000000)::bigint,
        'policy_name', p.name,
        'policy', jsonb_build_object(
            'threshold_high', p.threshold_high,
            'threshold_low', p.threshold_low,
            'normal_actions', p.normal_actions,
            'stress_actions', p.stress_actions,
            'critical_actions', p.critical_actions,
            'hysteresis', p.hysteresis,
            'defer_retry_secs', p.defer_retry_secs,
            'sample_interval_secs', p.sample_interval_secs)
    ) ORDER BY c.id), '[]'::jsonb)
FROM ruvector.collections c
JOIN ruvector.integrity_state s ON s.collection_id = c.id
LEFT JOIN LATERAL (
    SELECT * FROM ruvector.integrity_policies p
    WHERE p.collection_id = c.id AND p.enabled
    ORDER BY p.priority DESC, p.id DESC
    LIMIT 1
) p ON true
WHERE $1::text IS NULL OR c.name = $1
