//! irc-dispatcher: every minute, sweeps every few seconds for work items whose enqueue or
//! claim was lost and enqueues them again. Wiring only; the logic lives in `tenure::irc`.

use lambda_runtime::{run, service_fn, Error};
use std::time::Duration;
use tenure::aws::{dynamodb_client, load_sdk_config};
use tenure::clock::SystemClock;
use tenure::config::ProcessEnv;
use tenure::event_bus::EventBus;
use tenure::irc::config::QueueSideConfig;
use tenure::irc::dispatcher::Dispatcher;
use tenure::irc::events_publisher::StatusPublisher;
use tenure::irc::queue::WorkQueue;
use tenure::irc::store::WorkItemStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    tenure::metrics::emf::install_for_lambda("irc-dispatcher")?;
    let config = QueueSideConfig::from_env(&ProcessEnv)?;
    let sdk = load_sdk_config().await;
    let store = WorkItemStore::new(dynamodb_client(&sdk, None), config.work_items_table);
    let dispatcher = Dispatcher {
        events: StatusPublisher {
            store: store.clone(),
            bus: EventBus::new(aws_sdk_eventbridge::Client::new(&sdk)),
        },
        store,
        queue: WorkQueue::new(aws_sdk_sqs::Client::new(&sdk), config.queue_url),
        policy: config.policy,
        clock: SystemClock,
        sweep_interval: Duration::from_millis(config.sweep_interval_ms),
    };
    run(service_fn(|event| dispatcher.handle_scheduled(event))).await
}
