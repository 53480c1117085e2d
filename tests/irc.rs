//! The inter-region coordinator end to end: two regional stacks on one MiniStack, us-east-1
//! submitting to eu-west-1 through the real queue, worker, dispatcher and irc-remote. Each
//! test asserts the op's final state and counts effects at the remote (the target group's
//! `version` goes up once per applied `group.put`; InboundOps holds each op's outcome).
//!
//! The test deploy routes us-east-1's worker through this binary's fault proxy
//! (`TENURE_E2E_IRC_PROXY_PORT`, see infra/test.sh), so tests can script remote failures.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tenure::clock::{Clock, SystemClock};
use tenure::irc::config::RetryPolicy;
use tenure::irc::inbound::InboundStore;
use tenure::irc::kinds::Kinds;
use tenure::irc::queue::WorkQueue;
use tenure::irc::store::{ClaimOutcome, NewOp, SubmitOutcome, WorkItemStore};
use tenure::irc::submit::{SubmitRequest, Submitter};
use tenure::irc::{OpId, Region, Status, WorkItem};
use tenure::lease::LeaseConfig;
use tenure_testkit::fault_proxy::{Fault, FaultProxy};
use tenure_testkit::{find, group_item, stacks, Stack};

const SOURCE: &str = "us-east-1";
const TARGET: &str = "eu-west-1";

struct Irc {
    source: Stack,
    target: Stack,
    submitter: Submitter<SystemClock>,
    items: WorkItemStore,
    queue: WorkQueue,
    sqs: aws_sdk_sqs::Client,
    target_dynamodb: aws_sdk_dynamodb::Client,
    proxy: &'static FaultProxy,
}

impl Irc {
    async fn new() -> Result<Self> {
        let proxy = FaultProxy::shared()?;
        let all = stacks("TENURE_E2E_REGIONS")?;
        let (source, target) = (find(&all, SOURCE)?, find(&all, TARGET)?);
        let sdk = source.sdk().await;
        let items = WorkItemStore::new(
            tenure::aws::dynamodb_client(&sdk, None),
            source.output("WorkItemsTable")?,
        );
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let queue = WorkQueue::new(sqs.clone(), source.output("IrcQueueUrl")?);
        let submitter = Submitter {
            store: items.clone(),
            queue: queue.clone(),
            kinds: Kinds::shipped(),
            policy: RetryPolicy::default(),
            region: Region::parse(SOURCE)?,
            clock: SystemClock,
        };
        let target_dynamodb = tenure::aws::dynamodb_client(&target.sdk().await, None);
        Ok(Self {
            source,
            target,
            submitter,
            items,
            queue,
            sqs,
            target_dynamodb,
            proxy,
        })
    }

    fn group(tag: &str) -> String {
        format!("irc-{tag}-{}-{}", std::process::id(), SystemClock.now_ms())
    }

    fn put_payload(group: &str, lease_ms: u64) -> Value {
        json!({"group_id": group, "lease_ms": lease_ms,
               "members": [{"host_id": "host-a", "az": "euw1-az1", "priority": 2},
                           {"host_id": "host-b", "az": "euw1-az2", "priority": 1}]})
    }

    fn request(group: &str, payload: Value, op_id: Option<OpId>) -> Result<SubmitRequest> {
        Ok(SubmitRequest {
            op_id,
            target_region: Region::parse(TARGET)?,
            kind: "group.put".into(),
            resource: group.to_owned(),
            payload,
            await_for: None,
            await_ms: None,
        })
    }

    async fn submit_put(&self, group: &str, lease_ms: u64) -> Result<WorkItem> {
        Ok(self
            .submitter
            .submit(Self::request(
                group,
                Self::put_payload(group, lease_ms),
                None,
            )?)
            .await?)
    }

    /// Writes the item without the fast-path enqueue (as if the submit's send was lost).
    async fn submit_without_enqueue(&self, group: &str, lease_ms: u64) -> Result<WorkItem> {
        let op = NewOp {
            op_id: OpId::new(),
            source_region: Region::parse(SOURCE)?,
            target_region: Region::parse(TARGET)?,
            kind: "group.put".into(),
            resource: group.to_owned(),
            payload: Self::put_payload(group, lease_ms).to_string(),
            max_attempts: RetryPolicy::default().max_attempts,
            await_for: None,
            await_ms: None,
        };
        match self.items.submit(op, SystemClock.now_ms(), 5_000).await? {
            SubmitOutcome::Submitted(item) => Ok(item),
            SubmitOutcome::AlreadySubmitted(_) => bail!("a fresh op id was already submitted"),
        }
    }

