-- Collection $1's stored graph as it is drawn: each node's label, kind, name
-- and health (a standby's is its stream's, on its replication edge), each
-- edge with its effective capacity, and the witness edges.
SELECT jsonb_build_object(
    'nodes', coalesce((SELECT jsonb_agg(jsonb_build_object(
        'label', node_type || ':' || node_name, 'kind', node_type, 'name', node_name,
        'health', CASE WHEN node_type = 'replication_target'
                       THEN coalesce((node_data->>'health')::float8, health_score)
                       ELSE health_score END) ORDER BY node_id)
        FROM ruvector.contracted_graph WHERE collection_id = $1), '[]'),
    'edges', coalesce((SELECT jsonb_agg(jsonb_build_object(
        'source', e.source, 'target', e.target, 'kind', e.edge_type,
        'capacity', e.capacity, 'effective_capacity', e.effective_capacity) ORDER BY e.edge_id)
        FROM ruvector.contracted_edge_capacities e WHERE e.collection_id = $1), '[]'),
    'witness', (SELECT witness_edges FROM ruvector.integrity_state WHERE collection_id = $1))
