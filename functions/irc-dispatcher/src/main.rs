//! irc-dispatcher: every minute, sweeps every few seconds for work items whose enqueue or
//! claim was lost and enqueues them again, and probes unavailable target regions. Wiring only; the logic lives in `tenure::irc`.

use lambda_runtime::{run, service_fn, Error};
use std::time::Duration;
use tenure::aws::{dynamodb_client, load_sdk_config};
use tenure::clock::SystemClock;
use tenure::config::ProcessEnv;
use tenure::event_bus::EventBus;
use tenure::irc::config::DispatcherFunctionConfig;
use tenure::irc::dispatcher::Dispatcher;
use tenure::irc::events_publisher::StatusPublisher;
use tenure::irc::queue::WorkQueue;
use tenure::irc::region_health::RegionHealthTable;
use tenure::irc::remote::RemoteClient;
use tenure::irc::store::WorkItemStore;
use tenure::sigv4::SigV4Client;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    tenure::metrics::emf::install_for_lambda("irc-dispatcher")?;
    let DispatcherFunctionConfig {
        queue_side: config,
        region_health_table,
        endpoints,
        health: health_policy,
    } = DispatcherFunctionConfig::from_env(&ProcessEnv)?;
    let sdk = load_sdk_config().await;
    let dynamodb = dynamodb_client(&sdk, None);
    let store = WorkItemStore::new(dynamodb.clone(), config.work_items_table);
    let regions = endpoints.keys().cloned().collect();
    let remote = RemoteClient::new(SigV4Client::for_function_urls(&sdk)?, endpoints);
    let dispatcher = Dispatcher {
        events: StatusPublisher {
            store: store.clone(),
            bus: EventBus::new(aws_sdk_eventbridge::Client::new(&sdk)),
        },
        store,
        queue: WorkQueue::new(aws_sdk_sqs::Client::new(&sdk), config.queue_url),
        policy: config.policy,
        clock: SystemClock,
        health: RegionHealthTable::new(dynamodb, region_health_table),
        health_policy,
        remote,
        regions,
        sweep_interval: Duration::from_millis(config.sweep_interval_ms),
    };
    run(service_fn(|event| dispatcher.handle_scheduled(event))).await
}
