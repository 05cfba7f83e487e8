-- Stores list $2 of collection $1: its centroid, vector count, mean distance
-- and vectors per partition.
INSERT INTO ruvector.ivf_lists (collection_id, list_id, centroid, vector_count, mean_distance, partition_counts)
VALUES ($1, $2, $3, $4, $5, $6)
