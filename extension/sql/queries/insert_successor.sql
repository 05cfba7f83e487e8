-- A new successor key; the secrets of earlier ones go.
-- $1 its id, $2 its secret.
WITH gone AS (DELETE FROM ruvector.successor_keys WHERE id <> $1)
INSERT INTO ruvector.successor_keys (id, secret) VALUES ($1, $2)
