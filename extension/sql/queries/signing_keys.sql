-- Every public key with its validity, times as Unix microseconds.
SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', id,
        'public_key', encode(public_key, 'hex'),
        'expires_at', (extract(epoch FROM expires_at) * 1000000)::bigint,
        'revoked_at', (extract(epoch FROM revoked_at) * 1000000)::bigint
    ) ORDER BY created_at), '[]'::jsonb)
FROM ruvector.signing_keys
