//! Leadership history end to end: grants changed through the deployed lease-check reach
//! lease-history through the Leases table's stream, land in `LeaseHistory` in order with why
//! each previous grant ended, and arrive as `Lease Holder Change` events on the default bus
//! (through a rule this test creates, delivering to a queue of its own).

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tenure::clock::{Clock, SystemClock};
use tenure::ids::{GroupId, HostId};
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::history::{Change, HistoryEntry, PreviousEnd};
use tenure::lease::history_store::{HistoryStore, EVENT_DETAIL_TYPE, EVENT_SOURCE};
use tenure::lease::record::{Epoch, Member};
use tenure::lease::service::{GroupEntry, LeaseService};
use tenure::lease::LeaseConfig;
use tenure_testkit::{find, healthy_check, stacks, Stack};

/// A rule on the default bus delivering `tenure.lease` events to a new queue.
async fn event_queue(stack: &Stack, tag: &str) -> Result<(aws_sdk_sqs::Client, String)> {
    let sdk = stack.sdk().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("history-events-{tag}"))
        .send()
        .await?
        .queue_url()
        .context("queue url")?
        .to_owned();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .context("queue arn")?;
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let rule = format!("history-{tag}");
    events
        .put_rule()
        .name(&rule)
        .event_pattern(
            serde_json::json!({"source": [EVENT_SOURCE], "detail-type": [EVENT_DETAIL_TYPE]})
                .to_string(),
        )
        .send()
        .await?;
    events
        .put_targets()
        .rule(&rule)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(queue_arn)
                .build()?,
        )
        .send()
        .await?;
    Ok((sqs, queue_url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grant_change_is_kept_in_order_with_its_reason_and_published() -> Result<()> {
    let all = stacks("TENURE_E2E_REGIONS")?;
    let stack = find(&all, "us-east-1")?;
    let tag = format!("{}-{}", std::process::id(), SystemClock.now_ms());
    let (sqs, queue_url) = event_queue(&stack, &tag).await?;
    let sdk = stack.sdk().await;
    let dynamodb = tenure::aws::dynamodb_client(&sdk, None);
    let service = LeaseService::new(
        DynamoLeaseStore::new(
            dynamodb.clone(),
            stack.output("HostsTable")?,
            stack.output("LeasesTable")?,
        ),
        LeaseConfig::default(),
        SystemClock,
    );
    let history = HistoryStore::new(
        dynamodb,
        stack.output("LeaseHistoryTable")?,
        stack.output("HostsTable")?,
        86_400_000,
    );
    let a = HostId::parse(&format!("hist-a-{tag}"))?;
    let b = HostId::parse(&format!("hist-b-{tag}"))?;
    let group = GroupId::parse(&format!("hist-{tag}"))?;
    service
        .create_group(
            group.clone(),
            10_000,
            BTreeMap::from([
                (a.clone(), Member::new("use1-az1", 2)),
                (b.clone(), Member::new("use1-az2", 1)),
            ]),
        )
        .await?;
    let client = stack.lease_check().await?;
    let ours = healthy_check(std::slice::from_ref(&group));
    // a takes the group (epoch 1) and hands it over; b takes it (epoch 2).
    let first = client.check_host(&a, &ours).await?;
    ensure!(
        serde_json::to_value(&first)?["groups"][0]["epoch"] == 1,
        "a did not take the group: {first:?}"
    );
    client.check_host(&b, &ours).await?;
    let released = client
        .release_host(&a, &[(group.clone(), Epoch(1))])
        .await?;
    ensure!(
        matches!(&released.groups[..], [GroupEntry::Answer(_)]),
        "{released:?}"
    );
    let taken = client.check_host(&b, &ours).await?;
    ensure!(
        serde_json::to_value(&taken)?["groups"][0]["writable"] == Value::Bool(true),
        "b did not take the group: {taken:?}"
    );
    // b dies; a, still a member, finds its lease lapsed, revokes it and takes over (epoch 3).
    let cfg = LeaseConfig::default();
    let deadline = SystemClock.now_ms() + cfg.lease_ms + cfg.clock_skew_ms + 20_000;
    loop {
        let answer = client.check_host(&a, &ours).await?;
        if serde_json::to_value(&answer)?["groups"][0]["epoch"] == 3 {
            break;
        }
        ensure!(
            SystemClock.now_ms() < deadline,
            "a never took over: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(cfg.poll_interval_ms)).await;
    }

    let expected = 4;
    let deadline = SystemClock.now_ms() + 30_000;
    let entries: Vec<HistoryEntry> = loop {
        let entries = history.list(&group, 100).await?;
        if entries.len() >= expected || SystemClock.now_ms() > deadline {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let summary: Vec<(Change, u64, Option<&str>)> = entries
        .iter()
        .map(|e| (e.change, e.epoch.0, e.holder.as_ref().map(|h| h.as_str())))
        .collect();
    ensure!(
        summary
            == [
                (Change::Acquired, 1, Some(a.as_str())),
                (Change::Released, 1, Some(a.as_str())),
                (Change::Acquired, 2, Some(b.as_str())),
                (Change::Acquired, 3, Some(a.as_str())),
            ],
        "history: {entries:#?}"
    );
    ensure!(entries[0].previous == Some(PreviousEnd::FirstHolder));
    ensure!(!entries[1].drained);
    ensure!(
        entries[2].previous
            == Some(PreviousEnd::Released {
                holder: a.clone(),
                epoch: Epoch(1)
            })
    );
    ensure!(
        entries[3].previous
            == Some(PreviousEnd::Revoked {
                holder: b.clone(),
                epoch: Epoch(2),
                host_epoch: Epoch(0)
            }),
        "{:?}",
        entries[3].previous
    );
    ensure!(entries.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));

    // Every entry arrives as an event, at least once.
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut duplicates = 0;
    let deadline = SystemClock.now_ms() + 30_000;
    while seen.len() < expected && SystemClock.now_ms() < deadline {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        for message in received.messages() {
            let event: Value = serde_json::from_str(message.body().unwrap_or("null"))?;
            ensure!(event["source"] == EVENT_SOURCE && event["detail-type"] == EVENT_DETAIL_TYPE);
            let detail = match &event["detail"] {
                Value::String(text) => serde_json::from_str(text)?,
                other => other.clone(),
            };
            let entry: HistoryEntry = serde_json::from_value(detail)?;
            if entry.group_id == group && !seen.insert(entry.seq) {
                duplicates += 1;
            }
            if let Some(receipt) = message.receipt_handle() {
                sqs.delete_message()
                    .queue_url(&queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await?;
            }
        }
    }
    let wanted: BTreeSet<u64> = entries.iter().map(|e| e.seq).collect();
    ensure!(
        seen == wanted,
        "events for seq {seen:?}, history has {wanted:?} ({duplicates} duplicates)"
    );
    sqs.delete_queue().queue_url(&queue_url).send().await?;
    Ok(())
}
