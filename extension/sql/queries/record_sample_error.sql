-- Why the last sample of collection $1 failed.
UPDATE ruvector.integrity_state SET last_error = $2, last_error_at = now() WHERE collection_id = $1
