-- ruvector: tables, roles and audit protections. Runs before the functions
-- pgrx generates; the functions' grants and SQL wrappers are in finalize.sql.

-- Not IF NOT EXISTS: a schema of that name made by someone else beforehand
-- would hold the extension's tables and let its owner change them.
CREATE SCHEMA ruvector;

DO $$
BEGIN
    CREATE ROLE ruvector_reader NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
DO $$
BEGIN
    CREATE ROLE ruvector_admin NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
GRANT ruvector_reader TO ruvector_admin;
GRANT USAGE ON SCHEMA ruvector TO ruvector_reader;

-- Time crosses between SQL and Rust as Unix microseconds (bigint), converted
-- by these two functions only (and in Rust by clock.rs). SQL-standard bodies:
-- bound when created, so no caller's search_path can change what they call.
CREATE FUNCTION ruvector._unix_us(t timestamptz) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE STRICT
RETURN (pg_catalog.extract('epoch', t) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8;

CREATE FUNCTION ruvector._at_unix_us(us bigint) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE STRICT
RETURN pg_catalog.to_timestamp(0)
       OPERATOR(pg_catalog.+) (us OPERATOR(pg_catalog.*) '1 microsecond'::pg_catalog.interval);

-- Registered vector collections.
CREATE TABLE ruvector.collections (
    id              serial PRIMARY KEY,
    name            text NOT NULL UNIQUE
                    CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]*$' AND octet_length(name) <= 63),
    table_schema    name NOT NULL,
    table_name      name NOT NULL,
    column_name     name NOT NULL,
    -- regclass, so that a dump restores it by name into the new table's OID
    table_oid       regclass NOT NULL,
    dimensions      integer NOT NULL CHECK (dimensions BETWEEN 1 AND 16000),
    distance_metric text NOT NULL DEFAULT 'l2' CHECK (distance_metric IN ('l2', 'cosine', 'ip', 'l1')),
    index_type      text NOT NULL DEFAULT 'flat' CHECK (index_type IN ('hnsw', 'ivfflat', 'flat')),
    index_oid       oid,
    config          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (table_oid, column_name)
);

-- The current integrity state of each collection, written by the worker.
CREATE TABLE ruvector.integrity_state (
    collection_id   integer PRIMARY KEY REFERENCES ruvector.collections(id) ON DELETE CASCADE,
    state           text NOT NULL DEFAULT 'unknown' CHECK (state IN ('unknown', 'normal', 'stress', 'critical')),
    lambda_cut      double precision,
    lambda_nominal  double precision,
    lambda_norm     double precision,
    lambda2         double precision,
    witness_edges   jsonb NOT NULL DEFAULT '[]',
    last_sample     timestamptz,
    sample_count    bigint NOT NULL DEFAULT 0,
    -- the hysteresis controller's memory (counts, holds), so restarts resume it
    controller      jsonb NOT NULL DEFAULT '{}',
    -- fingerprint of the stored graph's nodes and edges (see contracted_edges)
    graph_topology  text,
    override_state  text CHECK (override_state IN ('normal', 'stress', 'critical')),
    override_until  timestamptz,
    override_reason text,
    override_by     name,
    last_error      text,
    last_error_at   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Policies; the enabled one with the highest priority is in force.
CREATE TABLE ruvector.integrity_policies (
    id                   serial PRIMARY KEY,
    collection_id        integer NOT NULL REFERENCES ruvector.collections(id) ON DELETE CASCADE,
    name                 text NOT NULL,
    description          text,
    threshold_high       double precision NOT NULL,
    threshold_low        double precision NOT NULL,
    normal_actions       jsonb NOT NULL,
    stress_actions       jsonb NOT NULL,
    critical_actions     jsonb NOT NULL,
    hysteresis           jsonb NOT NULL,
    defer_retry_secs     integer NOT NULL,
    sample_interval_secs integer,
    priority             integer NOT NULL DEFAULT 0,
    notifications        jsonb NOT NULL DEFAULT '{}',
    enabled              boolean NOT NULL DEFAULT true,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (collection_id, name)
);

-- A policy row as the policy document the core reads (its keys are the
-- columns that hold the policy; upsert_policy.sql writes them back).
CREATE FUNCTION ruvector._policy_document(p ruvector.integrity_policies) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE STRICT
RETURN pg_catalog.jsonb_build_object(
    'threshold_high', p.threshold_high, 'threshold_low', p.threshold_low,
    'normal_actions', p.normal_actions, 'stress_actions', p.stress_actions,
    'critical_actions', p.critical_actions, 'hysteresis', p.hysteresis,
    'defer_retry_secs', p.defer_retry_secs, 'sample_interval_secs', p.sample_interval_secs);

-- The contracted operational graph as last stored (see ruvector_contracted_graph).
CREATE TABLE ruvector.contracted_graph (
    collection_id   integer NOT NULL REFERENCES ruvector.collections(id) ON DELETE CASCADE,
    node_type       text NOT NULL CHECK (node_type IN
                        ('partition', 'centroid', 'shard', 'maintenance_dep', 'replication_target')),
    node_id         bigint NOT NULL,
    node_name       text NOT NULL,
    node_data       jsonb NOT NULL DEFAULT '{}',
    health_score    double precision NOT NULL CHECK (health_score BETWEEN 0 AND 1),
    last_updated    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection_id, node_type, node_id)
);

