-- Locks collection $1's row against other changes to its policies (set,
-- activate, drop each take it first, so they follow one another and each
-- reads the policy in force after the one before committed). NO KEY UPDATE:
-- the worker's samples, which only reference the row, are not held up.
SELECT 1 FROM ruvector.collections WHERE id = $1 FOR NO KEY UPDATE
