-- The worker removes a pending event in the transaction that signs it.
DELETE FROM ruvector.pending_events WHERE id = $1
