//! `tenurectl ops`: submit operations to another region and follow them.
//! Tables and queue come from `--work-items-table` / `TENURE_WORK_ITEMS_TABLE` and
//! `--queue-url` / `TENURE_IRC_QUEUE_URL` (the stack's WorkItemsTable and IrcQueueUrl outputs).

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tenure::clock::{Clock, SystemClock};
use tenure::irc::config::health_policy;
use tenure::irc::config::RetryPolicy;
use tenure::irc::health::{CallCounts, HealthPolicy, RegionHealth};
use tenure::irc::kinds::Kinds;
use tenure::irc::queue::WorkQueue;
use tenure::irc::region_health::{HealthRecords, RegionHealthTable};
use tenure::irc::store::{CancelOutcome, RetryOutcome, WorkItemStore};
use tenure::irc::submit::{SubmitRequest, Submitter};
use tenure::irc::{OpId, Region, Status, WorkItem};
use tenure::Millis;

#[derive(Args)]
pub struct OpsSettings {
    /// The WorkItems table (the stack's WorkItemsTable output).
    #[arg(long, env = "TENURE_WORK_ITEMS_TABLE", global = true)]
    work_items_table: Option<String>,
    /// The work queue (the stack's IrcQueueUrl output).
    #[arg(long, env = "TENURE_IRC_QUEUE_URL", global = true)]
    queue_url: Option<String>,
    /// The region health records (the stack's RegionHealthTable output); `ops regions` only.
    #[arg(long, env = "TENURE_REGION_HEALTH_TABLE", global = true)]
    region_health_table: Option<String>,
}

