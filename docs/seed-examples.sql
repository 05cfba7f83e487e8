-- The usage examples of the design document (seed/08-phase4-integrity-control.md,
-- "Usage Examples"), exactly as written there. They run as written on a cluster
-- whose first registered collection is named `embeddings` (collection_id = 1);
-- tests/tests/operator.rs runs them.

-- Check current integrity status
SELECT ruvector_integrity_status('embeddings');

-- Check if operation is allowed
SELECT ruvector_integrity_gate('embeddings', 'bulk_insert');

-- View contracted graph structure
SELECT ruvector_contracted_graph('embeddings');

-- View recent integrity events
SELECT * FROM ruvector_integrity_history('embeddings', 'state_change');

-- Verify event signatures
SELECT
    id,
    event_type,
    new_state,
    ruvector_verify_event_signature(id) AS signature_valid
FROM ruvector.integrity_events
WHERE collection_id = 1
  AND signature IS NOT NULL
ORDER BY created_at DESC
LIMIT 10;

-- Set custom policy
SELECT ruvector_integrity_policy_set('embeddings', 'custom', '{
    "threshold_high": 0.7,
    "threshold_low": 0.2,
    "stress_actions": {
        "allow_bulk_insert": false,
        "throttle_inserts_pct": 75,
        "pause_gnn_training": true
    }
}'::jsonb);
