-- Stores the nodes $2 of collection $1 (a JSON array built by sampler.rs); the
-- caller has deleted the previous graph.
INSERT INTO ruvector.contracted_graph (collection_id, node_type, node_id, node_name, node_data, health_score)
SELECT $1, n.node_type, n.node_id, n.node_name, n.node_data, n.health_score
FROM jsonb_to_recordset($2) AS n(node_type text, node_id bigint, node_name text, node_data jsonb, health_score float8)
