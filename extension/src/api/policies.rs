//! How a collection is gated: its policies (`ruvector_integrity_policy_set`,
//! `_list`, `_activate`, `_drop`) and an operator's pin of its state
//! (`ruvector_integrity_override`). Changes are the table owner's (or a
//! superuser's), audited, and reach shared memory when the caller's
//! transaction commits.

use pgrx::prelude::*;
use pgrx::JsonB;
use ruvector_integrity::audit::Event;
use ruvector_integrity::gate::Override;
use ruvector_integrity::policy::Policy;
use ruvector_integrity::registration::NAME_MAX;
use serde_json::{json, Value};

use super::collections::require_owner;
use crate::errors::{OrRaise, SqlError, SqlResult};
use crate::jsonb::{JsonbArg, SMALL_DOCUMENT};
use crate::store::collections::Collection;
use crate::{clock, privileges, shmem, store, xact};

#[pg_extern(schema = "ruvector", name = "_policy_set")]
fn policy_set(collection: &str, policy_name: &str, patch: JsonbArg) -> JsonB {
    let patch = patch.small("a policy", SMALL_DOCUMENT).or_raise();
    set_policy(collection, policy_name, &patch).or_raise()
}

/// The collection named `name`, once the caller is found to own its table
/// (`what` says what they asked to do) and its policies are locked: what it
/// says of the policy in force stays true until the transaction ends.
fn locked_for_policies(name: &str, policy_name: &str, what: &str) -> SqlResult<Collection> {
    if policy_name.is_empty() || policy_name.len() > NAME_MAX {
        return Err(SqlError::invalid("a policy name has 1 to 63 bytes"));
    }
    let collection = store::collections::find(name)?;
    require_owner(&collection, what)?;
    store::collections::lock_policies(collection.id)?;
    store::collections::find(name)
}

fn set_policy(name: &str, policy_name: &str, patch: &Value) -> SqlResult<JsonB> {
    let collection = locked_for_policies(name, policy_name, "set a policy of")?;
    let stored = store::collections::stored_policy(collection.id, policy_name)?;
    let created = stored.is_none();
    let policy = stored.unwrap_or_default().merged(patch).map_err(|e| {
        SqlError::from(e).hint("Patch keys: threshold_high, threshold_low, normal_actions, stress_actions, critical_actions, hysteresis, defer_retry_secs, sample_interval_secs; see the README for each state's action keys.")
    })?;
    store::collections::upsert_policy(collection.id, policy_name, &policy)?;
    let active = policy_changed(
        name,
        json!({"action": "set", "policy": policy_name, "created": created, "patch": patch}),
    )?
    .as_deref()
        == Some(policy_name);
    if !active {
        notice!("policy \"{policy_name}\" of collection \"{name}\" is stored but not in force");
    }
    Ok(JsonB(json!({
        "collection": name,
        "policy": policy_name,
        "in_force": active,
        "document": serde_json::to_value::<&Policy>(&policy)?,
    })))
}

/// Audits a change to collection `name`'s policies (`what` names it; the
/// policy now in force and the caller are added), and hands the policy now in
/// force to shared memory at commit. Returns the name of the policy in force.
fn policy_changed(name: &str, mut what: Value) -> SqlResult<Option<String>> {
    let now_in_force = store::collections::find(name)?;
    what["in_force"] = json!(now_in_force.policy_name);
    what["by"] = json!(privileges::caller_name());
    let event = Event::new(
        Some(now_in_force.id),
        name,
        "policy_update",
        None,
        None,
        &what,
        clock::now(),
    );
    store::events::append_pending(&event)?;
    let compiled = now_in_force.policy.compile();
    let at_commit = name.to_owned();
    xact::at_commit(move |shared| shared.update(&at_commit, |v| v.policy = compiled));
    Ok(now_in_force.policy_name)
}

/// `42704`: `collection` has no stored policy `policy_name`.
fn no_such_policy(collection: &str, policy_name: &str) -> SqlError {
    SqlError::new(
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("collection \"{collection}\" has no policy \"{policy_name}\""),
    )
    .hint(format!(
        "SELECT * FROM ruvector_integrity_policy_list('{collection}') lists its policies."
    ))
}

/// Every stored policy of `collection`, the one in force first (times as
/// Unix microseconds; the SQL wrapper turns them into timestamps).
#[pg_extern(schema = "ruvector", name = "_policy_list")]
fn policy_list(
    collection: &str,
) -> TableIterator<
    'static,
    (
        name!(policy_name, String),
        name!(in_force, bool),
        name!(enabled, bool),
        name!(priority, i32),
        name!(policy, JsonB),
        name!(updated_at_unix_us, i64),
    ),
> {
    let found = store::collections::find(collection).or_raise();
    let policies = store::collections::policies(found.id).or_raise();
    TableIterator::new(policies.into_iter().map(move |p| {
        let in_force = found.policy_name.as_deref() == Some(p.name.as_str());
        (
            p.name,
            in_force,
            p.enabled,
            p.priority,
            JsonB(p.policy),
            p.updated_at,
        )
    }))
}

