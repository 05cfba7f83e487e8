-- Up to $3 entries of the signed log after seq $1 (or only seq $2 when it is
-- not NULL), in seq order, with times as Unix microseconds and the columns a
-- verifier compares with the signed payload.
SELECT seq, prev_hash, entry_hash, signed_at_us, system_identifier::text AS system_identifier, timeline,
       payload, signer_id, signature,
       collection_id, collection_name, event_type, previous_state, new_state,
       lambda_cut, lambda_norm, lambda2, witness_edges::text AS witness_edges, metadata::text AS metadata,
       created_at_us
FROM (
    SELECT e.*, (extract(epoch FROM e.signed_at) * 1000000)::bigint AS signed_at_us,
           (extract(epoch FROM e.created_at) * 1000000)::bigint AS created_at_us
    FROM ruvector.integrity_events e
    WHERE ($2::bigint IS NULL AND e.seq > $1) OR e.seq = $2
    ORDER BY e.seq
    LIMIT $3
) r
