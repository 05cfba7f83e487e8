-- Forgets collection $1's IVF lists (they are stored again at once).
DELETE FROM ruvector.ivf_lists WHERE collection_id = $1
