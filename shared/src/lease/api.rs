//! lease-check's HTTP contract (DESIGN "Wire contracts"):
//! - `POST /v1/groups/{group_id}/check` `{"host_id", "healthy"?, "heartbeat"?}`
//! - `POST /v1/groups/{group_id}/release` `{"host_id", "epoch"}`
//! - `GET  /v1/groups/{group_id}`
//!
//! 400 malformed body or bad id, 404 unknown group or non-member, 409 stale release,
//! 413 oversize body, 503 store unavailable; every error body is `{"error":{"code","message"}}`.

use super::record::Epoch;
use super::service::{CheckError, CheckRequest, LeaseService};
use crate::clock::Clock;
use crate::http::{into_lambda, parse_json, ApiRequest, ApiResponse};
use crate::ids::{GroupId, HostId};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

#[derive(Debug, Deserialize)]
struct CheckBody {
    host_id: String,
    #[serde(default = "yes")]
    healthy: bool,
    #[serde(default = "yes")]
    heartbeat: bool,
}

#[derive(Debug, Deserialize)]
struct ReleaseBody {
    host_id: String,
    epoch: u64,
}

fn yes() -> bool {
    true
}

enum Route {
    Check(GroupId),
    Release(GroupId),
    Get(GroupId),
}

fn bad_id(err: crate::ids::IdError) -> ApiResponse {
    ApiResponse::error(400, "invalid_id", err.to_string())
}

/// Matches the path and method; unknown paths are 404, known paths with another method 405.
fn route(method: &str, path: &str) -> Result<Route, ApiResponse> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, action) = match segments.as_slice() {
        ["v1", "groups", group] => (*group, None),
        ["v1", "groups", group, action @ ("check" | "release")] => (*group, Some(*action)),
        _ => {
            return Err(ApiResponse::error(
                404,
                "not_found",
                format!("no route for {path}"),
            ))
        }
    };
    let group = GroupId::parse(group).map_err(bad_id)?;
    match (method, action) {
        ("POST", Some("check")) => Ok(Route::Check(group)),
        ("POST", Some("release")) => Ok(Route::Release(group)),
        ("GET", None) => Ok(Route::Get(group)),
        _ => Err(ApiResponse::error(
            405,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )),
    }
}

fn error_response(err: CheckError) -> ApiResponse {
    match &err {
        CheckError::UnknownGroup(_) => ApiResponse::error(404, "unknown_group", err.to_string()),
        CheckError::NotMember { .. } => ApiResponse::error(404, "not_member", err.to_string()),
        CheckError::StaleRelease { .. } => ApiResponse::error(409, "stale_epoch", err.to_string()),
        CheckError::Store(store) => {
            warn!(error = %store, "lease store unavailable");
            ApiResponse::error(503, "store_unavailable", err.to_string())
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> ApiResponse {
    match serde_json::to_value(value) {
        Ok(body) => ApiResponse::ok(body),
        Err(e) => ApiResponse::error(500, "internal", format!("cannot encode answer: {e}")),
    }
}

/// Handles one request. Never panics on input: every malformed request gets a 4xx JSON error.
pub async fn handle<C: Clock>(service: &LeaseService<C>, request: ApiRequest<'_>) -> ApiResponse {
    let route = match route(request.method, request.path) {
        Ok(route) => route,
        Err(response) => return response,
    };
    let result = match route {
        Route::Check(group) => {
            let body: CheckBody = match parse_json(request.body) {
                Ok(body) => body,
                Err(response) => return response,
            };
            let host = match HostId::parse(&body.host_id) {
                Ok(host) => host,
                Err(e) => return bad_id(e),
            };
            let check = CheckRequest {
                host,
                healthy: body.healthy,
                heartbeat: body.heartbeat,
            };
            service.check(&group, &check).await.map(|a| to_json(&a))
        }
        Route::Release(group) => {
            let body: ReleaseBody = match parse_json(request.body) {
                Ok(body) => body,
                Err(response) => return response,
            };
            let host = match HostId::parse(&body.host_id) {
                Ok(host) => host,
                Err(e) => return bad_id(e),
            };
            service
                .release(&group, &host, Epoch(body.epoch))
                .await
                .map(|a| to_json(&a))
        }
        Route::Get(group) => service.get(&group).await.map(|record| {
            let now = service.now_ms();
            let mut body = json!(record);
            body["now_ms"] = json!(now);
            body["expires_in_ms"] = json!(record.expires_at_ms.saturating_sub(now));
            ApiResponse::ok(body)
        }),
    };
    result.unwrap_or_else(error_response)
}

/// The Function URL entry point: `lambda_http` request in, JSON response out.
pub async fn handle_lambda<C: Clock>(
    service: &LeaseService<C>,
    request: Request,
) -> Result<Response<Body>, std::convert::Infallible> {
    Ok(into_lambda(
        handle(service, ApiRequest::from_lambda(&request)).await,
    ))
}
