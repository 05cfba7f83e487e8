-- The Citus workers holding placements of table $1 (run only where Citus is
-- installed; untested here: Citus is not on these machines).
SELECT coalesce(jsonb_agg(DISTINCT jsonb_build_object('host', n.nodename, 'port', n.nodeport)), '[]')
FROM pg_dist_shard s
JOIN pg_dist_placement p ON p.shardid = s.shardid
JOIN pg_dist_node n ON n.groupid = p.groupid
WHERE s.logicalrelid = $1::oid::regclass AND n.isactive AND n.noderole = 'primary'
