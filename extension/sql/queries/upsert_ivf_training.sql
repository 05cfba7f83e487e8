-- Records collection $1's training.
INSERT INTO ruvector.ivf_training
    (collection_id, lists, trained_rows, mean_distance, dimensions,
     distance_metric, sample_rows, skipped_rows, seconds, trained_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
ON CONFLICT (collection_id) DO UPDATE SET
    lists = EXCLUDED.lists, trained_rows = EXCLUDED.trained_rows,
    mean_distance = EXCLUDED.mean_distance,
    dimensions = EXCLUDED.dimensions, distance_metric = EXCLUDED.distance_metric,
    sample_rows = EXCLUDED.sample_rows, skipped_rows = EXCLUDED.skipped_rows,
    seconds = EXCLUDED.seconds, trained_at = EXCLUDED.trained_at
