-- Tells listeners of channel ruvector_integrity about a change ($1, JSON text).
SELECT pg_notify('ruvector_integrity', $1)
