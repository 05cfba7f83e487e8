-- The length and number of dimensions of the first non-null array in column
-- {column} of table {table} (identifiers filled in, quoted, by the store).
SELECT pg_catalog.array_length({column}::real[], 1), pg_catalog.array_ndims({column}::real[])
FROM {table} WHERE {column} IS NOT NULL LIMIT 1
