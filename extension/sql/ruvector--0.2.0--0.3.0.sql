-- ruvector 0.2.0 -> 0.3.0 (ALTER EXTENSION ruvector UPDATE). 0.3.0 changes the
-- library only: a launcher keeps one integrity worker per database that has
-- the extension, each with its own signing key file, and key events name
-- their database. No SQL object changes; tests/tests/upgrade.rs checks that
-- an updated installation is object for object a fresh 0.3.0 one.

\echo Use "ALTER EXTENSION ruvector UPDATE" to load this file. \quit
