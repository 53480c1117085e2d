//! The worker's call to the target region's irc-remote: `POST {endpoint}v1/operations`, signed
//! with SigV4 for the target region (service `lambda`), and the answer sorted into what the
//! work item should become. The wire types, the sorting and the [`Remote`] trait the worker
//! calls through are core; the HTTP client [`RemoteClient`] needs the `client` feature.

use super::health::{self, CallVerdict};
use super::ids::{OpId, Region};
use super::item::WorkItem;
use crate::fault::Fault;
#[cfg(feature = "client")]
use crate::fault::FAULT_HEADER;
#[cfg(feature = "client")]
use crate::sigv4::{SigV4Client, SigV4Error};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
#[cfg(feature = "client")]
use std::collections::BTreeMap;
#[cfg(feature = "client")]
use std::sync::Arc;
use std::time::Duration;
#[cfg(feature = "client")]
use tokio::sync::Semaphore;

/// The request body of `POST /v1/operations` (`docs/irc.md`, wire contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationRequest {
    pub v: u32,
    pub op_id: OpId,
    pub source_region: Region,
    pub kind: String,
    pub resource: String,
    pub seq: u64,
    pub payload: Value,
    /// v 2: follow the op to this state (`serving`) before it is done.
    #[serde(rename = "await", default, skip_serializing_if = "Option::is_none")]
    pub await_for: Option<String>,
    /// v 2: how long the target gives it, from its 202.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub await_ms: Option<u64>,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteOutcome {
    /// 2xx: `applied`, `duplicate` or `superseded`, with the remote's result.
    Done { outcome: String, result: Value },
    /// 202: applied, and the awaited state not reached yet; poll after `poll_after_ms`.
    Accepted { poll_after_ms: u64 },
    /// 200 `cancelled`: the target's tombstone won; the op will never apply there.
    Cancelled,
    /// The remote refused the op for good (an op-level 4xx with the contract's error body:
    /// 400 about the envelope, 409, 413, 422): FAILED at once.
    Permanent(String),
    /// Worth another attempt: 429, 5xx, a timeout or transport failure, and every refusal
    /// about the region rather than the op (401, 403, 404, 405, a 4xx without the contract's
    /// body, 400 `region_not_allowed` / `unsupported_version`: a bad deploy in the target
    /// must not fail the backlog). RETRYING with backoff; held while the region is open.
    Transient(String),
}

/// One attempt's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteCall {
    pub outcome: RemoteOutcome,
    /// What the call says of the target region's health; `None` when it says nothing (the
    /// source's own failure: no credentials, a request it could not sign or build).
    pub verdict: Option<CallVerdict>,
    /// A fault the answer asked for ([`crate::fault`]; obeyed only where switched on).
    pub fault: Option<Fault>,
}

impl RemoteCall {
    /// An answer from the region: transient outcomes count against it, the rest for it.
    pub fn answered(outcome: RemoteOutcome) -> Self {
        let verdict = match outcome {
            RemoteOutcome::Transient(_) => CallVerdict::RegionFailure,
            _ => CallVerdict::Healthy,
        };
        Self {
            outcome,
            verdict: Some(verdict),
            fault: None,
        }
    }

    /// A failure on the source's side: says nothing of the region.
    pub fn source_failure(outcome: RemoteOutcome) -> Self {
        Self {
            outcome,
            verdict: None,
            fault: None,
        }
    }
}

/// The target regions as the worker sees them: one attempt for an item, within `timeout`.
/// Never fails: every way an attempt can go wrong is a [`RemoteOutcome`].
#[async_trait]
pub trait Remote: Send + Sync {
    async fn call(&self, item: &WorkItem, timeout: Duration) -> RemoteCall;

    /// Asks the target to cancel the op (`POST /v1/operations/{op_id}/cancel`): `Cancelled`
    /// if its tombstone won, otherwise the op's real outcome there.
    async fn cancel(&self, item: &WorkItem, timeout: Duration) -> RemoteCall;
}

