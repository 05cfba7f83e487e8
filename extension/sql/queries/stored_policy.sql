-- The stored policy $2 of collection $1, as a policy document.
SELECT ruvector._policy_document(p) FROM ruvector.integrity_policies p
WHERE p.collection_id = $1 AND p.name = $2
