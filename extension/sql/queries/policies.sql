-- Every stored policy of collection $1 as one JSON array, in the order that
-- decides which is in force (the first enabled one). Times are Unix
-- microseconds.
SELECT coalesce(jsonb_agg(jsonb_build_object(
        'name', p.name,
        'enabled', p.enabled,
        'priority', p.priority,
        'policy', ruvector._policy_document(p),
        'updated_at', ruvector._unix_us(p.updated_at)
    ) ORDER BY p.enabled DESC, p.priority DESC, p.id DESC), '[]'::jsonb)
FROM ruvector.integrity_policies p
WHERE p.collection_id = $1
