//! lease-check's HTTP contract (`docs/protocol.md`, "Wire contract"):
//! - v2, per host: `POST /v1/hosts/{host_id}/check` `{"healthy"?, "heartbeat"?,
//!   "incarnation"?, "groups"?: [group_id...], "watch"?: [host_id...], "watch_groups"?:
//!   [{"host_id", "host_epoch"?, "groups": [group_id...]}]}`; `POST
//!   /v1/hosts/{host_id}/release` `{"groups": [{"group_id", "epoch"}]}`; `GET
//!   /v1/hosts/{host_id}`.
//! - v1, per group (answered by v2): `POST /v1/groups/{group_id}/check` `{"host_id",
//!   "healthy"?, "heartbeat"?}`; `POST /v1/groups/{group_id}/release` `{"host_id", "epoch"}`;
//!   `GET /v1/groups/{group_id}`.
//!
//! 400 malformed body or bad id, 404 unknown group or non-member, 409 stale release, 413
//! oversize body or too many ids, 503 store unavailable; every error body is
//! `{"error":{"code","message"}}`. Inside a host check a bad group fails alone, as an entry
//! `{"group_id", "error": {...}}`.

use super::host::HostRecord;
use super::protocol::{self, CheckAnswer};
use super::record::Epoch;
use super::service::{
    CheckError, GroupEntry, GroupError, HostCheck, LeaseService, WatchGroups, MAX_GROUPS_PER_CALL,
    MAX_WATCH_PER_CALL,
};
use super::store::LeaseStore;
use crate::clock::Clock;
#[cfg(feature = "lambda")]
use crate::http::into_lambda;
use crate::http::{parse_json, ApiRequest, ApiResponse};
use crate::identity::{Caller, HostIdentityRule};
use crate::ids::{GroupId, HostId, IdError, Incarnation};
use crate::metrics::{self, CheckOutcome};
#[cfg(feature = "lambda")]
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

#[derive(Debug, Deserialize)]
struct GroupCheckBody {
    host_id: String,
    #[serde(default = "yes")]
    healthy: bool,
    #[serde(default = "yes")]
    heartbeat: bool,
}

