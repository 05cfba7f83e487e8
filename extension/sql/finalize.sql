-- ruvector: the public SQL API. Functions written in Rust live in schema
-- ruvector with a leading underscore and cannot be called directly; these
-- wrappers give them the documented names and signatures, run as the
-- extension's owner (SECURITY DEFINER, with a pinned search_path), and are
-- granted to ruvector_reader or ruvector_admin.

-- A dropped table leaves its collection: a dropped registered table
-- unregisters it (audited), a dropped partition leaves the relation map.
CREATE FUNCTION ruvector._on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dropped oid[];
BEGIN
    SELECT array_agg(d.objid) INTO dropped
    FROM pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0;
    IF dropped IS NOT NULL AND to_regprocedure('ruvector._forget_dropped_relations(oid[])') IS NOT NULL THEN
        PERFORM ruvector._forget_dropped_relations(dropped);
    END IF;
END $$;

CREATE EVENT TRIGGER ruvector_sql_drop ON sql_drop EXECUTE FUNCTION ruvector._on_sql_drop();

-- Pending events are append-only too, but for the worker, which removes each
-- once it has signed it into the chain.
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON ruvector.pending_events
    FOR EACH ROW EXECUTE FUNCTION ruvector._guard_pending_event();
ALTER TABLE ruvector.pending_events ENABLE ALWAYS TRIGGER append_only;