-- Its edges, rewritten only when the topology changes (a partition, a list,
-- a standby comes or goes): a graph with IVF lists can have tens of thousands
-- of routing edges. Effective capacities follow from the node healths; see
-- the view ruvector.contracted_edge_capacities.
CREATE TABLE ruvector.contracted_edges (
    -- No foreign key: checking one per row would double the cost of storing
    -- a large graph. ruvector.forget_edges() deletes a collection's edges.
    collection_id      integer NOT NULL,
    -- position in the graph's edge list
    edge_id            bigint NOT NULL,
    source_type        text NOT NULL,
    source_id          bigint NOT NULL,
    target_type        text NOT NULL,
    target_id          bigint NOT NULL,
    edge_type          text NOT NULL CHECK (edge_type IN ('partition_link', 'routing_link', 'dependency', 'replication')),
    capacity           double precision NOT NULL CHECK (capacity >= 0),
    current_flow       double precision NOT NULL DEFAULT 0,
    latency_ms         double precision,
    error_rate         double precision NOT NULL DEFAULT 0 CHECK (error_rate BETWEEN 0 AND 1),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
-- Not unique: a unique index makes rewriting a graph's edges (deleted and
-- inserted again in one transaction) several times slower.
CREATE INDEX ON ruvector.contracted_edges (collection_id, edge_id);
CREATE INDEX ON ruvector.contracted_edges (collection_id) WHERE error_rate <> 0;

CREATE FUNCTION ruvector.forget_edges() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM ruvector.contracted_edges;
    ELSE
        DELETE FROM ruvector.contracted_edges e USING gone g WHERE e.collection_id = g.id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER forget_edges AFTER DELETE ON ruvector.collections
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION ruvector.forget_edges();
CREATE TRIGGER forget_all_edges AFTER TRUNCATE ON ruvector.collections
    FOR EACH STATEMENT EXECUTE FUNCTION ruvector.forget_edges();

-- Each stored edge with its ends' labels and its effective capacity:
-- capacity · (1 - error_rate) · the lesser health of its two ends.
CREATE VIEW ruvector.contracted_edge_capacities AS
SELECT e.collection_id, e.edge_id,
       s.node_type || ':' || s.node_name AS source,
       t.node_type || ':' || t.node_name AS target,
       e.edge_type, e.capacity, e.error_rate,
       e.capacity * (1 - e.error_rate) * least(s.health_score, t.health_score) AS effective_capacity
FROM ruvector.contracted_edges e
JOIN ruvector.contracted_graph s
  ON s.collection_id = e.collection_id AND s.node_type = e.source_type AND s.node_id = e.source_id
JOIN ruvector.contracted_graph t
  ON t.collection_id = e.collection_id AND t.node_type = e.target_type AND t.node_id = e.target_id;

