//! Where a v1 gate gets its answers: lease-check over HTTPS in production, a fake in tests.

use async_trait::async_trait;
use tenure::ids::{GroupId, HostId};
use tenure::lease::client::{LeaseCheckClient, LeaseClientError};
use tenure::lease::{CheckAnswer, Epoch};

pub use crate::source::SourceError;

#[async_trait]
pub trait LeaseSource: Send + Sync + 'static {
    async fn check(&self, healthy: bool, heartbeat: bool) -> Result<CheckAnswer, SourceError>;
    async fn release(&self, epoch: Epoch) -> Result<(), SourceError>;
}

/// lease-check's Function URL for one host of one group.
pub struct HttpLeaseSource {
    pub client: LeaseCheckClient,
    pub group: GroupId,
    pub host: HostId,
}

fn source_error(e: LeaseClientError) -> SourceError {
    SourceError(e.to_string())
}

#[async_trait]
impl LeaseSource for HttpLeaseSource {
    async fn check(&self, healthy: bool, heartbeat: bool) -> Result<CheckAnswer, SourceError> {
        self.client
            .check(&self.group, &self.host, healthy, heartbeat)
            .await
            .map_err(source_error)
    }

    async fn release(&self, epoch: Epoch) -> Result<(), SourceError> {
        self.client
            .release(&self.group, &self.host, epoch)
            .await
            .map(|_| ())
            .map_err(source_error)
    }
}
