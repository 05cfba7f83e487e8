-- The settings and statistics the maintenance dependencies are judged by.
SELECT jsonb_build_object(
    'autovacuum', current_setting('autovacuum')::boolean,
    'track_counts', current_setting('track_counts')::boolean,
    'archive_mode', current_setting('archive_mode'),
    'archived_count', a.archived_count,
    'failed_count', a.failed_count,
    'last_archived', ruvector._unix_us(a.last_archived_time),
    'last_failed', ruvector._unix_us(a.last_failed_time))
FROM pg_stat_archiver a
