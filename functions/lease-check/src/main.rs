//! lease-check: the Function URL replica hosts poll before they allow writes.
//! Wiring only; the contract and the logic live in `tenure::lease`.

use lambda_http::{run, service_fn, Error};
use tenure::aws::{dynamodb_client, load_sdk_config};
use tenure::clock::SystemClock;
use tenure::config::ProcessEnv;
use tenure::identity::HostIdentityRule;
use tenure::lease::api::handle_lambda;
use tenure::lease::config::LeaseFunctionConfig;
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::service::LeaseService;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    tenure::metrics::emf::install_for_lambda("lease-check")?;
    let config = LeaseFunctionConfig::from_env(&ProcessEnv)?;
    let sdk = load_sdk_config().await;
    let store = DynamoLeaseStore::new(
        dynamodb_client(&sdk, None),
        config.hosts_table,
        config.leases_table,
    );
    let identity = HostIdentityRule::from_env(&ProcessEnv)?;
    let service = LeaseService::new(store, config.lease, SystemClock);
    run(service_fn(|request| {
        handle_lambda(&service, &identity, request)
    }))
    .await
}
