-- ruvector 0.2.0 -> 0.3.0 (ALTER EXTENSION ruvector UPDATE). 0.3.0's library
-- keeps one integrity worker per database that has the extension, each with
-- its own signing key file, and key events name their database. In SQL it
-- adds the table of successor keys (failover). tests/tests/upgrade.rs checks
-- that an updated installation is object for object a fresh 0.3.0 one.

\echo Use "ALTER EXTENSION ruvector UPDATE" to load this file. \quit

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
