//! The worker's call to the target region's irc-remote: `POST {endpoint}v1/operations`, signed
//! with SigV4 for the target region (service `lambda`), and the answer sorted into what the
//! work item should become. The wire types, the sorting and the [`Remote`] trait the worker
//! calls through are core; the HTTP client [`RemoteClient`] needs the `client` feature.

use super::ids::{OpId, Region};
use super::item::WorkItem;
use crate::fault::Fault;
#[cfg(feature = "client")]
use crate::fault::FAULT_HEADER;
#[cfg(feature = "client")]
use crate::sigv4::SigV4Client;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
#[cfg(feature = "client")]
use std::collections::BTreeMap;
use std::time::Duration;

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
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteOutcome {
    /// 2xx: `applied`, `duplicate` or `superseded`, with the remote's result.
    Done { outcome: String, result: Value },
    /// The remote refused the op for good (400/401/403/404/409/413/422): FAILED at once.
    Permanent(String),
    /// Worth another attempt (429, 5xx, timeout, transport): RETRYING with backoff.
    Transient(String),
}

/// One attempt's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteCall {
    pub outcome: RemoteOutcome,
    /// A fault the answer asked for ([`crate::fault`]; obeyed only where switched on).
    pub fault: Option<Fault>,
}

impl RemoteCall {
    pub fn answered(outcome: RemoteOutcome) -> Self {
        Self {
            outcome,
            fault: None,
        }
    }
}

/// The target regions as the worker sees them: one attempt for an item, within `timeout`.
/// Never fails: every way an attempt can go wrong is a [`RemoteOutcome`].
#[async_trait]
pub trait Remote: Send + Sync {
    async fn call(&self, item: &WorkItem, timeout: Duration) -> RemoteCall;
}

/// The request body for `item` (its stored payload is JSON text).
pub fn request_for(item: &WorkItem) -> Result<OperationRequest, String> {
    let payload = serde_json::from_str(&item.payload)
        .map_err(|e| format!("stored payload is not JSON: {e}"))?;
    Ok(OperationRequest {
        v: 1,
        op_id: item.op_id.clone(),
        source_region: item.source_region.clone(),
        kind: item.kind.clone(),
        resource: item.resource.clone(),
        seq: item.seq,
        payload,
    })
}

/// irc-remote over HTTP, SigV4-signed, one endpoint per target region.
#[cfg(feature = "client")]
#[derive(Debug, Clone)]
pub struct RemoteClient {
    http: SigV4Client,
    endpoints: BTreeMap<Region, String>,
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

/// Sorts an HTTP answer.
pub fn classify(status: u16, body: &[u8]) -> RemoteOutcome {
    match status {
        200..=299 => {
            let parsed: Option<Value> = serde_json::from_slice(body).ok();
            match parsed
                .as_ref()
                .and_then(|v| Some((v["outcome"].as_str()?, v)))
            {
                Some((outcome, v)) => RemoteOutcome::Done {
                    outcome: outcome.to_owned(),
                    result: v["result"].clone(),
                },
                None => RemoteOutcome::Transient(format!(
                    "HTTP {status} with an unreadable body: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                )),
            }
        }
        400 | 401 | 403 | 404 | 405 | 409 | 413 | 422 => {
            RemoteOutcome::Permanent(describe_error(status, body))
        }
        _ => RemoteOutcome::Transient(describe_error(status, body)),
    }
}

#[cfg(feature = "client")]
impl RemoteClient {
    pub fn new(http: SigV4Client, endpoints: BTreeMap<Region, String>) -> Self {
        Self { http, endpoints }
    }
}

#[cfg(feature = "client")]
#[async_trait]
impl Remote for RemoteClient {
    /// One attempt for `item`, giving up after `timeout`.
    async fn call(&self, item: &WorkItem, timeout: Duration) -> RemoteCall {
        let permanent = |m: String| RemoteCall::answered(RemoteOutcome::Permanent(m));
        let Some(endpoint) = self.endpoints.get(&item.target_region) else {
            return permanent(format!(
                "no irc-remote endpoint for {} in TENURE_REGION_ENDPOINTS",
                item.target_region
            ));
        };
        let request = match request_for(item) {
            Ok(r) => r,
            Err(m) => return permanent(m),
        };
        let body = match serde_json::to_vec(&request) {
            Ok(b) => b,
            Err(e) => return permanent(e.to_string()),
        };
        let url = format!("{}/v1/operations", endpoint.trim_end_matches('/'));
        match self
            .http
            .send("POST", &url, item.target_region.as_str(), &body, timeout)
            .await
        {
            Ok(response) => RemoteCall {
                outcome: classify(response.status, &response.body),
                fault: response.header(FAULT_HEADER).and_then(Fault::from_header),
            },
            // Timeouts, transport and credential failures: all worth another attempt.
            Err(e) => RemoteCall::answered(RemoteOutcome::Transient(e.to_string())),
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
        assert!(matches!(classify(409, b"{}"), RemoteOutcome::Permanent(_)));
        assert!(
            matches!(classify(500, b"oops"), RemoteOutcome::Transient(m) if m.contains("oops"))
        );
        assert!(matches!(classify(429, b""), RemoteOutcome::Transient(_)));
        assert!(matches!(
            classify(200, b"not json"),
            RemoteOutcome::Transient(_)
        ));
    }
}
