-- Removes collection $1 (its state, policies and graph go with it; its audit
-- events stay).
DELETE FROM ruvector.collections WHERE id = $1
