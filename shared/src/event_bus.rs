//! Publishing on the region's default EventBridge bus, for the leadership history
//! (`tenure.lease`) and the coordinator's status events (`tenure.irc`).

/// At most this many entries per `PutEvents` call (EventBridge's limit).
const EVENTS_PER_CALL: usize = 10;

/// Why events could not be published: the caller delivers its batch again.
#[derive(Debug, thiserror::Error)]
#[error("EventBridge PutEvents failed: {0}")]
pub struct PublishError(pub String);

/// One event: its detail as JSON text and the resource it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusEvent {
    pub source: &'static str,
    pub detail_type: &'static str,
    pub detail: String,
    pub resource: String,
}

impl BusEvent {
    /// `detail` serialized as the event's detail.
    pub fn new(
        source: &'static str,
        detail_type: &'static str,
        detail: &impl serde::Serialize,
        resource: impl Into<String>,
    ) -> Result<Self, PublishError> {
        Ok(Self {
            source,
            detail_type,
            detail: serde_json::to_string(detail).map_err(|e| PublishError(e.to_string()))?,
            resource: resource.into(),
        })
    }
}

/// The region's default bus.
#[derive(Debug, Clone)]
pub struct EventBus {
    client: aws_sdk_eventbridge::Client,
}

impl EventBus {
    pub fn new(client: aws_sdk_eventbridge::Client) -> Self {
        Self { client }
    }

    /// Every event, in order, ten to a call. Entries EventBridge refuses inside a 200 are an
    /// error too: the caller delivers the whole batch again (consumers see duplicates, never a
    /// gap).
    pub async fn publish(&self, events: &[BusEvent]) -> Result<(), PublishError> {
        use aws_sdk_eventbridge::types::PutEventsRequestEntry;
        for chunk in events.chunks(EVENTS_PER_CALL) {
            let batch: Vec<PutEventsRequestEntry> = chunk
                .iter()
                .map(|e| {
                    PutEventsRequestEntry::builder()
                        .source(e.source)
                        .detail_type(e.detail_type)
                        .detail(&e.detail)
                        .resources(&e.resource)
                        .build()
                })
                .collect();
            let out = self
                .client
                .put_events()
                .set_entries(Some(batch))
                .send()
                .await
                .map_err(|e| {
                    crate::metrics::store_error(false);
                    PublishError(format!(
                        "{}",
                        aws_sdk_eventbridge::error::DisplayErrorContext(e)
                    ))
                })?;
            if out.failed_entry_count() > 0 {
                let reasons: Vec<String> = out
                    .entries()
                    .iter()
                    .filter_map(|e| e.error_message().map(str::to_owned))
                    .collect();
                return Err(PublishError(format!(
                    "{} of {} entries refused: {reasons:?}",
                    out.failed_entry_count(),
                    chunk.len()
                )));
            }
        }
        Ok(())
    }
}
