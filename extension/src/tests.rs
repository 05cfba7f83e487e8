//! In-database tests: each SQL function's contract and its errors, in a
//! transaction that pgrx rolls back. Shared memory only learns of a change when
//! its transaction commits, so here the gate answers from the tables (state
//! unknown); what crosses sessions or needs the worker is tested through a
//! client in `tests/`.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::{json, Value};

    /// Runs `sql` in a subtransaction and returns the (SQLSTATE, message, hint) of
    /// the error it raises; panics if it raises none.
    fn error_of(sql: &str) -> (String, String, String) {
        Spi::run("CREATE TEMP TABLE IF NOT EXISTS caught (state text, message text, hint text)")
            .unwrap();
        Spi::run("TRUNCATE caught").unwrap();
        Spi::run(&format!(
            "DO $do$
             DECLARE s text; m text; h text;
             BEGIN
                 EXECUTE {};
                 INSERT INTO caught VALUES ('none', 'no error', '');
             EXCEPTION WHEN OTHERS THEN
                 GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, h = PG_EXCEPTION_HINT;
                 INSERT INTO caught VALUES (s, m, h);
             END $do$",
            pgrx::spi::quote_literal(sql)
        ))
        .unwrap();
        let (state, message, hint) =
            Spi::get_three::<String, String, String>("SELECT state, message, hint FROM caught")
                .unwrap();
        let result = (state.unwrap(), message.unwrap(), hint.unwrap_or_default());
        assert_ne!(result.0, "none", "expected an error from: {sql}");
        result
    }

    fn json_of(sql: &str) -> Value {
        Spi::get_one::<pgrx::JsonB>(sql)
            .unwrap()
            .expect("a JSON result")
            .0
    }

    /// A table of `rows` 3-dimensional vectors, registered as collection `name`.
    fn collection(name: &str, rows: i32) -> Value {
        Spi::run(&format!(
            "CREATE TABLE {name} (id bigserial PRIMARY KEY, embedding real[])"
        ))
        .unwrap();
        Spi::run(&format!(
            "INSERT INTO {name} (embedding) SELECT ARRAY[i, i + 1, i + 2]::real[] FROM generate_series(1, {rows}) i"
        ))
        .unwrap();
        json_of(&format!(
            "SELECT ruvector_register_collection('{name}', '{name}', 'embedding')"
        ))
    }

    #[pg_test]
    fn register_infers_dimensions_and_installs_default_policy() {
        let registered = collection("reg_docs", 5);
        assert_eq!(registered["dimensions"], 3);
        assert_eq!(registered["state"], "unknown");
        assert_eq!(
            Spi::get_one::<String>(
                "SELECT p.name FROM ruvector.integrity_policies p JOIN ruvector.collections c ON c.id = p.collection_id WHERE c.name = 'reg_docs'"
            )
            .unwrap(),
            Some("default".into())
        );
        // Enforcement is in hooks: nothing is installed on the user's table.
        let triggers = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'reg_docs'::regclass",
        )
        .unwrap();
        assert_eq!(triggers, Some(0));
        let pending = Spi::get_one::<String>("SELECT metadata->>'action' FROM ruvector.pending_events WHERE collection_name = 'reg_docs'")
            .unwrap();
        assert_eq!(pending, Some("register".into()));
    }

    #[pg_test]
    fn register_refuses_bad_input_with_sqlstates() {
        collection("reg_twice", 1);
        Spi::run("CREATE TABLE reg_text (id int, embedding text)").unwrap();
        Spi::run("CREATE VIEW reg_view AS SELECT * FROM reg_twice").unwrap();
        Spi::run("CREATE TABLE reg_empty (id int, embedding real[])").unwrap();
        Spi::run("CREATE MATERIALIZED VIEW reg_mat AS SELECT * FROM reg_twice").unwrap();
        Spi::run("CREATE TEMP TABLE reg_temp (id int, embedding real[])").unwrap();
        let cases = [
            ("SELECT ruvector_register_collection('reg_twice', 'reg_twice', 'embedding')", "42710", "already registered"),
            ("SELECT ruvector_register_collection('other', 'reg_twice', 'embedding')", "42710", "already registered as collection \"reg_twice\""),
            ("SELECT ruvector_register_collection('x', 'reg_twice', 'nope')", "42703", "does not exist"),
            ("SELECT ruvector_register_collection('x', 'reg_text', 'embedding')", "42804", "not a vector"),
            ("SELECT ruvector_register_collection('x', 'reg_view', 'embedding')", "42809", "is a view"),
            ("SELECT ruvector_register_collection('x', 'reg_mat', 'embedding')", "42809", "is a materialized view"),
            ("SELECT ruvector_register_collection('x', 'reg_temp', 'embedding', 3)", "42809", "is a temporary table"),
            ("SELECT ruvector_register_collection('x', 'reg_empty', 'embedding')", "22023", "dimensions is required"),
            ("SELECT ruvector_register_collection('x', 'reg_empty', 'embedding', dimensions => 0)", "22023", "between 1 and 16000"),
            ("SELECT ruvector_register_collection('x', 'reg_empty', 'embedding', 3, 'hamming')", "22023", "invalid distance_metric"),
            ("SELECT ruvector_register_collection('bad name!', 'reg_empty', 'embedding', 3)", "22023", "invalid collection name"),
            ("SELECT ruvector_register_collection('x', 'reg_empty', 'embedding', 3, config => '[1]')", "22023", "config must be a JSON object"),
        ];
        for (sql, state, message) in cases {
            let (got_state, got_message, _) = error_of(sql);
            assert_eq!(got_state, state, "{sql}: {got_message}");
            assert!(got_message.contains(message), "{sql}: {got_message}");
        }
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM ruvector.collections").unwrap(),
            Some(1)
        );
    }

    #[pg_test]
    fn gate_answers_unknown_state_from_the_tables_before_the_first_sample() {
        collection("gate_new", 3);
        let search = json_of("SELECT ruvector_integrity_gate('gate_new', 'read')");
        assert_eq!(search["operation"], "search");
        assert_eq!(search["decision"], "allow");
        assert_eq!(search["state"], "unknown");
        assert_eq!(search["stale"], true);
        assert_eq!(search["risk"], "low");
        let index = json_of("SELECT ruvector_integrity_gate('gate_new', 'hnsw_rewire')");
        assert_eq!(index["decision"], "defer");
        assert_eq!(index["allowed"], false);
        assert_eq!(index["retry_after_secs"], 300);
        assert_eq!(
            Spi::get_one::<bool>("SELECT ruvector_integrity_allowed('gate_new', 'bulk_insert')")
                .unwrap(),
            Some(true)
        );
    }

    #[pg_test]
    fn gate_refuses_unknown_collections_and_operations() {
        collection("gate_known", 1);
        let (state, message, hint) = error_of("SELECT ruvector_integrity_gate('nope', 'search')");
        assert_eq!(
            (state.as_str(), message.as_str()),
            ("42704", "collection \"nope\" is not registered")
        );
        assert!(hint.contains("ruvector_register_collection"));
        let (state, message, hint) =
            error_of("SELECT ruvector_integrity_gate('gate_known', 'drop_table')");
        assert_eq!(
            (state.as_str(), message.as_str()),
            ("22023", "unknown operation \"drop_table\"")
        );
        assert!(
            hint.starts_with("Valid operations are: search, read, insert"),
            "{hint}"
        );
        let (state, _, _) = error_of("SELECT ruvector_integrity_allowed('gate_known', 'fly')");
        assert_eq!(state, "22023");
    }

    #[pg_test]
    fn statements_on_a_registered_table_go_through_the_gate() {
        collection("enf_docs", 2);
        // Unknown state: low and medium risk go on...
        Spi::run("INSERT INTO enf_docs (embedding) VALUES ('{1,2,3}')").unwrap();
        Spi::run("INSERT INTO enf_docs (embedding) SELECT '{1,2,3}' FROM generate_series(1, 5)")
            .unwrap();
        Spi::run("UPDATE enf_docs SET embedding = '{3,2,1}'").unwrap();
        Spi::run("DELETE FROM enf_docs WHERE id = 1").unwrap();
        // ...high risk waits for a sample: deferred, retryable.
        let (state, message, hint) = error_of("CREATE INDEX ON enf_docs (id)");
        assert_eq!(state, "53000");
        assert!(
            message.starts_with(
                "ruvector refused index_build on collection \"enf_docs\" in state unknown"
            ),
            "{message}"
        );
        assert_eq!(hint, "Retry after 300 seconds.");
        assert_eq!(error_of("VACUUM FULL enf_docs").0, "53000");
        assert_eq!(error_of("CLUSTER enf_docs USING enf_docs_pkey").0, "53000");
        assert_eq!(error_of("REINDEX TABLE enf_docs").0, "53000");
    }

    #[pg_test]
    fn policy_set_merges_and_bad_keys_change_nothing() {
        collection("pol_docs", 1);
        let set = json_of(
            "SELECT ruvector_integrity_policy_set('pol_docs', 'custom', '{\"threshold_high\": 0.7, \"stress_actions\": {\"throttle_inserts_pct\": 75}}')",
        );
        assert_eq!(set["in_force"], true);
        assert_eq!(set["document"]["threshold_high"], 0.7);
        assert_eq!(
            set["document"]["stress_actions"]["throttle_inserts_pct"],
            75
        );
        assert_eq!(
            set["document"]["stress_actions"]["allow_bulk_insert"],
            false
        );
        let before = json_of("SELECT to_jsonb(p) - 'updated_at' FROM ruvector.integrity_policies p WHERE name = 'custom'");
        let (state, message, _) = error_of(
            "SELECT ruvector_integrity_policy_set('pol_docs', 'custom', '{\"stress_actions\": {\"throttle_inserts_pct\": 10, \"allow_everything\": true}}')",
        );
        assert_eq!(state, "22023");
        assert_eq!(
            message,
            "invalid policy key \"stress_actions.allow_everything\": unknown key"
        );
        let (_, message, _) =
            error_of("SELECT ruvector_integrity_policy_set('pol_docs', 'custom', '{\"threshold_low\": 0.9}')");
        assert!(
            message.starts_with("invalid policy key \"threshold_low\""),
            "{message}"
        );
        let after = json_of("SELECT to_jsonb(p) - 'updated_at' FROM ruvector.integrity_policies p WHERE name = 'custom'");
        assert_eq!(before, after);
        assert_eq!(
            error_of("SELECT ruvector_integrity_policy_set('nope', 'custom', '{}')").0,
            "42704"
        );
    }

    /// The policy names of `collection` as listed, and the one in force.
    fn policies_of(collection: &str) -> (Vec<String>, Option<String>) {
        let names = Spi::get_one::<Vec<String>>(&format!(
            "SELECT array_agg(policy_name) FROM ruvector_integrity_policy_list('{collection}')"
        ))
        .unwrap()
        .unwrap_or_default();
        let in_force = Spi::get_one::<String>(&format!(
            "SELECT policy_name FROM ruvector_integrity_policy_list('{collection}') WHERE in_force"
        ))
        .unwrap();
        (names, in_force)
    }

    #[pg_test]
    fn policies_are_listed_put_back_in_force_and_dropped_audited() {
        collection("pol_life", 1);
        json_of("SELECT ruvector_integrity_policy_set('pol_life', 'strict', '{\"threshold_high\": 0.9}')");
        assert_eq!(
            policies_of("pol_life"),
            (
                vec!["strict".into(), "default".into()],
                Some("strict".into())
            )
        );

        // The default is put back in force; again, it changes nothing.
        let activated = json_of("SELECT ruvector_integrity_policy_activate('pol_life', 'default')");
        assert_eq!(
            (&activated["previous"], &activated["changed"]),
            (&json!("strict"), &json!(true))
        );
        assert_eq!(policies_of("pol_life").1, Some("default".into()));
        let status = json_of("SELECT ruvector_integrity_status('pol_life')");
        assert_eq!(status["policy"]["name"], "default");
        assert_eq!(status["policy"]["threshold_high"], 0.8);
        let again = json_of("SELECT ruvector_integrity_policy_activate('pol_life', 'default')");
        assert_eq!(again["changed"], false);
        // Setting a stored policy that is not in force leaves it so, and says so.
        let set = json_of("SELECT ruvector_integrity_policy_set('pol_life', 'strict', '{\"threshold_high\": 0.85}')");
        assert_eq!(set["in_force"], false);

        // Errors change nothing.
        for (sql, code, hint) in [
            (
                "SELECT ruvector_integrity_policy_drop('pol_life', 'default')",
                "55000",
                "ruvector_integrity_policy_activate",
            ),
            (
                "SELECT ruvector_integrity_policy_drop('pol_life', 'nope')",
                "42704",
                "ruvector_integrity_policy_list('pol_life')",
            ),
            (
                "SELECT ruvector_integrity_policy_activate('pol_life', 'nope')",
                "42704",
                "ruvector_integrity_policy_list('pol_life')",
            ),
            (
                "SELECT * FROM ruvector_integrity_policy_list('nope')",
                "42704",
                "",
            ),
            (
                "SELECT ruvector_integrity_policy_activate('nope', 'default')",
                "42704",
                "",
            ),
        ] {
            let (state, message, found) = error_of(sql);
            assert_eq!(state, code, "{sql}: {message}");
            assert!(found.contains(hint), "{sql}: {found}");
        }
        assert_eq!(
            policies_of("pol_life"),
            (
                vec!["default".into(), "strict".into()],
                Some("default".into())
            )
        );
        // Only the table's owner changes its policies.
        Spi::run("CREATE ROLE pol_other IN ROLE ruvector_admin; GRANT ALL ON caught TO pol_other; SET LOCAL ROLE pol_other").unwrap();
        assert_eq!(
            error_of("SELECT ruvector_integrity_policy_activate('pol_life', 'strict')").0,
            "42501"
        );
        assert_eq!(
            error_of("SELECT ruvector_integrity_policy_drop('pol_life', 'strict')").0,
            "42501"
        );
        Spi::run("RESET ROLE").unwrap();

        let dropped = json_of("SELECT ruvector_integrity_policy_drop('pol_life', 'strict')");
        assert_eq!(dropped["document"]["threshold_high"], 0.85);
        assert_eq!(policies_of("pol_life").0, vec!["default".to_owned()]);
        // Every change is audited, with who and what (the no-op is not).
        let audited = json_of(
            "SELECT jsonb_agg(jsonb_build_array(metadata->>'action', metadata->>'policy', metadata->>'in_force') ORDER BY id)
             FROM ruvector.pending_events WHERE collection_name = 'pol_life' AND event_type = 'policy_update'",
        );
        assert_eq!(
            audited,
            json!([
                ["set", "strict", "strict"],
                ["activate", "default", "default"],
                ["set", "strict", "default"],
                ["drop", "strict", "default"]
            ])
        );
        let by = Spi::get_one::<i64>(
            "SELECT count(*) FROM ruvector.pending_events WHERE collection_name = 'pol_life'
             AND event_type = 'policy_update' AND metadata->>'by' = current_user",
        )
        .unwrap();
        assert_eq!(by, Some(4));
    }

    #[pg_test]
    fn the_status_view_has_a_row_per_collection_for_readers() {
        collection("view_docs", 1);
        let row = json_of(
            "SELECT to_jsonb(s) FROM ruvector.collections_status s WHERE collection = 'view_docs'",
        );
        // Shared memory learns of the collection at commit: until then, the
        // stored state, not enforced.
        assert_eq!(row["table"], "view_docs");
        assert_eq!(row["state"], "unknown");
        assert_eq!(row["sample_count"], 0);
        assert_eq!(row["policy"], "default");
        assert_eq!(row["enforced"], false);
        assert_eq!(row["override_state"], Value::Null);
        let can = |role: &str| {
            Spi::get_one::<bool>(&format!(
                "SELECT has_table_privilege('{role}', 'ruvector.collections_status', 'SELECT')"
            ))
            .unwrap()
        };
        assert_eq!(can("ruvector_reader"), Some(true));
        assert_eq!(can("public"), Some(false));
    }

    #[pg_test]
    fn override_needs_a_valid_state_ttl_and_reason() {
        collection("ovr_docs", 1);
        let cases = [
            (
                "SELECT ruvector_integrity_override('ovr_docs', 'panic', '1 hour', 'x')",
                "invalid override state",
            ),
            (
                "SELECT ruvector_integrity_override('ovr_docs', 'unknown', '1 hour', 'x')",
                "invalid override state",
            ),
            (
                "SELECT ruvector_integrity_override('ovr_docs', 'critical', '0 seconds', 'x')",
                "ttl must be",
            ),
            (
                "SELECT ruvector_integrity_override('ovr_docs', 'critical', '8 days', 'x')",
                "ttl must be",
            ),
            (
                "SELECT ruvector_integrity_override('ovr_docs', 'critical', '1 hour', '  ')",
                "needs a reason",
            ),
        ];
        for (sql, message) in cases {
            let (state, got, _) = error_of(sql);
            assert_eq!(state, "22023", "{sql}");
            assert!(got.contains(message), "{sql}: {got}");
        }
        let set = json_of("SELECT ruvector_integrity_override('ovr_docs', 'critical', '10 minutes', 'failover drill')");
        assert_eq!(set["state"], "critical");
        let stored = Spi::get_two::<String, String>(
            "SELECT s.override_state, s.override_reason FROM ruvector.integrity_state s JOIN ruvector.collections c ON c.id = s.collection_id WHERE c.name = 'ovr_docs'",
        )
        .unwrap();
        assert_eq!(
            stored,
            (Some("critical".into()), Some("failover drill".into()))
        );
        let audited = Spi::get_one::<String>(
            "SELECT metadata->>'reason' FROM ruvector.pending_events WHERE collection_name = 'ovr_docs' AND event_type = 'manual_override'",
        )
        .unwrap();
        assert_eq!(audited, Some("failover drill".into()));
    }

    #[pg_test]
    fn sample_measures_a_healthy_table_as_lambda_norm_one() {
        collection("smp_docs", 10);
        let sample = json_of("SELECT ruvector_integrity_sample('smp_docs')");
        assert_eq!(sample["lambda_norm"], 1.0);
        assert_eq!(sample["node_count"], 3); // partition, primary shard, autovacuum
        assert_eq!(sample["state"], "unknown"); // measuring does not change the state
        let rebuilt = json_of("SELECT ruvector_rebuild_contracted_graph('smp_docs')");
        assert_eq!(rebuilt["node_count"], 3);
        let graph = json_of("SELECT ruvector_contracted_graph('smp_docs')");
        assert_eq!(graph["node_count"], 3);
        assert_eq!(graph["edge_count"], 2);
        assert_eq!(
            error_of("SELECT ruvector_contracted_graph('nope')").0,
            "42704"
        );
    }

    #[pg_test]
    fn the_graph_is_drawn_with_its_witness_edges_in_red() {
        collection("dot_docs", 10);
        json_of("SELECT ruvector_rebuild_contracted_graph('dot_docs')");
        Spi::run(
            "UPDATE ruvector.integrity_state SET witness_edges = '[{\"source\": \"partition:public.dot_docs\", \"target\": \"shard:primary\", \"kind\": \"partition_link\", \"capacity\": 1}]'",
        )
        .unwrap();
        let dot = Spi::get_one::<String>("SELECT ruvector_contracted_graph_dot('dot_docs')")
            .unwrap()
            .unwrap();
        assert!(dot.starts_with("graph \"dot_docs\" {"), "{dot}");
        assert!(
            dot.contains(
                "\"partition:public.dot_docs\" -- \"shard:primary\" [label=\"1.00\", color=red"
            ),
            "{dot}"
        );
        assert!(
            dot.contains("\"shard:primary\" -- \"maintenance_dep:autovacuum\" [label=\"1.00\"];"),
            "{dot}"
        );
        assert_eq!(
            error_of("SELECT ruvector_contracted_graph_dot('nope')").0,
            "42704"
        );
    }

    #[pg_test]
    fn what_if_the_primary_fails_is_critical_without_touching_the_state() {
        collection("sim_docs", 10);
        let what_if = json_of(
            "SELECT ruvector_integrity_simulate('sim_docs', '{\"shard:primary\": 0, \"partition:public.sim_docs\": 0.9}')",
        );
        assert_eq!(what_if["now"]["lambda_norm"], 1.0);
        assert_eq!(what_if["now"]["level"], "normal");
        assert_eq!(what_if["simulated"]["lambda_norm"], 0.0);
        assert_eq!(what_if["simulated"]["level"], "critical");
        let bloat = json_of("SELECT ruvector_integrity_simulate('sim_docs', '{\"partition:public.sim_docs\": 0.5}')");
        assert_eq!(bloat["simulated"]["level"], "stress");
        assert_eq!(
            Spi::get_one::<String>("SELECT state FROM ruvector.integrity_state").unwrap(),
            Some("unknown".into())
        );
        let (state, message, hint) =
            error_of("SELECT ruvector_integrity_simulate('sim_docs', '{\"shard:replica\": 0}')");
        assert_eq!(state, "22023");
        assert!(message.contains("no node \"shard:replica\""), "{message}");
        assert!(hint.contains("shard:primary"), "{hint}");
        assert_eq!(
            error_of("SELECT ruvector_integrity_simulate('sim_docs', '{\"shard:primary\": 2}')").0,
            "22023"
        );
        assert_eq!(
            error_of("SELECT ruvector_integrity_simulate('sim_docs', '[]')").0,
            "22023"
        );
    }

    #[pg_test]
    fn explain_names_a_healthy_collection_s_state_and_refuses_unknown_ones() {
        collection("why_docs", 10);
        let e = json_of("SELECT ruvector_integrity_explain('why_docs')");
        assert_eq!(e["collection"], "why_docs");
        assert_eq!(e["lambda_norm"], 1.0);
        assert_eq!(e["level"], "normal");
        assert_eq!(e["repair"]["components"], serde_json::json!([]));
        assert_eq!(e["repair"]["target"], 0.9);
        // Before its first sample: one healthy sample makes it normal.
        assert_eq!(e["hysteresis"]["moves"][0]["to"], "normal", "{e}");
        let text = Spi::get_one::<String>("SELECT ruvector_integrity_explain_text('why_docs')")
            .unwrap()
            .unwrap();
        assert!(text.contains("nothing to repair"), "{text}");
        assert_eq!(
            error_of("SELECT ruvector_integrity_explain('nope')").0,
            "42704"
        );
        assert_eq!(
            error_of("SELECT ruvector_integrity_explain_text('nope')").0,
            "42704"
        );
    }

    #[pg_test]
    fn partitions_are_nodes_and_new_ones_are_gated_at_once() {
        Spi::run("CREATE TABLE part_docs (id int, embedding real[]) PARTITION BY RANGE (id)")
            .unwrap();
        Spi::run("CREATE TABLE part_docs_a PARTITION OF part_docs FOR VALUES FROM (0) TO (100)")
            .unwrap();
        Spi::run("CREATE TABLE part_docs_b PARTITION OF part_docs FOR VALUES FROM (100) TO (200)")
            .unwrap();
        json_of("SELECT ruvector_register_collection('part_docs', 'part_docs', 'embedding', 3)");
        let sample = json_of("SELECT ruvector_integrity_sample('part_docs')");
        assert_eq!(sample["node_count"], 4);
        // New partitions, created or attached, are the collection's at once:
        // an index build on them waits for the first sample like the others.
        Spi::run("CREATE TABLE part_docs_c PARTITION OF part_docs FOR VALUES FROM (200) TO (300)")
            .unwrap();
        Spi::run("CREATE TABLE part_docs_d (id int, embedding real[])").unwrap();
        Spi::run("CREATE INDEX ON part_docs_d (id)").unwrap();
        Spi::run(
            "ALTER TABLE part_docs ATTACH PARTITION part_docs_d FOR VALUES FROM (300) TO (400)",
        )
        .unwrap();
        for partition in ["part_docs_a", "part_docs_c", "part_docs_d"] {
            assert_eq!(
                error_of(&format!("CREATE INDEX ON {partition} (id)")).0,
                "53000"
            );
        }
    }

    #[pg_test]
    fn unregister_keeps_the_audit_trail_and_ungates_the_table() {
        collection("unreg_docs", 1);
        assert_eq!(error_of("CREATE INDEX ON unreg_docs (id)").0, "53000");
        json_of("SELECT ruvector_unregister_collection('unreg_docs')");
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM ruvector.collections").unwrap(),
            Some(0)
        );
        Spi::run("CREATE INDEX ON unreg_docs (id)").unwrap();
        let actions = Spi::get_one::<String>(
            "SELECT string_agg(metadata->>'action', ',' ORDER BY id) FROM ruvector.pending_events WHERE collection_name = 'unreg_docs'",
        )
        .unwrap();
        assert_eq!(actions, Some("register,unregister".into()));
        assert_eq!(
            error_of("SELECT ruvector_unregister_collection('unreg_docs')").0,
            "42704"
        );
    }

    #[pg_test]
    fn audit_tables_are_append_only() {
        // (Far past the head: the worker may be signing its first entries now.)
        Spi::run(
            "INSERT INTO ruvector.integrity_events (seq, collection_name, event_type, payload, prev_hash, entry_hash, signature, signer_id, created_at, signed_at, system_identifier, timeline)
             VALUES ((SELECT coalesce(max(seq), 0) + 1000000 FROM ruvector.integrity_events), 'x', 'audit', '\\x00', decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'), '\\x00', 'k', now(), now(), 7, 1)",
        )
        .unwrap();
        for sql in [
            "UPDATE ruvector.integrity_events SET collection_name = 'y'",
            "DELETE FROM ruvector.integrity_events",
            "TRUNCATE ruvector.integrity_events",
        ] {
            let (state, message, _) = error_of(sql);
            assert_eq!(state, "42501", "{sql}");
            assert_eq!(message, "ruvector.integrity_events is append-only");
        }
        Spi::run("INSERT INTO ruvector.signing_keys (id, public_key) VALUES ('k', decode(repeat('11', 32), 'hex'))").unwrap();
        assert_eq!(
            error_of(
                "UPDATE ruvector.signing_keys SET public_key = decode(repeat('22', 32), 'hex')"
            )
            .0,
            "42501"
        );
        assert_eq!(error_of("DELETE FROM ruvector.signing_keys").0, "42501");
        Spi::run("UPDATE ruvector.signing_keys SET revoked_at = now(), revocation_reason = 'test'")
            .unwrap();
        assert_eq!(
            error_of("UPDATE ruvector.signing_keys SET revoked_at = NULL").0,
            "42501"
        );
    }

    #[pg_test]
    fn verifying_an_empty_or_missing_event() {
        assert_eq!(
            Spi::get_one::<bool>("SELECT ruvector_verify_event_signature(12345)").unwrap(),
            None
        );
        let chain = json_of("SELECT ruvector_verify_audit_chain()");
        assert_eq!(chain["ok"], true);
    }

    #[pg_test]
    fn mincut_and_lambda2_on_json_graphs() {
        let cut = json_of(
            r#"SELECT ruvector_mincut('[{"source": "a", "target": "b", "capacity": 3},
                                        {"source": "b", "target": "c", "capacity": 1},
                                        {"source": "c", "target": 4, "capacity": 2},
                                        {"source": 4, "target": "a"}]')"#,
        );
        assert_eq!(cut["lambda"], 2.0);
        assert_eq!(cut["nodes"], 4);
        assert_eq!(cut["witness_edges"].as_array().unwrap().len(), 2);
        let apart = json_of(
            r#"SELECT ruvector_mincut('[{"source": 1, "target": 2}, {"source": 3, "target": 4}]')"#,
        );
        assert_eq!(apart["lambda"], 0.0);
        assert_eq!(
            json_of("SELECT ruvector_mincut('[]')")["lambda"],
            Value::Null
        );
        let l2 =
            json_of(r#"SELECT ruvector_lambda2('[{"source": 1, "target": 2, "capacity": 1.5}]')"#);
        assert!((l2["lambda2"].as_f64().unwrap() - 3.0).abs() < 1e-12);
        assert_eq!(
            json_of(
                r#"SELECT ruvector_lambda2('[{"source": 1, "target": 2}, {"source": 3, "target": 4}]')"#
            )["lambda2"],
            json!(0.0)
        );
        for (sql, message) in [
            (
                r#"SELECT ruvector_mincut('{"a": 1}')"#,
                "must be a JSON array",
            ),
            (
                r#"SELECT ruvector_mincut('[{"source": 1, "target": 2, "capacity": -1}]')"#,
                "capacity must be a finite number",
            ),
            (
                r#"SELECT ruvector_mincut('[{"source": 1, "target": 2, "weight": 1}]')"#,
                "unknown key \"weight\"",
            ),
            (
                r#"SELECT ruvector_lambda2('[{"source": [1], "target": 2}]')"#,
                "must be a string or a number",
            ),
        ] {
            let (state, got, _) = error_of(sql);
            assert_eq!(state, "22023", "{sql}");
            assert!(got.contains(message), "{sql}: {got}");
        }
    }

    #[pg_test]
    fn roles_exist_and_admin_functions_are_not_public() {
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM pg_roles WHERE rolname IN ('ruvector_reader', 'ruvector_admin')").unwrap(),
            Some(2)
        );
        let public_can = Spi::get_one::<bool>(
            "SELECT has_function_privilege('public', 'ruvector_integrity_policy_set(text, text, jsonb)', 'EXECUTE')",
        )
        .unwrap();
        assert_eq!(public_can, Some(false));
        let reader_can = Spi::get_one::<bool>(
            "SELECT has_function_privilege('ruvector_reader', 'ruvector_integrity_gate(text, text)', 'EXECUTE')",
        )
        .unwrap();
        assert_eq!(reader_can, Some(true));
    }

    /// A vector column of any type that casts to real[] (pgvector's `vector`
    /// does; pgvector is not in this machine's archive, so a type of our own).
    #[pg_test]
    fn a_type_that_casts_to_real_arrays_registers_and_trains() {
        Spi::run(
            "CREATE TYPE my_vector AS (v real[]);
             CREATE FUNCTION my_vector_values(my_vector) RETURNS real[]
                 LANGUAGE sql IMMUTABLE STRICT RETURN ($1).v;
             CREATE CAST (my_vector AS real[]) WITH FUNCTION my_vector_values(my_vector);
             CREATE TYPE no_vector AS (v real[]);
             CREATE TABLE own_docs (id bigserial PRIMARY KEY, embedding my_vector, other no_vector);
             INSERT INTO own_docs (embedding)
             SELECT ROW(ARRAY[(i % 4) * 10, (i % 4) * 10, 1])::my_vector FROM generate_series(1, 200) i",
        )
        .unwrap();
        let (code, message, hint) = error_of(
            "SELECT ruvector_register_collection('own_docs', 'own_docs', 'other', dimensions => 3)",
        );
        assert_eq!(code, "42804", "{message}");
        assert!(hint.contains("casts to real[]"), "{hint}");
        // The dimensions come from the first vector, through the cast.
        let registered =
            json_of("SELECT ruvector_register_collection('own_docs', 'own_docs', 'embedding')");
        assert_eq!(registered["dimensions"], 3);
        let trained = json_of("SELECT ruvector_ivf_train('own_docs', 4)");
        assert_eq!(trained["trained_rows"], 200);
        let counts = Spi::get_one::<Vec<i64>>(
            "SELECT array_agg(vector_count ORDER BY vector_count) FROM ruvector.ivf_lists",
        )
        .unwrap()
        .unwrap();
        assert_eq!(counts, vec![50, 50, 50, 50]);
    }

    #[pg_test]
    fn ivf_train_stores_lists_and_refuses_bad_input() {
        Spi::run(
            "CREATE TABLE ivf_docs (id bigserial PRIMARY KEY, embedding real[]);
             INSERT INTO ivf_docs (embedding)
             SELECT ARRAY[(i % 4) * 10 + random(), (i % 4) * 10, 1]::real[] FROM generate_series(1, 200) i;
             SELECT ruvector_register_collection('ivf_docs', 'ivf_docs', 'embedding', dimensions => 3)",
        )
        .unwrap();
        // A vector with a NaN and one of the wrong length are left out, not fatal.
        Spi::run("INSERT INTO ivf_docs (embedding) VALUES ('{NaN,1,1}'), ('{1,2}')").unwrap();
        for (lists, state) in [(0, "22023"), (1001, "22023"), (-3, "22023")] {
            let (code, message, hint) =
                error_of(&format!("SELECT ruvector_ivf_train('ivf_docs', {lists})"));
            assert_eq!(code, state, "{lists}: {message}");
            assert!(hint.contains("lists"), "{hint}");
        }
        assert_eq!(error_of("SELECT ruvector_ivf_train('nope', 4)").0, "42704");
        let trained = json_of("SELECT ruvector_ivf_train('ivf_docs', 4)");
        assert_eq!(trained["trained_rows"], 200);
        assert_eq!(trained["skipped_rows"], 2);
        let (lists, vectors) = Spi::get_two::<i64, i64>(
            "SELECT count(*), sum(vector_count)::bigint FROM ruvector.ivf_lists l
             JOIN ruvector.collections c ON c.id = l.collection_id WHERE c.name = 'ivf_docs'",
        )
        .unwrap();
        assert_eq!((lists, vectors), (Some(4), Some(200)));
        // Four separated blobs: four lists of 50.
        let counts = Spi::get_one::<Vec<i64>>(
            "SELECT array_agg(vector_count ORDER BY vector_count) FROM ruvector.ivf_lists",
        )
        .unwrap()
        .unwrap();
        assert_eq!(counts, vec![50, 50, 50, 50]);
        let graph = json_of("SELECT ruvector_integrity_sample('ivf_docs')");
        assert_eq!(graph["lambda_norm"], 1.0);
        let centroids = graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["node"].as_str().unwrap().starts_with("centroid:"))
            .count();
        assert_eq!(centroids, 4);

        // Fewer usable vectors than lists.
        Spi::run(
            "CREATE TABLE ivf_empty (id bigserial PRIMARY KEY, embedding real[]);
             SELECT ruvector_register_collection('ivf_empty', 'ivf_empty', 'embedding', dimensions => 3)",
        )
        .unwrap();
        let (code, message, _) = error_of("SELECT ruvector_ivf_train('ivf_empty', 2)");
        assert_eq!(code, "55000", "{message}");

        // Only the table's owner trains its lists.
        Spi::run("CREATE ROLE ivf_stranger; GRANT ruvector_admin TO ivf_stranger; GRANT ALL ON caught TO ivf_stranger")
            .unwrap();
        Spi::run("SET ROLE ivf_stranger").unwrap();
        let (code, message, _) = error_of("SELECT ruvector_ivf_train('ivf_docs', 2)");
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(code, "42501", "{message}");
    }
}
