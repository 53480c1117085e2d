//! Publishing the status events ([`super::events`]): irc-events from the `WorkItems` stream
//! (the fast path), the dispatcher's sweep for whatever the stream did not deliver (the safety
//! net). Both publish first and mark the item published after, so an interruption between the
//! two publishes again and never loses.

use super::events::{current_event, event_for, StatusEvent, EVENT_DETAIL_TYPE, EVENT_SOURCE};
use super::ids::OpId;
use super::item::WorkItem;
use super::store::WorkItemStore;
use crate::event_bus::{BusEvent, EventBus, PublishError};
use crate::{metrics, Millis, StoreError};
use std::collections::BTreeMap;
use tracing::{error, info};

/// Why a batch (or a sweep) stopped: it is delivered (or swept) again.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// The status events' publisher, for irc-events and the dispatcher.
#[derive(Debug, Clone)]
pub struct StatusPublisher {
    pub store: WorkItemStore,
    pub bus: EventBus,
}

impl StatusPublisher {
    /// Publishes `events` in order, then records each op's latest version among them as
    /// published (a newer version, written meanwhile, keeps its op unpublished).
    async fn publish_and_mark(
        &self,
        events: &[StatusEvent],
        source: &'static str,
    ) -> Result<(), EventsError> {
        if events.is_empty() {
            return Ok(());
        }
        let bus_events = events
            .iter()
            .map(|e| BusEvent::new(EVENT_SOURCE, EVENT_DETAIL_TYPE, e, e.op_id.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        self.bus.publish(&bus_events).await?;
        metrics::irc_events(source, events.len());
        let mut latest: BTreeMap<&OpId, u64> = BTreeMap::new();
        for e in events {
            let v = latest.entry(&e.op_id).or_default();
            *v = (*v).max(e.status_version);
        }
        for (op_id, version) in latest {
            self.store.mark_published(op_id, version).await?;
        }
        Ok(())
    }

    /// One stream batch of `WorkItems`, in order: an event for every new status version.
    /// The table's sequence counters (`seq#...`) are not operations and are passed over. A
    /// record whose images cannot be read is logged and counted (`IrcEventsSkipped`), not
    /// retried (it would block its shard): that version is not published, and shows as a gap,
    /// unless it is its op's latest, which then stays unpublished for the sweep.
    pub async fn handle_batch(&self, records: &[serde_json::Value]) -> Result<usize, EventsError> {
        let mut events = Vec::new();
        for record in records {
            let key = record["dynamodb"]["Keys"]["op_id"]["S"]
                .as_str()
                .unwrap_or("");
            if key.starts_with(super::store::SEQ_KEY_PREFIX) {
                continue;
            }
            match crate::stream::images::<WorkItem>(record) {
                Ok((old, Some(new))) => events.extend(event_for(old.as_ref(), &new)),
                Ok((_, None)) => {}
                Err(reason) => {
                    error!(%reason, event_id = %record["eventID"], "stream record skipped");
                    metrics::irc_events_skipped();
                }
            }
        }
        self.publish_and_mark(&events, "stream").await?;
        Ok(events.len())
    }

    /// Publishes the current version of up to `limit` items whose latest status change has
    /// waited unpublished since before `now - grace_ms` (the stream gave it up, or lost it).
    /// Versions the stream never delivered before this one show as a gap in `status_version`.
    pub async fn sweep(
        &self,
        now: Millis,
        grace_ms: Millis,
        limit: i32,
    ) -> Result<usize, EventsError> {
        let waiting = self
            .store
            .unpublished(now.saturating_sub(grace_ms), limit)
            .await?;
        let events: Vec<StatusEvent> = waiting
            .iter()
            .filter(|item| item.status_version > item.published_version)
            .map(current_event)
            .collect();
        for e in &events {
            info!(op_id = %e.op_id, status_version = e.status_version, status = %e.status,
                  "publishing a status change the stream did not");
        }
        self.publish_and_mark(&events, "sweep").await?;
        Ok(events.len())
    }
}

/// irc-events' Lambda entry point.
#[cfg(feature = "lambda")]
impl StatusPublisher {
    /// The stream event as JSON; a failed batch is an error, which the event source mapping
    /// delivers again (and, after its retries, leaves to the sweep).
    pub async fn handle_event(
        &self,
        event: lambda_runtime::LambdaEvent<serde_json::Value>,
    ) -> Result<serde_json::Value, lambda_runtime::Error> {
        let records = crate::stream::records(&event.payload);
        let result = self.handle_batch(records).await;
        metrics::flush();
        let published = result.inspect_err(|e| {
            tracing::warn!(error = %e, "status events batch failed; the stream delivers it again")
        })?;
        Ok(serde_json::json!({ "records": records.len(), "events": published }))
    }
}
