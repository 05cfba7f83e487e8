-- What registration needs to know about table $1 and its column $2.
SELECT jsonb_build_object(
    'schema', n.nspname,
    'table', c.relname,
    'relkind', c.relkind,
    'persistence', c.relpersistence,
    'column_attnum', a.attnum,
    'column_type', format_type(a.atttypid, a.atttypmod),
    'column_typmod', a.atttypmod,
    'database', current_database())
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.oid = $1
