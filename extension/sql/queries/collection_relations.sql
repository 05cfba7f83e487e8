-- Every relation of every collection: its registered table and each partition
-- under it (at every level). Read from pg_inherits, not pg_partition_tree(),
-- which locks every partition: a lock someone holds on one partition must not
-- stall the worker.
WITH RECURSIVE tree (collection, relid) AS (
    SELECT c.name, c.table_oid::oid FROM ruvector.collections c
    UNION ALL
    SELECT t.collection, i.inhrelid
    FROM tree t
    JOIN pg_inherits i ON i.inhparent = t.relid
    JOIN pg_class k ON k.oid = i.inhrelid AND k.relispartition
)
SELECT coalesce(jsonb_agg(jsonb_build_object(
        'collection', t.collection, 'relid', t.relid::bigint)), '[]'::jsonb)
FROM tree t
JOIN pg_class k ON k.oid = t.relid
