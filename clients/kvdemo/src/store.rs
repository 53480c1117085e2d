//! The data table (`key` -> value, epoch), written with the fencing condition.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use tenure::lease::fence::fence_put;
use tenure::lease::Epoch;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("a newer primary has written {key}: epoch {epoch} is stale")]
    StaleEpoch { key: String, epoch: Epoch },
    #[error("data table unavailable: {0}")]
    Unavailable(String),
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

    /// Stores `value` under `key` if no newer epoch has written the key.
    pub async fn put(&self, key: &str, value: &str, epoch: Epoch) -> Result<(), KvError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("key", AttributeValue::S(key.to_owned()))
            .item("value", AttributeValue::S(value.to_owned()))
            .item("epoch", AttributeValue::N(epoch.0.to_string()));
        match fence_put(put, epoch).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                Err(KvError::StaleEpoch {
                    key: key.to_owned(),
                    epoch,
                })
            }
            Err(e) => Err(KvError::Unavailable(format!(
                "{}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            ))),
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
            .map_err(|e| {
                KvError::Unavailable(format!(
                    "{}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                ))
            })?;
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
