//! The `LeaseHistory` table (one owner: this module) and the `Lease Holder Change` events.
//!
//! Entries are keyed `(group_id, seq)` and written with `attribute_not_exists`, so a stream
//! batch processed twice (a retry after a failed publish) leaves one entry each; events are
//! published after the entries are stored, at least once, on the region's default bus.

#[cfg(feature = "lambda")]
use super::history::Change;
use super::history::HistoryEntry;
use crate::aws::{decode_item, get_consistent, is_condition_failure, n, s, Item};
use crate::event_bus::{BusEvent, EventBus, PublishError};
use crate::ids::{GroupId, HostId};
use crate::{Millis, StoreError};
use aws_sdk_dynamodb::types::AttributeValue;

/// EventBridge: the source and detail-type of every history event.
pub const EVENT_SOURCE: &str = "tenure.lease";
pub const EVENT_DETAIL_TYPE: &str = "Lease Holder Change";

/// A group's leadership history in DynamoDB, kept `retention_ms` (TTL on `expires_at`).
#[derive(Debug, Clone)]
pub struct HistoryStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    hosts_table: String,
    retention_ms: Millis,
}

impl HistoryStore {
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        hosts_table: impl Into<String>,
        retention_ms: Millis,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            hosts_table: hosts_table.into(),
            retention_ms,
        }
    }

    /// Whether an operator is draining `host` as a whole (the reason of its releases).
    pub async fn host_draining(&self, host: &HostId) -> Result<bool, StoreError> {
        let item =
            get_consistent(&self.client, &self.hosts_table, "host_id", host.as_str()).await?;
        Ok(item
            .and_then(|i| i.get("draining").cloned())
            .is_some_and(|d| matches!(d, AttributeValue::Bool(true))))
    }

    /// Stores `entry` once: a second write of the same `(group_id, seq)` is a no-op.
    pub async fn record(&self, entry: &HistoryEntry) -> Result<(), StoreError> {
        let mut item: Item = serde_dynamo::to_item(entry).map_err(|e| StoreError::Corrupt {
            item: format!("history {}#{}", entry.group_id, entry.seq),
            reason: e.to_string(),
        })?;
        // DynamoDB's TTL reads epoch seconds.
        let expires_at_s = entry.at_ms.saturating_add(self.retention_ms) / 1_000;
        item.insert("expires_at".into(), n(expires_at_s));
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(group_id)")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(StoreError::from_sdk("PutItem(history)", e)),
        }
    }

    /// A group's entries, oldest first (at most `limit`, the newest ones when there are more).
    pub async fn list(&self, group: &GroupId, limit: i32) -> Result<Vec<HistoryEntry>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("group_id = :g")
            .expression_attribute_values(":g", s(group.as_str()))
            .scan_index_forward(false)
            .limit(limit)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("Query(history)", e))?;
        let mut entries = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|mut item| {
                item.remove("expires_at");
                decode_item(group.as_str(), item)
            })
            .collect::<Result<Vec<HistoryEntry>, _>>()?;
        entries.reverse();
        Ok(entries)
    }
}

/// Publishes history entries on the region's default event bus.
#[derive(Debug, Clone)]
pub struct HistoryPublisher {
    bus: EventBus,
}

impl HistoryPublisher {
    pub fn new(events: aws_sdk_eventbridge::Client) -> Self {
        Self {
            bus: EventBus::new(events),
        }
    }

