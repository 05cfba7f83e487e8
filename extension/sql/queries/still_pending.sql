-- Which of the pending events $1 are still waiting for a signature.
SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM ruvector.pending_events WHERE id = ANY ($1)
