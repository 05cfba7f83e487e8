-- Stores the edges $2 of collection $1 (after store_graph.sql wrote the nodes).
INSERT INTO ruvector.contracted_edges
    (collection_id, source_type, source_id, target_type, target_id, edge_type, capacity, effective_capacity, error_rate)
SELECT $1, e.source_type, e.source_id, e.target_type, e.target_id, e.edge_type, e.capacity, e.effective_capacity, e.error_rate
FROM jsonb_to_recordset($2) AS e(source_type text, source_id bigint, target_type text, target_id bigint,
                                 edge_type text, capacity float8, effective_capacity float8, error_rate float8)
