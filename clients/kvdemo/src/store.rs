//! The data table, one key space per replica group (`{group}/{key}` -> value, epoch), written
//! with the fencing condition of that group's epoch.
//!
//! Two fences, because one is not enough: tenure's per-item fence (`fence <= :epoch` on the
//! item) only stops an old primary from overwriting keys the new primary has already written;
//! its late write of a key nobody has touched since would be stored. So every write is a
//! transaction that also raises its group's fence item (`#fence/{group}`) to the writer's
//! epoch, and a new primary raises it as soon as it gains the group
//! ([`KvStore::raise_fence`]). From then on the table refuses every write of an older epoch of
//! that group, whatever its key; other groups' epochs are their own.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use tenure::lease::fence::{fence_transact_put, fence_transact_update, fence_update};
use tenure::lease::Epoch;

/// The prefix of each group's fence item key. Client keys may not start with `#`.
pub const FENCE_KEY: &str = "#fence";

use tenure::ids::GroupId;

/// The stored key of `key` in `group`'s key space.
pub fn item_key(group: &GroupId, key: &str) -> String {
    format!("{group}/{key}")
}

/// The key of `group`'s fence item.
pub fn fence_key(group: &GroupId) -> String {
    format!("{FENCE_KEY}/{group}")
}

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("a newer primary of {group} has written: epoch {epoch} is stale for {key}")]
    StaleEpoch {
        group: GroupId,
        key: String,
        epoch: Epoch,
    },
    #[error("the fence of {group} was raised to a newer epoch than {epoch}")]
    FenceAhead { group: GroupId, epoch: Epoch },
    #[error("keys starting with '#' are reserved: {0}")]
    ReservedKey(String),
    #[error("data table unavailable: {0}")]
    Unavailable(String),
}

fn unavailable(e: impl std::error::Error + 'static) -> KvError {
    KvError::Unavailable(format!("{}", DisplayErrorContext(e)))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub value: String,
    pub epoch: u64,
}

#[derive(Debug, Clone)]
pub struct KvStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl KvStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Creates the data table (key `key`, on demand) unless it exists: for local demos; a
    /// real deployment owns its tables elsewhere.
    pub async fn ensure_table(&self) -> Result<(), KvError> {
        tenure::aws::ensure_table(&self.client, &self.table, "key")
            .await
            .map_err(KvError::Unavailable)
    }

    /// Stores `value` under `key` of `group`, stamped with `epoch`, unless a newer epoch of the
    /// group has written anything (group fence) or this key (item fence). One transaction.
    pub async fn put(
        &self,
        group: &GroupId,
        key: &str,
        value: &str,
        epoch: Epoch,
    ) -> Result<(), KvError> {
        if key.starts_with('#') {
            return Err(KvError::ReservedKey(key.to_owned()));
        }
        let put = fence_transact_put(
            Put::builder()
                .table_name(&self.table)
                .item("key", AttributeValue::S(item_key(group, key)))
                .item("value", AttributeValue::S(value.to_owned()))
                .item("epoch", AttributeValue::N(epoch.0.to_string())),
            epoch,
        )
        .build()
        .map_err(unavailable)?;
        let fence = fence_transact_update(
            Update::builder()
                .table_name(&self.table)
                .key("key", AttributeValue::S(fence_key(group))),
            epoch,
        )
        .build()
        .map_err(unavailable)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(fence).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let fenced = matches!(
                    e.as_service_error(),
                    Some(TransactWriteItemsError::TransactionCanceledException(t))
                        if t.cancellation_reasons()
                            .iter()
                            .any(|r| r.code() == Some("ConditionalCheckFailed"))
                );
                if fenced {
                    Err(KvError::StaleEpoch {
                        group: group.clone(),
                        key: key.to_owned(),
                        epoch,
                    })
                } else {
                    Err(unavailable(e))
                }
            }
        }
    }

    /// Raises `group`'s fence to `epoch`, so the table refuses every older epoch's writes to
    /// the group from now on. A new primary calls this when it gains the group.
    pub async fn raise_fence(&self, group: &GroupId, epoch: Epoch) -> Result<(), KvError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(fence_key(group)));
        match fence_update(update, epoch).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                Err(KvError::FenceAhead {
                    group: group.clone(),
                    epoch,
                })
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// A strongly consistent read of `key` in `group`.
    pub async fn get(&self, group: &GroupId, key: &str) -> Result<Option<Stored>, KvError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(item_key(group, key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let value = match item.get("value") {
            Some(AttributeValue::S(v)) => v.clone(),
            _ => return Err(KvError::Unavailable(format!("item {key} has no value"))),
        };
        let epoch = match item.get("epoch") {
            Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
            _ => 0,
        };
        Ok(Some(Stored { value, epoch }))
    }
}
