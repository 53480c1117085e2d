//! A client for lease-check's Function URL (the wire contract in [`super::api`]), for replica
//! hosts, tools and tests. Errors keep "the service said no" (an HTTP status with the
//! contract's JSON error) apart from "no answer" (transport), because a host treats the second
//! as state *unknown*, never as a lost lease.

use super::protocol::CheckAnswer;
use super::record::{Epoch, LeaseRecord};
use super::service::HostAnswer;
use crate::ids::{GroupId, HostId, Incarnation};
use crate::sigv4::{SigV4Client, SigV4Error};
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LeaseClientError {
    #[error("lease-check answered {status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("lease-check gave no usable answer: {0}")]
    Unreachable(#[from] SigV4Error),
    #[error("lease-check answered {status} with an unreadable body: {reason}")]
    BadAnswer { status: u16, reason: String },
}

/// lease-check at one base URL (the `LeaseCheckUrl` output, or its local form).
#[derive(Debug, Clone)]
pub struct LeaseCheckClient {
    http: SigV4Client,
    base_url: String,
    region: String,
    timeout: Duration,
}

impl LeaseCheckClient {
    pub fn new(http: SigV4Client, base_url: &str, region: &str, timeout: Duration) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            region: region.to_owned(),
            timeout,
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, LeaseClientError> {
        let url = format!("{}{path}", self.base_url);
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let response = self
            .http
            .send(method, &url, &self.region, &bytes, self.timeout)
            .await?;
        if response.status == 200 {
            return serde_json::from_slice(&response.body).map_err(|e| {
                LeaseClientError::BadAnswer {
                    status: 200,
                    reason: e.to_string(),
                }
            });
        }
        let error: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        let text = |field: &str| {
            error["error"][field]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&response.body).into_owned())
        };
        Err(LeaseClientError::Refused {
            status: response.status,
            code: text("code"),
            message: text("message"),
        })
    }

    /// `POST /v1/groups/{group}/check`.
    pub async fn check(
        &self,
        group: &GroupId,
        host: &HostId,
        healthy: bool,
        heartbeat: bool,
    ) -> Result<CheckAnswer, LeaseClientError> {
        let body = json!({"host_id": host, "healthy": healthy, "heartbeat": heartbeat});
        self.call("POST", &format!("/v1/groups/{group}/check"), Some(body))
            .await
    }

    /// `POST /v1/groups/{group}/release`.
    pub async fn release(
        &self,
        group: &GroupId,
        host: &HostId,
        epoch: Epoch,
    ) -> Result<CheckAnswer, LeaseClientError> {
        let body = json!({"host_id": host, "epoch": epoch});
        self.call("POST", &format!("/v1/groups/{group}/release"), Some(body))
            .await
    }

    /// `GET /v1/groups/{group}`.
    pub async fn get(&self, group: &GroupId) -> Result<LeaseRecord, LeaseClientError> {
        self.call("GET", &format!("/v1/groups/{group}"), None).await
    }

    /// `GET /v1/groups/{group}` as sent: the record plus `grant_live`, `expires_in_ms` (the
    /// holder's host lease) and `holder_host`.
    pub async fn get_view(&self, group: &GroupId) -> Result<Value, LeaseClientError> {
        self.call("GET", &format!("/v1/groups/{group}"), None).await
    }

    /// `POST /v1/hosts/{host}/check`: one call for all of a host's groups.
    pub async fn check_host(
        &self,
        host: &HostId,
        request: &HostCheckBody,
    ) -> Result<HostAnswer, LeaseClientError> {
        let body = serde_json::to_value(request).map_err(|e| LeaseClientError::BadAnswer {
            status: 0,
            reason: format!("cannot encode the request: {e}"),
        })?;
        self.call("POST", &format!("/v1/hosts/{host}/check"), Some(body))
            .await
    }

    /// `POST /v1/hosts/{host}/release`: per group, the answer or the group's own error.
    pub async fn release_host(
        &self,
        host: &HostId,
        groups: &[(GroupId, Epoch)],
    ) -> Result<HostReleaseAnswer, LeaseClientError> {
        let groups: Vec<Value> = groups
            .iter()
            .map(|(g, e)| json!({"group_id": g, "epoch": e}))
            .collect();
        self.call(
            "POST",
            &format!("/v1/hosts/{host}/release"),
            Some(json!({ "groups": groups })),
        )
        .await
    }

    /// `GET /v1/hosts/{host}`: the host record and the groups it holds.
    pub async fn get_host(&self, host: &HostId) -> Result<Value, LeaseClientError> {
        self.call("GET", &format!("/v1/hosts/{host}"), None).await
    }
}

/// The answer of `POST /v1/hosts/{host}/release`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct HostReleaseAnswer {
    pub host_id: HostId,
    pub groups: Vec<super::service::GroupEntry>,
}

/// The body of a v2 host check, as a client sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct HostCheckBody {
    pub healthy: bool,
    pub heartbeat: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<Incarnation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<HostId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watch_groups: Vec<super::service::WatchGroups>,
}
