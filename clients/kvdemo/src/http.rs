//! kvdemo's HTTP API: `PUT /kv/{key}` (body = value), `GET /kv/{key}`, `GET /status`.
//! Errors are `{"error":{"code","message"}}`.
//!
//! With fault injection on (`--fault-injection`, tests and campaigns only), `PUT
//! /kv/{key}?delay_ms=N` sleeps N ms between taking the permit and storing: a host paused
//! mid-write, whose late write the fences must refuse.

use crate::store::{KvError, KvStore};
use axum::extract::{Path, Query, State};
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
    pub fault_injection: bool,
}

/// Query parameters of `PUT /kv/{key}`.
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

async fn put(
    State(host): State<Arc<Host>>,
    Path(key): Path<String>,
    Query(options): Query<PutOptions>,
    value: String,
) -> Reply {
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
    let Some(permit) = host.gate.write_permit() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_primary",
            format!("{} may not write now", host.name),
        );
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    match host.store.put(&key, &value, permit.epoch).await {
        // Acknowledged only once stored.
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"key": key, "epoch": permit.epoch, "host": host.name})),
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
