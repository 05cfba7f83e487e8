-- Every relation of every collection: its registered table and each partition
-- under it, and whether it is the table itself.
SELECT coalesce(jsonb_agg(jsonb_build_object(
        'collection', c.name,
        'relid', t.relid::oid::bigint,
        'root', t.relid = c.table_oid)), '[]'::jsonb)
FROM ruvector.collections c
CROSS JOIN LATERAL (
    SELECT p.relid FROM pg_partition_tree(c.table_oid) p
    UNION
    SELECT c.table_oid
) t
JOIN pg_class k ON k.oid = t.relid
