-- Forgets collection $1's stored edges (they are stored again at once).
DELETE FROM ruvector.contracted_edges WHERE collection_id = $1
