-- Registers collection $1 on table $5 ($2.$3), column $4, with its state row;
-- returns its id. Its default policy is stored next (upsert_policy.sql).
WITH collection AS (
    INSERT INTO ruvector.collections
        (name, table_schema, table_name, column_name, table_oid, dimensions, distance_metric, index_type, config)
    VALUES ($1, $2, $3, $4, $5::oid::regclass, $6, $7, $8, $9)
    RETURNING id
), state AS (
    INSERT INTO ruvector.integrity_state (collection_id) SELECT id FROM collection
)
SELECT id FROM collection
