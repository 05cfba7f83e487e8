-- Pins collection $1 to state $2 until $3 (Unix microseconds), or clears the
-- pin when $2 is NULL; $4 says why, $5 who.
UPDATE ruvector.integrity_state
SET override_state = $2,
    override_until = ruvector._at_unix_us($3),
    override_reason = $4, override_by = $5, updated_at = now()
WHERE collection_id = $1
