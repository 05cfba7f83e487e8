-- ruvector 0.1.0 -> 0.2.0 (ALTER EXTENSION ruvector UPDATE). Keeps every row:
-- what 0.2.0 adds is new objects, one generated column and one volatility.
-- tests/tests/upgrade.rs checks that an updated installation is object for
-- object a fresh 0.2.0 one.

\echo Use "ALTER EXTENSION ruvector UPDATE" to load this file. \quit

-- The design document's name for seq (its usage examples read it). The table
-- is rewritten once; its append-only triggers do not fire for that.
ALTER TABLE ruvector.integrity_events
    ADD COLUMN id bigint NOT NULL GENERATED ALWAYS AS (seq) STORED;

-- Each exported line is noted in shared memory (DROP EXTENSION waits for it).
ALTER FUNCTION ruvector._audit_export_line(bigint, bytea, bytea, bigint, text, integer, bytea, text, bytea)
    VOLATILE;

-- Functions written in Rust (as pgrx generates them for 0.2.0).
-- ruvector::api::policies::_policy_drop
CREATE  FUNCTION ruvector."_policy_drop"(
	"collection" TEXT, /* & str */
	"policy_name" TEXT /* & str */
) RETURNS jsonb /* JsonB */
STRICT  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'policy_drop_wrapper';

-- ruvector::api::policies::_policy_list
CREATE  FUNCTION ruvector."_policy_list"(
	"collection" TEXT /* & str */
) RETURNS TABLE (
	"policy_name" TEXT,  /* String */
	"in_force" bool,  /* bool */
	"enabled" bool,  /* bool */
	"priority" INT,  /* i32 */
	"policy" jsonb,  /* JsonB */
	"updated_at_unix_us" bigint  /* i64 */
)
STRICT  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'policy_list_wrapper';

-- ruvector::api::policies::_policy_activate
CREATE  FUNCTION ruvector."_policy_activate"(
	"collection" TEXT, /* & str */
	"policy_name" TEXT /* & str */
) RETURNS jsonb /* JsonB */
STRICT  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'policy_activate_wrapper';

-- ruvector::api::status::_live_state
CREATE  FUNCTION ruvector."_live_state"(
	"collection" TEXT /* & str */
) RETURNS TABLE (
	"state" TEXT,  /* String */
	"stale" bool,  /* bool */
	"enforced" bool,  /* bool */
	"override_state" TEXT,  /* Option < String > */
	"override_until_unix_us" bigint  /* Option < i64 > */
)
STRICT  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'live_state_wrapper';

-- The public API they stand behind (as in finalize.sql).
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

-- Privileges (as in finalize.sql).
REVOKE ALL ON FUNCTION ruvector._policy_list FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._policy_activate FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._policy_drop FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._live_state FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_policy_list FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_policy_activate FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_policy_drop FROM PUBLIC;
REVOKE ALL ON ruvector.collections_status FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector_integrity_policy_list, ruvector._live_state TO ruvector_reader;
GRANT SELECT ON ruvector.collections_status TO ruvector_reader;
GRANT EXECUTE ON FUNCTION ruvector_integrity_policy_activate, ruvector_integrity_policy_drop TO ruvector_admin;
