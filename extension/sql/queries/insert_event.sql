-- Appends one signed event. Times are Unix microseconds; $19 is the system
-- identifier as text (it is an unsigned 64-bit number).
INSERT INTO ruvector.integrity_events
    (seq, collection_id, collection_name, event_type, previous_state, new_state,
     lambda_cut, lambda_norm, lambda2, witness_edges, metadata,
     payload, prev_hash, entry_hash, signature, signer_id, created_at, signed_at,
     system_identifier, timeline)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
        ruvector._at_unix_us($17), ruvector._at_unix_us($18), $19::numeric, $20)
