-- The signed event log in seq order ($1: only seq = $1, or all when NULL), with
-- bytes as hex and times as Unix microseconds.
SELECT coalesce(jsonb_agg(jsonb_build_object(
        'seq', seq,
        'collection_id', collection_id,
        'collection_name', collection_name,
        'event_type', event_type,
        'previous_state', previous_state,
        'new_state', new_state,
        'lambda_cut', lambda_cut,
        'lambda_norm', lambda_norm,
        'lambda2', lambda2,
        'witness_edges', witness_edges,
        'metadata', metadata,
        'payload', encode(payload, 'hex'),
        'prev_hash', encode(prev_hash, 'hex'),
        'entry_hash', encode(entry_hash, 'hex'),
        'signature', encode(signature, 'hex'),
        'signer_id', signer_id,
        'created_at', (extract(epoch FROM created_at) * 1000000)::bigint,
        'signed_at', (extract(epoch FROM signed_at) * 1000000)::bigint
    ) ORDER BY seq), '[]'::jsonb)
FROM ruvector.integrity_events
WHERE $1::bigint IS NULL OR seq = $1