#[derive(Debug, Deserialize)]
struct GroupReleaseBody {
    host_id: String,
    epoch: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostCheckBody {
    #[serde(default = "yes")]
    healthy: bool,
    #[serde(default = "yes")]
    heartbeat: bool,
    #[serde(default)]
    incarnation: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    watch: Vec<String>,
    #[serde(default)]
    watch_groups: Vec<WatchGroupsBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchGroupsBody {
    host_id: String,
    #[serde(default)]
    host_epoch: Option<u64>,
    groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseEntry {
    group_id: String,
    epoch: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostReleaseBody {
    groups: Vec<ReleaseEntry>,
}

fn yes() -> bool {
    true
}

enum Route {
    GroupCheck(GroupId),
    GroupRelease(GroupId),
    GroupGet(GroupId),
    HostCheck(HostId),
    HostRelease(HostId),
    HostGet(HostId),
}

fn bad_id(err: IdError) -> ApiResponse {
    ApiResponse::error(400, "invalid_id", err.to_string())
}

fn too_many(what: &str, max: usize, got: usize) -> ApiResponse {
    ApiResponse::error(
        413,
        "too_many",
        format!("at most {max} {what} per call, got {got}"),
    )
}

/// Matches the path and method; unknown paths are 404, known paths with another method 405.
fn route(method: &str, path: &str) -> Result<Route, ApiResponse> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let not_allowed = || {
        ApiResponse::error(
            405,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )
    };
    match segments.as_slice() {
        ["v1", "groups", group, rest @ ..] if rest.len() <= 1 => {
            let action = rest.first().copied();
            if !matches!(action, None | Some("check" | "release")) {
                return Err(not_found(path));
            }
            let group = GroupId::parse(group).map_err(bad_id)?;
            match (method, action) {
                ("POST", Some("check")) => Ok(Route::GroupCheck(group)),
                ("POST", Some("release")) => Ok(Route::GroupRelease(group)),
                ("GET", None) => Ok(Route::GroupGet(group)),
                _ => Err(not_allowed()),
            }
        }
        ["v1", "hosts", host, rest @ ..] if rest.len() <= 1 => {
            let action = rest.first().copied();
            if !matches!(action, None | Some("check" | "release")) {
                return Err(not_found(path));
            }
            let host = HostId::parse(host).map_err(bad_id)?;
            match (method, action) {
                ("POST", Some("check")) => Ok(Route::HostCheck(host)),
                ("POST", Some("release")) => Ok(Route::HostRelease(host)),
                ("GET", None) => Ok(Route::HostGet(host)),
                _ => Err(not_allowed()),
            }
        }
        _ => Err(not_found(path)),
    }
}

fn not_found(path: &str) -> ApiResponse {
    ApiResponse::error(404, "not_found", format!("no route for {path}"))
}

fn error_response(err: CheckError) -> ApiResponse {
    let status = match &err {
        CheckError::UnknownGroup(_) | CheckError::NotMember { .. } => 404,
        CheckError::StaleRelease { .. } | CheckError::LeaseHeld { .. } => 409,
        CheckError::TooMany(_) => 413,
        CheckError::Store(store) => {
            warn!(error = %store, "lease store unavailable");
            503
        }
    };
    ApiResponse::error(status, err.code(), err.to_string())
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
    /// v1: a check of one group.
    Check {
        group: GroupId,
        host: HostId,
        healthy: bool,
        heartbeat: bool,
    },
    Release(GroupId, HostId, Epoch),
    Get(GroupId),
    /// v2: a host check. `invalid` are the group ids that did not parse: each fails alone.
    HostCheck {
        check: HostCheck,
        invalid: Vec<(String, IdError)>,
    },
    HostRelease {
        host: HostId,
        groups: Vec<(GroupId, Epoch)>,
        invalid: Vec<(String, IdError)>,
    },
    HostGet(HostId),
}

impl LeaseCall {
    /// The host whose lease or grants the call would change or keep alive (reads act for
    /// nobody).
    pub fn acting_host(&self) -> Option<&HostId> {
        match self {
            LeaseCall::Check { host, .. }
            | LeaseCall::Release(_, host, _)
            | LeaseCall::HostRelease { host, .. } => Some(host),
            LeaseCall::HostCheck { check, .. } => Some(&check.host),
            LeaseCall::Get(_) | LeaseCall::HostGet(_) => None,
        }
    }
}

fn invalid_entry(raw: String, err: IdError) -> GroupEntry {
    GroupEntry::Error {
        group_id: raw,
        error: GroupError {
            code: "invalid_id".to_owned(),
            message: err.to_string(),
        },
    }
}

/// Route, body and ids, without touching the store: a [`LeaseCall`], or the 4xx answer for a
/// malformed request. Pure, so it is property-tested and fuzzed (`fuzz/`) on arbitrary input.
pub fn parse_request(request: ApiRequest<'_>) -> Result<LeaseCall, ApiResponse> {
    match route(request.method, request.path)? {
        Route::GroupCheck(group) => {
            let body: GroupCheckBody = parse_json(request.body)?;
            let host = HostId::parse(&body.host_id).map_err(bad_id)?;
            Ok(LeaseCall::Check {
                group,
                host,
                healthy: body.healthy,
                heartbeat: body.heartbeat,
            })
        }
        Route::GroupRelease(group) => {
            let body: GroupReleaseBody = parse_json(request.body)?;
            let host = HostId::parse(&body.host_id).map_err(bad_id)?;
            Ok(LeaseCall::Release(group, host, Epoch(body.epoch)))
        }
        Route::GroupGet(group) => Ok(LeaseCall::Get(group)),
        Route::HostCheck(host) => {
            let body: HostCheckBody = parse_json(request.body)?;
            if body.groups.len() > MAX_GROUPS_PER_CALL {
                return Err(too_many("groups", MAX_GROUPS_PER_CALL, body.groups.len()));
            }
            let watched = body.watch.len() + body.watch_groups.len();
            if watched > MAX_WATCH_PER_CALL {
                return Err(too_many("watched hosts", MAX_WATCH_PER_CALL, watched));
            }
            let conditional: usize = body.watch_groups.iter().map(|w| w.groups.len()).sum();
            if conditional > MAX_GROUPS_PER_CALL {
                return Err(too_many(
                    "groups in watch_groups",
                    MAX_GROUPS_PER_CALL,
                    conditional,
                ));
            }
            // A bad id in a conditional list is the request's mistake: no answer entry would
            // carry it, so the whole request is refused.
            let watch_groups = body
                .watch_groups
                .iter()
                .map(|w| {
                    Ok(WatchGroups {
                        host_id: HostId::parse(&w.host_id)?,
                        host_epoch: w.host_epoch.map(Epoch),
                        groups: w
                            .groups
                            .iter()
                            .map(|g| GroupId::parse(g))
                            .collect::<Result<_, _>>()?,
                    })
                })
                .collect::<Result<Vec<_>, IdError>>()
                .map_err(bad_id)?;
            let incarnation = body
                .incarnation
                .as_deref()
                .map(Incarnation::parse)
                .transpose()
                .map_err(bad_id)?;
            let watch = body
                .watch
                .iter()
                .map(|h| HostId::parse(h))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad_id)?;
            let mut groups = Vec::new();
            let mut invalid = Vec::new();
            for raw in body.groups {
                match GroupId::parse(&raw) {
                    Ok(g) => groups.push(g),
                    Err(e) => invalid.push((raw, e)),
                }
            }
            Ok(LeaseCall::HostCheck {
                check: HostCheck {
                    host,
                    healthy: body.healthy,
                    heartbeat: body.heartbeat,
                    incarnation,
                    groups,
                    watch,
                    watch_groups,
                },
                invalid,
            })
        }
        Route::HostRelease(host) => {
            let body: HostReleaseBody = parse_json(request.body)?;
            if body.groups.len() > MAX_GROUPS_PER_CALL {
                return Err(too_many("groups", MAX_GROUPS_PER_CALL, body.groups.len()));
            }
            let mut groups = Vec::new();
            let mut invalid = Vec::new();
            for entry in body.groups {
                match GroupId::parse(&entry.group_id) {
                    Ok(g) => groups.push((g, Epoch(entry.epoch))),
                    Err(e) => invalid.push((entry.group_id, e)),
                }
            }
            Ok(LeaseCall::HostRelease {
                host,
                groups,
                invalid,
            })
        }
        Route::HostGet(host) => Ok(LeaseCall::HostGet(host)),
    }
}

/// `GET /v1/groups/{group_id}`: the group item, plus the grant's state from its holder's host
/// record (`expires_in_ms` is the holder's host lease while the grant is live).
fn group_view(
    record: &super::record::LeaseRecord,
    holder: Option<&HostRecord>,
    now: u64,
    cfg: &super::config::LeaseConfig,
) -> serde_json::Value {
    let state = protocol::grant_state(record, holder, now, cfg);
    let (live, expires_in_ms) = match (&state, holder) {
        (protocol::GrantState::Live { .. }, Some(h)) => (true, h.expires_at_ms.saturating_sub(now)),
        (protocol::GrantState::V1Held { .. }, _) => {
            (true, record.expires_at_ms.saturating_sub(now))
        }
        _ => (false, 0),
    };
    let mut body = json!(record);
    body["now_ms"] = json!(now);
    body["grant_live"] = json!(live);
    body["expires_in_ms"] = json!(expires_in_ms);
    body["holder_host"] = json!(holder);
    body
}

/// A v1 answer has exactly v1's fields: `holder_host_epoch` is v2's.
fn v1_shape(mut answer: CheckAnswer) -> CheckAnswer {
    answer.holder_host_epoch = None;
    answer
}

/// Handles one request from `caller` (the IAM identity the Function URL authenticated, when
/// the event carries it). Never panics on input: every malformed request gets a 4xx JSON
/// error, a caller acting for another host 403. Checks (v1 and v2, well-formed or not) are
/// counted by outcome with their duration.
pub async fn handle<S: LeaseStore, C: Clock>(
    service: &LeaseService<S, C>,
    identity: &HostIdentityRule,
    caller: Option<&Caller>,
    request: ApiRequest<'_>,
) -> ApiResponse {
    let started = std::time::Instant::now();
    let response = answer(service, identity, caller, request).await;
    if request.method == "POST" && request.path.ends_with("/check") {
        metrics::check_answered(
            CheckOutcome::of_status(response.status),
            started.elapsed().as_secs_f64() * 1_000.0,
        );
    }
    response
}

async fn answer<S: LeaseStore, C: Clock>(
    service: &LeaseService<S, C>,
    identity: &HostIdentityRule,
    caller: Option<&Caller>,
    request: ApiRequest<'_>,
) -> ApiResponse {
    let call = match parse_request(request) {
        Ok(call) => call,
        Err(response) => return response,
    };
    if let Some(host) = call.acting_host() {
        if let Err(denied) = identity.authorize(caller, host) {
            warn!(host_id = %host, error = %denied, "caller refused");
            return denied.response();
        }
    }
    let result = match call {
        LeaseCall::Check {
            group,
            host,
            healthy,
            heartbeat,
        } => service
            .check_group(&group, &host, healthy, heartbeat)
            .await
            .map(|a| to_json(&v1_shape(a))),
        LeaseCall::Release(group, host, epoch) => service
            .release(&group, &host, epoch)
            .await
            .map(|a| to_json(&v1_shape(a))),
        LeaseCall::Get(group) => service.get_group(&group).await.map(|(record, holder)| {
            ApiResponse::ok(group_view(
                &record,
                holder.as_ref(),
                service.now_ms(),
                service.config(),
            ))
        }),
        LeaseCall::HostCheck { check, invalid } => {
            service.check_host(&check).await.map(|mut answer| {
                answer
                    .groups
                    .extend(invalid.into_iter().map(|(raw, e)| invalid_entry(raw, e)));
                to_json(&answer)
            })
        }
        LeaseCall::HostRelease {
            host,
            groups,
            invalid,
        } => service
            .release_many(&host, &groups)
            .await
            .map(|mut entries| {
                entries.extend(invalid.into_iter().map(|(raw, e)| invalid_entry(raw, e)));
                to_json(&json!({"host_id": host, "groups": entries}))
            }),
        LeaseCall::HostGet(host) => service.get_host(&host).await.map(|view| to_json(&view)),
    };
    result.unwrap_or_else(error_response)
}

/// The Function URL entry point: `lambda_http` request in, JSON response out.
#[cfg(feature = "lambda")]
pub async fn handle_lambda<S: LeaseStore, C: Clock>(
    service: &LeaseService<S, C>,
    identity: &HostIdentityRule,
    request: Request,
) -> Result<Response<Body>, std::convert::Infallible> {
    let caller = crate::identity::caller_of(&request);
    let response = handle(
        service,
        identity,
        caller.as_ref(),
        ApiRequest::from_lambda(&request),
    )
    .await;
    metrics::flush();
    Ok(into_lambda(response))
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
