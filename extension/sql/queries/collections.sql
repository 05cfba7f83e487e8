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
        'last_sample', ruvector._unix_us(s.last_sample),
        'sample_count', s.sample_count,
        'controller', s.controller,
        'override_state', s.override_state,
        'override_until', ruvector._unix_us(s.override_until),
        'policy_name', (p.policy).name,
        'policy', ruvector._policy_document(p.policy)
    ) ORDER BY c.id), '[]'::jsonb)
FROM ruvector.collections c
JOIN ruvector.integrity_state s ON s.collection_id = c.id
LEFT JOIN LATERAL (
    SELECT policy FROM ruvector.integrity_policies policy
    WHERE policy.collection_id = c.id AND policy.enabled
    ORDER BY policy.priority DESC, policy.id DESC
    LIMIT 1
) p ON true
WHERE $1::text IS NULL OR c.name = $1
