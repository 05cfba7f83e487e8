-- The leaf partitions of table $1 (the table itself when it is not
-- partitioned), with their tuple statistics and, for a foreign partition, its
-- server; the foreign servers with their wrapper and options; and whether the
-- table exists. Read from pg_inherits and the catalogs, which takes no lock on
-- the partitions (a lock held on one must not stall the worker).
WITH RECURSIVE tree (relid) AS (
    SELECT $1::oid
    UNION ALL
    SELECT i.inhrelid FROM tree t
    JOIN pg_inherits i ON i.inhparent = t.relid
    JOIN pg_class k ON k.oid = i.inhrelid AND k.relispartition
),
leaves AS (
    SELECT c.oid, c.relkind, format('%I.%I', n.nspname, c.relname) AS name, ft.ftserver
    FROM tree t
    JOIN pg_class c ON c.oid = t.relid AND c.relkind NOT IN ('p')
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_foreign_table ft ON ft.ftrelid = c.oid
)
SELECT jsonb_build_object(
    'exists', EXISTS (SELECT 1 FROM pg_class WHERE oid = $1),
    'partitions', coalesce((SELECT jsonb_agg(jsonb_build_object(
        'relid', l.oid::bigint,
        'name', l.name,
        'relkind', l.relkind,
        'live', coalesce(s.n_live_tup, 0),
        'dead', coalesce(s.n_dead_tup, 0),
        'last_vacuum', ruvector._unix_us(greatest(s.last_vacuum, s.last_autovacuum)),
        'server', fs.srvname
    ) ORDER BY l.oid)
        FROM leaves l
        LEFT JOIN pg_stat_all_tables s ON s.relid = l.oid
        LEFT JOIN pg_foreign_server fs ON fs.oid = l.ftserver), '[]'::jsonb),
    'servers', coalesce((SELECT jsonb_agg(jsonb_build_object(
        'name', fs.srvname,
        'fdw', w.fdwname,
        'options', (SELECT jsonb_object_agg(o.option_name, o.option_value)
                    FROM pg_options_to_table(fs.srvoptions) o)
    ) ORDER BY fs.srvname)
        FROM pg_foreign_server fs
        JOIN pg_foreign_data_wrapper w ON w.oid = fs.srvfdw
        WHERE fs.oid IN (SELECT ftserver FROM leaves)), '[]'::jsonb))
