-- Names of the registered collections stored in any of the tables $1
-- (bigint[] of OIDs), or in schema $2, or everywhere when both are NULL.
-- Empty when the extension is not installed in this database.
SELECT coalesce(jsonb_agg(c.name ORDER BY c.name), '[]'::jsonb)
FROM ruvector.collections c
WHERE ($1::bigint[] IS NULL OR c.table_oid::bigint = ANY ($1))
  AND ($2::oid IS NULL OR c.table_oid IN (SELECT oid FROM pg_class WHERE relnamespace = $2))
