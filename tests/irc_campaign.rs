//! The IRC fault campaign on the deployed local regions (three: us-east-1, eu-west-1,
//! ap-southeast-2): `IRC_CAMPAIGN_OPS` ops (default 100, the test command's short run; the long
//! run is `infra/campaign.sh irc 1000`) submitted every way between them, on a few resources
//! each, while
//!
//! - the fault proxy in front of each irc-remote answers 5xx/429 without forwarding, loses the
//!   answer after the remote applied, tells the worker to exit after the remote applied, or
//!   holds a request past the worker's timeout before or after forwarding it;
//! - a tenth of the ops are delivered twice (a second queue message);
//! - the dispatcher of a random region is killed (kill -9 of its process) and started again,
//!   every few seconds;
//! - the status-event publisher (irc-events) of a random region is killed as often, between a
//!   status write and its publish or between the publish and its mark.
//!
//! Then, counted at the remote: every op SUCCEEDED or FAILED with a reason, none missing, each
//! resource's `version` equal to the number of ops applied on it (nothing applied twice), the
//! applied ops in `seq` order, and each resource holding its newest op's payload. And counted
//! from an EventBridge rule per source region delivering to an SQS queue: every status change
//! of every op (`status_version` 1 to its last) received at least once, duplicates counted.

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use futures::StreamExt;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tenure::clock::{Clock, SystemClock};
use tenure::irc::config::RetryPolicy;
use tenure::irc::events::{EVENT_DETAIL_TYPE, EVENT_SOURCE};
use tenure::irc::kinds::Kinds;
use tenure::irc::queue::WorkQueue;
use tenure::irc::store::WorkItemStore;
use tenure::irc::submit::{SubmitRequest, Submitter};
use tenure::irc::{Region, Status, WorkItem};
use tenure_testkit::events::EventQueue;
use tenure_testkit::fault_proxy::{Chaos, FaultProxy};
use tenure_testkit::{count_from_env, group_item, lambda_processes, stacks, Stack};

/// One way ops travel: submitted in `source`, applied in `target`.
struct Direction {
    target: Stack,
    submitter: Submitter<SystemClock>,
    items: WorkItemStore,
    queue: WorkQueue,
    target_dynamodb: aws_sdk_dynamodb::Client,
}

impl Direction {
    async fn new(source: &Stack, target: &Stack) -> Result<Self> {
        let sdk = source.sdk().await;
        let items = WorkItemStore::new(
            tenure::aws::dynamodb_client(&sdk, None),
            source.output("WorkItemsTable")?,
        );
        let queue = WorkQueue::new(
            aws_sdk_sqs::Client::new(&sdk),
            source.output("IrcQueueUrl")?,
        );
        Ok(Self {
            target: target.clone(),
            submitter: Submitter {
                store: items.clone(),
                queue: queue.clone(),
                kinds: Kinds::shipped(),
                policy: RetryPolicy::default(),
                region: Region::parse(&source.region)?,
                clock: SystemClock,
            },
            items,
            queue,
            target_dynamodb: tenure::aws::dynamodb_client(&target.sdk().await, None),
        })
    }

    /// The op's record in the target's InboundOps: (outcome, seq, applied_at_ms).
    async fn inbound(&self, op_id: &str) -> Result<Option<(String, u64, u64)>> {
        let item = self
            .target_dynamodb
            .get_item()
            .table_name(self.target.output("InboundOpsTable")?)
            .key("op_id", AttributeValue::S(op_id.to_owned()))
            .consistent_read(true)
            .send()
            .await?
            .item;
        let Some(item) = item else { return Ok(None) };
        let text = |k: &str| match item.get(k) {
            Some(AttributeValue::S(v)) | Some(AttributeValue::N(v)) => Ok(v.clone()),
            _ => bail!("InboundOps record of {op_id} has no {k}"),
        };
        Ok(Some((
            text("outcome")?,
            text("seq")?.parse()?,
            text("applied_at_ms")?.parse()?,
        )))
    }

    /// The target group's item as JSON.
    async fn target_group(&self, group: &str) -> Result<Option<Value>> {
        group_item(&self.target_dynamodb, &self.target, group).await
    }
}

