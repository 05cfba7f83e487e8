-- Whether the override in force on collection $1 was set by a superuser.
SELECT r.rolsuper FROM ruvector.integrity_state s
JOIN pg_roles r ON r.rolname = s.override_by
WHERE s.collection_id = $1 AND s.override_state IS NOT NULL AND s.override_until > now()
