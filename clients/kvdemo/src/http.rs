//! kvdemo's HTTP API, one key space per replica group:
//!
//! - `PUT /groups/{group}/kv/{key}` (body = value), `GET /groups/{group}/kv/{key}`;
//! - `GET /groups/{group}/status`: this host's role in the group;
//! - `GET /status`: the host (incarnation, host epoch, primaries, reachable, silenced);
//! - `POST /groups/{group}/step-down`, `POST /step-down` (the whole host), `POST /resume`.
//!
//! Errors are `{"error":{"code","message"}}`. With fault injection on (`--fault-injection`,
//! tests and campaigns only), `PUT ...?delay_ms=N` sleeps N ms between taking the permit and
//! storing: a host paused mid-write, whose late write the fences must refuse.

use crate::store::{KvError, KvStore};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use replica_agent::{GroupRole, HostAgent};
use serde_json::{json, Value};
use std::sync::Arc;
use tenure::ids::GroupId;

pub struct Host {
    pub name: String,
    pub agent: Arc<HostAgent>,
    pub store: KvStore,
    pub fault_injection: bool,
    /// The agent's metrics (`replica_agent::metrics`) in Prometheus' text format.
    pub metrics: PrometheusHandle,
}

/// Query parameters of `PUT /groups/{group}/kv/{key}`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct PutOptions {
    delay_ms: Option<u64>,
}

/// The longest injected delay: a pause, not a hung request.
const MAX_DELAY_MS: u64 = 60_000;

type Reply = (StatusCode, Json<Value>);

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
}

/// The group named in the path, if this host serves it.
fn served(host: &Host, raw: &str) -> Result<GroupId, Reply> {
    let group = GroupId::parse(raw).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_group_id",
            format!("{raw}: {e}"),
        )
    })?;
    if host.agent.state(&group).is_none() {
        return Err(error(
            StatusCode::NOT_FOUND,
            "group_not_served",
            format!("{} serves no group {group}", host.name),
        ));
    }
    Ok(group)
}

async fn put(
    State(host): State<Arc<Host>>,
    Path((group, key)): Path<(String, String)>,
    Query(options): Query<PutOptions>,
    value: String,
) -> Reply {
    let group = match served(&host, &group) {
        Ok(g) => g,
        Err(reply) => return reply,
    };
    if key.starts_with('#') {
        return error(
            StatusCode::BAD_REQUEST,
            "reserved_key",
            format!("keys starting with '#' are reserved: {key}"),
        );
    }
    let delay = match options.delay_ms {
        None => None,
        Some(_) if !host.fault_injection => {
            return error(
                StatusCode::BAD_REQUEST,
                "fault_injection_disabled",
                "delay_ms needs a host started with --fault-injection",
            )
        }
        Some(ms) if ms > MAX_DELAY_MS => {
            return error(
                StatusCode::BAD_REQUEST,
                "delay_too_long",
                format!("delay_ms must be <= {MAX_DELAY_MS}"),
            )
        }
        Some(ms) => Some(std::time::Duration::from_millis(ms)),
    };
    let Some(permit) = host.agent.write_permit(&group) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_primary",
            format!("{} may not write {group} now", host.name),
        );
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    match host.store.put(&group, &key, &value, permit.epoch).await {
        // Acknowledged only once stored.
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"group": group, "key": key, "epoch": permit.epoch, "host": host.name})),
        ),
        Err(e @ (KvError::StaleEpoch { .. } | KvError::FenceAhead { .. })) => {
            error(StatusCode::CONFLICT, "stale_epoch", e.to_string())
        }
        Err(e @ KvError::ReservedKey(_)) => {
            error(StatusCode::BAD_REQUEST, "reserved_key", e.to_string())
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        ),
    }
}

async fn read(State(host): State<Arc<Host>>, Path((group, key)): Path<(String, String)>) -> Reply {
    let group = match served(&host, &group) {
        Ok(g) => g,
        Err(reply) => return reply,
    };
    match host.store.get(&group, &key).await {
        Ok(Some(s)) => (
            StatusCode::OK,
            Json(json!({"group": group, "key": key, "value": s.value, "epoch": s.epoch})),
        ),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no key {key} in {group}"),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        ),
    }
}

/// A role as the API shows it: `state` (primary, secondary, unknown), `epoch`, `holder`.
pub fn role_json(role: &GroupRole) -> Value {
    match role {
        GroupRole::Primary { epoch, .. } => json!({"state": "primary", "epoch": epoch}),
        GroupRole::Secondary { holder, epoch } => {
            json!({"state": "secondary", "epoch": epoch, "holder": holder})
        }
        GroupRole::Unknown { reason } => {
            json!({"state": "unknown", "epoch": null, "reason": reason})
        }
    }
}

async fn group_status(State(host): State<Arc<Host>>, Path(group): Path<String>) -> Reply {
    let group = match served(&host, &group) {
        Ok(g) => g,
        Err(reply) => return reply,
    };
    let Some(role) = host.agent.state(&group) else {
        return error(StatusCode::NOT_FOUND, "group_not_served", group.to_string());
    };
    let mut body = role_json(&role);
    body["host"] = json!(host.name);
    body["group"] = json!(group);
    (StatusCode::OK, Json(body))
}

async fn status(State(host): State<Arc<Host>>) -> Reply {
    let s = host.agent.status();
    (
        StatusCode::OK,
        Json(json!({
            "host": host.name,
            "incarnation": s.incarnation,
            "host_epoch": s.host_epoch,
            "reachable": s.reachable,
            "silenced": s.silenced,
            "standby": s.standby,
            "primaries": s.primaries,
            "groups": host.agent.groups().len(),
            "last_error": s.last_error,
            "polls": s.polls,
            "checks": s.checks,
            "check_failures": s.check_failures,
        })),
    )
}

async fn step_down(State(host): State<Arc<Host>>, Path(group): Path<String>) -> Reply {
    let group = match served(&host, &group) {
        Ok(g) => g,
        Err(reply) => return reply,
    };
    match host.agent.step_down(&group).await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"host": host.name, "group": group, "stepped_down": true})),
        ),
        // The gate is closed either way; the release is sent again after the next check.
        Err(e) => error(StatusCode::BAD_GATEWAY, "release_failed", e.to_string()),
    }
}

async fn step_down_host(State(host): State<Arc<Host>>) -> Reply {
    match host.agent.step_down_host().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"host": host.name, "stepped_down": true})),
        ),
        Err(e) => error(StatusCode::BAD_GATEWAY, "release_failed", e.to_string()),
    }
}

async fn resume(State(host): State<Arc<Host>>) -> Reply {
    host.agent.resume();
    (
        StatusCode::OK,
        Json(json!({"host": host.name, "resumed": true})),
    )
}

/// `GET /metrics`: what the agent exports, for a Prometheus scrape.
async fn prometheus(State(host): State<Arc<Host>>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        host.metrics.render(),
    )
}

pub fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/metrics", get(prometheus))
        .route("/groups/{group}/kv/{key}", get(read).put(put))
        .route("/groups/{group}/status", get(group_status))
        .route("/groups/{group}/step-down", post(step_down))
        .route("/status", get(status))
        .route("/step-down", post(step_down_host))
        .route("/resume", post(resume))
        .with_state(host)
}
