-- Lists a public key the chain introduced at seq $4 (for reading: verifiers
-- take keys from the chain itself).
INSERT INTO ruvector.signing_keys (id, public_key, description, introduced_seq) VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO NOTHING
