-- The next $1 events waiting for the worker's signature, oldest first, locked
-- (one snapshot: what the worker acts on is what it signs). Times are Unix
-- microseconds.
SELECT coalesce(jsonb_agg(jsonb_build_object(
         'id', p.id, 'collection_id', p.collection_id, 'collection_name', p.collection_name,
         'event_type', p.event_type, 'previous_state', p.previous_state, 'new_state', p.new_state,
         'metadata', p.metadata, 'created_at', ruvector._unix_us(p.created_at))
         ORDER BY p.id), '[]'::jsonb)
FROM (SELECT * FROM ruvector.pending_events ORDER BY id LIMIT $1 FOR UPDATE) p
