-- What registration needs to know about table $1 and its column $2.
SELECT jsonb_build_object(
    'schema', n.nspname,
    'table', c.relname,
    'relkind', c.relkind,
    'column_type', (SELECT format_type(a.atttypid, a.atttypmod)
                    FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped),
    'column_typmod', (SELECT a.atttypmod
                      FROM pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped),
    'database', current_database())
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = $1
