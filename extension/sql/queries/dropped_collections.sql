-- The collections whose table is one of $1 (dropped in this statement).
SELECT coalesce(array_agg(name), '{}') FROM ruvector.collections WHERE table_oid::oid = ANY ($1)
