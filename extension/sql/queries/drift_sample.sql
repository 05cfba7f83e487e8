-- About $2 vectors of column {column} of partition {table}, sampled by
-- {method} at $1 percent (filled in by the store: quoted identifiers, and
-- BERNOULLI or SYSTEM).
SELECT {column}::real[] FROM {table} TABLESAMPLE {method} ($1) WHERE {column} IS NOT NULL LIMIT $2
