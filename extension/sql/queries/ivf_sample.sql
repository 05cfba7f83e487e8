-- A random sample of up to $1 vectors of column {column} of table {table}
-- for k-means (identifiers filled in, quoted, by the store).
SELECT {column}::real[] FROM {table} WHERE {column} IS NOT NULL ORDER BY pg_catalog.random() LIMIT $1
