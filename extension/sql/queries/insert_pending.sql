-- Appends an event for the worker to sign, in the caller's transaction.
-- Times are Unix microseconds.
INSERT INTO ruvector.pending_events
    (collection_id, collection_name, event_type, previous_state, new_state, metadata, created_at)
VALUES ($1, $2, $3, $4, $5, $6, ruvector._at_unix_us($7))
RETURNING id