/// Puts the stored policy `policy_name` of `collection` in force.
#[pg_extern(schema = "ruvector", name = "_policy_activate")]
fn policy_activate(collection: &str, policy_name: &str) -> JsonB {
    activate(collection, policy_name).or_raise()
}

fn activate(name: &str, policy_name: &str) -> SqlResult<JsonB> {
    let collection = locked_for_policies(name, policy_name, "activate a policy of")?;
    let previous = collection.policy_name.clone();
    if previous.as_deref() == Some(policy_name) {
        // Already in force: nothing changes, nothing to audit.
        return Ok(JsonB(json!({
            "collection": name, "policy": policy_name, "in_force": true,
            "previous": previous, "changed": false,
        })));
    }
    if !store::collections::activate_policy(collection.id, policy_name)? {
        return Err(no_such_policy(name, policy_name));
    }
    policy_changed(
        name,
        json!({"action": "activate", "policy": policy_name, "previous": previous}),
    )?;
    Ok(JsonB(json!({
        "collection": name, "policy": policy_name, "in_force": true,
        "previous": previous, "changed": true,
    })))
}

/// Deletes the stored policy `policy_name` of `collection`; the one in force
/// stays (activate another first).
#[pg_extern(schema = "ruvector", name = "_policy_drop")]
fn policy_drop(collection: &str, policy_name: &str) -> JsonB {
    drop_policy(collection, policy_name).or_raise()
}

fn drop_policy(name: &str, policy_name: &str) -> SqlResult<JsonB> {
    let collection = locked_for_policies(name, policy_name, "drop a policy of")?;
    if collection.policy_name.as_deref() == Some(policy_name) {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("policy \"{policy_name}\" is in force on collection \"{name}\""),
        )
        .hint(format!(
            "Put another in force first with ruvector_integrity_policy_activate; ruvector_integrity_policy_list('{name}') lists them."
        )));
    }
    let document = store::collections::drop_policy(collection.id, policy_name)?
        .ok_or_else(|| no_such_policy(name, policy_name))?;
    policy_changed(
        name,
        json!({"action": "drop", "policy": policy_name, "document": document}),
    )?;
    Ok(JsonB(json!({
        "collection": name, "policy": policy_name, "dropped": true, "document": document,
    })))
}

#[pg_extern(schema = "ruvector", name = "_override")]
fn integrity_override(
    collection: &str,
    state: Option<&str>,
    ttl_secs: Option<f64>,
    reason: Option<&str>,
) -> JsonB {
    set_override(collection, state, ttl_secs, reason).or_raise()
}

fn set_override(
    name: &str,
    state: Option<&str>,
    ttl_secs: Option<f64>,
    reason: Option<&str>,
) -> SqlResult<JsonB> {
    let collection = store::collections::find(name)?;
    require_owner(&collection, "override the state of")?;
    // A superuser's pin is lifted or replaced by a superuser only.
    if store::collections::pinned_by_superuser(collection.id)?
        && !privileges::is_superuser(privileges::caller())
    {
        return Err(SqlError::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("the state of collection \"{name}\" was pinned by a superuser"),
        )
        .hint("Only a superuser can change or clear it."));
    }
    let reason = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            SqlError::invalid("an override needs a reason")
                .hint("Say why, for the audit log: reason => 'failover drill'.")
        })?;
    let now = clock::now();
    let pin = Override::requested(state, ttl_secs, now)?;
    let previous = match shmem::shared()?.view(name) {
        Some((_, view)) => view.in_force(now).0,
        None => collection.state,
    };
    let by = privileges::caller_name();
    store::collections::set_override(collection.id, pin, reason, &by)?;
    let new_state = pin.map_or(collection.state, |p| p.state);
    let metadata = json!({
        "action": if pin.is_some() { "set" } else { "clear" },
        "state": pin.map(|p| p.state.as_str()),
        "ttl_secs": ttl_secs.filter(|_| pin.is_some()),
        "until_unix_us": pin.map(|p| p.until),
        "reason": reason,
        "by": by,
    });
    let event = Event::new(
        Some(collection.id),
        name,
        "manual_override",
        Some(previous.as_str().to_owned()),
        Some(new_state.as_str().to_owned()),
        &metadata,
        now,
    );
    store::events::append_pending(&event)?;
    let at_commit = name.to_owned();
    xact::at_commit(move |shared| shared.update(&at_commit, |v| v.pin = pin));
    xact::wake_worker_at_commit();
    Ok(JsonB(json!({
        "collection": name,
        "previous_state": previous.as_str(),
        "state": new_state.as_str(),
        "override": pin.is_some(),
        "until_unix_us": pin.map(|p| p.until),
        "reason": reason,
    })))
}
