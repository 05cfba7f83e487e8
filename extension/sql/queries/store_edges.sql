-- Stores the edges of collection $1, one per position of the arrays $2..$9
-- (built by sampler.rs); the caller has deleted the previous ones.
INSERT INTO ruvector.contracted_edges
    (collection_id, edge_id, source_type, source_id, target_type, target_id, edge_type, capacity, error_rate)
SELECT $1, e.*
FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[], $8::float8[], $9::float8[])
    AS e(edge_id, source_type, source_id, target_type, target_id, edge_type, capacity, error_rate)