-- IVF lists trained by ruvector_ivf_train: one row per list. Each is a
-- centroid node of the collection's graph.
CREATE TABLE ruvector.ivf_lists (
    collection_id    integer NOT NULL REFERENCES ruvector.collections(id) ON DELETE CASCADE,
    list_id          integer NOT NULL CHECK (list_id >= 1),
    centroid         real[] NOT NULL,
    vector_count     bigint NOT NULL CHECK (vector_count >= 0),
    mean_distance    double precision NOT NULL CHECK (mean_distance >= 0),
    -- partition OID (as text) -> vectors of this list there
    partition_counts jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(partition_counts) = 'object'),
    trained_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection_id, list_id)
);

-- The last training of each collection's IVF lists.
CREATE TABLE ruvector.ivf_training (
    collection_id      integer PRIMARY KEY REFERENCES ruvector.collections(id) ON DELETE CASCADE,
    lists              integer NOT NULL CHECK (lists >= 1),
    -- vectors assigned to a list when the lists were trained
    trained_rows       bigint NOT NULL CHECK (trained_rows >= 0),
    mean_distance      double precision NOT NULL CHECK (mean_distance >= 0),
    dimensions         integer NOT NULL,
    distance_metric    text NOT NULL,
    sample_rows        bigint NOT NULL,
    skipped_rows       bigint NOT NULL,
    seconds            double precision NOT NULL,
    trained_at         timestamptz NOT NULL DEFAULT now()
);

-- Every sample, unsigned and pruned after ruvector.sample_retention.
CREATE TABLE ruvector.integrity_samples (
    collection_id  integer NOT NULL REFERENCES ruvector.collections(id) ON DELETE CASCADE,
    sampled_at     timestamptz NOT NULL,
    lambda_cut     double precision NOT NULL,
    lambda_nominal double precision NOT NULL,
    lambda_norm    double precision NOT NULL,
    lambda2        double precision,
    state          text NOT NULL,
    node_count     integer NOT NULL,
    edge_count     integer NOT NULL,
    -- what the sample took: reading the sources, solving, storing the graph
    duration_ms    double precision,
    PRIMARY KEY (collection_id, sampled_at)
);

