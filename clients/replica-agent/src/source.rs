//! Where the agent gets its answers: lease-check's v2 host endpoints over HTTPS in
//! production, a fake (or the in-process service) in tests.

use async_trait::async_trait;
use tenure::ids::{GroupId, HostId};
use tenure::lease::client::{HostCheckBody, LeaseCheckClient, LeaseClientError};
use tenure::lease::service::{GroupEntry, HostAnswer};
use tenure::lease::Epoch;

/// A failed call. The agent treats every one as "no fresh answer" (state unknown), never as
/// "lost the lease": only an answer can say a grant is lost.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

impl From<LeaseClientError> for SourceError {
    fn from(e: LeaseClientError) -> Self {
        SourceError(e.to_string())
    }
}

#[async_trait]
pub trait HostSource: Send + Sync + 'static {
    /// `POST /v1/hosts/{host}/check`.
    async fn check(&self, host: &HostId, body: &HostCheckBody) -> Result<HostAnswer, SourceError>;
    /// `POST /v1/hosts/{host}/release`: per group, its answer after the release or its error.
    async fn release(
        &self,
        host: &HostId,
        groups: &[(GroupId, Epoch)],
    ) -> Result<Vec<GroupEntry>, SourceError>;
}

#[async_trait]
impl HostSource for LeaseCheckClient {
    async fn check(&self, host: &HostId, body: &HostCheckBody) -> Result<HostAnswer, SourceError> {
        Ok(self.check_host(host, body).await?)
    }

    async fn release(
        &self,
        host: &HostId,
        groups: &[(GroupId, Epoch)],
    ) -> Result<Vec<GroupEntry>, SourceError> {
        Ok(self.release_host(host, groups).await?.groups)
    }
}
