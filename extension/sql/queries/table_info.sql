-- What registration needs to know about table $1 and its column $2: its kind,
-- the column's type by OID (whether it is pgvector's vector type, found by the
-- vector extension's membership rather than by name, and whether it casts to
-- real[]), and how the table sits among others (partition, inheritance, other
-- collections).
SELECT jsonb_build_object(
    'schema', n.nspname,
    'table', c.relname,
    'relkind', c.relkind,
    'persistence', c.relpersistence,
    'is_partition', c.relispartition,
    'inherits', EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid),
    'inherited', EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class k ON k.oid = i.inhrelid
                         WHERE i.inhparent = c.oid AND NOT k.relispartition),
    'column_type_oid', a.atttypid::bigint,
    'column_type', format_type(a.atttypid, a.atttypmod),
    'column_typmod', a.atttypmod,
    'pgvector', EXISTS (SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                        WHERE d.classid = 'pg_type'::regclass AND d.objid = a.atttypid
                          AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                          AND e.extname = 'vector'),
    'casts_to_real_array', EXISTS (SELECT 1 FROM pg_cast k
                                   WHERE k.castsource = a.atttypid
                                     AND k.casttarget = 'real[]'::regtype)
                           OR EXISTS (SELECT 1 FROM pg_type t
                                      WHERE t.oid = a.atttypid AND t.typbasetype = 'real[]'::regtype))
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.oid = $1
