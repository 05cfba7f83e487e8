-- Where the chain's last entry was signed: the cluster and the timeline.
SELECT system_identifier::text, timeline FROM ruvector.integrity_events ORDER BY seq DESC LIMIT 1
