-- What the status of collection $1 shows beyond shared memory: λ_nominal, λ₂,
-- the witness edges, the last sample, who pinned the state and why, the last
-- sampling error. Times are Unix microseconds.
SELECT jsonb_build_object(
    'lambda_nominal', lambda_nominal, 'lambda2', lambda2, 'witness_edges', witness_edges,
    'last_sample', ruvector._unix_us(last_sample), 'override_reason', override_reason, 'override_by', override_by,
    'last_error', last_error)
FROM ruvector.integrity_state WHERE collection_id = $1
