-- Locks collection $1's state row (concurrent stores of its graph follow each
-- other) and returns the fingerprint of its stored topology.
SELECT graph_topology FROM ruvector.integrity_state WHERE collection_id = $1 FOR UPDATE
