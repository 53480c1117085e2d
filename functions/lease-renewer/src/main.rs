//! lease-renewer: scheduled every minute; loops renewing healthy hosts' leases every
//! `renew_interval_ms` until shortly before the invocation's deadline.
//! Wiring only; the loop lives in `tenure::lease::renewer`.

use lambda_runtime::{run, service_fn, Error};
use tenure::aws::{dynamodb_client, load_sdk_config};
use tenure::clock::SystemClock;
use tenure::config::ProcessEnv;
use tenure::lease::config::LeaseFunctionConfig;
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::renewer::{handle_scheduled, RenewerConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    tenure::metrics::emf::install_for_lambda("lease-renewer")?;
    let config = LeaseFunctionConfig::from_env(&ProcessEnv)?;
    let renewer = RenewerConfig::from_env(&ProcessEnv)?;
    let sdk = load_sdk_config().await;
    let store = DynamoLeaseStore::new(
        dynamodb_client(&sdk, None),
        config.hosts_table,
        config.leases_table,
    );
    run(service_fn(|event| {
        handle_scheduled(&store, &config.lease, &SystemClock, &renewer, event)
    }))
    .await
}
