-- Collection $1's last training and its lists (without their centroids).
SELECT jsonb_build_object(
    'trained_rows', t.trained_rows, 'mean_distance', t.mean_distance, 'dimensions', t.dimensions,
    'lists', coalesce((SELECT jsonb_agg(jsonb_build_object(
        'list_id', l.list_id, 'vector_count', l.vector_count,
        'mean_distance', l.mean_distance, 'partition_counts', l.partition_counts) ORDER BY l.list_id)
        FROM ruvector.ivf_lists l WHERE l.collection_id = t.collection_id), '[]'))
FROM ruvector.ivf_training t WHERE t.collection_id = $1
