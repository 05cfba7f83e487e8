-- Deletes policy $2 of collection $1; returns its policy document, or no row
-- when there is no such policy.
DELETE FROM ruvector.integrity_policies p
WHERE p.collection_id = $1 AND p.name = $2
RETURNING ruvector._policy_document(p)
