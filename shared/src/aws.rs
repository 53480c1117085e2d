//! Building AWS clients. Everything goes through `aws-config`'s default chain, so
//! `AWS_ENDPOINT_URL` points tenure at MiniStack, LocalStack or (unset) real AWS with no code
//! change. Clients are built once per process and shared.

use crate::telemetry::RequestCounter;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
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
