-- The worker's sample of collection $1 at $9 (Unix microseconds): its state,
-- λ, λ_nominal, λ_norm, λ₂, witness edges and hysteresis controller.
UPDATE ruvector.integrity_state
SET state = $2, lambda_cut = $3, lambda_nominal = $4, lambda_norm = $5, lambda2 = $6,
    witness_edges = $7, controller = $8, last_sample = ruvector._at_unix_us($9),
    sample_count = sample_count + 1, last_error = NULL, last_error_at = NULL, updated_at = now()
WHERE collection_id = $1
