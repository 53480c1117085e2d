//! The test kit: everything the end-to-end tests, the kvdemo tests and the benches share.
//!
//! - this module: the deployed stacks' outputs (written by `infra/local-regions.sh deploy` to
//!   `.local/regions.json`, or the file named by `TENURE_E2E_REGIONS`) and clients pointed at
//!   them;
//! - [`fault_proxy`]: the one fault proxy, for the lease path and the IRC;
//! - [`wire_counter`]: a counting proxy for the cost figures;
//! - [`fixture`], [`cluster`]: a stack's groups and kvdemo host processes on this machine;
//! - [`alarm`]: the template's alarms evaluated over the EMF the functions logged;
//! - [`events`]: EventBridge events delivered to a queue of the test's own;
//! - [`checker`]: compares the gate logs (`replica_agent::gate_log`) with the leadership history;
//! - [`campaign`], [`many`]: the failover campaign and the many-groups drivers.

pub mod alarm;
pub mod campaign;
pub mod checker;
pub mod cluster;
pub mod events;
pub mod fault_proxy;
pub mod fixture;
pub mod many;
pub mod wire_counter;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tenure::lease::client::LeaseCheckClient;
use tenure::sigv4::SigV4Client;

/// One deployed regional stack.
#[derive(Debug, Clone)]
pub struct Stack {
    pub endpoint: String,
    pub region: String,
    pub outputs: Value,
}

impl Stack {
    pub fn output(&self, key: &str) -> Result<&str> {
        self.outputs[key]
            .as_str()
            .ok_or_else(|| anyhow!("stack in {} has no output {key}", self.region))
    }

    pub async fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new(self.region.clone()))
            .credentials_provider(aws_credential_types::Credentials::new(
                "test", "test", None, None, "e2e",
            ))
            .load()
            .await
    }

    pub async fn lease_check(&self) -> Result<LeaseCheckClient> {
        Ok(LeaseCheckClient::new(
            SigV4Client::for_function_urls(&self.sdk().await)?,
            self.output("LeaseCheckLocalUrl")?,
            &self.region,
            Duration::from_secs(10),
        ))
    }
}

/// A submitter of inter-region operations from `stack`'s region (default retry policy, the
/// stack's WorkItems table and queue), and that table.
pub async fn irc_submitter(
    stack: &Stack,
) -> Result<(
    tenure::irc::submit::Submitter<tenure::clock::SystemClock>,
    tenure::irc::store::WorkItemStore,
)> {
    let sdk = stack.sdk().await;
    let store = tenure::irc::store::WorkItemStore::new(
        tenure::aws::dynamodb_client(&sdk, None),
        stack.output("WorkItemsTable")?,
    );
    let submitter = tenure::irc::submit::Submitter {
        store: store.clone(),
        queue: tenure::irc::queue::WorkQueue::new(
            aws_sdk_sqs::Client::new(&sdk),
            stack.output("IrcQueueUrl")?,
        ),
        kinds: tenure::irc::kinds::Kinds::shipped(),
        policy: tenure::irc::config::RetryPolicy::default(),
        region: tenure::irc::Region::parse(&stack.region)?,
        clock: tenure::clock::SystemClock,
    };
    Ok((submitter, store))
}

/// A healthy host's check asking for `groups` (heartbeat on), as the agent sends it.
pub fn healthy_check(groups: &[tenure::ids::GroupId]) -> tenure::lease::client::HostCheckBody {
    tenure::lease::client::HostCheckBody {
        healthy: true,
        heartbeat: true,
        groups: groups.to_vec(),
        ..Default::default()
    }
}

/// The stacks described by the outputs file `env_var` names (default `.local/regions.json`).
/// Fails, saying how to deploy them, when the file is missing.
pub fn stacks(env_var: &str) -> Result<Vec<Stack>> {
    let path = std::env::var(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.local/regions.json")
        });
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: no deployed local stacks. Run the README's test command (infra/test.sh), or \
             `infra/ministack.sh start && infra/local-regions.sh deploy`, first",
            path.display()
        )
    })?;
    parse_stacks(&text)
}

/// A group's item in a stack's lease table, read strongly consistent, as JSON (its `version`
/// counts every `group.put` applied).
pub async fn group_item(
    dynamodb: &aws_sdk_dynamodb::Client,
    stack: &Stack,
    group: &str,
) -> Result<Option<Value>> {
    let item = dynamodb
        .get_item()
        .table_name(stack.output("LeasesTable")?)
        .key(
            "group_id",
            aws_sdk_dynamodb::types::AttributeValue::S(group.to_owned()),
        )
        .consistent_read(true)
        .send()
        .await?
        .item;
    Ok(item.map(serde_dynamo::from_item).transpose()?)
}

/// The stack deployed in `region`.
pub fn find(all: &[Stack], region: &str) -> Result<Stack> {
    all.iter()
        .find(|s| s.region == region)
        .cloned()
        .with_context(|| format!("no deployed stack in {region}"))
}

