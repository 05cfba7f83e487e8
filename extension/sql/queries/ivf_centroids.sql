-- Collection $1's centroids, in list order.
SELECT centroid FROM ruvector.ivf_lists WHERE collection_id = $1 ORDER BY list_id
