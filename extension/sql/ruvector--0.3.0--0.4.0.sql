-- ruvector 0.3.0 -> 0.4.0 (ALTER EXTENSION ruvector UPDATE). 0.4.0 adds
-- ruvector_integrity_explain(collection) and its text rendering, readable by
-- ruvector_reader. tests/tests/upgrade.rs checks that an updated installation
-- is object for object a fresh 0.4.0 one.

\echo Use "ALTER EXTENSION ruvector UPDATE" to load this file. \quit

CREATE FUNCTION ruvector."_integrity_explain"("collection" TEXT) RETURNS jsonb
STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_explain_wrapper';

CREATE FUNCTION ruvector."_integrity_explain_text"("collection" TEXT) RETURNS TEXT
STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'integrity_explain_text_wrapper';

CREATE FUNCTION ruvector_integrity_explain(collection text)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._integrity_explain(collection) $$;

CREATE FUNCTION ruvector_integrity_explain_text(collection text)
RETURNS text LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT ruvector._integrity_explain_text(collection) $$;

REVOKE ALL ON FUNCTION ruvector._integrity_explain FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector._integrity_explain_text FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_explain FROM PUBLIC;
REVOKE ALL ON FUNCTION ruvector_integrity_explain_text FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector_integrity_explain, ruvector_integrity_explain_text TO ruvector_reader;
