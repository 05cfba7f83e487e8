-- The collection already named $1, or already registered on table $2
-- (by OID: a renamed table is the same table), the name first.
SELECT c.name FROM ruvector.collections c
WHERE c.name = $1 OR c.table_oid = $2::oid::regclass
ORDER BY c.name = $1 DESC
LIMIT 1
