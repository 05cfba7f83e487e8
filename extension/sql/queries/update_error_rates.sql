-- Brings the stored error rates of collection $1 in line with a graph of the
-- same topology: edges $2 have error rates $3, every other edge 0. Touches
-- only the rows that change.
UPDATE ruvector.contracted_edges e
SET error_rate = x.error_rate, updated_at = now()
FROM (
    SELECT coalesce(n.edge_id, old.edge_id) AS edge_id, coalesce(n.error_rate, 0) AS error_rate
    FROM unnest($2::bigint[], $3::float8[]) AS n(edge_id, error_rate)
    FULL JOIN (SELECT edge_id FROM ruvector.contracted_edges
               WHERE collection_id = $1 AND error_rate <> 0) old USING (edge_id)
) x
WHERE e.collection_id = $1 AND e.edge_id = x.edge_id AND e.error_rate IS DISTINCT FROM x.error_rate
