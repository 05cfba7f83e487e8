-- Records the fingerprint $2 of collection $1's stored topology.
UPDATE ruvector.integrity_state SET graph_topology = $2 WHERE collection_id = $1
