-- Up to $3 entries of the signed log after seq $1 (or only seq $2 when it is
-- not NULL), in seq order: the entry as signed, then the columns a verifier
-- compares with the signed payload. Times are Unix microseconds.
SELECT e.seq, e.prev_hash, e.entry_hash, ruvector._unix_us(e.signed_at), e.system_identifier::text, e.timeline,
       e.payload, e.signer_id, e.signature,
       e.collection_id, e.collection_name, e.event_type, e.previous_state, e.new_state,
       e.lambda_cut, e.lambda_norm, e.lambda2, e.witness_edges::text, e.metadata::text,
       ruvector._unix_us(e.created_at)
FROM ruvector.integrity_events e
WHERE ($2::bigint IS NULL AND e.seq > $1) OR e.seq = $2
ORDER BY e.seq
LIMIT $3
