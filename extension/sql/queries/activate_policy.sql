-- Puts policy $2 of collection $1 in force: enabled, with a priority above
-- every other (the caller holds lock_policies.sql's lock). Returns the
-- policy's new priority, or no row when there is no such policy.
UPDATE ruvector.integrity_policies
SET priority = (SELECT max(p.priority) + 1 FROM ruvector.integrity_policies p WHERE p.collection_id = $1),
    enabled = true, updated_at = now()
WHERE collection_id = $1 AND name = $2
RETURNING priority
