//! Building AWS clients. Everything goes through `aws-config`'s default chain, so
//! `AWS_ENDPOINT_URL` points tenure at MiniStack, LocalStack or (unset) real AWS with no code
//! change. Clients are built once per process and shared.

use crate::telemetry::RequestCounter;
pub use crate::StoreError;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::time::Duration;

/// Loads the shared SDK configuration from the environment (region, credentials, endpoint).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// A DynamoDB client for the lease path: short timeouts, because a slow answer is worth less
/// than a fast failure (a host's writable window is measured from when it sent its check), and
/// a few standard retries for throttling and transient 5xx. `counter`, when given, counts
/// every request sent.
pub fn dynamodb_client(
    sdk: &SdkConfig,
    counter: Option<RequestCounter>,
) -> aws_sdk_dynamodb::Client {
    let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk)
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(Duration::from_millis(1_500))
                .operation_timeout(Duration::from_secs(4))
                .build(),
        );
    if let Some(counter) = counter {
        builder = builder.interceptor(counter);
    }
    aws_sdk_dynamodb::Client::from_conf(builder.build())
}

/// Creates an on-demand table with one string partition key unless it already exists, and
/// waits until it is ACTIVE. For local stacks, demos and tests: deployed tables come from
/// `template.yaml`.
pub async fn ensure_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
) -> Result<(), String> {
    ensure_table_with_indexes(client, table, key, &[]).await
}

/// [`ensure_table`] with global secondary indexes, each `(index name, string partition key)`
/// projecting keys only (as the template's `by-holder` index on `Leases`); waits until the
/// table and every index are ACTIVE. An existing table is kept as it is.
pub(crate) async fn ensure_table_with_indexes(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
    indexes: &[(&str, &str)],
) -> Result<(), String> {
    ensure_keyed_table(client, table, key, None, indexes).await
}

/// [`ensure_table`] with a numeric sort key (as `LeaseHistory`'s `seq`).
pub async fn ensure_table_with_sort_key(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
    number_sort_key: &str,
) -> Result<(), String> {
    ensure_keyed_table(client, table, key, Some(number_sort_key), &[]).await
}

async fn ensure_keyed_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
    number_sort_key: Option<&str>,
    indexes: &[(&str, &str)],
) -> Result<(), String> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement,
        KeyType, Projection, ProjectionType, ScalarAttributeType, TableStatus,
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| e.to_string())
    };
    let hash_key = |name: &str| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(KeyType::Hash)
            .build()
            .map_err(|e| e.to_string())
    };
    let mut create = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(key)?)
        .key_schema(hash_key(key)?);
    if let Some(sort) = number_sort_key {
        create = create
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(sort)
                    .attribute_type(ScalarAttributeType::N)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(sort)
                    .key_type(KeyType::Range)
                    .build()
                    .map_err(|e| e.to_string())?,
            );
    }
    for (name, index_key) in indexes {
        let index = GlobalSecondaryIndex::builder()
            .index_name(*name)
            .key_schema(hash_key(index_key)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .build()
            .map_err(|e| e.to_string())?;
        create = create
            .attribute_definitions(attribute(index_key)?)
            .global_secondary_indexes(index);
    }
    match create.send().await {
        Ok(_) => {}
        Err(e) if e.code() == Some("ResourceInUseException") => {}
        Err(e) => return Err(format!("create table {table}: {}", DisplayErrorContext(e))),
    }
    for _ in 0..200 {
        let description = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .ok()
            .and_then(|d| d.table);
        if let Some(t) = description {
            let indexes_active = t
                .global_secondary_indexes()
                .iter()
                .all(|i| i.index_status().is_none_or(|s| *s == IndexStatus::Active));
            if t.table_status() == Some(&TableStatus::Active) && indexes_active {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("table {table} never became ACTIVE"))
}

impl StoreError {
    /// The service's error code and message (or the transport failure), named by operation.
    pub(crate) fn from_sdk<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let code = match &err {
            SdkError::ServiceError(service) => service.err().code(),
            _ => None,
        };
        // Every failed store request passes here once (after the SDK's own retries and the
        // adapters' conflict retries), so this is where the functions count them.
        crate::metrics::store_error(code.is_some_and(is_throttle_code));
        let message = match &err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                format!(
                    "{}: {}",
                    e.code().unwrap_or("ServiceError"),
                    e.message().unwrap_or("no message")
                )
            }
            other => format!("{}", DisplayErrorContext(other)),
        };
        StoreError::Unavailable { operation, message }
    }
}

