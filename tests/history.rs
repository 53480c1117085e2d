//! Leadership history end to end: grants changed through the deployed lease-check reach
//! lease-history through the Leases table's stream, land in `LeaseHistory` in order with why
//! each previous grant ended, and arrive as `Lease Holder Change` events on the default bus
//! (through a rule this test creates, delivering to a queue of its own).

use anyhow::{ensure, Result};
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
use tenure_testkit::events::EventQueue;
use tenure_testkit::{find, healthy_check, stacks};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grant_change_is_kept_in_order_with_its_reason_and_published() -> Result<()> {
    let all = stacks("TENURE_E2E_REGIONS")?;
    let stack = find(&all, "us-east-1")?;
    let tag = format!("{}-{}", std::process::id(), SystemClock.now_ms());
    let queue = EventQueue::create(
        &stack,
        &format!("history-{tag}"),
        EVENT_SOURCE,
        EVENT_DETAIL_TYPE,
    )
    .await?;
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
        for event in queue.receive(Duration::from_secs(1)).await? {
            ensure!(event["source"] == EVENT_SOURCE && event["detail-type"] == EVENT_DETAIL_TYPE);
            let entry: HistoryEntry = serde_json::from_value(event["detail"].clone())?;
            if entry.group_id == group && !seen.insert(entry.seq) {
                duplicates += 1;
            }
        }
    }
    let wanted: BTreeSet<u64> = entries.iter().map(|e| e.seq).collect();
    ensure!(
        seen == wanted,
        "events for seq {seen:?}, history has {wanted:?} ({duplicates} duplicates)"
    );
    queue.delete().await?;
    Ok(())
}