#[derive(Subcommand)]
pub enum OpsCommand {
    /// Submit an operation; prints its op id.
    ///
    /// `tenurectl ops submit --target-region eu-west-1 --kind group.put --resource orders
    /// --lease-ms 10000 --member host-a:euw1-az1:3 --member host-b:euw1-az2:2`, or the payload
    /// from a file: `--payload-file put.json` (`-` for stdin).
    Submit {
        #[arg(long)]
        target_region: String,
        #[arg(long)]
        kind: String,
        /// The ordering key (the group id for group.put and group.delete).
        #[arg(long)]
        resource: String,
        /// The payload as a JSON file (`-` reads stdin).
        #[arg(long, conflicts_with_all = ["member", "lease_ms"])]
        payload_file: Option<String>,
        /// group.put: host_id:az:priority, once per member.
        #[arg(long)]
        member: Vec<String>,
        /// group.put: the group's lease length.
        #[arg(long)]
        lease_ms: Option<u64>,
        /// Reuse an op id to make a retried submit safe (default: a new ULID).
        #[arg(long)]
        op_id: Option<String>,
        /// Done only when the target reaches this state: `serving` (group.put: a member this
        /// op wrote holds a live grant). The op waits as WAITING_REMOTE meanwhile.
        #[arg(long = "await", value_name = "STATE")]
        await_for: Option<String>,
        /// How long the target gives the awaited state, from its 202 (default 10 minutes).
        #[arg(long, requires = "await_for")]
        await_ms: Option<u64>,
    },
    /// One op: status, attempts, last error, result.
    Status { op_id: String },
    /// Ops in one status, newest first.
    List {
        #[arg(long)]
        status: String,
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
    /// Put a FAILED op back to PENDING (conditional) and enqueue it.
    Retry { op_id: String },
    /// Cancel an op: CANCELLED at once if it was never sent, or if it is waiting on the target
    /// (the wait stops; the effect stays). Otherwise its next attempt asks the target for a
    /// tombstone: CANCELLED if the target had not received it, else its real outcome.
    Cancel { op_id: String },
    /// The target regions as this region's workers see them: open (its ops are held until a
    /// probe finds it alive) or closed, the probes, the failure that opened it, and the calls
    /// counted over the last 10 and 30 s. Every region with a record unless some are named.
    Regions {
        /// Only these target regions (repeat the flag).
        #[arg(long = "target-region")]
        target_regions: Vec<String>,
    },
    /// Follow an op until it is SUCCEEDED (exit 0) or FAILED or CANCELLED (exit 1), printing
    /// each change, the target's state of a waiting op included.
    Wait {
        op_id: String,
        /// Give up after this many seconds (exit 2).
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
}

fn op_id(raw: &str) -> Result<OpId> {
    OpId::parse(raw).map_err(|e| anyhow!("{e}"))
}

/// The payload from the file or the flags.
fn payload(
    kind: &str,
    resource: &str,
    file: Option<&str>,
    members: &[String],
    lease_ms: Option<u64>,
) -> Result<Value> {
    if let Some(path) = file {
        let text = if path == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading the payload from stdin")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
        };
        return serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"));
    }
    match kind {
        "group.put" => {
            let lease_ms = lease_ms.context("group.put needs --lease-ms (or --payload-file)")?;
            if members.is_empty() {
                bail!("group.put needs at least one --member host_id:az:priority");
            }
            let members = members
                .iter()
                .map(|m| {
                    let (host, member) = crate::parse_member(m)?;
                    Ok(json!({"host_id": host, "az": member.az, "priority": member.priority}))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(json!({"group_id": resource, "lease_ms": lease_ms, "members": members}))
        }
        "group.delete" => Ok(json!({"group_id": resource})),
        other => bail!("kind {other}: give the payload with --payload-file"),
    }
}

fn view(item: &WorkItem) -> Value {
    let mut v = json!(item);
    if let Some(r) = item
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
    {
        v["result"] = r;
    }
    v["payload"] = serde_json::from_str(&item.payload).unwrap_or(Value::Null);
    v
}

fn print_item(item: &WorkItem) {
    println!("op_id      {}", item.op_id);
    println!("status     {}", item.status);
    println!("kind       {}", item.kind);
    println!(
        "route      {} -> {}",
        item.source_region, item.target_region
    );
    println!("resource   {} (seq {})", item.resource, item.seq);
    println!("attempts   {} of {}", item.attempts, item.max_attempts);
    if let Some(e) = &item.last_error {
        println!("last_error {e}");
    }
    if let Some(condition) = &item.await_for {
        println!(
            "await      {condition} within {} ms of the target's 202",
            item.await_ms.unwrap_or_default()
        );
    }
    if let Some(state) = item.remote_state {
        println!("remote     {state} (polls {})", item.polls);
    }
    if item.cancel_requested {
        println!("cancel     requested: the next attempt asks the target for a tombstone");
    }
    if let (Some(reason), Some(since)) = (&item.held, item.held_since_ms) {
        let until = item
            .retry_at_ms
            .map(|at| {
                format!(
                    ", until at least +{} ms",
                    at.saturating_sub(item.created_at_ms)
                )
            })
            .unwrap_or_default();
        println!(
            "held       {reason} since +{} ms{until} (no attempts spent while held)",
            since.saturating_sub(item.created_at_ms)
        );
    }
    if let Some(r) = &item.result {
        println!("result     {r}");
    }
    println!("history");
    for t in &item.history {
        println!(
            "  +{:>8} ms  {}",
            t.at_ms.saturating_sub(item.created_at_ms),
            t.status
        );
    }
}

pub async fn run(
    command: OpsCommand,
    settings: OpsSettings,
    sdk: &aws_config::SdkConfig,
    json_output: bool,
) -> Result<()> {
    let store = || -> Result<WorkItemStore> {
        let table = settings.work_items_table.clone().context(
            "no work items table: pass --work-items-table or set TENURE_WORK_ITEMS_TABLE \
             (the stack's WorkItemsTable output)",
        )?;
        Ok(WorkItemStore::new(
            tenure::aws::dynamodb_client(sdk, None),
            table,
        ))
    };
    let queue = || -> Result<WorkQueue> {
        let url = settings.queue_url.clone().context(
            "no queue: pass --queue-url or set TENURE_IRC_QUEUE_URL (the stack's IrcQueueUrl output)",
        )?;
        Ok(WorkQueue::new(aws_sdk_sqs::Client::new(sdk), url))
    };
    let policy = RetryPolicy::from_env(&tenure::config::ProcessEnv)?;
    match command {
        OpsCommand::Submit {
            target_region,
            kind,
            resource,
            payload_file,
            member,
            lease_ms,
            op_id: given,
            await_for,
            await_ms,
        } => {
            let region = sdk.region().context("no AWS region")?.to_string();
            let submitter = Submitter {
                store: store()?,
                queue: queue()?,
                kinds: Kinds::shipped(),
                policy,
                region: Region::parse(&region).map_err(|e| anyhow!("AWS_REGION: {e}"))?,
                clock: SystemClock,
            };
            let payload = payload(&kind, &resource, payload_file.as_deref(), &member, lease_ms)?;
            let item = submitter
                .submit(SubmitRequest {
                    op_id: given.as_deref().map(op_id).transpose()?,
                    target_region: Region::parse(&target_region)
                        .map_err(|e| anyhow!("--target-region: {e}"))?,
                    kind,
                    resource,
                    payload,
                    await_for,
                    await_ms,
                })
                .await?;
            if json_output {
                println!("{}", view(&item));
            } else {
                println!("{}", item.op_id);
            }
        }
        OpsCommand::Status { op_id: raw } => {
            let item = store()?
                .get(&op_id(&raw)?)
                .await?
                .with_context(|| format!("no op {raw}"))?;
            if json_output {
                println!("{}", view(&item));
            } else {
                print_item(&item);
            }
        }
        OpsCommand::List { status, limit } => {
            let status = Status::parse(&status).with_context(|| {
                format!(
                    "--status {status}: one of {}",
                    Status::ALL.map(|s| s.as_str()).join(", ")
                )
            })?;
            let items = store()?.list(status, limit).await?;
            if json_output {
                println!("{}", json!(items.iter().map(view).collect::<Vec<_>>()));
            } else {
                println!(
                    "{:<26} {:<14} {:<12} {:<14} {:<28} {:>8}",
                    "OP_ID", "STATUS", "KIND", "TARGET", "RESOURCE", "ATTEMPTS"
                );
                for i in &items {
                    println!(
                        "{:<26} {:<14} {:<12} {:<14} {:<28} {:>8}",
                        i.op_id, i.status, i.kind, i.target_region, i.resource, i.attempts
                    );
                }
            }
        }
        OpsCommand::Retry { op_id: raw } => {
            let id = op_id(&raw)?;
            match store()?
                .retry(&id, SystemClock.now_ms(), policy.redispatch_after_ms)
                .await?
            {
                RetryOutcome::Requeued(item) => {
                    queue()?
                        .send(
                            &item,
                            &format!("{}-retry-{}", item.op_id, item.updated_at_ms),
                        )
                        .await?;
                    if json_output {
                        println!("{}", view(&item));
                    } else {
                        println!("{} is PENDING again", item.op_id);
                    }
                }
                RetryOutcome::NotFailed(item) => {
                    bail!(
                        "{} is {}, not FAILED: only failed ops are retried",
                        item.op_id,
                        item.status
                    )
                }
                RetryOutcome::Missing => bail!("no op {raw}"),
            }
        }
        OpsCommand::Cancel { op_id: raw } => {
            let id = op_id(&raw)?;
            let outcome = store()?
                .cancel(&id, SystemClock.now_ms(), policy.redispatch_after_ms)
                .await?;
            let (item, said) = match outcome {
                CancelOutcome::Cancelled(item) => (item, "CANCELLED".to_owned()),
                CancelOutcome::Requested(item) => {
                    // Its message may be waiting out a backoff or a hold: send one now.
                    queue()?
                        .send(
                            &item,
                            &format!("{}-cancel-{}", item.op_id, SystemClock.now_ms()),
                        )
                        .await?;
                    let said = "cancel requested: it was sent before, so its next attempt asks \
                                the target for a tombstone (CANCELLED if the target never \
                                received it, otherwise its real outcome); follow it with \
                                `tenurectl ops wait`"
                        .to_owned();
                    (item, said)
                }
                CancelOutcome::Finished(item) => {
                    let said = format!("already {}: nothing to cancel", item.status);
                    (item, said)
                }
                CancelOutcome::Missing => bail!("no op {raw}"),
            };
            if json_output {
                println!("{}", view(&item));
            } else {
                println!("{}: {said}", item.op_id);
            }
        }
        OpsCommand::Regions { target_regions } => {
            regions(&settings, sdk, &target_regions, json_output).await?
        }
        OpsCommand::Wait {
            op_id: raw,
            timeout_s,
        } => {
            let id = op_id(&raw)?;
            let started = Instant::now();
            let mut shown = 0;
            let mut seen_remote = None;
            let store = store()?;
            loop {
                let item = store
                    .get(&id)
                    .await?
                    .with_context(|| format!("no op {raw}"))?;
                // Every step from the item's own trail, so brief states are not missed.
                for t in item.history.iter().skip(shown) {
                    let after = t.at_ms.saturating_sub(item.created_at_ms);
                    let remote = (t.status == Status::WaitingRemote)
                        .then_some("the target applied it; waiting for it to be served");
                    if json_output {
                        println!("{}", json!({"status": t.status, "after_ms": after}));
                    } else {
                        println!(
                            "  +{after:>6} ms  {}{}",
                            t.status,
                            remote.map(|r| format!("  ({r})")).unwrap_or_default()
                        );
                    }
                }
                shown = item.history.len();
                if item.remote_state != seen_remote {
                    if let Some(state) = item.remote_state {
                        let after = item.updated_at_ms.saturating_sub(item.created_at_ms);
                        if json_output {
                            println!("{}", json!({"remote_state": state, "after_ms": after}));
                        } else {
                            println!("  +{after:>6} ms  remote {state}");
                        }
                    }
                    seen_remote = item.remote_state;
                }
                match item.status {
                    Status::Succeeded => return Ok(()),
                    Status::Failed | Status::Cancelled => {
                        eprintln!(
                            "{raw} {} after {} attempts: {}",
                            item.status,
                            item.attempts,
                            item.last_error
                                .as_deref()
                                .or(item.result.as_deref())
                                .unwrap_or("no reason recorded")
                        );
                        std::process::exit(1)
                    }
                    _ if started.elapsed() > Duration::from_secs(timeout_s) => {
                        eprintln!("{raw} still {} after {timeout_s} s", item.status);
                        std::process::exit(2);
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }
    Ok(())
}

/// `ops regions`: each target region's health record as the workers read it.
async fn regions(
    settings: &OpsSettings,
    sdk: &aws_config::SdkConfig,
    named: &[String],
    json_output: bool,
) -> Result<()> {
    let table = settings.region_health_table.clone().context(
        "no region health table: pass --region-health-table or set TENURE_REGION_HEALTH_TABLE \
         (the stack's RegionHealthTable output)",
    )?;
    let records = RegionHealthTable::new(tenure::aws::dynamodb_client(sdk, None), table);
    let regions: Vec<Region> = if named.is_empty() {
        records.regions().await?.into_iter().collect()
    } else {
        named
            .iter()
            .map(|r| Region::parse(r).map_err(|e| anyhow!("--target-region {r}: {e}")))
            .collect::<Result<_>>()?
    };
    // The stack's windows and ramp, from tenurectl's environment like the retry policy.
    let policy = health_policy(&tenure::config::ProcessEnv)?;
    let now = SystemClock.now_ms();
    let mut views = Vec::new();
    for region in regions {
        let health = records
            .read(&region, now.saturating_sub(policy.window_ms))
            .await?;
        views.push(RegionView::of(region, &health, &policy, now));
    }
    if json_output {
        println!("{}", json!(views));
        return Ok(());
    }
    if views.is_empty() {
        println!("no target region has a health record: none was called lately or ever opened");
        return Ok(());
    }
    println!(
        "{:<16} {:<8} {:>10} {:>7} {:>11} {:>13} {:>13}  REASON",
        "REGION", "STATE", "OPENED", "PROBES", "NEXT_PROBE", "FAILED_10S", "FAILED_30S"
    );
    for v in &views {
        let opened = v.opened_at_ms.map_or("-".to_owned(), |at| {
            format!("{} s ago", now.saturating_sub(at) / 1_000)
        });
        let next_probe = v.next_probe_at_ms.map_or("-".to_owned(), |at| {
            format!("in {} s", at.saturating_sub(now) / 1_000)
        });
        let failed = |c: &CallCounts| format!("{}/{}", c.failures, c.successes + c.failures);
        println!(
            "{:<16} {:<8} {:>10} {:>7} {:>11} {:>13} {:>13}  {}",
            v.region,
            v.state,
            opened,
            v.probes,
            next_probe,
            failed(&v.rate_window),
            failed(&v.window),
            v.reason.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

/// One line of `ops regions`.
#[derive(serde::Serialize)]
struct RegionView {
    region: Region,
    /// `open` (ops held), `resuming` (closed, held ops coming back over the ramp) or `closed`.
    state: &'static str,
    opened_at_ms: Option<Millis>,
    recovered_at_ms: Option<Millis>,
    probes: u32,
    next_probe_at_ms: Option<Millis>,
    reason: Option<String>,
    /// Calls over the failure-rate window (10 s).
    rate_window: CallCounts,
    /// Calls over the whole window (30 s).
    window: CallCounts,
}

impl RegionView {
    fn of(region: Region, health: &RegionHealth, policy: &HealthPolicy, now: Millis) -> Self {
        let state = &health.state;
        let resuming = state
            .recovered_at_ms
            .is_some_and(|at| now.saturating_sub(at) < policy.resume_ramp_ms);
        Self {
            region,
            state: if state.open {
                "open"
            } else if resuming {
                "resuming"
            } else {
                "closed"
            },
            opened_at_ms: (state.opened_at_ms > 0).then_some(state.opened_at_ms),
            recovered_at_ms: state.recovered_at_ms,
            probes: state.probes,
            next_probe_at_ms: state.open.then_some(state.next_probe_at_ms),
            reason: state.open.then(|| state.reason.clone()).flatten(),
            rate_window: policy.window_counts(
                &health.buckets,
                now,
                policy.rate_window_ms.min(policy.window_ms),
            ),
            window: policy.window_counts(&health.buckets, now, policy.window_ms),
        }
    }
}
