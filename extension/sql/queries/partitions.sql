-- The leaf partitions of table $1 (the table itself when it is not
-- partitioned), with their tuple statistics, and whether the table exists.
-- Read from pg_inherits, which takes no lock on the partitions (a lock held on
-- one must not stall the worker).
WITH RECURSIVE tree (relid) AS (
    SELECT $1::oid
    UNION ALL
    SELECT i.inhrelid FROM tree t
    JOIN pg_inherits i ON i.inhparent = t.relid
    JOIN pg_class k ON k.oid = i.inhrelid AND k.relispartition
)
SELECT jsonb_build_object(
    'exists', EXISTS (SELECT 1 FROM pg_class WHERE oid = $1),
    'partitions', coalesce(jsonb_agg(jsonb_build_object(
        'relid', c.oid::bigint,
        'name', format('%I.%I', n.nspname, c.relname),
        'relkind', c.relkind,
        'live', coalesce(s.n_live_tup, 0),
        'dead', coalesce(s.n_dead_tup, 0),
        'last_vacuum', (extract(epoch FROM greatest(s.last_vacuum, s.last_autovacuum)) * 1000000)::bigint
    ) ORDER BY c.oid) FILTER (WHERE c.oid IS NOT NULL), '[]'::jsonb))
FROM tree t
JOIN pg_class c ON c.oid = t.relid AND c.relkind NOT IN ('p')
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
