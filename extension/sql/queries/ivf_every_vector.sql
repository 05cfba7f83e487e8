-- Every vector of column {column} of table {table}, with the partition it
-- lives in (identifiers filled in, quoted, by the store); read by cursor.
SELECT tableoid::pg_catalog.oid, {column}::real[] FROM {table}