-- The signed, hash-chained audit log. Append-only; no foreign key, so that
-- events outlive the collections they are about.
CREATE TABLE ruvector.integrity_events (
    seq             bigint PRIMARY KEY CHECK (seq >= 1),
    -- the design document's name for seq (its usage examples read it)
    id              bigint NOT NULL GENERATED ALWAYS AS (seq) STORED,
    collection_id   integer,
    collection_name text NOT NULL,
    event_type      text NOT NULL CHECK (event_type IN
                        ('state_change', 'sample', 'policy_update', 'manual_override', 'recovery', 'alert', 'audit',
                         'gate_bypass', 'key_rotation')),
    previous_state  text,
    new_state       text,
    lambda_cut      double precision,
    lambda_norm     double precision,
    lambda2         double precision,
    witness_edges   jsonb NOT NULL DEFAULT '[]',
    metadata        jsonb NOT NULL DEFAULT '{}',
    -- exactly the bytes that were hashed: ruvector's versioned binary encoding
    payload         bytea NOT NULL,
    prev_hash       bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    entry_hash      bytea NOT NULL CHECK (octet_length(entry_hash) = 32),
    signature       bytea NOT NULL,
    signer_id       text NOT NULL,
    created_at      timestamptz NOT NULL,
    signed_at       timestamptz NOT NULL,
    -- the cluster (pg_control's system identifier) and timeline that signed it
    system_identifier numeric(20) NOT NULL,
    timeline        integer NOT NULL,
    expires_at      timestamptz
);
CREATE INDEX ON ruvector.integrity_events (collection_name, created_at);

-- Events made in backends, waiting for the worker to sign and chain them.
CREATE TABLE ruvector.pending_events (
    id              bigserial PRIMARY KEY,
    collection_id   integer,
    collection_name text NOT NULL,
    event_type      text NOT NULL,
    previous_state  text,
    new_state       text,
    metadata        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Public keys of the audit signer(s), for reading: verifiers take keys from
-- the chain itself (key_rotation events), never from this table.
CREATE TABLE ruvector.signing_keys (
    id                text PRIMARY KEY,
    public_key        bytea NOT NULL CHECK (octet_length(public_key) = 32),
    description       text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz,
    revoked_at        timestamptz,
    revocation_reason text,
    -- the seq of the key event that introduced it
    introduced_seq    bigint
);

-- Audit tables are append-only for everyone: no UPDATE, DELETE or TRUNCATE.
CREATE FUNCTION ruvector.refuse_audit_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    RAISE EXCEPTION 'ruvector.% is append-only', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = format('%s refused on the audit log.', TG_OP),
              HINT = 'Audit events can be neither changed nor removed; check them with ruvector_verify_audit_chain().';
END $$;

CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON ruvector.integrity_events
    FOR EACH ROW EXECUTE FUNCTION ruvector.refuse_audit_change();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON ruvector.integrity_events
    FOR EACH STATEMENT EXECUTE FUNCTION ruvector.refuse_audit_change();

-- Keys may only gain an expiry or a revocation, once.
CREATE FUNCTION ruvector.guard_signing_key() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.id = OLD.id AND NEW.public_key = OLD.public_key
       AND NEW.created_at = OLD.created_at
       AND NEW.description IS NOT DISTINCT FROM OLD.description
       AND NEW.introduced_seq IS NOT DISTINCT FROM OLD.introduced_seq
       AND (OLD.expires_at IS NULL OR NEW.expires_at = OLD.expires_at)
       AND (OLD.revoked_at IS NULL OR (NEW.revoked_at = OLD.revoked_at
            AND NEW.revocation_reason IS NOT DISTINCT FROM OLD.revocation_reason)) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'ruvector.signing_keys rows can only gain an expiry or a revocation'
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Use ruvector_rotate_signing_key() or ruvector_revoke_signing_key().';
END $$;

CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON ruvector.pending_events
    FOR EACH STATEMENT EXECUTE FUNCTION ruvector.refuse_audit_change();

CREATE TRIGGER guard BEFORE UPDATE OR DELETE ON ruvector.signing_keys
    FOR EACH ROW EXECUTE FUNCTION ruvector.guard_signing_key();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON ruvector.signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION ruvector.refuse_audit_change();

-- ALWAYS: they fire under session_replication_role = replica too, which would
-- otherwise switch them off for whoever may set it.
ALTER TABLE ruvector.integrity_events ENABLE ALWAYS TRIGGER append_only;
ALTER TABLE ruvector.integrity_events ENABLE ALWAYS TRIGGER append_only_truncate;
ALTER TABLE ruvector.pending_events ENABLE ALWAYS TRIGGER append_only_truncate;
ALTER TABLE ruvector.signing_keys ENABLE ALWAYS TRIGGER guard;
ALTER TABLE ruvector.signing_keys ENABLE ALWAYS TRIGGER append_only_truncate;

REVOKE ALL ON ALL TABLES IN SCHEMA ruvector FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA ruvector FROM PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA ruvector TO ruvector_reader;
-- A centroid is the mean of its list's vectors: with few vectors per list,
-- nearly the vectors themselves. Only those who may read the table see them.
REVOKE SELECT ON ruvector.ivf_lists FROM ruvector_reader;
GRANT SELECT (collection_id, list_id, vector_count, mean_distance, partition_counts, trained_at)
    ON ruvector.ivf_lists TO ruvector_reader;

-- The successor key a standby takes over with once promoted (see keys.rs):
-- its secret rides the WAL to every standby, including those made before it.
-- Nobody is granted it, and row security with no policy hides its rows from
-- pg_read_all_data: only the extension's owner and superusers read it. An
-- extension member that pg_dump leaves out: a dump never carries it.
CREATE TABLE ruvector.successor_keys (
    id         text PRIMARY KEY,
    secret     bytea NOT NULL CHECK (octet_length(secret) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE ruvector.successor_keys ENABLE ROW LEVEL SECURITY;
-- Whatever default privileges the creating role had set go too.
DO $$
DECLARE
    grantee oid;
BEGIN
    FOR grantee IN SELECT DISTINCT a.grantee
                   FROM pg_class c, aclexplode(c.relacl) a
                   WHERE c.oid = 'ruvector.successor_keys'::regclass AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE ALL ON ruvector.successor_keys FROM %s',
                       CASE WHEN grantee = 0 THEN 'PUBLIC' ELSE grantee::regrole::text END);
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION ruvector.refuse_audit_change() FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector.forget_edges() FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector.guard_signing_key() FROM PUBLIC;
