//! Every function's configuration from any environment: a config or an error naming the
//! variable; never a panic. Names are drawn mostly from the real ones, so values get parsed.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use tenure::irc::config::{
    QueueSideConfig, RemoteFunctionConfig, RetryPolicy, WorkerFunctionConfig,
};
use tenure::lease::config::LeaseFunctionConfig;
use tenure::lease::renewer::RenewerConfig;
use tenure::lease::LeaseConfig;

const NAMES: &[&str] = &[
    "AWS_REGION",
    "TENURE_CLOCK_SKEW_MS",
    "TENURE_HEARTBEAT_TIMEOUT_MS",
    "TENURE_INBOUND_OPS_TABLE",
    "TENURE_IRC_BACKOFF_BASE_MS",
    "TENURE_IRC_BACKOFF_CAP_MS",
    "TENURE_IRC_CLAIM_TTL_MS",
    "TENURE_IRC_FAULT_INJECTION",
    "TENURE_IRC_MAX_ATTEMPTS",
    "TENURE_IRC_QUEUE_URL",
    "TENURE_IRC_REDISPATCH_AFTER_MS",
    "TENURE_IRC_SWEEP_INTERVAL_MS",
    "TENURE_HOSTS_TABLE",
    "TENURE_LEASES_TABLE",
    "TENURE_LEASE_MS",
    "TENURE_PEER_REGIONS",
    "TENURE_POLL_INTERVAL_MS",
    "TENURE_REGION_ENDPOINTS",
    "TENURE_RENEWER_MAX_IN_FLIGHT",
    "TENURE_RENEWER_SEGMENTS",
    "TENURE_RENEWER_STOP_MARGIN_MS",
    "TENURE_RENEW_INTERVAL_MS",
    "TENURE_WORK_ITEMS_TABLE",
];

#[derive(Debug, Arbitrary)]
struct Input {
    vars: Vec<(u8, String)>,
}

fn error_names_something(e: &dyn std::fmt::Display) {
    assert!(!e.to_string().is_empty());
}

fuzz_target!(|input: Input| {
    let env: HashMap<String, String> = input
        .vars
        .into_iter()
        .map(|(i, value)| (NAMES[usize::from(i) % NAMES.len()].to_owned(), value))
        .collect();
    match LeaseConfig::from_env(&env) {
        // A config that loads is one the protocol's safety argument accepts.
        Ok(config) => assert!(
            config.check_group_lease(config.lease_ms).is_ok(),
            "{config:?}"
        ),
        Err(e) => error_names_something(&e),
    }
    // The others: each loads, or its error names the problem.
    macro_rules! loads_or_says_why {
        ($($config:ty),*) => {$(
            if let Err(e) = <$config>::from_env(&env) {
                error_names_something(&e);
            }
        )*};
    }
    loads_or_says_why!(
        LeaseFunctionConfig,
        RenewerConfig,
        RetryPolicy,
        RemoteFunctionConfig,
        WorkerFunctionConfig,
        QueueSideConfig
    );
});
