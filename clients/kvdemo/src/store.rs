//! The data table (`key` -> value, epoch), written with the fencing condition.
//!
//! Two fences, because one is not enough: tenure's per-item fence (`fence <= :epoch` on the
//! item) only stops an old primary from overwriting keys the new primary has already written;
//! its late write of a key nobody has touched since would be stored. So every write is a
//! transaction that also raises one group fence item ([`FENCE_KEY`]) to the writer's epoch,
//! and the new primary raises it as soon as it gains the lease ([`KvStore::raise_fence`]).
//! From then on the table refuses every write of an older epoch, whatever its key.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use tenure::lease::fence::{fence_transact_put, fence_transact_update, fence_update};
use tenure::lease::Epoch;

/// The group fence item's key. Client keys may not start with `#`.
pub const FENCE_KEY: &str = "#fence";

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("a newer primary has written {key}: epoch {epoch} is stale")]
    StaleEpoch { key: String, epoch: Epoch },
    #[error("the fence was raised to a newer epoch than {epoch}")]
    FenceAhead { epoch: Epoch },
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

    /// Stores `value` under `key`, stamped with `epoch`, unless a newer epoch has written
    /// anything in this table (group fence) or this key (item fence). One transaction.
    pub async fn put(&self, key: &str, value: &str, epoch: Epoch) -> Result<(), KvError> {
        if key.starts_with('#') {
            return Err(KvError::ReservedKey(key.to_owned()));
        }
        let put = fence_transact_put(
            Put::builder()
                .table_name(&self.table)
                .item("key", AttributeValue::S(key.to_owned()))
                .item("value", AttributeValue::S(value.to_owned()))
                .item("epoch", AttributeValue::N(epoch.0.to_string())),
            epoch,
        )
        .build()
        .map_err(unavailable)?;
        let fence = fence_transact_update(
            Update::builder()
                .table_name(&self.table)
                .key("key", AttributeValue::S(FENCE_KEY.to_owned())),
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
                        key: key.to_owned(),
                        epoch,
                    })
                } else {
                    Err(unavailable(e))
                }
            }
        }
    }

    /// Raises the group fence to `epoch`, so the table refuses every older epoch's writes from
    /// now on. A new primary calls this when it gains the lease.
    pub async fn raise_fence(&self, epoch: Epoch) -> Result<(), KvError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(FENCE_KEY.to_owned()));
        match fence_update(update, epoch).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                Err(KvError::FenceAhead { epoch })
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// A strongly consistent read.
    pub async fn get(&self, key: &str) -> Result<Option<Stored>, KvError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(key.to_owned()))
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
