-- The secret of successor key $1, if this database holds it.
SELECT secret FROM ruvector.successor_keys WHERE id = $1
