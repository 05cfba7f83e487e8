-- Locks key $1's row: the worker waits for a revocation in flight before it
-- signs with the key.
SELECT 1 FROM ruvector.signing_keys WHERE id = $1 FOR UPDATE
