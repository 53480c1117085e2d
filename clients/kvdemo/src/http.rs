//! kvdemo's HTTP API: `PUT /kv/{key}` (body = value), `GET /kv/{key}`, `GET /status`.
//! Errors are `{"error":{"code","message"}}`.

use crate::store::{KvError, KvStore};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use replica_agent::{GateState, LeaseGate};
use serde_json::{json, Value};
use std::sync::Arc;

pub struct Host {
    pub name: String,
    pub gate: LeaseGate,
    pub store: KvStore,
}

type Reply = (StatusCode, Json<Value>);

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
}

async fn put(State(host): State<Arc<Host>>, Path(key): Path<String>, value: String) -> Reply {
    let Some(permit) = host.gate.write_permit() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_primary",
            format!("{} may not write now", host.name),
        );
    };
    match host.store.put(&key, &value, permit.epoch).await {
        // Acknowledged only once stored.
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"key": key, "epoch": permit.epoch, "host": host.name})),
        ),
        Err(e @ KvError::StaleEpoch { .. }) => {
            error(StatusCode::CONFLICT, "stale_epoch", e.to_string())
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        ),
    }
}

async fn read(State(host): State<Arc<Host>>, Path(key): Path<String>) -> Reply {
    match host.store.get(&key).await {
        Ok(Some(s)) => (
            StatusCode::OK,
            Json(json!({"key": key, "value": s.value, "epoch": s.epoch})),
        ),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", format!("no key {key}")),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        ),
    }
}

async fn status(State(host): State<Arc<Host>>) -> Reply {
    let (state, epoch) = match host.gate.state() {
        GateState::Primary { epoch, .. } => ("primary", Some(epoch.0)),
        GateState::Secondary { epoch, .. } => ("secondary", Some(epoch.0)),
        GateState::Unknown { .. } => ("unknown", None),
    };
    (
        StatusCode::OK,
        Json(json!({"host": host.name, "state": state, "epoch": epoch})),
    )
}

pub fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/kv/{key}", get(read).put(put))
        .route("/status", get(status))
        .with_state(host)
}
