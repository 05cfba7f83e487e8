-- The settings and statistics the maintenance dependencies are judged by.
SELECT jsonb_build_object(
    'autovacuum', current_setting('autovacuum')::boolean,
    'track_counts', current_setting('track_counts')::boolean,
    'archive_mode', current_setting('archive_mode'),
    'archived_count', a.archived_count,
    'failed_count', a.failed_count,
    'last_archived', (extract(epoch FROM a.last_archived_time) * 1000000)::bigint,
    'last_failed', (extract(epoch FROM a.last_failed_time) * 1000000)::bigint)
FROM pg_stat_archiver a
