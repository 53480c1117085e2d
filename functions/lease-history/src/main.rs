//! lease-history: fed by the Leases table's stream; records each change of a group's grant
//! in `LeaseHistory` and publishes it on the default event bus (`tenure.lease`,
//! `Lease Holder Change`). Wiring only; the logic lives in `tenure::lease::history`.

use lambda_runtime::{run, service_fn, Error};
use tenure::aws::{dynamodb_client, load_sdk_config};
use tenure::config::ProcessEnv;
use tenure::lease::history_store::{
    HistoryConfig, HistoryPublisher, HistoryRecorder, HistoryStore,
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    tenure::metrics::emf::install_for_lambda("lease-history")?;
    let config = HistoryConfig::from_env(&ProcessEnv)?;
    let sdk = load_sdk_config().await;
    let recorder = HistoryRecorder {
        store: HistoryStore::new(
            dynamodb_client(&sdk, None),
            config.history_table,
            config.hosts_table,
            config.retention_ms,
        ),
        publisher: HistoryPublisher::new(aws_sdk_eventbridge::Client::new(&sdk)),
    };
    run(service_fn(|event| recorder.handle_event(event))).await
}
