-- Forgets collection $1's stored nodes (they are stored again at once).
DELETE FROM ruvector.contracted_graph WHERE collection_id = $1
