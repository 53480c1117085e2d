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

/// A well-formed lease-check request, ready for the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseCall {
    Check(GroupId, CheckRequest),
    Release(GroupId, HostId, Epoch),
    Get(GroupId),
}

/// Route, body and ids, without touching the store: a [`LeaseCall`], or the 4xx answer for a
/// malformed request. Pure, so it is property-tested and fuzzed (`fuzz/`) on arbitrary input.
pub fn parse_request(request: ApiRequest<'_>) -> Result<LeaseCall, ApiResponse> {
    match route(request.method, request.path)? {
        Route::Check(group) => {
            let body: CheckBody = parse_json(request.body)?;
            let host = HostId::parse(&body.host_id).map_err(bad_id)?;
            Ok(LeaseCall::Check(
                group,
                CheckRequest {
                    host,
                    healthy: body.healthy,
                    heartbeat: body.heartbeat,
                },
            ))
        }
        Route::Release(group) => {
            let body: ReleaseBody = parse_json(request.body)?;
            let host = HostId::parse(&body.host_id).map_err(bad_id)?;
            Ok(LeaseCall::Release(group, host, Epoch(body.epoch)))
        }
        Route::Get(group) => Ok(LeaseCall::Get(group)),
    }
}

/// Handles one request. Never panics on input: every malformed request gets a 4xx JSON error.
pub async fn handle<C: Clock>(service: &LeaseService<C>, request: ApiRequest<'_>) -> ApiResponse {
    let call = match parse_request(request) {
        Ok(call) => call,
        Err(response) => return response,
    };
    let result = match call {
        LeaseCall::Check(group, check) => service.check(&group, &check).await.map(|a| to_json(&a)),
        LeaseCall::Release(group, host, epoch) => service
            .release(&group, &host, epoch)
            .await
            .map(|a| to_json(&a)),
        LeaseCall::Get(group) => service.get(&group).await.map(|record| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn call(method: &str, path: &str, body: &str) -> Result<LeaseCall, ApiResponse> {
        parse_request(ApiRequest {
            method,
            path,
            body: body.as_bytes(),
        })
    }

    #[test]
    fn the_three_routes_parse() {
        let group = GroupId::parse("g1").unwrap();
        let host = HostId::parse("h1").unwrap();
        assert_eq!(
            call("POST", "/v1/groups/g1/check", r#"{"host_id":"h1"}"#),
            Ok(LeaseCall::Check(
                group.clone(),
                CheckRequest {
                    host: host.clone(),
                    healthy: true,
                    heartbeat: true
                }
            ))
        );
        assert_eq!(
            call(
                "POST",
                "/v1/groups/g1/release",
                r#"{"host_id":"h1","epoch":3}"#
            ),
            Ok(LeaseCall::Release(group.clone(), host, Epoch(3)))
        );
        assert_eq!(call("GET", "/v1/groups/g1", ""), Ok(LeaseCall::Get(group)));
    }

    #[test]
    fn each_mistake_gets_its_status_and_code() {
        let cases = [
            ("GET", "/v1/nope", "", 404, "not_found"),
            ("GET", "/v1/groups/g1/check", "", 405, "method_not_allowed"),
            ("POST", "/v1/groups/bad%20id/check", "{}", 400, "invalid_id"),
            ("POST", "/v1/groups/g1/check", "{", 400, "malformed_request"),
            (
                "POST",
                "/v1/groups/g1/check",
                "{}",
                400,
                "malformed_request",
            ),
            (
                "POST",
                "/v1/groups/g1/check",
                r#"{"host_id":"a b"}"#,
                400,
                "invalid_id",
            ),
            (
                "POST",
                "/v1/groups/g1/release",
                r#"{"host_id":"h1","epoch":-1}"#,
                400,
                "malformed_request",
            ),
        ];
        for (method, path, body, status, code) in cases {
            let err = call(method, path, body).unwrap_err();
            assert_eq!(
                (err.status, err.body["error"]["code"].as_str()),
                (status, Some(code)),
                "{method} {path} {body}"
            );
        }
        let big = format!(
            r#"{{"host_id":"h1","pad":"{}"}}"#,
            "x".repeat(crate::http::MAX_BODY_BYTES)
        );
        assert_eq!(
            call("POST", "/v1/groups/g1/check", &big)
                .unwrap_err()
                .status,
            413
        );
    }

    proptest! {
        // Any request: a call or a 4xx with the contract's error shape, never a panic.
        #[test]
        fn any_request_gets_a_call_or_a_4xx(
            method in "(GET|POST|PUT|DELETE|\\PC{0,6})",
            path in "(/v1/groups/[a-z0-9\\-]{0,8}(/check|/release)?|\\PC{0,40})",
            body in "(\\{\"host_id\":\"[a-z0-9 ]{0,6}\"(,\"epoch\":-?[0-9]{1,3})?\\}|\\PC{0,60})",
        ) {
            match call(&method, &path, &body) {
                Ok(LeaseCall::Check(_, c)) => prop_assert!(!c.host.as_str().is_empty()),
                Ok(_) => {}
                Err(e) => prop_assert!(e.is_client_error(), "{e:?}"),
            }
        }
    }
}
