//! The FIFO work queue. A message only names its item ([`QueueMessage`]); the message group is
//! `target_region#resource`, so SQS delivers one resource's ops in order, one at a time.
//!
//! The worker only ever asks the queue to hold a message back ([`Redelivery`], core); the SQS
//! client [`WorkQueue`] needs the `aws` feature.

#[cfg(feature = "aws")]
use super::item::WorkItem;
#[cfg(feature = "aws")]
use super::message::{message_group, QueueMessage};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use aws_sdk_sqs::error::DisplayErrorContext;
#[cfg(feature = "aws")]
use aws_sdk_sqs::Client;

#[derive(Debug, thiserror::Error)]
#[error("SQS {operation} failed: {message}")]
pub struct QueueError {
    pub operation: &'static str,
    pub message: String,
}

/// What the worker needs of the queue: a delivered message comes back after `seconds`
/// (0: at once, so a message that can never succeed reaches the DLQ without waiting out the
/// visibility timeout on every receive).
#[async_trait]
pub trait Redelivery: Send + Sync {
    async fn delay_redelivery(&self, receipt_handle: &str, seconds: i32) -> Result<(), QueueError>;
}

#[cfg(feature = "aws")]
impl QueueError {
    fn new(operation: &'static str, e: impl std::error::Error + 'static) -> Self {
        Self {
            operation,
            message: DisplayErrorContext(e).to_string(),
        }
    }
}

#[cfg(feature = "aws")]
#[derive(Debug, Clone)]
pub struct WorkQueue {
    client: Client,
    url: String,
}

#[cfg(feature = "aws")]
impl WorkQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    /// Enqueues `item`. `dedup` is the FIFO deduplication id: the op id for the submit's fast
    /// path (a retried submit sends nothing new), op id + sweep time for the dispatcher.
    pub async fn send(&self, item: &WorkItem, dedup: &str) -> Result<(), QueueError> {
        let body = QueueMessage::new(item.op_id.clone(), item.target_region.clone()).encode();
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .message_group_id(message_group(&item.target_region, &item.resource))
            .message_deduplication_id(dedup)
            .send()
            .await
            .map_err(|e| QueueError::new("SendMessage", e))?;
        Ok(())
    }
}

#[cfg(feature = "aws")]
#[async_trait]
impl Redelivery for WorkQueue {
    /// Makes a message that is about to be reported failed come back after `seconds` (the
    /// retry backoff) instead of after the queue's whole visibility timeout.
    async fn delay_redelivery(&self, receipt_handle: &str, seconds: i32) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds.clamp(0, 43_200))
            .send()
            .await
            .map_err(|e| QueueError::new("ChangeMessageVisibility", e))?;
        Ok(())
    }
}