/// Pids of the local processes MiniStack runs for `function_name` (read from each process's
/// `AWS_LAMBDA_FUNCTION_NAME`), so a test can kill one mid-invocation.
pub fn lambda_processes(function_name: &str) -> Vec<u32> {
    let wanted = format!("AWS_LAMBDA_FUNCTION_NAME={function_name}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == wanted.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Sets (`Some`) or removes (`None`) environment variables of the stack's function named by
/// output `function_output`, keeping the others, and waits until the update is live. For fault
/// tests that point a function somewhere else for a while; they must set it back.
pub async fn set_function_env(
    stack: &Stack,
    function_output: &str,
    changes: &[(&str, Option<&str>)],
) -> Result<()> {
    use aws_sdk_lambda::types::{Environment, LastUpdateStatus};
    let lambda = aws_sdk_lambda::Client::new(&stack.sdk().await);
    let function = stack.output(function_output)?;
    let config = lambda
        .get_function_configuration()
        .function_name(function)
        .send()
        .await?;
    let mut vars = config
        .environment()
        .and_then(|e| e.variables())
        .cloned()
        .unwrap_or_default();
    for (name, value) in changes {
        match value {
            Some(v) => vars.insert((*name).to_owned(), (*v).to_owned()),
            None => vars.remove(*name),
        };
    }
    lambda
        .update_function_configuration()
        .function_name(function)
        .environment(Environment::builder().set_variables(Some(vars)).build())
        .send()
        .await?;
    let started = std::time::Instant::now();
    loop {
        let now = lambda
            .get_function_configuration()
            .function_name(function)
            .send()
            .await?;
        match now.last_update_status() {
            None | Some(LastUpdateStatus::Successful) => return Ok(()),
            Some(LastUpdateStatus::Failed) => {
                return Err(anyhow!(
                    "updating {function}: {:?}",
                    now.last_update_status_reason()
                ))
            }
            _ if started.elapsed() > Duration::from_secs(60) => {
                return Err(anyhow!("updating {function}: still in progress after 60 s"))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Starts an invocation of the stack's function named by output `function_output` without
/// waiting for it (as its schedule would): after a configuration change, a scheduled loop such
/// as the renewer's runs again at once instead of at the next minute.
pub async fn invoke_async(stack: &Stack, function_output: &str) -> Result<()> {
    aws_sdk_lambda::Client::new(&stack.sdk().await)
        .invoke()
        .function_name(stack.output(function_output)?)
        .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
        .send()
        .await?;
    Ok(())
}

/// A count a long run can raise through the environment (`CAMPAIGN_FAILOVERS=100`); `default`
/// when it is unset or not a number.
pub fn count_from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The stacks described by an outputs file.
pub fn stacks_from(path: &std::path::Path) -> Result<Vec<Stack>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "{}: no deployed local stacks (infra/local-regions.sh deploy --out FILE writes it)",
            path.display()
        )
    })?;
    parse_stacks(&text)
}

fn parse_stacks(text: &str) -> Result<Vec<Stack>> {
    let file: Value = serde_json::from_str(text)?;
    let endpoint = file["endpoint"].as_str().context("endpoint")?.to_owned();
    let regions = file["regions"].as_object().context("regions")?;
    Ok(regions
        .iter()
        .map(|(region, outputs)| Stack {
            endpoint: endpoint.clone(),
            region: region.clone(),
            outputs: outputs.clone(),
        })
        .collect())
}

/// Serves `app` on `listener` from a thread of its own (a tokio runtime with `workers` worker
/// threads; 1: a current-thread runtime), so a proxy outlives any one test's runtime and the
/// hosts' restarts, and stops with the process. Returns the base URL.
pub fn serve_in_thread(
    name: &str,
    listener: std::net::TcpListener,
    app: axum::Router,
    workers: usize,
) -> std::io::Result<String> {
    listener.set_nonblocking(true)?;
    let url = format!("http://{}", listener.local_addr()?);
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let runtime = if workers <= 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .enable_all()
                    .build()
            };
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                        let _ = axum::serve(listener, app).await;
                    }
                });
            }
        })?;
    Ok(url)
}

/// An upstream's answer as a proxy of the kit received it.
pub struct Forwarded {
    pub status: axum::http::StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: axum::body::Bytes,
}

/// Sends a request a proxy received on to `url`, with its headers (less `host` and
/// `content-length`, which the new request sets), and reads the whole answer.
pub async fn forward_request(
    http: &reqwest::Client,
    method: axum::http::Method,
    url: String,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<Forwarded, reqwest::Error> {
    let mut request = http.request(method, url).body(body.to_vec());
    for (name, value) in headers.iter() {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let upstream = request.send().await?;
    let status = upstream.status();
    let headers = upstream.headers().clone();
    let body = upstream.bytes().await.unwrap_or_default();
    Ok(Forwarded {
        status,
        headers,
        body,
    })
}

impl Forwarded {
    /// The answer as the proxy's own response, headers kept (less the framing ones, which
    /// the proxy's server sets for the body it sends).
    pub fn into_response(self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let mut response = (self.status, self.body).into_response();
        for (name, value) in self.headers.iter() {
            if name != "content-length" && name != "transfer-encoding" && name != "connection" {
                response.headers_mut().insert(name, value.clone());
            }
        }
        response
    }
}
