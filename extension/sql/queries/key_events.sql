-- The key events of the chain ($1 is their event type), in seq order, up to
-- seq $2 when it is not NULL.
SELECT seq, payload FROM ruvector.integrity_events
WHERE event_type = $1 AND ($2::bigint IS NULL OR seq <= $2)
ORDER BY seq