/// DynamoDB's and SQS's names for "too many requests" (the SDK has retried them already).
fn is_throttle_code(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "Throttling"
            | "RequestThrottled"
    )
}

/// Whether a request failed on its condition (as opposed to being unavailable).
pub(crate) fn is_condition_failure<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(err, SdkError::ServiceError(e) if e.err().code() == Some("ConditionalCheckFailedException"))
}

/// A conditional write's answer as a decision: `true` written, `false` its condition did not
/// hold, `Err` DynamoDB did not answer.
pub(crate) fn condition_held<T, E, R>(
    operation: &'static str,
    result: Result<T, SdkError<E, R>>,
) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failure(&e) => Ok(false),
        Err(e) => Err(StoreError::from_sdk(operation, e)),
    }
}

/// A DynamoDB item as the SDK hands it over.
pub type Item = HashMap<String, AttributeValue>;

/// A number attribute (expression values are built by hand where a condition needs them).
pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A string attribute.
pub(crate) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// One item by its string partition key, strongly consistent (a decision must not act on a
/// stale copy); `None` when there is none.
pub(crate) async fn get_consistent(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
    value: &str,
) -> Result<Option<Item>, StoreError> {
    Ok(client
        .get_item()
        .table_name(table)
        .key(key, s(value))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| StoreError::from_sdk("GetItem", e))?
        .item)
}

/// Decodes a stored item into its record; `key` names the item in the error.
pub(crate) fn decode_item<T: serde::de::DeserializeOwned>(
    key: &str,
    item: Item,
) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt {
        item: key.to_owned(),
        reason: e.to_string(),
    })
}

/// [`decode_item`] for an item read without knowing its key (a scan or query): the error names
/// it by its `key_attribute`.
pub(crate) fn decode_keyed<T: serde::de::DeserializeOwned>(
    key_attribute: &str,
    item: Item,
) -> Result<T, StoreError> {
    let key = match item.get(key_attribute) {
        Some(AttributeValue::S(k)) => k.clone(),
        _ => format!("<no {key_attribute}>"),
    };
    decode_item(&key, item)
}

/// `None` for no item, or the empty item DynamoDB returns as ALL_OLD when there was none.
pub(crate) fn decode_opt_item<T: serde::de::DeserializeOwned>(
    key: &str,
    item: Option<Item>,
) -> Result<Option<T>, StoreError> {
    item.filter(|i| !i.is_empty())
        .map(|i| decode_item(key, i))
        .transpose()
}

/// The outcome of a conditional UpdateItem that returns ALL_NEW on success and ALL_OLD on a
/// failed condition: `Ok(Ok(new))` written, `Ok(Err(current))` refused (the item as it stands,
/// `None` when there is none), `Err` when DynamoDB did not answer. One request both decides and
/// reports, so callers never act on a separate, possibly stale, read.
pub(crate) fn written_or_current<T: serde::de::DeserializeOwned, R: std::fmt::Debug>(
    key: &str,
    operation: &'static str,
    result: Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        SdkError<UpdateItemError, R>,
    >,
) -> Result<Result<Option<T>, Option<T>>, StoreError> {
    match result {
        Ok(out) => Ok(Ok(decode_opt_item(key, out.attributes)?)),
        Err(err) => match condition_failure_item(&err) {
            Some(current) => Ok(Err(decode_opt_item(key, current)?)),
            None => Err(StoreError::from_sdk(operation, err)),
        },
    }
}

/// For a failed condition: `Some(item as it stands)` (an empty item when it does not exist).
pub(crate) fn condition_failure_item<R>(
    err: &SdkError<UpdateItemError, R>,
) -> Option<Option<HashMap<String, AttributeValue>>> {
    match err {
        SdkError::ServiceError(e) => match e.err() {
            UpdateItemError::ConditionalCheckFailedException(ccf) => Some(ccf.item().cloned()),
            _ => None,
        },
        _ => None,
    }
}
