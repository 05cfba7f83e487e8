-- The timeline the chain's last entry was signed on.
SELECT timeline FROM ruvector.integrity_events ORDER BY seq DESC LIMIT 1