/// What the campaign submitted for one op.
struct Submitted {
    direction: usize,
    resource: String,
    seq: u64,
    /// The az of host-a in the payload: tells which op's payload a group holds.
    marker: String,
    item: WorkItem,
}

fn payload(group: &str, marker: &str) -> Value {
    json!({"group_id": group, "lease_ms": 10_000,
           "members": [{"host_id": "host-a", "az": marker, "priority": 2},
                       {"host_id": "host-b", "az": "az-b", "priority": 1}]})
}

/// Kills `-9` every process of `function`; how many.
fn kill_all(function: &str) -> Result<u64> {
    let mut killed = 0;
    for pid in lambda_processes(function) {
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?;
        if status.success() {
            killed += 1;
        }
    }
    Ok(killed)
}

/// Kills the irc-events process of a random region every few seconds, until `stop` (the
/// stream mapping retries the batch it was publishing). Returns the number of processes killed.
async fn kill_publishers(
    stacks: Vec<Stack>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<u64> {
    let functions: Vec<String> = stacks
        .iter()
        .map(|s| Ok(s.output("IrcEventsFunction")?.to_owned()))
        .collect::<Result<_>>()?;
    let mut killed = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let pause = rand::rng().random_range(2_000..6_000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        killed += kill_all(&functions[rand::rng().random_range(0..functions.len())])?;
    }
    Ok(killed)
}

/// Kills the dispatcher process of a random region every few seconds and invokes it again
/// (as its next schedule would), until `stop`. Returns the number of processes killed.
async fn restart_dispatchers(
    stacks: Vec<Stack>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<u64> {
    let mut killed = 0;
    let mut lambdas = Vec::new();
    for s in &stacks {
        lambdas.push((
            aws_sdk_lambda::Client::new(&s.sdk().await),
            s.output("IrcDispatcherFunction")?.to_owned(),
        ));
    }
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let pause = rand::rng().random_range(4_000..10_000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let (lambda, function) = &lambdas[rand::rng().random_range(0..lambdas.len())];
        killed += kill_all(function)?;
        // Start it again at once; an error here (e.g. the old invocation still counted
        // against the reserved concurrency) leaves it to the schedule.
        let _ = lambda
            .invoke()
            .function_name(function)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .send()
            .await;
    }
    Ok(killed)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_lose_no_op_apply_none_twice_and_keep_order_per_resource() -> Result<()> {
    let ops: usize = count_from_env("IRC_CAMPAIGN_OPS", 100);
    let proxy = FaultProxy::shared()?;
    let all = stacks("TENURE_E2E_REGIONS")?;
    ensure!(all.len() >= 2, "the campaign needs at least two regions");
    let mut directions = Vec::new();
    for source in &all {
        for target in all.iter().filter(|t| t.region != source.region) {
            directions.push(Direction::new(source, target).await?);
        }
    }
    let prefix = format!("chaos-{}-{}", std::process::id(), SystemClock.now_ms());
    // One rule and queue per source region: its ops' status events.
    let mut event_queues = Vec::new();
    for stack in &all {
        event_queues
            .push(EventQueue::create(stack, &prefix, EVENT_SOURCE, EVENT_DETAIL_TYPE).await?);
    }
    proxy.reset_counts();
    proxy.set_chaos(Chaos {
        resource_prefix: Some(prefix.clone()),
        error_before: 0.10,
        error_statuses: vec![500, 503, 429],
        error_after: 0.05,
        exit_after: 0.03,
        hold_before: 0.01,
        hold_after: 0.01,
        // The worker waits at most its 20 s timeout less 3 s.
        hold: Duration::from_secs(18),
        ..Chaos::default()
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let restarter = tokio::spawn(restart_dispatchers(all.clone(), stop.clone()));
    let publisher_killer = tokio::spawn(kill_publishers(all.clone(), stop.clone()));
    let started = Instant::now();

    // Ten ops per resource on average, the resources spread over every direction.
    let resources: Vec<(usize, String)> = (0..(ops / 10).max(directions.len()))
        .map(|r| (r % directions.len(), format!("{prefix}-r{r}")))
        .collect();
    let plan: Vec<(usize, String, String)> = (0..ops)
        .map(|i| {
            let (direction, resource) = &resources[rand::rng().random_range(0..resources.len())];
            (*direction, resource.clone(), format!("op-{i}"))
        })
        .collect();
    let directions = &directions;
    let submitted: Vec<Result<Submitted>> = futures::stream::iter(plan)
        .map(|(direction, resource, marker)| async move {
            let d = &directions[direction];
            let item = d
                .submitter
                .submit(SubmitRequest {
                    op_id: None,
                    target_region: Region::parse(&d.target.region)?,
                    kind: "group.put".into(),
                    resource: resource.clone(),
                    payload: payload(&resource, &marker),
                    await_for: None,
                    await_ms: None,
                })
                .await?;
            if rand::rng().random_bool(0.1) {
                d.queue
                    .send(&item, &format!("{}-again", item.op_id))
                    .await?;
            }
            Ok(Submitted {
                direction,
                resource,
                seq: item.seq,
                marker,
                item,
            })
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let submitted: Vec<Submitted> = submitted.into_iter().collect::<Result<_>>()?;
    eprintln!(
        "irc campaign: {} ops submitted in {:.1} s",
        submitted.len(),
        started.elapsed().as_secs_f64()
    );

    // Wait until every op ended (or the time is up), showing progress.
    let within = Duration::from_secs(180) + Duration::from_millis(600) * ops as u32;
    let mut finals: HashMap<String, WorkItem> = HashMap::new();
    let mut last_report = Instant::now();
    while finals.len() < submitted.len() {
        for s in &submitted {
            let op_id = s.item.op_id.to_string();
            if finals.contains_key(&op_id) {
                continue;
            }
            let item = directions[s.direction]
                .items
                .get(&s.item.op_id)
                .await?
                .with_context(|| format!("op {op_id} was lost from {}", s.item.source_region))?;
            if item.status.is_terminal() {
                finals.insert(op_id, item);
            }
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "irc campaign: {}/{} ended after {:.0} s",
                finals.len(),
                submitted.len(),
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if started.elapsed() > within {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let counts = proxy.counts();
    proxy.set_chaos(Chaos::default());
    let dispatcher_kills = restarter.await??;
    let publisher_kills = publisher_killer.await??;

    let unfinished: Vec<_> = submitted
        .iter()
        .map(|s| s.item.op_id.to_string())
        .filter(|id| !finals.contains_key(id))
        .collect();
    ensure!(
        unfinished.is_empty(),
        "{} ops never ended within {within:?}: {:?}",
        unfinished.len(),
        &unfinished[..unfinished.len().min(10)]
    );

    // Per op: its end and its record at the remote.
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    let mut attempts = Vec::new();
    let mut applied: BTreeMap<String, Vec<(u64, u64, String)>> = BTreeMap::new();
    for s in &submitted {
        let item = &finals[&s.item.op_id.to_string()];
        attempts.push(u64::from(item.attempts));
        match item.status {
            Status::Succeeded => {
                let result: Value = item
                    .result
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok())
                    .unwrap_or(Value::Null);
                let outcome = result["outcome"].as_str().unwrap_or("none").to_owned();
                ensure!(
                    ["applied", "duplicate", "superseded"].contains(&outcome.as_str()),
                    "op {} SUCCEEDED with outcome {outcome}: {item:?}",
                    item.op_id
                );
                *outcomes.entry(outcome).or_default() += 1;
            }
            Status::Failed => {
                ensure!(
                    item.last_error.as_deref().is_some_and(|e| !e.is_empty()),
                    "op {} FAILED without a reason",
                    item.op_id
                );
                failed += 1;
            }
            other => bail!("op {} ended {other}", item.op_id),
        }
        let record = directions[s.direction]
            .inbound(s.item.op_id.as_str())
            .await?;
        match record {
            Some((outcome, seq, at)) => {
                ensure!(seq == s.seq, "op {} recorded with seq {seq}", item.op_id);
                if outcome == "applied" {
                    applied.entry(s.resource.clone()).or_default().push((
                        at,
                        seq,
                        s.marker.clone(),
                    ));
                }
            }
            None => ensure!(
                item.status == Status::Failed,
                "op {} SUCCEEDED but the remote has no record of it",
                item.op_id
            ),
        }
    }

    // Per resource, counted at the remote.
    let mut applied_total = 0;
    for (direction, resource) in &resources {
        let mine: Vec<&Submitted> = submitted
            .iter()
            .filter(|s| &s.resource == resource)
            .collect();
        let Some(newest) = mine.iter().max_by_key(|s| s.seq) else {
            continue;
        };
        let mut ops_applied = applied.remove(resource).unwrap_or_default();
        ops_applied.sort();
        applied_total += ops_applied.len();
        let group = directions[*direction]
            .target_group(resource)
            .await?
            .with_context(|| format!("{resource} is missing at the remote"))?;
        let version = group["version"].as_u64().unwrap_or(0);
        ensure!(
            version == ops_applied.len() as u64,
            "{resource}: version {version} at the remote, but {} ops applied: applied twice?",
            ops_applied.len()
        );
        ensure!(
            ops_applied.windows(2).all(|w| w[0].1 < w[1].1),
            "{resource}: ops applied out of seq order: {ops_applied:?}"
        );
        let newest_item = &finals[&newest.item.op_id.to_string()];
        if newest_item.status == Status::Succeeded {
            let holds = group["members"]["host-a"]["az"].as_str().unwrap_or("");
            ensure!(
                holds == newest.marker,
                "{resource}: holds {holds}, newest op is {} ({:?})",
                newest.marker,
                group["members"]
            );
        }
    }
    // Every status change of every op, received at least once. The stream publishes within
    // seconds; what it gave up the dispatcher's sweep publishes after 60 s.
    let wanted: BTreeMap<String, u64> = finals
        .values()
        .map(|i| (i.op_id.to_string(), i.status_version))
        .collect();
    let mut received: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut events = 0u64;
    let missing = |received: &BTreeMap<String, BTreeSet<u64>>| -> u64 {
        wanted
            .iter()
            .map(|(op, last)| {
                let got = received
                    .get(op)
                    .map_or(0, |v| v.range(1..=*last).count() as u64);
                last - got
            })
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(150);
    while missing(&received) > 0 && Instant::now() < deadline {
        for queue in &event_queues {
            for event in queue.receive(Duration::from_secs(1)).await? {
                let detail = &event["detail"];
                let (Some(op), Some(version)) =
                    (detail["op_id"].as_str(), detail["status_version"].as_u64())
                else {
                    bail!("an event without op_id or status_version: {event}");
                };
                if wanted.contains_key(op) {
                    events += 1;
                    received.entry(op.to_owned()).or_default().insert(version);
                }
            }
        }
    }
    let versions: u64 = wanted.values().sum();
    let missed = missing(&received);
    for queue in event_queues {
        queue.delete().await?;
    }
    ensure!(
        missed == 0,
        "{missed} of {versions} status changes never published (first ops missing some: {:?})",
        wanted
            .iter()
            .filter(|(op, last)| received.get(*op).map_or(0, |v| v.len() as u64) < **last)
            .take(5)
            .collect::<Vec<_>>()
    );

    attempts.sort();
    eprintln!(
        "irc campaign: {} ops in {:.0} s over {} directions: {} SUCCEEDED ({outcomes:?}), {failed} FAILED with a reason, \
         0 lost, {applied_total} applied = sum of versions at the remotes; attempts p50 {} p99 {} max {}; \
         faults: {counts:?}, dispatcher kills {dispatcher_kills}; status events: {versions} versions, \
         all received, {events} events ({} duplicates), publisher kills {publisher_kills}",
        submitted.len(),
        elapsed.as_secs_f64(),
        directions.len(),
        submitted.len() - failed,
        percentile(&attempts, 50.0),
        percentile(&attempts, 99.0),
        attempts.last().copied().unwrap_or(0),
        events - versions
    );
    Ok(())
}