    /// One `Lease Holder Change` event per entry, in order (see [`EventBus::publish`]).
    pub async fn publish(&self, entries: &[HistoryEntry]) -> Result<(), PublishError> {
        let events = entries
            .iter()
            .map(|entry| {
                BusEvent::new(
                    EVENT_SOURCE,
                    EVENT_DETAIL_TYPE,
                    entry,
                    entry.group_id.as_str(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.bus.publish(&events).await
    }
}

/// Counts an entry by its change (`HistoryEntries`).
#[cfg(feature = "lambda")]
fn count(entry: &HistoryEntry) {
    crate::metrics::history_entry(match entry.change {
        Change::Acquired => "acquired",
        Change::Released => "released",
        Change::Deleted => "deleted",
    });
}

/// The `lease-history` function's work: one stream batch of the Leases table, in order.
#[cfg(feature = "lambda")]
pub struct HistoryRecorder {
    pub store: HistoryStore,
    pub publisher: HistoryPublisher,
}

/// Why a batch must be delivered again.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

#[cfg(feature = "lambda")]
impl HistoryRecorder {
    /// Stores every entry of the batch, then publishes them, in the stream's order. Any
    /// failure fails the batch, which the stream delivers again (entries are written once,
    /// events at least once). A record whose images cannot be read is logged and counted
    /// (`HistorySkipped`), never retried: retrying would block the group's stream for good.
    pub async fn handle_batch(&self, records: &[serde_json::Value]) -> Result<usize, HistoryError> {
        let mut entries = Vec::new();
        for record in records {
            let (old, new) = match super::history::images(record) {
                Ok(images) => images,
                Err(reason) => {
                    tracing::error!(%reason, event_id = %record["eventID"], "stream record skipped");
                    crate::metrics::history_skipped();
                    continue;
                }
            };
            let Some(new) = new else {
                continue;
            };
            let draining = match super::history::drain_question(old.as_ref(), &new) {
                Some(host) => self.store.host_draining(&host).await?,
                None => false,
            };
            if let Some(entry) = super::history::entry_for(old.as_ref(), &new, draining) {
                self.store.record(&entry).await?;
                tracing::info!(group_id = %entry.group_id, seq = entry.seq, change = ?entry.change,
                               epoch = entry.epoch.0, holder = ?entry.holder, "history entry");
                entries.push(entry);
            }
        }
        self.publisher.publish(&entries).await?;
        entries.iter().for_each(count);
        Ok(entries.len())
    }

    /// The Lambda entry point: the stream event as JSON (each record decoded on its own).
    pub async fn handle_event(
        &self,
        event: lambda_runtime::LambdaEvent<serde_json::Value>,
    ) -> Result<serde_json::Value, lambda_runtime::Error> {
        let records = crate::stream::records(&event.payload);
        let result = self.handle_batch(records).await;
        crate::metrics::flush();
        let entries = result.inspect_err(
            |e| tracing::warn!(error = %e, "history batch failed; the stream delivers it again"),
        )?;
        Ok(serde_json::json!({ "records": records.len(), "entries": entries }))
    }
}

/// lease-history's settings: `TENURE_LEASE_HISTORY_TABLE`, `TENURE_HOSTS_TABLE`,
/// `TENURE_LEASE_HISTORY_DAYS` (1-3650, default 30).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    pub history_table: String,
    pub hosts_table: String,
    pub retention_ms: Millis,
}

impl HistoryConfig {
    pub fn from_env(
        env: &(impl crate::config::EnvSource + ?Sized),
    ) -> Result<Self, crate::config::EnvError> {
        use crate::config::{u64_or, EnvError};
        let required = |name: &'static str| env.get(name).ok_or(EnvError::Missing { name });
        let days = u64_or(env, "TENURE_LEASE_HISTORY_DAYS", 30)?;
        if !(1..=3650).contains(&days) {
            return Err(EnvError::Invalid {
                name: "TENURE_LEASE_HISTORY_DAYS",
                value: days.to_string(),
                reason: "must be between 1 and 3650".into(),
            });
        }
        Ok(Self {
            history_table: required("TENURE_LEASE_HISTORY_TABLE")?,
            hosts_table: required("TENURE_HOSTS_TABLE")?,
            retention_ms: days * 24 * 3_600_000,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_required_and_bounded() {
        let env = [
            ("TENURE_LEASE_HISTORY_TABLE", "h"),
            ("TENURE_HOSTS_TABLE", "hosts"),
        ];
        assert_eq!(
            HistoryConfig::from_env(&env[..]).unwrap().retention_ms,
            30 * 86_400_000
        );
        let missing = [("TENURE_HOSTS_TABLE", "hosts")];
        assert!(HistoryConfig::from_env(&missing[..])
            .unwrap_err()
            .to_string()
            .contains("TENURE_LEASE_HISTORY_TABLE"));
        let zero = [
            ("TENURE_LEASE_HISTORY_TABLE", "h"),
            ("TENURE_HOSTS_TABLE", "hosts"),
            ("TENURE_LEASE_HISTORY_DAYS", "0"),
        ];
        assert!(HistoryConfig::from_env(&zero[..]).is_err());
    }
}
