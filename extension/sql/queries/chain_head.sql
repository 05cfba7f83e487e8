-- The chain's last entry: seq, hash and when it was signed (Unix microseconds).
SELECT seq, entry_hash, ruvector._unix_us(signed_at)
FROM ruvector.integrity_events ORDER BY seq DESC LIMIT 1
