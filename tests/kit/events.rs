//! EventBridge events as a test receives them: a rule on a stack's default bus delivering one
//! source and detail-type to a queue of the test's own, and the events read back from it.

use crate::Stack;
use anyhow::{Context, Result};
use serde_json::Value;
use std::time::Duration;

/// A rule on the default bus delivering `source`/`detail_type` events to a new queue.
pub struct EventQueue {
    sqs: aws_sdk_sqs::Client,
    pub url: String,
}

impl EventQueue {
    pub async fn create(stack: &Stack, tag: &str, source: &str, detail_type: &str) -> Result<Self> {
        let sdk = stack.sdk().await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let url = sqs
            .create_queue()
            .queue_name(format!("events-{tag}"))
            .send()
            .await?
            .queue_url()
            .context("queue url")?
            .to_owned();
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await?
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .context("queue arn")?;
        let events = aws_sdk_eventbridge::Client::new(&sdk);
        let rule = format!("events-{tag}");
        events
            .put_rule()
            .name(&rule)
            .event_pattern(
                serde_json::json!({"source": [source], "detail-type": [detail_type]}).to_string(),
            )
            .send()
            .await?;
        events
            .put_targets()
            .rule(&rule)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("queue")
                    .arn(arn)
                    .build()?,
            )
            .send()
            .await?;
        Ok(Self { sqs, url })
    }

    /// The events that arrive within about `wait` (one long poll), each deleted once read:
    /// the whole envelope, with `detail` as JSON whichever way the bus encoded it.
    pub async fn receive(&self, wait: Duration) -> Result<Vec<Value>> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(i32::try_from(wait.as_secs().max(1)).unwrap_or(1))
            .send()
            .await?;
        let mut out = Vec::new();
        for message in received.messages() {
            let mut event: Value = serde_json::from_str(message.body().unwrap_or("null"))?;
            if let Value::String(text) = &event["detail"] {
                event["detail"] = serde_json::from_str(text)?;
            }
            out.push(event);
            if let Some(receipt) = message.receipt_handle() {
                self.sqs
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(receipt)
                    .send()
                    .await?;
            }
        }
        Ok(out)
    }

    pub async fn delete(self) -> Result<()> {
        self.sqs.delete_queue().queue_url(&self.url).send().await?;
        Ok(())
    }
}
