-- Puts policy $2 of collection $1 in force: enabled, with a priority above
-- every other. The collection's policies are locked first, so that two
-- activations follow each other and the second sees the first's priority.
-- Returns the policy's new priority, or no row when there is no such policy.
WITH locked AS (
    SELECT p.priority FROM ruvector.integrity_policies p
    WHERE p.collection_id = $1
    FOR UPDATE
)
UPDATE ruvector.integrity_policies
SET priority = (SELECT max(l.priority) + 1 FROM locked l), enabled = true, updated_at = now()
WHERE collection_id = $1 AND name = $2
RETURNING priority
