//! Every alarm of the template made to happen on the local stack, and made not to happen first.
//!
//! Each test has a healthy phase and a fault phase; it reads what the function logged in
//! CloudWatch Logs, checks every EMF document against the specification, and evaluates the
//! alarm as `template.yaml` defines it (metric, dimensions, statistic, period, M out of N,
//! threshold, missing data) over each phase (`tenure_testkit::alarm`): the alarm must fire in
//! the fault phase and must not in the healthy one. MiniStack computes no metric from EMF and
//! none for Function URLs or SQS, so `Url5xxCount` is counted from the answers the test got and
//! the DLQ's depth is sampled from the queue, the sources those metrics count.
//!
//! Tests touching lease-check take turns (one lease-check, one store proxy); the renewer's
//! test runs beside them.

use anyhow::{ensure, Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tenure::clock::{Clock, SystemClock};
use tenure::ids::{GroupId, HostId};
use tenure::irc::config::RetryPolicy;
use tenure::irc::kinds::Kinds;
use tenure::irc::queue::WorkQueue;
use tenure::irc::store::WorkItemStore;
use tenure::irc::submit::{SubmitRequest, Submitter};
use tenure::irc::{OpId, Region, Status, WorkItem};
use tenure::lease::client::LeaseClientError;
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::record::Member;
use tenure::lease::service::LeaseService;
use tenure::lease::LeaseConfig;
use tenure_testkit::alarm::{emf_datapoints, stack_resolver, AlarmSpec, Datapoint, Template};
use tenure_testkit::fault_proxy::{Chaos, Fault, FaultProxy, Route};
use tenure_testkit::{find, healthy_check, invoke_async, set_function_env, stacks, Stack};
use tokio::sync::Mutex as AsyncMutex;

/// aws-config's per-service endpoint, which wins over MiniStack's `AWS_ENDPOINT_URL`.
const STORE_ENDPOINT: &str = "AWS_ENDPOINT_URL_DYNAMODB";
/// lease-check is one function: its tests take turns.
static LEASE_CHECK: AsyncMutex<()> = AsyncMutex::const_new(());
/// One test at a time sends ops to eu-west-1 through the fault proxy: one of them makes the
/// region unavailable, which would hold the others' ops.
static IRC: AsyncMutex<()> = AsyncMutex::const_new(());
/// One test at a time breaks the renewer or watches its dead-letter queue: a renewer made to
/// fail can put messages there.
static RENEWER: AsyncMutex<()> = AsyncMutex::const_new(());

fn now_ms() -> u64 {
    SystemClock.now_ms()
}

async fn sleep_until(at_ms: u64) {
    let now = now_ms();
    if at_ms > now {
        tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
    }
}

async fn stack() -> Result<Stack> {
    let all = stacks("TENURE_E2E_REGIONS")?;
    find(&all, "us-east-1")
}

fn alarm(stack: &Stack, id: &str) -> Result<AlarmSpec> {
    let resolve = stack_resolver(stack);
    Template::load()?.alarm(id, &BTreeMap::new(), &resolve)
}

/// What a phase saw, for the failure message.
fn describe(alarm: &AlarmSpec, points: &[Datapoint], start: u64, end: u64) -> String {
    let evaluation = alarm.evaluate_phase(points, start, end);
    format!(
        "{} over [{start}, {end}): periods {:?}, fired at {:?}",
        alarm.name, evaluation.periods, evaluation.fired_at_ms
    )
}

fn assert_phases(
    alarm: &AlarmSpec,
    points: &[Datapoint],
    healthy: (u64, u64),
    fault: (u64, u64),
) -> Result<()> {
    ensure!(
        !alarm.evaluate_phase(points, healthy.0, healthy.1).fired(),
        "fired in the healthy phase: {}",
        describe(alarm, points, healthy.0, healthy.1)
    );
    ensure!(
        alarm.evaluate_phase(points, fault.0, fault.1).fired(),
        "did not fire in the fault phase: {}",
        describe(alarm, points, fault.0, fault.1)
    );
    Ok(())
}

/// Hosts checking in as fast as lease-check answers, each answer's status kept with its time
/// (the source of `Url5xxCount`).
struct Checkers {
    answers: Arc<Mutex<Vec<(u64, u16)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Checkers {
    async fn start(stack: &Stack, hosts: usize, tag: &str) -> Result<Self> {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in 0..hosts {
            let client = stack.lease_check().await?;
            let host = HostId::parse(&format!("alarm-{tag}-{}-{i}", std::process::id()))?;
            let (answers, stop) = (answers.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let status = match client.check_host(&host, &healthy_check(&[])).await {
                        Ok(_) => 200,
                        Err(LeaseClientError::Refused { status, .. })
                        | Err(LeaseClientError::BadAnswer { status, .. }) => status,
                        Err(LeaseClientError::Unreachable(_)) => 0,
                    };
                    answers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((now_ms(), status));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }
        Ok(Self {
            answers,
            stop,
            tasks,
        })
    }

    async fn stop(self) -> Vec<(u64, u16)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_check_5xx_and_store_error_alarms_fire_in_a_store_outage_and_not_before() -> Result<()>
{
    let _turn = LEASE_CHECK.lock().await;
    let stack = stack().await?;
    let store_errors = alarm(&stack, "LeaseCheckStoreErrorsAlarm")?;
    let url_5xx = alarm(&stack, "LeaseCheck5xxAlarm")?;
    let proxy = FaultProxy::start(Route::Upstream(stack.endpoint.clone()))?;
    set_function_env(
        &stack,
        "LeaseCheckFunction",
        &[(STORE_ENDPOINT, Some(&proxy.url))],
    )
    .await?;
    let outcome = async {
        let checkers = Checkers::start(&stack, 4, "store").await?;
        let healthy_start = now_ms();
        // The outage straddles a minute boundary (15 s on each side), as an outage that long
        // may, so the two-of-three rule sees two periods; it starts after 20 s of health.
        let mut boundary = (healthy_start / 60_000 + 1) * 60_000;
        if boundary - 15_000 < healthy_start + 20_000 {
            boundary += 60_000;
        }
        let fault_start = boundary - 15_000;
        sleep_until(fault_start).await;
        proxy.set_chaos(Chaos {
            error_before: 0.5,
            error_statuses: vec![500],
            throttle: 0.5,
            ..Chaos::default()
        });
        sleep_until(boundary + 15_000).await;
        proxy.set_chaos(Chaos::default());
        let fault_end = now_ms();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let answers = checkers.stop().await;
        Ok::<_, anyhow::Error>((healthy_start, fault_start, fault_end, answers))
    }
    .await;
    set_function_env(&stack, "LeaseCheckFunction", &[(STORE_ENDPOINT, None)]).await?;
    let (healthy_start, fault_start, fault_end, answers) = outcome?;
    let injected = proxy.counts();
    ensure!(
        injected.throttle > 0 && injected.error_before > 0,
        "the proxy harmed nothing: {injected:?}"
    );

    let (points, documents) = emf_datapoints(&stack, "LeaseCheckFunction", healthy_start).await?;
    ensure!(documents > 0, "lease-check logged no EMF document");
    let throttles: f64 = points
        .iter()
        .filter(|p| p.metric == "StoreThrottles" && p.at_ms >= fault_start)
        .flat_map(|p| p.values.clone())
        .sum();
    ensure!(throttles > 0.0, "throttles were not counted apart");
    assert_phases(
        &store_errors,
        &points,
        (healthy_start, fault_start),
        (fault_start, fault_end),
    )?;

    // Url5xxCount counts the Function URL's 5xx answers: the ones the checkers got.
    let url_points: Vec<Datapoint> = answers
        .iter()
        .filter(|(_, status)| *status >= 500)
        .map(|(at, _)| Datapoint {
            namespace: url_5xx.namespace.clone(),
            metric: url_5xx.metric.clone(),
            dimensions: url_5xx.dimensions.clone(),
            at_ms: *at,
            values: vec![1.0],
        })
        .collect();
    ensure!(
        answers.iter().any(|(at, s)| *s == 200 && *at < fault_start),
        "no healthy answer before the outage"
    );
    assert_phases(
        &url_5xx,
        &url_points,
        (healthy_start, fault_start),
        (fault_start, fault_end),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocations_alarm_fires_when_hosts_die_and_not_while_they_live() -> Result<()> {
    let _turn = LEASE_CHECK.lock().await;
    let stack = stack().await?;
    let revocations = alarm(&stack, "RevocationsAlarm")?;
    let dying = revocations.threshold as usize + 1;
    let sdk = stack.sdk().await;
    let service = LeaseService::new(
        DynamoLeaseStore::new(
            tenure::aws::dynamodb_client(&sdk, None),
            stack.output("HostsTable")?,
            stack.output("LeasesTable")?,
        ),
        LeaseConfig::default(),
        SystemClock,
    );
    let tag = format!("{}-{}", std::process::id(), now_ms());
    let survivor = HostId::parse(&format!("alarm-live-{tag}"))?;
    let mut groups = Vec::new();
    let mut doomed = Vec::new();
    for i in 0..dying {
        let host = HostId::parse(&format!("alarm-doomed-{tag}-{i}"))?;
        let group = GroupId::parse(&format!("alarm-revoke-{tag}-{i}"))?;
        let members = BTreeMap::from([
            (host.clone(), Member::new("use1-az1", 2)),
            (survivor.clone(), Member::new("use1-az2", 1)),
        ]);
        service.create_group(group.clone(), 10_000, members).await?;
        groups.push(group);
        doomed.push(host);
    }
    // A 5-minute period: keep the deaths away from its edges.
    let in_period = now_ms() % revocations.period_ms;
    if in_period > revocations.period_ms - 60_000 {
        sleep_until(now_ms() + revocations.period_ms - in_period + 1_000).await;
    }
    let client = stack.lease_check().await?;
    let healthy_start = now_ms();
    // Every doomed host takes its group; the survivor checks in beside them for a while.
    for (host, group) in doomed.iter().zip(&groups) {
        let answer = client
            .check_host(host, &healthy_check(std::slice::from_ref(group)))
            .await?;
        ensure!(
            answer.groups.len() == 1,
            "{host} got no answer for {group}: {answer:?}"
        );
    }
    let everyone = healthy_check(&groups);
    for _ in 0..6 {
        client.check_host(&survivor, &everyone).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The doomed hosts stop checking: their leases lapse and the survivor's checks revoke
    // them, one revocation each, and take their groups.
    let fault_start = now_ms();
    let cfg = LeaseConfig::default();
    let deadline = fault_start + cfg.lease_ms + cfg.clock_skew_ms + 20_000;
    loop {
        let answer = client.check_host(&survivor, &everyone).await?;
        let writable = serde_json::to_value(&answer)?["groups"]
            .as_array()
            .map(|g| g.iter().filter(|e| e["writable"] == json!(true)).count())
            .unwrap_or(0);
        if writable == dying {
            break;
        }
        ensure!(
            now_ms() < deadline,
            "the survivor never took over: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(cfg.poll_interval_ms)).await;
    }
    let fault_end = now_ms() + 1;
    let (points, _) = emf_datapoints(&stack, "LeaseCheckFunction", healthy_start).await?;
    let revoked: f64 = points
        .iter()
        .filter(|p| p.metric == "Revocations" && p.at_ms >= fault_start)
        .flat_map(|p| p.values.clone())
        .sum();
    ensure!(
        revoked >= dying as f64,
        "{revoked} revocations counted for {dying} dead hosts"
    );
    assert_phases(
        &revocations,
        &points,
        (healthy_start, fault_start),
        (fault_start, fault_end),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_renewer_rounds_alarm_fires_when_the_renewer_stops_and_not_while_it_runs() -> Result<()>
{
    let _turn = RENEWER.lock().await;
    let stack = stack().await?;
    let rounds = alarm(&stack, "RenewerRoundsAlarm")?;
    let minute = rounds.period_ms;
    // Healthy: the last complete periods the renewer ran through. A renewer invocation's
    // output reaches the logs when the invocation ends, a minute later. A stack younger than
    // those periods has a first minute with no rounds at all (the schedule's first tick): it
    // is waited for, a minute at a time, a few times.
    let mut young = 0;
    let (healthy_start, healthy_end) = loop {
        let healthy_end = now_ms() / minute * minute;
        let healthy_start = healthy_end - minute * rounds.evaluation_periods as u64;
        sleep_until(healthy_end + 62_000).await;
        let (points, documents) =
            emf_datapoints(&stack, "LeaseRenewerFunction", healthy_start).await?;
        let evaluation = rounds.evaluate_phase(&points, healthy_start, healthy_end);
        let started_inside = evaluation.periods.first().is_some_and(|(_, v)| v.is_none());
        if evaluation.fired() && started_inside && young < 3 {
            young += 1;
            continue;
        }
        ensure!(documents > 0, "the renewer logged no EMF document");
        ensure!(
            !evaluation.fired(),
            "fired while the renewer ran: {}",
            describe(&rounds, &points, healthy_start, healthy_end)
        );
        break (healthy_start, healthy_end);
    };
    ensure!(healthy_start < healthy_end);
    // The renewer stops: a bad setting makes every start fail, as a bad deploy would.
    set_function_env(
        &stack,
        "LeaseRenewerFunction",
        &[("TENURE_RENEW_INTERVAL_MS", Some("not-a-number"))],
    )
    .await?;
    // An invocation already running may go on to its end (up to a minute) before the bad
    // setting stops the next one: the fault phase starts after it.
    let stopped_at = now_ms() + minute;
    let fault_start = stopped_at.div_ceil(minute) * minute;
    let fault_end = fault_start + minute * rounds.datapoints_to_alarm as u64;
    sleep_until(fault_end + 2_000).await;
    set_function_env(
        &stack,
        "LeaseRenewerFunction",
        &[("TENURE_RENEW_INTERVAL_MS", None)],
    )
    .await?;
    invoke_async(&stack, "LeaseRenewerFunction").await?;
    let (points, _) = emf_datapoints(&stack, "LeaseRenewerFunction", fault_start).await?;
    ensure!(
        rounds
            .evaluate_phase(&points, fault_start, fault_end)
            .fired(),
        "did not fire with the renewer stopped: {}",
        describe(&rounds, &points, fault_start, fault_end)
    );
    Ok(())
}

struct Coordinator {
    submitter: Submitter<SystemClock>,
    items: WorkItemStore,
    sqs: aws_sdk_sqs::Client,
    proxy: &'static FaultProxy,
}

impl Coordinator {
    async fn new(stack: &Stack) -> Result<Self> {
        // The test deploy routes us-east-1's worker through this port (infra/test.sh).
        let proxy = FaultProxy::shared()?;
        let sdk = stack.sdk().await;
        let items = WorkItemStore::new(
            tenure::aws::dynamodb_client(&sdk, None),
            stack.output("WorkItemsTable")?,
        );
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        Ok(Self {
            submitter: Submitter {
                store: items.clone(),
                queue: WorkQueue::new(sqs.clone(), stack.output("IrcQueueUrl")?),
                kinds: Kinds::shipped(),
                // Enough attempts for an op to stay RETRYING through a long remote outage.
                policy: RetryPolicy {
                    max_attempts: 50,
                    ..RetryPolicy::default()
                },
                region: Region::parse("us-east-1")?,
                clock: SystemClock,
            },
            items,
            sqs,
            proxy,
        })
    }

    /// A `group.put` to eu-west-1, submitted.
    async fn submit(&self, lease_ms: u64) -> Result<WorkItem> {
        let group = format!("alarm-irc-{}-{}", std::process::id(), now_ms());
        Ok(self
            .submitter
            .submit(SubmitRequest {
                op_id: None,
                target_region: Region::parse("eu-west-1")?,
                kind: "group.put".into(),
                resource: group.clone(),
                payload: json!({"group_id": group, "lease_ms": lease_ms,
                    "members": [{"host_id": "host-a", "az": "euw1-az1", "priority": 1}]}),
                await_for: None,
                await_ms: None,
            })
            .await?)
    }

    /// A `group.put` to eu-west-1, waited for until it ends.
    async fn put(&self, lease_ms: u64) -> Result<Status> {
        let item = self.submit(lease_ms).await?;
        self.wait_terminal(&item.op_id, 60_000).await
    }

    async fn wait_terminal(&self, op_id: &OpId, within_ms: u64) -> Result<Status> {
        let deadline = now_ms() + within_ms;
        loop {
            let now = self.items.get(op_id).await?.context("the op vanished")?;
            if now.status.is_terminal() {
                return Ok(now.status);
            }
            ensure!(now_ms() < deadline, "op still {}: {now:?}", now.status);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// An IRC test's turn: the lock, then eu-west-1 closed and past its resume ramp, so none of
/// the test's ops is held (a test that failed mid-outage leaves the region open until the
/// dispatcher's next probe, and a recovered region admits ops over the ramp).
async fn irc_turn(stack: &Stack) -> Result<tokio::sync::MutexGuard<'static, ()>> {
    use tenure::irc::health::HealthPolicy;
    use tenure::irc::region_health::{HealthRecords, RegionHealthTable};
    let turn = IRC.lock().await;
    let health = RegionHealthTable::new(
        tenure::aws::dynamodb_client(&stack.sdk().await, None),
        stack.output("RegionHealthTable")?,
    );
    let eu = Region::parse("eu-west-1")?;
    let ramp_ms = HealthPolicy::default().resume_ramp_ms;
    let deadline = now_ms() + 180_000;
    loop {
        let state = health.read(&eu, 0).await?.state;
        let now = now_ms();
        if !state.open && state.recovered_at_ms.is_none_or(|at| now >= at + ramp_ms) {
            return Ok(turn);
        }
        ensure!(
            now < deadline,
            "eu-west-1 still unavailable or resuming: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failed_ops_alarm_fires_when_a_region_refuses_an_op_and_not_before() -> Result<()> {
    let stack = stack().await?;
    let failed = alarm(&stack, "IrcOpsFailedAlarm")?;
    let _turn = irc_turn(&stack).await?;
    let irc = Coordinator::new(&stack).await?;
    let healthy_start = now_ms();
    for _ in 0..3 {
        ensure!(irc.put(10_000).await? == Status::Succeeded);
    }
    let fault_start = now_ms();
    // eu-west-1 refuses a 1 s lease (its rules need 3 renew intervals): 422, FAILED at once.
    ensure!(irc.put(1_000).await? == Status::Failed);
    // The worker writes its counts when its batch ends, just after the item.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fault_end = now_ms();
    let (points, _) = emf_datapoints(&stack, "IrcWorkerFunction", healthy_start).await?;
    let succeeded = points
        .iter()
        .filter(|p| {
            p.metric == "IrcOps"
                && p.dimensions.get("Status").map(String::as_str) == Some("SUCCEEDED")
        })
        .count();
    ensure!(
        succeeded >= 3,
        "the successes were not counted: {succeeded}"
    );
    assert_phases(
        &failed,
        &points,
        (healthy_start, fault_start),
        (fault_start, fault_end),
    )
}

/// A dead-letter queue and the template's alarm on its depth.
struct Dlq {
    sqs: aws_sdk_sqs::Client,
    url: String,
    alarm: AlarmSpec,
}

impl Dlq {
    /// `queue_id`: the queue's logical id, whose `QueueName` the alarm's dimension names.
    fn new(
        stack: &Stack,
        sqs: aws_sdk_sqs::Client,
        url: String,
        alarm_id: &str,
        queue_id: &str,
    ) -> Result<Self> {
        let queue_name = url.rsplit('/').next().unwrap_or_default().to_owned();
        let name_attribute = format!("{queue_id}.QueueName");
        let resolve = |target: &str| {
            if target == name_attribute {
                Some(queue_name.clone())
            } else {
                stack.output(target).ok().map(str::to_owned)
            }
        };
        let alarm = Template::load()?.alarm(alarm_id, &BTreeMap::new(), &resolve)?;
        Ok(Self { sqs, url, alarm })
    }

    /// Empties the queue (what earlier tests left is not a test's healthy phase).
    async fn drain(&self) -> Result<()> {
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .send()
                .await?;
            if received.messages().is_empty() {
                return Ok(());
            }
            for m in received.messages() {
                if let Some(receipt) = m.receipt_handle() {
                    self.sqs
                        .delete_message()
                        .queue_url(&self.url)
                        .receipt_handle(receipt)
                        .send()
                        .await?;
                }
            }
        }
    }

    /// ApproximateNumberOfMessagesVisible, sampled from the queue as CloudWatch samples it.
    async fn depth(&self) -> Result<Datapoint> {
        use aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages as Visible;
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(Visible)
            .send()
            .await?;
        let visible = attributes
            .attributes()
            .and_then(|a| a.get(&Visible))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        Ok(Datapoint {
            namespace: self.alarm.namespace.clone(),
            metric: self.alarm.metric.clone(),
            dimensions: self.alarm.dimensions.clone(),
            at_ms: now_ms(),
            values: vec![visible],
        })
    }
}

/// The renewer's and the dispatcher's DLQs (failed scheduled invocations land there): each
/// alarm watches its own queue, stays quiet while it is empty and fires on one message. The
/// message is put there directly, as Lambda would after an invocation's retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_functions_dead_letter_alarms_fire_on_a_message_and_not_before() -> Result<()>
{
    let _turn = RENEWER.lock().await;
    let stack = stack().await?;
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk().await);
    for (alarm_id, queue_id) in [
        ("LeaseRenewerDeadLetterAlarm", "LeaseRenewerDeadLetterQueue"),
        (
            "IrcDispatcherDeadLetterAlarm",
            "IrcDispatcherDeadLetterQueue",
        ),
    ] {
        let prefix = format!("tenure-{queue_id}");
        let listed = sqs.list_queues().queue_name_prefix(&prefix).send().await?;
        let url = match listed.queue_urls() {
            [url] => url.clone(),
            other => anyhow::bail!("one queue named {prefix}*, found {other:?}"),
        };
        let dlq = Dlq::new(&stack, sqs.clone(), url, alarm_id, queue_id)?;
        dlq.drain().await?;
        let mut samples = Vec::new();
        let healthy_start = now_ms();
        for _ in 0..5 {
            samples.push(dlq.depth().await?);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let fault_start = now_ms();
        sqs.send_message()
            .queue_url(&dlq.url)
            .message_body(json!({"requestContext": {"condition": "RetriesExhausted"}}).to_string())
            .send()
            .await?;
        let deadline = now_ms() + 30_000;
        loop {
            let sample = dlq.depth().await?;
            let arrived = sample.values[0] >= 1.0;
            samples.push(sample);
            if arrived {
                break;
            }
            ensure!(
                now_ms() < deadline,
                "the message never showed in {queue_id}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let fault_end = now_ms() + 1;
        dlq.drain().await?;
        assert_phases(
            &dlq.alarm,
            &samples,
            (healthy_start, fault_start),
            (fault_start, fault_end),
        )
        .with_context(|| alarm_id.to_owned())?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_alarm_fires_when_a_message_reaches_the_dlq_and_not_before() -> Result<()> {
    let stack = stack().await?;
    let _turn = irc_turn(&stack).await?;
    let irc = Coordinator::new(&stack).await?;
    let dlq = Dlq::new(
        &stack,
        irc.sqs.clone(),
        stack.output("IrcDlqUrl")?.to_owned(),
        "IrcDeadLetterAlarm",
        "IrcDeadLetterQueue",
    )?;
    let dead_letters = dlq.alarm.clone();
    // What earlier tests left there is not this test's healthy phase.
    dlq.drain().await?;
    let depth = || dlq.depth();
    let mut samples = Vec::new();
    let healthy_start = now_ms();
    for _ in 0..5 {
        samples.push(depth().await?);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let fault_start = now_ms();
    let marker = format!("not-a-work-message-{}", now_ms());
    irc.sqs
        .send_message()
        .queue_url(stack.output("IrcQueueUrl")?)
        .message_body(&marker)
        .message_group_id("alarm-malformed")
        .message_deduplication_id(&marker)
        .send()
        .await?;
    let deadline = now_ms() + 120_000;
    loop {
        let sample = depth().await?;
        let arrived = sample.values[0] >= 1.0;
        samples.push(sample);
        if arrived {
            break;
        }
        ensure!(
            now_ms() < deadline,
            "the malformed message never reached the DLQ"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let fault_end = now_ms() + 1;
    let (points, _) = emf_datapoints(&stack, "IrcWorkerFunction", fault_start).await?;
    ensure!(
        points.iter().any(|p| p.metric == "IrcDeadLettered"),
        "the worker did not count the record it released for the DLQ"
    );
    assert_phases(
        &dead_letters,
        &samples,
        (healthy_start, fault_start),
        (fault_start, fault_end),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_retrying_alarm_fires_when_an_op_keeps_retrying_and_not_before() -> Result<()> {
    let stack = stack().await?;
    // The threshold is a parameter (15 minutes by default); this stack's alarm is evaluated
    // at 20 s, the rest of its definition as deployed.
    let threshold_ms: u64 = 20_000;
    let resolve = stack_resolver(&stack);
    let parameters = BTreeMap::from([(
        "IrcOldestRetryingAlarmMs".to_owned(),
        threshold_ms.to_string(),
    )]);
    let oldest = Template::load()?.alarm("IrcOldestRetryingAlarm", &parameters, &resolve)?;
    let _turn = irc_turn(&stack).await?;
    let irc = Coordinator::new(&stack).await?;
    let healthy_start = now_ms();
    ensure!(irc.put(10_000).await? == Status::Succeeded);
    // A few dispatcher sweeps (2 s apart) with nothing retrying.
    tokio::time::sleep(Duration::from_secs(5)).await;
    // eu-west-1 answers this op 503, again and again: it stays RETRYING (50 attempts allowed).
    let fault_start = now_ms();
    let item = irc.submit(10_000).await?;
    irc.proxy
        .script(item.op_id.as_str(), &[Fault::Status(503); 40]);
    // The age passes the threshold 20 s after the submit; the alarm needs it above in two
    // consecutive whole periods.
    let above = fault_start + threshold_ms;
    let fault_end = (above / oldest.period_ms + 1 + oldest.datapoints_to_alarm as u64)
        * oldest.period_ms
        + 3_000;
    sleep_until(fault_end).await;
    let still = irc
        .items
        .get(&item.op_id)
        .await?
        .context("the op vanished")?;
    irc.proxy.unscript(item.op_id.as_str());
    ensure!(
        !still.status.is_terminal(),
        "the op did not keep retrying: {still:?}"
    );
    let (points, _) = emf_datapoints(&stack, "IrcDispatcherFunction", healthy_start).await?;
    assert_phases(
        &oldest,
        &points,
        (healthy_start, fault_start),
        (fault_start, fault_end),
    )?;
    // Healed: the op succeeds at its next attempt.
    ensure!(irc.wait_terminal(&item.op_id, 120_000).await? == Status::Succeeded);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_unavailable_alarm_fires_while_a_target_region_stays_open_and_not_before(
) -> Result<()> {
    use tenure::irc::region_health::{HealthRecords, RegionHealthTable};
    use tenure_testkit::fault_proxy::Chaos;
    let stack = stack().await?;
    // Deployed at 5 minutes by default; this stack's alarm is evaluated at 1, the rest of its
    // definition as deployed.
    let parameters = BTreeMap::from([(
        "IrcRegionUnavailableAlarmMinutes".to_owned(),
        "1".to_owned(),
    )]);
    let unavailable = Template::load()?.alarm(
        "IrcRegionUnavailableAlarm",
        &parameters,
        &stack_resolver(&stack),
    )?;
    let _turn = irc_turn(&stack).await?;
    let irc = Coordinator::new(&stack).await?;
    let health = RegionHealthTable::new(
        tenure::aws::dynamodb_client(&stack.sdk().await, None),
        stack.output("RegionHealthTable")?,
    );
    let eu = Region::parse("eu-west-1")?;
    let healthy_start = now_ms();
    ensure!(irc.put(10_000).await? == Status::Succeeded);
    // A few dispatcher sweeps (2 s apart), every region available.
    tokio::time::sleep(Duration::from_secs(5)).await;
    // eu-west-1 answers everything 503, probes included: a regional outage.
    let fault_start = now_ms();
    irc.proxy.set_chaos(Chaos {
        target_region: Some("eu-west-1".into()),
        error_before: 1.0,
        error_statuses: vec![503],
        ..Chaos::default()
    });
    let outage = async {
        let mut ops = Vec::new();
        let mut opened_at = None;
        let deadline = now_ms() + 60_000;
        while opened_at.is_none() {
            ensure!(now_ms() < deadline, "eu-west-1 never opened");
            if ops.len() < 12 {
                ops.push(irc.submit(10_000).await?);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            if health.read(&eu, 0).await?.state.open {
                opened_at = Some(now_ms());
            }
        }
        // Open through the alarm's whole periods (probes keep failing), then a sweep's sample.
        let open_from = opened_at.unwrap_or(fault_start);
        let fault_end =
            (open_from / unavailable.period_ms + 1 + unavailable.datapoints_to_alarm as u64)
                * unavailable.period_ms
                + 3_000;
        sleep_until(fault_end).await;
        ensure!(
            health.read(&eu, 0).await?.state.open,
            "eu-west-1 closed while every probe failed"
        );
        Ok::<_, anyhow::Error>((ops, fault_end))
    }
    .await;
    irc.proxy.set_chaos(Chaos::default());
    let (ops, fault_end) = outage?;
    let (points, _) = emf_datapoints(&stack, "IrcDispatcherFunction", healthy_start).await?;
    assert_phases(
        &unavailable,
        &points,
        (healthy_start, fault_start),
        (fault_start, fault_end),
    )?;
    // Healed: the next probe closes the region and the held ops succeed.
    for op in &ops {
        ensure!(irc.wait_terminal(&op.op_id, 180_000).await? == Status::Succeeded);
    }
    Ok(())
}
