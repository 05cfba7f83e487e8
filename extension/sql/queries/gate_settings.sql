-- The settings the gate runs under, as this process sees them: every
-- ruvector.* setting but the per-session bypass, and the preload list.
SELECT jsonb_object_agg(name, setting) FROM pg_settings
WHERE (name LIKE 'ruvector.%' AND name <> 'ruvector.integrity_bypass')
   OR name = 'shared_preload_libraries'
