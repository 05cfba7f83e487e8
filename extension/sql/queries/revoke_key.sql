-- Marks key $1 revoked for reason $2, if it is not yet; returns its id.
UPDATE ruvector.signing_keys SET revoked_at = clock_timestamp(), revocation_reason = $2
WHERE id = $1 AND revoked_at IS NULL
RETURNING id
