-- Creates or replaces the named policy $2 of collection $1 from the full policy
-- document $3. A new policy gets the highest priority, so it is the one in force.
INSERT INTO ruvector.integrity_policies AS p
    (collection_id, name, threshold_high, threshold_low, normal_actions, stress_actions,
     critical_actions, hysteresis, defer_retry_secs, sample_interval_secs, priority)
SELECT $1, $2,
       ($3->>'threshold_high')::float8, ($3->>'threshold_low')::float8,
       $3->'normal_actions', $3->'stress_actions', $3->'critical_actions', $3->'hysteresis',
       ($3->>'defer_retry_secs')::int, ($3->>'sample_interval_secs')::int,
       coalesce((SELECT max(priority) + 1 FROM ruvector.integrity_policies WHERE collection_id = $1), 0)
ON CONFLICT (collection_id, name) DO UPDATE SET
    threshold_high = EXCLUDED.threshold_high,
    threshold_low = EXCLUDED.threshold_low,
    normal_actions = EXCLUDED.normal_actions,
    stress_actions = EXCLUDED.stress_actions,
    critical_actions = EXCLUDED.critical_actions,
    hysteresis = EXCLUDED.hysteresis,
    defer_retry_secs = EXCLUDED.defer_retry_secs,
    sample_interval_secs = EXCLUDED.sample_interval_secs,
    enabled = true,
    updated_at = now()
