-- Forgets samples older than $1 seconds.
DELETE FROM ruvector.integrity_samples WHERE sampled_at < now() - make_interval(secs => $1)
