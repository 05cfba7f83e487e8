-- One row of collection $1's sample history (pruned after
-- ruvector.sample_retention); $2 is when, in Unix microseconds.
INSERT INTO ruvector.integrity_samples
    (collection_id, sampled_at, lambda_cut, lambda_nominal, lambda_norm, lambda2, state, node_count, edge_count,
     duration_ms)
VALUES ($1, ruvector._at_unix_us($2), $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT DO NOTHING