/// The body of `POST /v1/operations/{op_id}/cancel`: who asks (bound to the caller as a POST
/// of the op is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub v: u32,
    pub source_region: Region,
}

/// The dispatcher's probe of an unavailable region: a signed `GET /v1/operations/{id}` of an
/// op id that never exists. `true` when the region answered as the contract says (a 404
/// `unknown_operation`): it is serving, with the right deploy and the right identity.
#[async_trait]
pub trait Prober: Send + Sync {
    async fn probe(&self, region: &Region, timeout: Duration) -> bool;
}

/// The op id every probe asks for: a valid ULID (time 0) that no submit ever makes.
pub const PROBE_OP_ID: &str = "00000000000000000000000000";

/// Whether a probe's answer says the region is alive.
pub fn probe_alive(status: u16, body: &[u8]) -> bool {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let code = parsed.as_ref().and_then(|v| v["error"]["code"].as_str());
    status == 404 && code == Some("unknown_operation")
}

/// No call to a region is given longer than this, whatever time the invocation has left
/// (DESIGN: call <= 5 s, connect <= 2 s in [`SigV4Client`]), so a region that drops traffic
/// holds a worker for seconds, not its whole invocation.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Calls in flight to one target region from one worker process at most; the rest wait for
/// a turn, so a slow region cannot take every connection (the event source's concurrency
/// bounds the processes).
pub const CALLS_PER_REGION: usize = 4;

/// The request body for `item` (its stored payload is JSON text).
pub fn request_for(item: &WorkItem) -> Result<OperationRequest, String> {
    let payload = serde_json::from_str(&item.payload)
        .map_err(|e| format!("stored payload is not JSON: {e}"))?;
    Ok(OperationRequest {
        // v 1 unless it awaits: a target not upgraded yet keeps taking plain ops.
        v: if item.await_for.is_some() { 2 } else { 1 },
        op_id: item.op_id.clone(),
        source_region: item.source_region.clone(),
        kind: item.kind.clone(),
        resource: item.resource.clone(),
        seq: item.seq,
        payload,
        await_for: item.await_for.clone(),
        await_ms: item.await_for.as_ref().and(item.await_ms),
    })
}

/// irc-remote over HTTP, SigV4-signed, one endpoint per target region.
#[cfg(feature = "client")]
#[derive(Debug, Clone)]
pub struct RemoteClient {
    http: SigV4Client,
    endpoints: BTreeMap<Region, String>,
    /// [`CALLS_PER_REGION`] turns per target region.
    turns: BTreeMap<Region, Arc<Semaphore>>,
}

fn describe_error(status: u16, body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    match parsed.as_ref().map(|v| &v["error"]) {
        Some(e) if e.is_object() => format!(
            "HTTP {status} {}: {}",
            e["code"].as_str().unwrap_or("error"),
            e["message"].as_str().unwrap_or("")
        ),
        _ => format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ),
    }
}