    async fn wait_terminal(&self, op_id: &OpId, within: Duration) -> Result<WorkItem> {
        let started = Instant::now();
        loop {
            let item = self.items.get(op_id).await?.context("the op vanished")?;
            if item.status.is_terminal() {
                return Ok(item);
            }
            if started.elapsed() > within {
                bail!(
                    "op {op_id} still {} after {within:?}: {item:?}",
                    item.status
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The target group's item: its `version` counts every group.put applied.
    async fn target_group(&self, group: &str) -> Result<Option<Value>> {
        group_item(&self.target_dynamodb, &self.target, group).await
    }

    async fn inbound_outcome(&self, op_id: &OpId) -> Result<Option<String>> {
        let inbound = InboundStore::new(
            self.target_dynamodb.clone(),
            self.target.output("InboundOpsTable")?,
            self.target.output("LeasesTable")?,
            self.target.output("HostsTable")?,
            LeaseConfig::default(),
            Kinds::shipped(),
        );
        Ok(inbound.outcome_of(op_id).await?)
    }

    fn result(item: &WorkItem) -> Value {
        item.result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or(Value::Null)
    }
}

const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_goes_local_remote_local_and_applies_once() -> Result<()> {
    let irc = Irc::new().await?;
    let group = Irc::group("normal");
    let submitted = irc.submit_put(&group, 10_000).await?;
    ensure!(submitted.status == Status::Pending && submitted.seq >= 1);
    let done = irc.wait_terminal(&submitted.op_id, WITHIN).await?;
    ensure!(done.status == Status::Succeeded, "{done:?}");
    ensure!(Irc::result(&done)["outcome"] == "applied", "{done:?}");
    ensure!(done.attempts == 1, "{done:?}");
    let remote = irc
        .target_group(&group)
        .await?
        .context("the group exists in eu-west-1")?;
    ensure!(
        remote["lease_ms"] == 10_000 && remote["version"] == 1,
        "{remote}"
    );
    ensure!(remote["members"]["host-a"]["priority"] == 2, "{remote}");
    ensure!(irc.inbound_outcome(&done.op_id).await?.as_deref() == Some("applied"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_delivered_twice_is_applied_once() -> Result<()> {
    let irc = Irc::new().await?;
    let group = Irc::group("twice");
    let item = irc.submit_put(&group, 10_000).await?;
    // A second copy of the message (another dedup id, so SQS delivers both).
    irc.queue
        .send(&item, &format!("{}-copy", item.op_id))
        .await?;
    let done = irc.wait_terminal(&item.op_id, WITHIN).await?;
    ensure!(done.status == Status::Succeeded, "{done:?}");
    // Give the copy time to be processed too, then count effects at the remote.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let remote = irc.target_group(&group).await?.context("group")?;
    ensure!(remote["version"] == 1, "applied more than once: {remote}");
    let again = irc.items.get(&item.op_id).await?.context("item")?;
    ensure!(
        again.status == Status::Succeeded && again.attempts == 1,
        "{again:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dying_after_the_remote_applied_is_retried_and_gets_the_stored_result(
) -> Result<()> {
    let irc = Irc::new().await?;
    let group = Irc::group("dies");
    let item = irc.submit_without_enqueue(&group, 10_000).await?;
    irc.proxy
        .script(item.op_id.as_str(), &[Fault::ExitWorkerAfterApply]);
    irc.queue.send(&item, item.op_id.as_str()).await?;
    // Recovery waits out the dead worker's claim (IrcClaimTtlMs), then the dispatcher.
    let done = irc
        .wait_terminal(&item.op_id, Duration::from_secs(120))
        .await?;
    ensure!(done.status == Status::Succeeded, "{done:?}");
    ensure!(done.attempts >= 2, "{done:?}");
    ensure!(
        Irc::result(&done)["outcome"] == "duplicate",
        "the retry got the stored result: {done:?}"
    );
    let seen = irc.proxy.seen(item.op_id.as_str());
    ensure!(seen.len() >= 2 && seen[0].faulted, "{seen:?}");
    let remote = irc.target_group(&group).await?.context("group")?;
    ensure!(remote["version"] == 1, "applied more than once: {remote}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_errors_then_success_take_three_attempts_with_backoff() -> Result<()> {
    let irc = Irc::new().await?;
    let group = Irc::group("retry");
    let item = irc.submit_without_enqueue(&group, 10_000).await?;
    irc.proxy.script(
        item.op_id.as_str(),
        &[Fault::Status(500), Fault::Status(500)],
    );
    irc.queue.send(&item, item.op_id.as_str()).await?;
    let done = irc.wait_terminal(&item.op_id, WITHIN).await?;
    ensure!(done.status == Status::Succeeded, "{done:?}");
    // Three calls. Each failure counts against eu-west-1's health, shared with the other tests
    // of this binary: if their failures and these open it, the call that opened it (or found
    // it open) gives its attempt back, so `attempts` may be less than the calls made.
    ensure!((1..=3).contains(&done.attempts), "{done:?}");
    let calls = done
        .history
        .iter()
        .filter(|t| t.status == Status::InFlight)
        .count();
    ensure!(calls == 3, "three claims: {done:?}");
    let seen = irc.proxy.seen(item.op_id.as_str());
    ensure!(
        seen.iter().map(|s| s.status).collect::<Vec<_>>() == [500, 500, 200],
        "{seen:?}"
    );
    // Backoff base 500 ms with equal jitter: >= 250 ms, then >= 500 ms.
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    ensure!(
        gaps[0] >= Duration::from_millis(250) && gaps[1] >= Duration::from_millis(500),
        "no backoff between attempts: {gaps:?}"
    );
    let remote = irc.target_group(&group).await?.context("group")?;
    ensure!(remote["version"] == 1, "{remote}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_fails_at_once_with_the_remotes_message() -> Result<()> {
    let irc = Irc::new().await?;
    let group = Irc::group("invalid");
    // Valid shape, but eu-west-1's lease rules refuse a 1 s lease (3 x 2 s renewals).
    let item = irc.submit_put(&group, 1_000).await?;
    let done = irc.wait_terminal(&item.op_id, WITHIN).await?;
    ensure!(
        done.status == Status::Failed && done.attempts == 1,
        "{done:?}"
    );
    let error = done.last_error.clone().unwrap_or_default();
    ensure!(
        error.contains("HTTP 422")
            && error.contains("lease_ms (1000) must be >= 3 * renew_interval_ms"),
        "last_error: {error}"
    );
    ensure!(irc.target_group(&group).await?.is_none(), "nothing applied");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_body_fails_alone_and_reaches_the_dlq() -> Result<()> {
    let irc = Irc::new().await?;
    let marker = format!("not-a-work-message-{}", OpId::new());
    irc.sqs
        .send_message()
        .queue_url(irc.source.output("IrcQueueUrl")?)
        .message_body(&marker)
        .message_group_id("malformed")
        .message_deduplication_id(&marker[..marker.len().min(128)])
        .send()
        .await?;
    let group = Irc::group("beside-bad");
    let good = irc.submit_put(&group, 10_000).await?;
    let done = irc.wait_terminal(&good.op_id, WITHIN).await?;
    ensure!(
        done.status == Status::Succeeded,
        "the good op is not held up: {done:?}"
    );
    // The bad one lands in the DLQ.
    let dlq = irc.source.output("IrcDlqUrl")?;
    let started = Instant::now();
    loop {
        let received = irc
            .sqs
            .receive_message()
            .queue_url(dlq)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        if received
            .messages()
            .iter()
            .any(|m| m.body() == Some(marker.as_str()))
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(90) {
            bail!("the malformed message never reached the DLQ");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_delivered_out_of_order_leave_the_newest_and_supersede_the_rest() -> Result<()> {
    let irc = Irc::new().await?;
    let group = Irc::group("order");
    let mut ops = Vec::new();
    for lease_ms in [10_000, 11_000, 12_000] {
        ops.push(irc.submit_without_enqueue(&group, lease_ms).await?);
    }
    ensure!(
        ops[0].seq < ops[1].seq && ops[1].seq < ops[2].seq,
        "seq follows submit order"
    );
    // Deliver the newest first, then the older two.
    for op in ops.iter().rev() {
        irc.queue.send(op, op.op_id.as_str()).await?;
        irc.wait_terminal(&op.op_id, WITHIN).await?;
    }
    let remote = irc.target_group(&group).await?.context("group")?;
    ensure!(
        remote["lease_ms"] == 12_000 && remote["version"] == 1,
        "{remote}"
    );
    for (op, expected) in ops.iter().zip(["superseded", "superseded", "applied"]) {
        let item = irc.items.get(&op.op_id).await?.context("item")?;
        ensure!(item.status == Status::Succeeded, "{item:?}");
        ensure!(Irc::result(&item)["outcome"] == expected, "{item:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_op_id_with_another_payload_fails_with_a_conflict() -> Result<()> {
    let irc = Irc::new().await?;
    let group = Irc::group("conflict");
    let op_id = OpId::new();
    // eu-west-1 first receives this op id with one payload, straight from a signed client.
    let body = json!({"v": 1, "op_id": op_id, "source_region": SOURCE, "kind": "group.put",
                      "resource": group, "seq": 1, "payload": Irc::put_payload(&group, 20_000)});
    let sigv4 = tenure::sigv4::SigV4Client::for_function_urls(&irc.target.sdk().await)?;
    let url = format!("{}v1/operations", irc.target.output("IrcRemoteLocalUrl")?);
    let first = sigv4
        .send(
            "POST",
            &url,
            TARGET,
            body.to_string().as_bytes(),
            Duration::from_secs(10),
        )
        .await?;
    ensure!(
        first.status == 200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    // Then the coordinator sends the same op id with another payload.
    let item = irc
        .submitter
        .submit(Irc::request(
            &group,
            Irc::put_payload(&group, 10_000),
            Some(op_id.clone()),
        )?)
        .await?;
    let done = irc.wait_terminal(&item.op_id, WITHIN).await?;
    ensure!(
        done.status == Status::Failed && done.attempts == 1,
        "{done:?}"
    );
    let error = done.last_error.unwrap_or_default();
    ensure!(error.contains("409 op_id_conflict"), "last_error: {error}");
    let remote = irc.target_group(&group).await?.context("group")?;
    ensure!(
        remote["lease_ms"] == 20_000 && remote["version"] == 1,
        "{remote}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_recovers_a_lost_enqueue_and_an_expired_claim() -> Result<()> {
    let irc = Irc::new().await?;
    // A submit whose fast-path message was lost.
    let lost = irc
        .submit_without_enqueue(&Irc::group("lost"), 10_000)
        .await?;
    // A claim whose worker died: claimed with a 1 s TTL and never completed.
    let orphan = irc
        .submit_without_enqueue(&Irc::group("orphan"), 10_000)
        .await?;
    match irc
        .items
        .claim(&orphan.op_id, "dead-worker", SystemClock.now_ms(), 1_000, 0)
        .await?
    {
        ClaimOutcome::Claimed(item) => ensure!(item.status == Status::InFlight),
        other => bail!("could not claim: {other:?}"),
    }
    for op in [&lost, &orphan] {
        let done = irc
            .wait_terminal(&op.op_id, Duration::from_secs(90))
            .await?;
        ensure!(done.status == Status::Succeeded, "{done:?}");
    }
    let orphan = irc.items.get(&orphan.op_id).await?.context("item")?;
    ensure!(
        orphan.attempts == 2,
        "the dead claim counted one attempt: {orphan:?}"
    );
    Ok(())
}

/// Every status change of an op reaches the source region's default bus as an `Operation
/// Status Change` event (through irc-events, from the WorkItems stream): each version from 1
/// to the op's last at least once, each naming the status it left, so a consumer can order
/// them and would see a gap. Ops that succeed at once, fail at once (422) and retry (a 503
/// first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_change_is_published_with_its_version() -> Result<()> {
    use std::collections::{BTreeMap, BTreeSet};
    use tenure::irc::events::{StatusEvent, EVENT_DETAIL_TYPE, EVENT_SOURCE};
    use tenure_testkit::events::EventQueue;

    let irc = Irc::new().await?;
    let tag = format!("irc-{}-{}", std::process::id(), SystemClock.now_ms());
    let queue = EventQueue::create(&irc.source, &tag, EVENT_SOURCE, EVENT_DETAIL_TYPE).await?;
    let succeeded = irc.submit_put(&Irc::group("ev-ok"), 10_000).await?;
    let refused = irc.submit_put(&Irc::group("ev-422"), 1_000).await?;
    let retried = irc
        .submit_without_enqueue(&Irc::group("ev-retry"), 10_000)
        .await?;
    irc.proxy
        .script(retried.op_id.as_str(), &[Fault::Status(503)]);
    irc.queue.send(&retried, retried.op_id.as_str()).await?;
    let mut finals = BTreeMap::new();
    for op in [&succeeded, &refused, &retried] {
        let done = irc.wait_terminal(&op.op_id, WITHIN).await?;
        finals.insert(done.op_id.clone(), done);
    }
    // Two claims (the first failed); its attempt may have been given back if eu-west-1's health
    // opened meanwhile (other tests of this binary inject failures too).
    ensure!(
        finals[&retried.op_id]
            .history
            .iter()
            .filter(|t| t.status == Status::InFlight)
            .count()
            == 2,
        "{:?}",
        finals[&retried.op_id]
    );

    let mut seen: BTreeMap<OpId, BTreeMap<u64, StatusEvent>> = BTreeMap::new();
    let mut duplicates = 0;
    let complete = |seen: &BTreeMap<OpId, BTreeMap<u64, StatusEvent>>| {
        finals.values().all(|item| {
            seen.get(&item.op_id)
                .is_some_and(|versions| versions.len() as u64 == item.status_version)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !complete(&seen) && Instant::now() < deadline {
        for event in queue.receive(Duration::from_secs(1)).await? {
            let detail: StatusEvent = serde_json::from_value(event["detail"].clone())?;
            ensure!(
                event["resources"][0] == detail.op_id.as_str(),
                "resources: {event}"
            );
            if !finals.contains_key(&detail.op_id) {
                continue; // another test's op
            }
            let versions = seen.entry(detail.op_id.clone()).or_default();
            if versions.insert(detail.status_version, detail).is_some() {
                duplicates += 1;
            }
        }
    }
    for item in finals.values() {
        let versions = seen.get(&item.op_id).cloned().unwrap_or_default();
        let numbers: BTreeSet<u64> = versions.keys().copied().collect();
        let wanted: BTreeSet<u64> = (1..=item.status_version).collect();
        ensure!(
            numbers == wanted,
            "op {} ({}): events for versions {numbers:?}, wanted {wanted:?} ({duplicates} duplicates)",
            item.op_id,
            item.status
        );
        // The chain: each event's previous status is the status of the version before it,
        // and the statuses are the item's history, in order.
        let statuses: Vec<Status> = versions.values().map(|e| e.status).collect();
        let history: Vec<Status> = item.history.iter().map(|t| t.status).collect();
        ensure!(
            statuses == history,
            "events {statuses:?}, history {history:?}"
        );
        let previous: Vec<Option<Status>> = versions.values().map(|e| e.previous_status).collect();
        let expected: Vec<Option<Status>> = std::iter::once(None)
            .chain(history.iter().copied().map(Some))
            .take(history.len())
            .collect();
        ensure!(
            previous == expected,
            "previous {previous:?}, wanted {expected:?}"
        );
        let last = versions.values().last().context("an event")?;
        ensure!(last.attempts == item.attempts && last.last_error == item.last_error);
    }
    // Once published, every op is marked so (irc-events marks after the publish: poll).
    let deadline = Instant::now() + Duration::from_secs(30);
    for item in finals.values() {
        loop {
            let now = irc
                .items
                .get(&item.op_id)
                .await?
                .context("the op vanished")?;
            if now.published_version == item.status_version {
                break;
            }
            ensure!(Instant::now() < deadline, "never marked published: {now:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    queue.delete().await?;
    Ok(())
}

/// A failing region fails alone (IRC v2): ap-southeast-2's irc-remote answers 503 to
/// everything for a while. Its ops are held, not failed: once its health opens, no op is sent
/// to it, only the dispatcher's probes; eu-west-1's ops go on meanwhile; after recovery every
/// held op succeeds, each applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_region_fails_alone_and_its_held_ops_succeed_after_it_recovers() -> Result<()> {
    use tenure::irc::region_health::{HealthRecords, RegionHealthTable};
    use tenure_testkit::fault_proxy::Chaos;
    const FAILING: &str = "ap-southeast-2";

    let irc = Irc::new().await?;
    let health = RegionHealthTable::new(
        tenure::aws::dynamodb_client(&irc.source.sdk().await, None),
        irc.source.output("RegionHealthTable")?,
    );
    let failing = Region::parse(FAILING)?;
    let submit_to = |region: &'static str, group: String| {
        let irc = &irc;
        async move {
            irc.submitter
                .submit(SubmitRequest {
                    op_id: None,
                    target_region: Region::parse(region)?,
                    kind: "group.put".into(),
                    resource: group.clone(),
                    payload: Irc::put_payload(&group, 10_000),
                    await_for: None,
                    await_ms: None,
                })
                .await
                .map_err(anyhow::Error::from)
        }
    };
    irc.proxy.set_chaos(Chaos {
        target_region: Some(FAILING.into()),
        error_before: 1.0,
        error_statuses: vec![503],
        ..Chaos::default()
    });
    let result = async {
        let mut held = Vec::new();
        let mut healthy = Vec::new();
        let mut opened_at = None;
        for n in 0..12 {
            held.push(submit_to(FAILING, Irc::group(&format!("iso-ap{n}"))).await?);
            healthy.push(submit_to(TARGET, Irc::group(&format!("iso-eu{n}"))).await?);
            tokio::time::sleep(Duration::from_millis(500)).await;
            if opened_at.is_none() && health.read(&failing, 0).await?.state.open {
                opened_at = Some(Instant::now());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while opened_at.is_none() {
            ensure!(Instant::now() < deadline, "the failing region never opened");
            if health.read(&failing, 0).await?.state.open {
                opened_at = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The other region is not held up.
        for op in &healthy {
            let done = irc.wait_terminal(&op.op_id, WITHIN).await?;
            ensure!(done.status == Status::Succeeded, "{done:?}");
        }
        // While it is open: nothing is sent to it but probes, and nothing fails.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let posts_before = irc.proxy.requests_to(FAILING, "POST");
        let probes_before = irc.proxy.requests_to(FAILING, "GET");
        tokio::time::sleep(Duration::from_secs(20)).await;
        let posts = irc.proxy.requests_to(FAILING, "POST") - posts_before;
        let probes = irc.proxy.requests_to(FAILING, "GET") - probes_before;
        ensure!(posts == 0, "{posts} ops sent to an open region");
        // Probes 5 s, then 10 s, then 20 s apart: at most 3 in 20 s.
        ensure!((1..=3).contains(&probes), "{probes} probes in 20 s");
        for op in &held {
            let item = irc.items.get(&op.op_id).await?.context("op")?;
            ensure!(!item.status.is_terminal(), "held op ended: {item:?}");
        }
        Ok::<_, anyhow::Error>(held)
    }
    .await;
    irc.proxy.set_chaos(Chaos::default());
    let held = result?;
    // Recovery: the next probe closes it, the held ops come back over the ramp.
    for op in &held {
        let done = irc
            .wait_terminal(&op.op_id, Duration::from_secs(120))
            .await?;
        ensure!(done.status == Status::Succeeded, "{done:?}");
        ensure!(done.attempts <= 5, "attempts spent on the outage: {done:?}");
    }
    let state = health.read(&failing, 0).await?.state;
    ensure!(!state.open && state.recovered_at_ms.is_some(), "{state:?}");
    Ok(())
}

/// An op followed to a remote state: `group.put` with `await: serving`. The target applies it
/// at once and answers 202; the op waits as WAITING_REMOTE while the dispatcher polls; when a
/// member it wrote checks in and becomes primary in eu-west-1, the next poll ends it SUCCEEDED
/// with the observation. A second awaited op whose members never check in is cancelled while
/// it waits: CANCELLED at once, its effect (the group) kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awaited_group_put_succeeds_once_a_member_serves_it_and_a_waiting_one_cancels(
) -> Result<()> {
    use tenure::irc::awaiting::RemoteState;
    use tenure::irc::store::CancelOutcome;
    use tenure::lease::LeaseConfig;
    use tenure_testkit::healthy_check;

    let irc = Irc::new().await?;
    let group = Irc::group("await");
    let host = format!(
        "aw-{}-{}",
        std::process::id(),
        SystemClock.now_ms() % 100_000
    );
    let payload = json!({"group_id": group, "lease_ms": LeaseConfig::default().lease_ms,
                         "members": [{"host_id": host, "az": "euw1-az1", "priority": 2}]});
    let awaited = |group: String, payload: Value| SubmitRequest {
        op_id: None,
        target_region: Region::parse(TARGET).expect("a region"),
        kind: "group.put".into(),
        resource: group,
        payload,
        await_for: Some("serving".into()),
        await_ms: Some(120_000),
    };
    let item = irc
        .submitter
        .submit(awaited(group.clone(), payload))
        .await?;
    ensure!(item.await_for.as_deref() == Some("serving"), "{item:?}");

    // Applied at the target, waiting: nobody serves it yet.
    let deadline = Instant::now() + WITHIN;
    let waiting = loop {
        let now = irc.items.get(&item.op_id).await?.context("op")?;
        if now.status == Status::WaitingRemote {
            break now;
        }
        ensure!(
            !now.status.is_terminal(),
            "ended before it was served: {now:?}"
        );
        ensure!(Instant::now() < deadline, "never WAITING_REMOTE: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        waiting.remote_state == Some(RemoteState::InProgress),
        "{waiting:?}"
    );
    ensure!(
        irc.target_group(&group).await?.is_some(),
        "the effect is applied at once"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = irc.items.get(&item.op_id).await?.context("op")?;
    ensure!(still.status == Status::WaitingRemote, "{still:?}");

    // The member checks in at the target and becomes primary.
    let served_at = Instant::now();
    let check = irc.target.lease_check().await?;
    let answer = check
        .check_host(
            &tenure::ids::HostId::parse(&host)?,
            &healthy_check(&[tenure::ids::GroupId::parse(&group)?]),
        )
        .await?;
    ensure!(
        answer.groups.iter().any(|g| matches!(
            g,
            tenure::lease::service::GroupEntry::Answer(a) if a.writable
        )),
        "the member did not become primary: {answer:?}"
    );
    // It keeps checking in, as a live host does (its lease lasts from its last check), until
    // the op ends: a poll that comes after a lapsed lease would rightly not see it served.
    let heartbeat = {
        let (check, host, group) = (check.clone(), host.clone(), group.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let (Ok(h), Ok(g)) = (
                    tenure::ids::HostId::parse(&host),
                    tenure::ids::GroupId::parse(&group),
                ) {
                    let _ = check.check_host(&h, &healthy_check(&[g])).await;
                }
            }
        })
    };
    let done = irc.wait_terminal(&item.op_id, WITHIN).await;
    heartbeat.abort();
    let done = done?;
    ensure!(done.status == Status::Succeeded, "{done:?}");
    ensure!(
        done.remote_state == Some(RemoteState::Succeeded),
        "{done:?}"
    );
    let result = Irc::result(&done);
    ensure!(
        result["result"]["serving"]["holder"] == host.as_str(),
        "{result}"
    );
    let statuses: Vec<Status> = done.history.iter().map(|t| t.status).collect();
    ensure!(
        statuses.ends_with(&[Status::InFlight, Status::WaitingRemote, Status::Succeeded]),
        "{statuses:?}"
    );
    eprintln!(
        "awaited op: SUCCEEDED {:?} after its member became primary ({} polls)",
        served_at.elapsed(),
        done.polls
    );

    // Cancelled while waiting: the wait stops, the effect stays.
    let lonely = Irc::group("await-cancel");
    let other = irc
        .submitter
        .submit(awaited(lonely.clone(), Irc::put_payload(&lonely, 10_000)))
        .await?;
    let deadline = Instant::now() + WITHIN;
    while irc.items.get(&other.op_id).await?.context("op")?.status != Status::WaitingRemote {
        ensure!(Instant::now() < deadline, "never WAITING_REMOTE");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match irc
        .items
        .cancel(&other.op_id, SystemClock.now_ms(), 60_000)
        .await?
    {
        CancelOutcome::Cancelled(c) => ensure!(c.status == Status::Cancelled, "{c:?}"),
        o => bail!("a waiting op is cancelled at once: {o:?}"),
    }
    ensure!(
        irc.target_group(&lonely).await?.is_some(),
        "the effect stays"
    );
    Ok(())
}
