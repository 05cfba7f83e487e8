-- When collection $1's IVF lists were last trained (as text: compared, not read).
SELECT trained_at::text FROM ruvector.ivf_training WHERE collection_id = $1