/// Sorts an HTTP answer: what the region's health makes of it ([`health::verdict`]) decides
/// whether a refusal is the op's (permanent) or the region's (transient).
pub fn classify(status: u16, body: &[u8]) -> RemoteOutcome {
    match (status, health::verdict(Some((status, body)))) {
        (200..=299, CallVerdict::Healthy) => {
            let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let outcome = parsed["outcome"].as_str().unwrap_or("applied");
            // Only a 200 is final; a 202 always means waiting.
            if status == 202 {
                return RemoteOutcome::Accepted {
                    poll_after_ms: parsed["poll_after_ms"].as_u64().unwrap_or(1_000),
                };
            }
            match (outcome, parsed["state"].as_str()) {
                ("cancelled", _) => RemoteOutcome::Cancelled,
                // An awaited op the target ended FAILED (`expired`): final, the op's own.
                (_, Some("FAILED")) => RemoteOutcome::Permanent(format!(
                    "remote state FAILED ({outcome}): {}",
                    parsed["error"]["message"].as_str().unwrap_or("no message")
                )),
                (_, Some("IN_PROGRESS")) => RemoteOutcome::Accepted {
                    poll_after_ms: parsed["poll_after_ms"].as_u64().unwrap_or(1_000),
                },
                _ => RemoteOutcome::Done {
                    outcome: outcome.to_owned(),
                    result: parsed["result"].clone(),
                },
            }
        }
        (200..=299, _) => RemoteOutcome::Transient(format!(
            "HTTP {status} with an unreadable body: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )),
        (_, CallVerdict::Healthy) => RemoteOutcome::Permanent(describe_error(status, body)),
        (_, CallVerdict::RegionFailure) => RemoteOutcome::Transient(describe_error(status, body)),
    }
}

#[cfg(feature = "client")]
impl RemoteClient {
    pub fn new(http: SigV4Client, endpoints: BTreeMap<Region, String>) -> Self {
        let turns = endpoints
            .keys()
            .map(|r| (r.clone(), Arc::new(Semaphore::new(CALLS_PER_REGION))))
            .collect();
        Self {
            http,
            endpoints,
            turns,
        }
    }

    /// The target regions it knows.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.endpoints.keys()
    }

    /// One signed request to `region`'s irc-remote, within the region's concurrency cap and
    /// [`CALL_TIMEOUT`] (or `timeout`, if shorter).
    async fn send(
        &self,
        method: &str,
        region: &Region,
        path: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<crate::sigv4::SignedResponse, RemoteCall> {
        let Some(endpoint) = self.endpoints.get(region) else {
            return Err(RemoteCall::source_failure(RemoteOutcome::Permanent(
                format!("no irc-remote endpoint for {region} in TENURE_REGION_ENDPOINTS"),
            )));
        };
        let _turn = match self.turns.get(region) {
            Some(turns) => Some(turns.acquire().await),
            None => None,
        };
        let url = format!("{}{path}", endpoint.trim_end_matches('/'));
        self.http
            .send(
                method,
                &url,
                region.as_str(),
                body,
                timeout.min(CALL_TIMEOUT),
            )
            .await
            .map_err(|e| match e {
                // The source's own failures say nothing of the region.
                SigV4Error::NoCredentialsProvider
                | SigV4Error::Credentials(_)
                | SigV4Error::Signing(_) => {
                    RemoteCall::source_failure(RemoteOutcome::Transient(e.to_string()))
                }
                SigV4Error::Transport { .. } | SigV4Error::Timeout { .. } => {
                    RemoteCall::answered(RemoteOutcome::Transient(e.to_string()))
                }
            })
    }
}

#[cfg(feature = "client")]
#[async_trait]
impl Remote for RemoteClient {
    /// One attempt for `item`, giving up after `timeout` (at most [`CALL_TIMEOUT`]).
    async fn call(&self, item: &WorkItem, timeout: Duration) -> RemoteCall {
        let permanent = |m: String| RemoteCall::source_failure(RemoteOutcome::Permanent(m));
        let request = match request_for(item) {
            Ok(r) => r,
            Err(m) => return permanent(m),
        };
        let body = match serde_json::to_vec(&request) {
            Ok(b) => b,
            Err(e) => return permanent(e.to_string()),
        };
        match self
            .send(
                "POST",
                &item.target_region,
                "/v1/operations",
                &body,
                timeout,
            )
            .await
        {
            Ok(response) => RemoteCall {
                fault: response.header(FAULT_HEADER).and_then(Fault::from_header),
                ..RemoteCall::answered(classify(response.status, &response.body))
            },
            Err(call) => call,
        }
    }

    async fn cancel(&self, item: &WorkItem, timeout: Duration) -> RemoteCall {
        let request = CancelRequest {
            v: 2,
            source_region: item.source_region.clone(),
        };
        let body = match serde_json::to_vec(&request) {
            Ok(b) => b,
            Err(e) => return RemoteCall::source_failure(RemoteOutcome::Permanent(e.to_string())),
        };
        let path = format!("/v1/operations/{}/cancel", item.op_id);
        match self
            .send("POST", &item.target_region, &path, &body, timeout)
            .await
        {
            Ok(response) => RemoteCall::answered(classify(response.status, &response.body)),
            Err(call) => call,
        }
    }
}

#[cfg(feature = "client")]
impl RemoteClient {
    /// `GET /v1/operations/{op_id}` at `region`: the target's view of the op.
    pub async fn status(
        &self,
        region: &Region,
        op_id: &OpId,
        timeout: Duration,
    ) -> Result<crate::sigv4::SignedResponse, RemoteCall> {
        let path = format!("/v1/operations/{op_id}");
        self.send("GET", region, &path, b"", timeout).await
    }
}

#[cfg(feature = "client")]
#[async_trait]
impl Prober for RemoteClient {
    async fn probe(&self, region: &Region, timeout: Duration) -> bool {
        let path = format!("/v1/operations/{PROBE_OP_ID}");
        match self.send("GET", region, &path, b"", timeout).await {
            Ok(response) => probe_alive(response.status, &response.body),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_sort_into_done_permanent_and_transient() {
        assert_eq!(
            classify(
                200,
                br#"{"op_id":"x","outcome":"duplicate","result":{"a":1}}"#
            ),
            RemoteOutcome::Done {
                outcome: "duplicate".into(),
                result: serde_json::json!({"a":1})
            }
        );
        assert_eq!(
            classify(
                422,
                br#"{"error":{"code":"invalid_payload","message":"lease too short"}}"#
            ),
            RemoteOutcome::Permanent("HTTP 422 invalid_payload: lease too short".into())
        );
        assert!(matches!(
            classify(409, br#"{"error":{"code":"op_id_conflict","message":"m"}}"#),
            RemoteOutcome::Permanent(_)
        ));
        assert!(
            matches!(classify(500, b"oops"), RemoteOutcome::Transient(m) if m.contains("oops"))
        );
        assert!(matches!(classify(429, b""), RemoteOutcome::Transient(_)));
        assert!(matches!(
            classify(200, b"not json"),
            RemoteOutcome::Transient(_)
        ));
    }

    #[test]
    fn refusals_about_the_region_are_retried_not_final() {
        let error = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
        for (status, body) in [
            (403, error("not_this_region")),
            (401, error("unauthorized")),
            (404, error("not_found")),
            (405, error("method_not_allowed")),
            (400, error("region_not_allowed")),
            (400, error("unsupported_version")),
            (409, "<html>a proxy's conflict page</html>".to_owned()),
        ] {
            let outcome = classify(status, body.as_bytes());
            assert!(
                matches!(outcome, RemoteOutcome::Transient(_)),
                "{status} {body}: {outcome:?}"
            );
            assert_eq!(
                RemoteCall::answered(outcome).verdict,
                Some(CallVerdict::RegionFailure)
            );
        }
        let op_level = classify(400, error("invalid_id").as_bytes());
        assert!(matches!(op_level, RemoteOutcome::Permanent(_)));
        assert_eq!(
            RemoteCall::answered(op_level).verdict,
            Some(CallVerdict::Healthy)
        );
    }

    #[test]
    fn only_the_contracts_unknown_operation_answer_makes_a_probe_alive() {
        let unknown = br#"{"error":{"code":"unknown_operation","message":"no such op"}}"#;
        assert!(probe_alive(404, unknown));
        assert!(!probe_alive(
            404,
            br#"{"error":{"code":"not_found","message":"no route"}}"#
        ));
        assert!(!probe_alive(
            403,
            br#"{"error":{"code":"forbidden","message":"m"}}"#
        ));
        assert!(!probe_alive(503, b"Service Unavailable"));
        assert!(!probe_alive(200, b"{}"));
        assert!(super::super::ids::OpId::parse(PROBE_OP_ID).is_ok());
    }
}