-- Everything that holds state goes with the database into pg_dump (the
-- private signing key does not: it is a file in the data directory).
-- (one call per statement: each call rewrites the extension's catalog row)
SELECT pg_catalog.pg_extension_config_dump('ruvector.collections', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.collections_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.integrity_state', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.integrity_policies', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.integrity_policies_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.contracted_graph', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.contracted_edges', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.integrity_samples', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.ivf_lists', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.ivf_training', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.integrity_events', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.pending_events', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.pending_events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.signing_keys', '');

CREATE FUNCTION ruvector_register_collection(
    collection text,
    table_name regclass,
    column_name name,
    dimensions integer DEFAULT NULL,
    distance_metric text DEFAULT 'l2',
    index_type text DEFAULT 'flat',
    config jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._register_collection(collection, table_name::oid, column_name::text,
                                           dimensions, distance_metric, index_type, config) $$;

CREATE FUNCTION ruvector_unregister_collection(collection text)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._unregister_collection(collection) $$;

CREATE FUNCTION ruvector_integrity_status(collection text)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._integrity_status(collection) $$;

CREATE FUNCTION ruvector_integrity_sample(collection text)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._integrity_sample(collection) $$;

CREATE FUNCTION ruvector_integrity_simulate(collection text, changes jsonb)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._integrity_simulate(collection, changes) $$;

-- Why the collection is in its state and what brings it back (0.4.0).
CREATE FUNCTION ruvector_integrity_explain(collection text)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._integrity_explain(collection) $$;

CREATE FUNCTION ruvector_integrity_explain_text(collection text)
RETURNS text LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._integrity_explain_text(collection) $$;

-- Trains the collection's IVF lists (k-means over its vector column); the
-- caller must own the collection's table.
CREATE FUNCTION ruvector_ivf_train(collection text, lists integer)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._ivf_train(collection, lists) $$;

CREATE FUNCTION ruvector_rebuild_contracted_graph(collection text)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._rebuild_contracted_graph(collection) $$;

CREATE FUNCTION ruvector_integrity_policy_set(collection text, policy_name text, policy jsonb)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._policy_set(collection, policy_name, policy) $$;

-- Every stored policy of a collection; the one in force comes first.
CREATE FUNCTION ruvector_integrity_policy_list(collection text)
RETURNS TABLE (policy_name text, in_force boolean, enabled boolean, priority integer,
               policy jsonb, updated_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.policy_name, p.in_force, p.enabled, p.priority, p.policy,
           ruvector._at_unix_us(p.updated_at_unix_us)
    FROM ruvector._policy_list(collection) p
$$;

-- Puts a stored policy of a collection in force. Audited.
CREATE FUNCTION ruvector_integrity_policy_activate(collection text, policy_name text)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._policy_activate(collection, policy_name) $$;

-- Deletes a stored policy of a collection, not the one in force. Audited.
CREATE FUNCTION ruvector_integrity_policy_drop(collection text, policy_name text)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._policy_drop(collection, policy_name) $$;

-- Pins the state of a collection for ttl (NULL state clears the pin). Audited.
CREATE FUNCTION ruvector_integrity_override(
    collection text, state text, ttl interval DEFAULT '1 hour', reason text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._override(collection, state, extract(epoch FROM ttl)::float8, reason) $$;

CREATE FUNCTION ruvector_verify_event_signature(event_id bigint)
RETURNS boolean LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._verify_event(event_id) $$;

CREATE FUNCTION ruvector_verify_audit_chain()
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._verify_audit_chain() $$;

CREATE FUNCTION ruvector_audit_checkpoint()
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._audit_checkpoint() $$;

-- The whole log, one JSON document per line (so a log of any size streams:
-- COPY (SELECT ruvector_audit_export()) TO STDOUT): a header with the format
-- and the latest checkpoint, then every entry in seq order.
CREATE FUNCTION ruvector_audit_export()
RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT ruvector._audit_export_header()
    UNION ALL
    (SELECT ruvector._audit_export_line(e.seq, e.prev_hash, e.entry_hash, ruvector._unix_us(e.signed_at),
                                        e.system_identifier::text, e.timeline, e.payload, e.signer_id, e.signature)
     FROM ruvector.integrity_events e
     ORDER BY e.seq)
$$;

-- Starts the audit chain over with a new root key (superuser), when no valid
-- key is left to sign with. Audited; verifiers must be given the new root.
CREATE FUNCTION ruvector_reroot_audit_chain(reason text)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._reroot_audit_chain(reason) $$;

CREATE FUNCTION ruvector_rotate_signing_key(reason text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._rotate_signing_key(reason) $$;

CREATE FUNCTION ruvector_revoke_signing_key(key_id text, reason text)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._revoke_signing_key(key_id, reason) $$;

CREATE FUNCTION ruvector_contracted_graph_dot(collection text)
RETURNS text LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._contracted_graph_dot(collection) $$;

-- The stored contracted graph of a collection.
CREATE FUNCTION ruvector_contracted_graph(collection text)
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id integer;
BEGIN
    SELECT c.id INTO v_id FROM ruvector.collections c WHERE c.name = collection;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'collection "%" is not registered', collection
            USING ERRCODE = 'undefined_object',
                  HINT = 'List collections with SELECT name FROM ruvector.collections.';
    END IF;
    RETURN jsonb_build_object(
        'collection', collection,
        'nodes', coalesce((
            SELECT jsonb_agg(jsonb_build_object('type', g.node_type, 'id', g.node_id, 'name', g.node_name,
                                                'health', g.health_score, 'data', g.node_data) ORDER BY g.node_id)
            FROM ruvector.contracted_graph g WHERE g.collection_id = v_id), '[]'::jsonb),
        'edges', coalesce((
            SELECT jsonb_agg(jsonb_build_object('source', e.source, 'target', e.target,
                                                'type', e.edge_type, 'capacity', e.capacity,
                                                'effective_capacity', e.effective_capacity,
                                                'error_rate', e.error_rate) ORDER BY e.edge_id)
            FROM ruvector.contracted_edge_capacities e WHERE e.collection_id = v_id), '[]'::jsonb),
        'node_count', (SELECT count(*) FROM ruvector.contracted_graph g WHERE g.collection_id = v_id),
        'edge_count', (SELECT count(*) FROM ruvector.contracted_edges e WHERE e.collection_id = v_id),
        'witness_edges', (SELECT s.witness_edges FROM ruvector.integrity_state s WHERE s.collection_id = v_id));
END $$;

-- The audit history of a collection, newest first: signed events with their
-- verification, then events still waiting for the worker's signature.
CREATE FUNCTION ruvector_integrity_history(
    collection text,
    event_type text DEFAULT NULL,
    since timestamptz DEFAULT now() - interval '24 hours',
    max_rows integer DEFAULT 100)
RETURNS TABLE (
    id bigint,
    event_type text,
    previous_state text,
    new_state text,
    lambda_cut double precision,
    witness_edge_count integer,
    is_signed boolean,
    is_verified boolean,
    created_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    -- Only the rows returned are verified.
    SELECT h.seq, h.event_type, h.previous_state, h.new_state, h.lambda_cut, h.witness_edge_count,
           h.is_signed, CASE WHEN h.is_signed THEN ruvector._verify_event(h.seq) END, h.created_at
    FROM (
        SELECT * FROM (
            SELECT e.seq, e.event_type, e.previous_state, e.new_state, e.lambda_cut,
                   CASE WHEN jsonb_typeof(e.witness_edges) = 'array' THEN jsonb_array_length(e.witness_edges) END
                       AS witness_edge_count,
                   true AS is_signed, e.created_at
            FROM ruvector.integrity_events e
            WHERE e.collection_name = $1 AND e.created_at >= $3 AND ($2 IS NULL OR e.event_type = $2)
            UNION ALL
            SELECT NULL, p.event_type, p.previous_state, p.new_state, NULL, 0, false, p.created_at
            FROM ruvector.pending_events p
            WHERE p.collection_name = $1 AND p.created_at >= $3 AND ($2 IS NULL OR p.event_type = $2)
        ) all_rows
        ORDER BY all_rows.created_at DESC, all_rows.seq DESC NULLS FIRST
        LIMIT $4
    ) h
    ORDER BY h.created_at DESC, h.seq DESC NULLS FIRST
$$;

-- The gate's decisions since the server started (or the last reset), counted
-- in shared memory: per collection, operation and decision (allowed,
-- throttled, deferred, rejected, bypassed).
CREATE VIEW ruvector.integrity_gate_stats AS
    SELECT s.collection, s.operation, s.decision, s.count,
           ruvector._at_unix_us(s.last_at_unix_us) AS last_at
    FROM ruvector._integrity_gate_stats() s;

-- One row per collection, in the style of pg_stat_*: the state the gate acts
-- on now (an override or staleness included; shared memory, as every session
-- sees it), the last sample's, and the policy and override in force. Where
-- shared memory does not hold the collection (outside the watched database),
-- the stored state, and enforced is false.
CREATE VIEW ruvector.collections_status AS
    SELECT c.name AS collection,
           c.table_oid::pg_catalog.regclass AS "table",
           coalesce(l.state, s.state) AS state,
           s.state AS sampled_state,
           l.stale,
           s.lambda_cut AS lambda,
           s.lambda_norm,
           s.witness_edges AS witness,
           s.last_sample,
           s.sample_count,
           p.name AS policy,
           CASE WHEN l.state IS NOT NULL THEN l.override_state
                WHEN s.override_until > pg_catalog.now() THEN s.override_state END AS override_state,
           CASE WHEN l.state IS NOT NULL THEN ruvector._at_unix_us(l.override_until_unix_us)
                WHEN s.override_until > pg_catalog.now() THEN s.override_until END AS override_until,
           coalesce(l.enforced, false) AS enforced
    FROM ruvector.collections c
    JOIN ruvector.integrity_state s ON s.collection_id = c.id
    LEFT JOIN LATERAL (
        SELECT policy.name FROM ruvector.integrity_policies policy
        WHERE policy.collection_id = c.id AND policy.enabled
        ORDER BY policy.priority DESC, policy.id DESC
        LIMIT 1
    ) p ON true
    LEFT JOIN LATERAL ruvector._live_state(c.name) l ON true;

-- Sets the counters of a collection (NULL: of every collection) back to zero.
CREATE FUNCTION ruvector_integrity_gate_stats_reset(collection text DEFAULT NULL)
RETURNS integer LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._integrity_gate_stats_reset(collection) $$;

-- Privileges. Functions are executable by PUBLIC by default; take that back.
REVOKE ALL ON FUNCTION ruvector._guard_pending_event() FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._on_sql_drop() FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._forget_dropped_relations FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._register_collection FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._unregister_collection FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._integrity_status FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._integrity_sample FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._integrity_simulate FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._integrity_explain FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._integrity_explain_text FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._rebuild_contracted_graph FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._policy_set FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._override FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._policy_list FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._policy_activate FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._policy_drop FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._live_state FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._verify_event FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._verify_audit_chain FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._audit_checkpoint FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._audit_export_header FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._audit_export_line FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._reroot_audit_chain FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._rotate_signing_key FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._revoke_signing_key FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._contracted_graph_dot FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._ivf_train FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._integrity_gate_stats FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._integrity_gate_stats_reset FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._shared_memory FROM PUBLIC;

REVOKE ALL ON FUNCTION ruvector_register_collection FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_unregister_collection FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_status FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_sample FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_simulate FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_explain FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_explain_text FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_rebuild_contracted_graph FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_ivf_train FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_policy_set FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_override FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_policy_list FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_policy_activate FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_policy_drop FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_verify_event_signature FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_verify_audit_chain FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_audit_checkpoint FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_audit_export FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_reroot_audit_chain FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_rotate_signing_key FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_revoke_signing_key FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_contracted_graph FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_contracted_graph_dot FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_history FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_gate FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_allowed FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_gate_stats_reset FROM PUBLIC;
REVOKE ALL ON ruvector.integrity_gate_stats FROM PUBLIC;
REVOKE ALL ON ruvector.collections_status FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    ruvector_integrity_status, ruvector_integrity_gate, ruvector_integrity_allowed, ruvector_integrity_simulate,
    ruvector_integrity_explain, ruvector_integrity_explain_text,
    ruvector_integrity_history, ruvector_contracted_graph, ruvector_contracted_graph_dot,
    ruvector_verify_event_signature,
    ruvector_verify_audit_chain, ruvector_audit_checkpoint, ruvector_audit_export,
    ruvector_integrity_policy_list,
    ruvector._integrity_gate_stats, ruvector._shared_memory, ruvector._live_state
    TO ruvector_reader;
GRANT SELECT ON ruvector.integrity_gate_stats, ruvector.collections_status TO ruvector_reader;
GRANT EXECUTE ON FUNCTION
    ruvector_register_collection, ruvector_unregister_collection, ruvector_integrity_policy_set,
    ruvector_integrity_policy_activate, ruvector_integrity_policy_drop,
    ruvector_rebuild_contracted_graph, ruvector_integrity_sample, ruvector_integrity_override,
    ruvector_ivf_train, ruvector_integrity_gate_stats_reset
    TO ruvector_admin;
-- ruvector_rotate_signing_key, ruvector_revoke_signing_key and
-- ruvector_reroot_audit_chain: superusers only.
