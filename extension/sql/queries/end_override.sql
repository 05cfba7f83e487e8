-- Ends collection $1's override if its time is up; returns the state it pinned.
UPDATE ruvector.integrity_state s
SET override_state = NULL, override_until = NULL, override_reason = NULL, override_by = NULL,
    updated_at = now()
FROM (SELECT override_state FROM ruvector.integrity_state WHERE collection_id = $1 FOR UPDATE) old
WHERE s.collection_id = $1 AND s.override_until <= now()
RETURNING old.override_state
