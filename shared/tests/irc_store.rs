//! The coordinator's stores against a real DynamoDB implementation (MiniStack): the claim,
//! completion and dispatch races with concurrent writers, the sweep query, and the remote's
//! exactly-once apply under concurrent duplicate deliveries.

mod support;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use serde_json::{json, Value};
use std::sync::Arc;
use support::*;
use tenure::irc::inbound::{ApplyError, InboundStore};
use tenure::irc::kinds::Kinds;
use tenure::irc::remote::OperationRequest;
use tenure::irc::store::{
    ClaimOutcome, CompleteOutcome, Completion, NewOp, RetryOutcome, SubmitOutcome, WorkItemStore,
    STATUS_INDEX, UNPUBLISHED_INDEX,
};
use tenure::irc::{OpId, Region, Status, WorkItem};
use tenure::lease::LeaseConfig;
use tokio::sync::Barrier;

const T0: u64 = 1_800_000_000_000;

fn attr(name: &str, kind: ScalarAttributeType) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .unwrap()
}

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .unwrap()
}

async fn work_items() -> WorkItemStore {
    let client = dynamodb(None).await;
    let name = unique_name("tenure-work");
    client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("op_id", ScalarAttributeType::S))
        .attribute_definitions(attr("status", ScalarAttributeType::S))
        .attribute_definitions(attr("due_at_ms", ScalarAttributeType::N))
        .attribute_definitions(attr("unpublished", ScalarAttributeType::S))
        .attribute_definitions(attr("updated_at_ms", ScalarAttributeType::N))
        .key_schema(key("op_id", KeyType::Hash))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(UNPUBLISHED_INDEX)
                .key_schema(key("unpublished", KeyType::Hash))
                .key_schema(key("updated_at_ms", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(STATUS_INDEX)
                .key_schema(key("status", KeyType::Hash))
                .key_schema(key("due_at_ms", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("create table: {e:?} (endpoint {})", endpoint()));
    WorkItemStore::new(client, name)
}

fn op(resource: &str) -> NewOp {
    NewOp {
        op_id: OpId::new(),
        source_region: Region::parse("us-east-1").unwrap(),
        target_region: Region::parse("eu-west-1").unwrap(),
        kind: "group.put".into(),
        resource: resource.into(),
        payload: json!({"group_id": resource}).to_string(),
        max_attempts: 5,
        await_for: None,
        await_ms: None,
    }
}

async fn submitted(store: &WorkItemStore, resource: &str) -> WorkItem {
    match store.submit(op(resource), T0, 5_000).await.unwrap() {
        SubmitOutcome::Submitted(item) => item,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn submit_is_idempotent_and_numbers_each_resource_in_order() {
    let store = work_items().await;
    let first = op("g1");
    let a = match store.submit(first.clone(), T0, 5_000).await.unwrap() {
        SubmitOutcome::Submitted(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (a.status, a.seq, a.due_at_ms),
        (Status::Pending, 1, T0 + 5_000)
    );
    assert!(matches!(
        store.submit(first, T0 + 1, 5_000).await.unwrap(),
        SubmitOutcome::AlreadySubmitted(i) if i == a
    ));
    assert_eq!(submitted(&store, "g1").await.seq, 2);
    assert_eq!(submitted(&store, "g2").await.seq, 1);
}

/// `copies` claims of one op at `now`, released together; their outcomes.
async fn racing_claims(
    store: &WorkItemStore,
    op_id: &OpId,
    copies: usize,
    now: u64,
    skew_ms: u64,
) -> Vec<ClaimOutcome> {
    let barrier = Arc::new(Barrier::new(copies));
    let claims = (0..copies).map(|n| {
        let (store, barrier, id) = (store.clone(), barrier.clone(), op_id.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            store
                .claim(&id, &format!("copy-{n}"), now, 60_000, skew_ms)
                .await
                .unwrap()
        })
    });
    futures::future::join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// The one claim that won a race; every other copy found it busy.
fn sole_winner(outcomes: &[ClaimOutcome]) -> &WorkItem {
    let won: Vec<&WorkItem> = outcomes
        .iter()
        .filter_map(|o| match o {
            ClaimOutcome::Claimed(i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(won.len(), 1, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, ClaimOutcome::Claimed(_) | ClaimOutcome::Busy(_))));
    won[0]
}

#[tokio::test]
async fn eight_concurrent_claims_one_winner() {
    let store = work_items().await;
    let item = submitted(&store, "g").await;
    let outcomes = racing_claims(&store, &item.op_id, 8, T0 + 10, 0).await;
    let won = sole_winner(&outcomes);
    assert_eq!((won.status, won.attempts), (Status::InFlight, 1));
}

/// Every status write raises `status_version` by exactly one and puts the item on the
/// unpublished index; marking a version published takes it off only if no newer write came.
#[tokio::test]
async fn each_status_change_is_one_version_and_stays_unpublished_until_its_latest_is_published() {
    let store = work_items().await;
    let item = submitted(&store, "g").await;
    assert_eq!((item.status_version, item.published_version), (1, 0));
    let claimed = match store
        .claim(&item.op_id, "a", T0 + 1, 60_000, 0)
        .await
        .unwrap()
    {
        ClaimOutcome::Claimed(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(claimed.status_version, 2);
    let retry = Completion::Retry {
        error: "HTTP 503".into(),
        retry_at_ms: T0 + 10,
        due_at_ms: T0 + 20,
        region_hold: false,
    };
    let retrying = match store
        .complete(&item.op_id, "a", &retry, T0 + 2)
        .await
        .unwrap()
    {
        CompleteOutcome::Completed(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(retrying.status_version, 3);
    assert!(store
        .mark_dispatched(&retrying, T0 + 30, 5_000)
        .await
        .unwrap());
    assert_eq!(
        store
            .get(&item.op_id)
            .await
            .unwrap()
            .unwrap()
            .status_version,
        4
    );

    let waiting = store.unpublished(T0 + 30, 10).await.unwrap();
    assert_eq!(
        waiting.iter().map(|i| &i.op_id).collect::<Vec<_>>(),
        vec![&item.op_id]
    );
    assert!(
        store.unpublished(T0 - 1, 10).await.unwrap().is_empty(),
        "changed after"
    );
    // An older version's publisher is too late to take it off the index ...
    assert!(!store.mark_published(&item.op_id, 3).await.unwrap());
    assert_eq!(store.unpublished(T0 + 30, 10).await.unwrap().len(), 1);
    // ... the latest's is not, once.
    assert!(store.mark_published(&item.op_id, 4).await.unwrap());
    assert!(!store.mark_published(&item.op_id, 4).await.unwrap());
    assert!(store.unpublished(T0 + 30, 10).await.unwrap().is_empty());
    let published = store.get(&item.op_id).await.unwrap().unwrap();
    assert_eq!(
        (published.status_version, published.published_version),
        (4, 4)
    );
}

/// The sweep behind the stream: items whose status change waited unpublished past the grace
/// get their current version published and leave the index; recent ones are left to the
/// stream; a second sweep finds nothing.
#[tokio::test]
async fn the_sweep_publishes_what_the_stream_left_and_only_once_it_waited() {
    use tenure::event_bus::EventBus;
    use tenure::irc::events_publisher::StatusPublisher;
    let store = work_items().await;
    let publisher = StatusPublisher {
        store: store.clone(),
        bus: EventBus::new(aws_sdk_eventbridge::Client::new(&sdk_config().await)),
    };
    let old = submitted(&store, "old").await; // changed at T0
    let claimed = match store
        .claim(&old.op_id, "w", T0 + 1, 60_000, 0)
        .await
        .unwrap()
    {
        ClaimOutcome::Claimed(i) => i,
        other => panic!("{other:?}"),
    };
    let recent = match store
        .submit(op("recent"), T0 + 50_000, 5_000)
        .await
        .unwrap()
    {
        SubmitOutcome::Submitted(i) => i,
        other => panic!("{other:?}"),
    };
    // At T0 + 60 s with 30 s of grace: only the old op's change has waited long enough.
    assert_eq!(publisher.sweep(T0 + 60_000, 30_000, 10).await.unwrap(), 1);
    let published = store.get(&old.op_id).await.unwrap().unwrap();
    assert_eq!(published.published_version, claimed.status_version);
    assert_eq!(
        store
            .get(&recent.op_id)
            .await
            .unwrap()
            .unwrap()
            .published_version,
        0
    );
    assert_eq!(publisher.sweep(T0 + 60_000, 30_000, 10).await.unwrap(), 0);
    assert_eq!(
        publisher.sweep(T0 + 90_000, 30_000, 10).await.unwrap(),
        1,
        "the recent one, later"
    );
}

/// A publisher marking version N published while a worker writes version N+1: whichever comes
/// first, the item ends on the unpublished index with N+1 to publish.
#[tokio::test]
async fn a_publish_racing_the_next_status_change_never_hides_it() {
    let store = work_items().await;
    for round in 0..8 {
        let item = submitted(&store, &format!("race-{round}")).await;
        let barrier = Arc::new(Barrier::new(2));
        let marker = {
            let (store, barrier, id) = (store.clone(), barrier.clone(), item.op_id.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.mark_published(&id, 1).await.unwrap()
            })
        };
        let claimer = {
            let (store, barrier, id) = (store.clone(), barrier.clone(), item.op_id.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.claim(&id, "w", T0 + 1, 60_000, 0).await.unwrap()
            })
        };
        let (_, claimed) = (marker.await.unwrap(), claimer.await.unwrap());
        assert!(matches!(claimed, ClaimOutcome::Claimed(_)), "{claimed:?}");
        let now = store.get(&item.op_id).await.unwrap().unwrap();
        assert_eq!(now.status_version, 2);
        assert!(
            store
                .unpublished(T0 + 1, 100)
                .await
                .unwrap()
                .iter()
                .any(|i| i.op_id == item.op_id),
            "version 2 of {} must stay unpublished: {now:?}",
            item.op_id
        );
    }
}

/// Eight copies of a RETRYING op's message racing to claim it: before its backoff ends (less
/// the skew) every one is refused and no attempt is spent; after it, exactly one wins.
#[tokio::test]
async fn a_retry_is_claimed_once_and_only_after_its_backoff_by_racing_copies() {
    const SKEW: u64 = 200;
    let store = work_items().await;
    let item = submitted(&store, "g").await;
    assert!(matches!(
        store
            .claim(&item.op_id, "first", T0, 60_000, SKEW)
            .await
            .unwrap(),
        ClaimOutcome::Claimed(_)
    ));
    let retry_at = T0 + 5_000;
    let retry = Completion::Retry {
        error: "HTTP 503".into(),
        retry_at_ms: retry_at,
        due_at_ms: retry_at + 60_000,
        region_hold: false,
    };
    let retrying = match store
        .complete(&item.op_id, "first", &retry, T0 + 1)
        .await
        .unwrap()
    {
        CompleteOutcome::Completed(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(retrying.retry_at_ms, Some(retry_at));

    let early = racing_claims(&store, &item.op_id, 8, retry_at - SKEW - 1, SKEW).await;
    assert!(
        early
            .iter()
            .all(|o| matches!(o, ClaimOutcome::NotYet(i) if i.attempts == 1)),
        "{early:?}"
    );
    let on_time = racing_claims(&store, &item.op_id, 8, retry_at - SKEW, SKEW).await;
    let won = sole_winner(&on_time);
    assert_eq!((won.status, won.attempts), (Status::InFlight, 2));
}

#[tokio::test]
async fn only_the_claim_holder_completes_and_a_finished_op_is_not_claimed_again() {
    let store = work_items().await;
    let item = submitted(&store, "g").await;
    assert!(matches!(
        store.claim(&item.op_id, "a", T0, 60_000, 0).await.unwrap(),
        ClaimOutcome::Claimed(_)
    ));
    let done = Completion::Succeeded {
        result: "{}".into(),
    };
    assert!(matches!(
        store.complete(&item.op_id, "b", &done, T0 + 1).await.unwrap(),
        CompleteOutcome::ClaimLost(Some(i)) if i.status == Status::InFlight
    ));
    let finished = match store
        .complete(&item.op_id, "a", &done, T0 + 2)
        .await
        .unwrap()
    {
        CompleteOutcome::Completed(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(finished.status, Status::Succeeded);
    assert_eq!(finished.claim_token, None);
    assert_eq!(
        finished
            .history
            .iter()
            .map(|t| t.status)
            .collect::<Vec<_>>(),
        [Status::Pending, Status::InFlight, Status::Succeeded]
    );
    assert!(matches!(
        store
            .claim(&item.op_id, "c", T0 + 3, 60_000, 0)
            .await
            .unwrap(),
        ClaimOutcome::Terminal(_)
    ));
    assert!(matches!(
        store.claim(&OpId::new(), "c", T0, 1, 0).await.unwrap(),
        ClaimOutcome::Missing
    ));
}

#[tokio::test]
async fn an_expired_claim_is_taken_over_and_its_late_completion_refused() {
    let store = work_items().await;
    let item = submitted(&store, "g").await;
    assert!(matches!(
        store
            .claim(&item.op_id, "dead", T0, 1_000, 0)
            .await
            .unwrap(),
        ClaimOutcome::Claimed(_)
    ));
    // Still live: busy.
    assert!(matches!(
        store
            .claim(&item.op_id, "next", T0 + 500, 1_000, 0)
            .await
            .unwrap(),
        ClaimOutcome::Busy(_)
    ));
    // The dispatcher's sweep finds it once the claim expired.
    assert!(store
        .due(Status::InFlight, T0 + 500, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .due(Status::InFlight, T0 + 1_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let next = match store
        .claim(&item.op_id, "next", T0 + 2_000, 1_000, 0)
        .await
        .unwrap()
    {
        ClaimOutcome::Claimed(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(next.attempts, 2);
    let late = Completion::Failed {
        error: "late".into(),
    };
    assert!(matches!(
        store
            .complete(&item.op_id, "dead", &late, T0 + 2_001)
            .await
            .unwrap(),
        CompleteOutcome::ClaimLost(_)
    ));
}

#[tokio::test]
async fn concurrent_sweeps_dispatch_an_item_once() {
    let store = work_items().await;
    let item = submitted(&store, "g").await;
    let due = store.due(Status::Pending, T0 + 5_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert!(store
        .due(Status::Pending, T0 + 4_999, 10)
        .await
        .unwrap()
        .is_empty());
    let barrier = Arc::new(Barrier::new(4));
    let marks = (0..4).map(|_| {
        let (store, barrier, seen) = (store.clone(), barrier.clone(), due[0].clone());
        tokio::spawn(async move {
            barrier.wait().await;
            store
                .mark_dispatched(&seen, T0 + 5_000, 5_000)
                .await
                .unwrap()
        })
    });
    let won = futures::future::join_all(marks)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(true)))
        .count();
    assert_eq!(won, 1);
    let now = store.get(&item.op_id).await.unwrap().unwrap();
    assert_eq!(
        (now.status, now.due_at_ms),
        (Status::Dispatched, T0 + 10_000)
    );
}

#[tokio::test]
async fn retry_moves_only_failed_ops_back_to_pending() {
    let store = work_items().await;
    let item = submitted(&store, "g").await;
    assert!(matches!(
        store.retry(&item.op_id, T0, 5_000).await.unwrap(),
        RetryOutcome::NotFailed(_)
    ));
    store.claim(&item.op_id, "a", T0, 60_000, 0).await.unwrap();
    store
        .complete(
            &item.op_id,
            "a",
            &Completion::Failed {
                error: "422".into(),
            },
            T0 + 1,
        )
        .await
        .unwrap();
    match store.retry(&item.op_id, T0 + 2, 5_000).await.unwrap() {
        RetryOutcome::Requeued(i) => assert_eq!((i.status, i.attempts), (Status::Pending, 0)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.retry(&OpId::new(), T0, 5_000).await.unwrap(),
        RetryOutcome::Missing
    ));
}

async fn inbound() -> (InboundStore, aws_sdk_dynamodb::Client, String) {
    let (store, client, leases, _hosts) = inbound_with_hosts().await;
    (store, client, leases)
}

/// The inbound store and the target's Leases and Hosts tables.
async fn inbound_with_hosts() -> (InboundStore, aws_sdk_dynamodb::Client, String, String) {
    let client = dynamodb(None).await;
    let inbound_table = create_table(&client, "op_id").await;
    let leases_table = create_table(&client, "group_id").await;
    let hosts_table = create_table(&client, "host_id").await;
    let store = InboundStore::new(
        client.clone(),
        inbound_table,
        leases_table.clone(),
        hosts_table.clone(),
        LeaseConfig::default(),
        Kinds::shipped(),
    );
    (store, client, leases_table, hosts_table)
}

fn put_request(op_id: &OpId, group: &str, seq: u64, lease_ms: u64) -> OperationRequest {
    OperationRequest {
        v: 1,
        op_id: op_id.clone(),
        source_region: Region::parse("us-east-1").unwrap(),
        kind: "group.put".into(),
        resource: group.into(),
        seq,
        payload: json!({"group_id": group, "lease_ms": lease_ms,
                        "members": [{"host_id": "a", "az": "az1", "priority": 1}]}),
        await_for: None,
        await_ms: None,
    }
}

async fn group_item(client: &aws_sdk_dynamodb::Client, table: &str, group: &str) -> Option<Value> {
    client
        .get_item()
        .table_name(table)
        .key(
            "group_id",
            aws_sdk_dynamodb::types::AttributeValue::S(group.into()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .map(|i| serde_dynamo::from_item(i).unwrap())
}

#[tokio::test]
async fn eight_concurrent_deliveries_of_one_op_apply_it_once() {
    let (store, client, leases) = inbound().await;
    let request = put_request(&OpId::new(), "g", 1, 10_000);
    let barrier = Arc::new(Barrier::new(8));
    let applies = (0..8).map(|_| {
        let (store, barrier, request) = (store.clone(), barrier.clone(), request.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            store.apply(&request, T0).await
        })
    });
    let mut outcomes: Vec<&'static str> = Vec::new();
    for r in futures::future::join_all(applies).await {
        match r.unwrap() {
            Ok(a) => outcomes.push(a.outcome),
            // A transaction that collided with another in flight: the caller retries.
            Err(ApplyError::Store(_)) => outcomes.push("retry"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        outcomes.iter().filter(|o| **o == "applied").count(),
        1,
        "{outcomes:?}"
    );
    let group = group_item(&client, &leases, "g").await.unwrap();
    assert_eq!(group["version"], 1, "one effect: {group}");
    // Every later delivery gets the stored result.
    let duplicate = store.apply(&request, T0 + 1).await.unwrap();
    assert_eq!(duplicate.outcome, "duplicate");
    // The first answer's result, in the same shape, not nested in another answer.
    let again = store.apply(&request, T0 + 2).await.unwrap();
    assert_eq!(again.first_outcome.as_deref(), Some("applied"));
    assert_eq!(again.result, duplicate.result);
    assert!(again.result.get("outcome").is_none(), "{}", again.result);
    assert!(again.result.get("group_id").is_some(), "{}", again.result);
}

#[tokio::test]
async fn an_older_seq_is_superseded_and_a_reused_op_id_conflicts() {
    let (store, client, leases) = inbound().await;
    let newer = put_request(&OpId::new(), "g", 3, 12_000);
    assert_eq!(store.apply(&newer, T0).await.unwrap().outcome, "applied");
    let older = put_request(&OpId::new(), "g", 2, 11_000);
    assert_eq!(
        store.apply(&older, T0 + 1).await.unwrap().outcome,
        "superseded"
    );
    let repeated = store.apply(&older, T0 + 2).await.unwrap();
    assert_eq!(repeated.outcome, "duplicate");
    assert_eq!(repeated.first_outcome.as_deref(), Some("superseded"));
    assert_eq!(
        repeated.result,
        serde_json::json!({"superseded": true, "seq": 2})
    );
    let group = group_item(&client, &leases, "g").await.unwrap();
    assert_eq!(
        (group["lease_ms"].as_u64(), group["version"].as_u64()),
        (Some(12_000), Some(1))
    );
    let reused = put_request(&newer.op_id, "g", 3, 15_000);
    assert!(matches!(
        store.apply(&reused, T0 + 3).await,
        Err(ApplyError::Conflict {
            code: "op_id_conflict",
            ..
        })
    ));
    let invalid = put_request(&OpId::new(), "g", 4, 1_000);
    assert!(
        matches!(store.apply(&invalid, T0 + 4).await, Err(ApplyError::Invalid(m)) if m.contains("target region"))
    );
}

#[tokio::test]
async fn group_delete_waits_for_a_free_or_lapsed_lease() {
    let (store, client, leases) = inbound().await;
    store
        .apply(&put_request(&OpId::new(), "g", 1, 10_000), T0)
        .await
        .unwrap();
    // Someone holds the lease until T0 + 10 s.
    client
        .update_item()
        .table_name(&leases)
        .key(
            "group_id",
            aws_sdk_dynamodb::types::AttributeValue::S("g".into()),
        )
        .update_expression("SET holder = :h, expires_at_ms = :e")
        .expression_attribute_values(":h", aws_sdk_dynamodb::types::AttributeValue::S("a".into()))
        .expression_attribute_values(
            ":e",
            aws_sdk_dynamodb::types::AttributeValue::N((T0 + 10_000).to_string()),
        )
        .send()
        .await
        .unwrap();
    let delete = |seq: u64| OperationRequest {
        v: 1,
        op_id: OpId::new(),
        source_region: Region::parse("us-east-1").unwrap(),
        kind: "group.delete".into(),
        resource: "g".into(),
        seq,
        payload: json!({"group_id": "g"}),
        await_for: None,
        await_ms: None,
    };
    assert!(matches!(
        store.apply(&delete(2), T0 + 5_000).await,
        Err(ApplyError::Conflict {
            code: "lease_held",
            ..
        })
    ));
    // Lapsed by more than the skew: deleted.
    assert_eq!(
        store.apply(&delete(3), T0 + 10_300).await.unwrap().outcome,
        "applied"
    );
    // A tombstone that keeps the epoch: no holder, no members.
    let tombstone = group_item(&client, &leases, "g").await.unwrap();
    assert_eq!(tombstone["deleted"], true, "{tombstone}");
    assert!(tombstone.get("holder").is_none() && tombstone.get("members").is_none());
    // Put again: the group is back, its epoch continuing from the tombstone's.
    client
        .update_item()
        .table_name(&leases)
        .key(
            "group_id",
            aws_sdk_dynamodb::types::AttributeValue::S("g".into()),
        )
        .update_expression("SET epoch = :e")
        .expression_attribute_values(":e", aws_sdk_dynamodb::types::AttributeValue::N("7".into()))
        .send()
        .await
        .unwrap();
    store
        .apply(&put_request(&OpId::new(), "g", 4, 10_000), T0 + 20_000)
        .await
        .unwrap();
    let back = group_item(&client, &leases, "g").await.unwrap();
    assert!(back.get("deleted").is_none(), "{back}");
    assert_eq!(
        (back["epoch"].as_u64(), back["members"]["a"]["az"].as_str()),
        (Some(7), Some("az1")),
        "{back}"
    );
}

// --- Holds and region health (IRC v2: a failing region fails alone) ---------------------

use tenure::irc::health::CallVerdict;
use tenure::irc::region_health::{HealthRecords, RegionHealthTable};
use tenure::irc::store::HoldOutcome;

/// A hold writes no status, no version, no history and spends no attempt; a claim after it
/// clears it; a hold never shortens the op's own backoff; one held past `max_hold_ms` fails.
#[tokio::test]
async fn a_hold_changes_no_status_and_one_held_too_long_fails_region_unavailable() {
    let store = work_items().await;
    let item = submitted(&store, "g").await;
    let held = match store
        .hold(&item.op_id, T0 + 10, T0 + 5_000, T0 + 65_000, 60_000)
        .await
        .unwrap()
    {
        HoldOutcome::Held(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (
            held.status,
            held.attempts,
            held.status_version,
            held.history.len()
        ),
        (Status::Pending, 0, 1, 1)
    );
    assert_eq!(held.held.as_deref(), Some("region_unavailable"));
    assert_eq!(
        (held.held_since_ms, held.retry_at_ms),
        (Some(T0 + 10), Some(T0 + 5_000))
    );
    // Held again later: the hold's start is kept.
    let again = store
        .hold(&item.op_id, T0 + 5_000, T0 + 15_000, T0 + 75_000, 60_000)
        .await
        .unwrap();
    assert!(
        matches!(again, HoldOutcome::Held(ref i) if i.held_since_ms == Some(T0 + 10)),
        "{again:?}"
    );
    // A hold shorter than the op's own backoff is refused: it must not shorten it.
    assert!(matches!(
        store
            .hold(&item.op_id, T0 + 6_000, T0 + 7_000, T0 + 67_000, 60_000)
            .await
            .unwrap(),
        HoldOutcome::Refused(ClaimOutcome::NotYet(_))
    ));
    // Past max_hold_ms: FAILED region_unavailable, one status change.
    let expired = match store
        .hold(
            &item.op_id,
            T0 + 10 + 60_000,
            T0 + 80_000,
            T0 + 140_000,
            60_000,
        )
        .await
        .unwrap()
    {
        HoldOutcome::Expired(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (expired.status, expired.status_version),
        (Status::Failed, 2)
    );
    assert!(expired
        .last_error
        .unwrap()
        .starts_with("region_unavailable"));
    assert!(expired.held.is_none());

    // A claim (the region recovered) clears the hold.
    let other = submitted(&store, "h").await;
    store
        .hold(&other.op_id, T0, T0 + 1_000, T0 + 61_000, 60_000)
        .await
        .unwrap();
    let claimed = match store
        .claim(&other.op_id, "t", T0 + 1_000, 60_000, 0)
        .await
        .unwrap()
    {
        ClaimOutcome::Claimed(i) => i,
        o => panic!("{o:?}"),
    };
    assert_eq!(
        (claimed.held, claimed.held_since_ms, claimed.attempts),
        (None, None, 1)
    );
}

/// The attempt that met an unavailable region is given back and the op held, in the same
/// conditional completion.
#[tokio::test]
async fn a_region_hold_completion_gives_the_attempt_back() {
    let store = work_items().await;
    let item = submitted(&store, "g").await;
    store.claim(&item.op_id, "t", T0, 60_000, 0).await.unwrap();
    let hold = Completion::Retry {
        error: "HTTP 503".into(),
        retry_at_ms: T0 + 5_000,
        due_at_ms: T0 + 65_000,
        region_hold: true,
    };
    let done = match store
        .complete(&item.op_id, "t", &hold, T0 + 100)
        .await
        .unwrap()
    {
        CompleteOutcome::Completed(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!((done.status, done.attempts), (Status::Retrying, 0));
    assert_eq!(
        (done.held.as_deref(), done.held_since_ms, done.retry_at_ms),
        (Some("region_unavailable"), Some(T0 + 100), Some(T0 + 5_000))
    );
}

async fn region_health() -> RegionHealthTable {
    let client = dynamodb(None).await;
    let name = unique_name("tenure-health");
    client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("region", ScalarAttributeType::S))
        .attribute_definitions(attr("slot", ScalarAttributeType::S))
        .key_schema(key("region", KeyType::Hash))
        .key_schema(key("slot", KeyType::Range))
        .send()
        .await
        .unwrap_or_else(|e| panic!("create table: {e:?} (endpoint {})", endpoint()));
    RegionHealthTable::new(client, name)
}

/// Eight workers count at once (every count lands), eight open at once (one opening wins and
/// its probe schedule stands), and two dispatchers record a probe of the same opening (one
/// counts).
#[tokio::test]
async fn racing_workers_count_every_call_open_a_region_once_and_probes_count_once() {
    let table = Arc::new(region_health().await);
    let eu = Region::parse("eu-west-1").unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let counts = (0..8u64).map(|n| {
        let (table, barrier, eu) = (table.clone(), barrier.clone(), eu.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            for _ in 0..5 {
                let verdict = if n % 2 == 0 {
                    CallVerdict::RegionFailure
                } else {
                    CallVerdict::Healthy
                };
                table.count(&eu, verdict, T0, T0 + 3_600_000).await.unwrap();
            }
        })
    });
    for c in futures::future::join_all(counts).await {
        c.unwrap();
    }
    let health = table.read(&eu, T0 - 30_000).await.unwrap();
    assert_eq!(health.buckets.len(), 1);
    assert_eq!(
        (health.buckets[0].successes, health.buckets[0].failures),
        (20, 20)
    );
    assert!(!health.state.open);
    // Buckets before the window are not read.
    table
        .count(&eu, CallVerdict::RegionFailure, T0 - 60_000, T0)
        .await
        .unwrap();
    assert_eq!(table.read(&eu, T0 - 30_000).await.unwrap().buckets.len(), 1);
    // A bucket with one kind of outcome only reads 0 for the other (not "many"): a window of
    // successes then one failure is not a failing region.
    let ap = Region::parse("ap-southeast-2").unwrap();
    for n in 0..10 {
        table
            .count(&ap, CallVerdict::Healthy, T0 - 20_000 + n, T0 + 3_600_000)
            .await
            .unwrap();
    }
    table
        .count(&ap, CallVerdict::RegionFailure, T0, T0 + 3_600_000)
        .await
        .unwrap();
    let window = table.read(&ap, T0 - 30_000).await.unwrap();
    let counted = window
        .buckets
        .iter()
        .fold((0, 0), |(s, f), b| (s + b.successes, f + b.failures));
    assert_eq!(counted, (10, 1), "{:?}", window.buckets);
    assert!(!tenure::irc::health::HealthPolicy::default().unavailable(&window.buckets, T0));

    let barrier = Arc::new(Barrier::new(8));
    let opens = (0..8u64).map(|n| {
        let (table, barrier, eu) = (table.clone(), barrier.clone(), eu.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            let opened = table
                .open(&eu, T0 + n, T0 + 5_000 + n, "HTTP 503")
                .await
                .unwrap();
            (n, opened)
        })
    });
    let results: Vec<(u64, bool)> = futures::future::join_all(opens)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winners: Vec<u64> = results
        .iter()
        .filter(|(_, o)| *o)
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let state = table.read(&eu, T0).await.unwrap().state;
    assert!(state.open);
    assert_eq!(state.next_probe_at_ms, T0 + 5_000 + winners[0]);

    let (a, b) = tokio::join!(
        table.probed(&eu, &state, false, T0 + 6_000, T0 + 16_000),
        table.probed(&eu, &state, true, T0 + 6_000, 0),
    );
    assert_eq!(
        [a.unwrap(), b.unwrap()].iter().filter(|x| **x).count(),
        1,
        "one probe of one opening counts"
    );
}

// --- Awaited operations and cancellation (IRC v2) ------------------------------------------

use tenure::irc::awaiting::RemoteState;
use tenure::irc::store::{CancelOutcome, FollowUp};

/// Host `a` holds group `group` at host epoch 1, its lease live until `until`.
async fn serve(
    client: &aws_sdk_dynamodb::Client,
    (leases, hosts): (&str, &str),
    group: &str,
    until: u64,
) {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    client
        .put_item()
        .table_name(hosts)
        .item("host_id", A::S("a".into()))
        .item("epoch", A::N("1".into()))
        .item("expires_at_ms", A::N(until.to_string()))
        .send()
        .await
        .unwrap();
    client
        .update_item()
        .table_name(leases)
        .key("group_id", A::S(group.into()))
        .update_expression("SET holder = :a, holder_host_epoch = :one")
        .expression_attribute_values(":a", A::S("a".into()))
        .expression_attribute_values(":one", A::N("1".into()))
        .send()
        .await
        .unwrap();
}

fn awaited(op_id: &OpId, group: &str, seq: u64, await_ms: u64) -> OperationRequest {
    OperationRequest {
        v: 2,
        await_for: Some("serving".into()),
        await_ms: Some(await_ms),
        ..put_request(op_id, group, seq, 10_000)
    }
}

/// Applied at once, IN_PROGRESS (a repeat too, with no second effect) until a member it wrote
/// holds a live grant; eight observers racing at that moment all get the one recorded end,
/// and it is never recomputed (the holder's lease lapsing later changes nothing).
#[tokio::test]
async fn an_awaited_op_waits_until_a_member_serves_it_and_its_first_end_stands() {
    let (store, client, leases, hosts) = inbound_with_hosts().await;
    let op_id = OpId::new();
    let request = awaited(&op_id, "g-await", 1, 60_000);
    assert_eq!(store.apply(&request, T0).await.unwrap().outcome, "applied");
    let waiting = store.status(&op_id, T0 + 10).await.unwrap().unwrap();
    assert_eq!(waiting.state, RemoteState::InProgress);
    assert_eq!(waiting.body(&op_id, 1_000)["outcome"], "accepted");
    assert_eq!(
        store.apply(&request, T0 + 20).await.unwrap().outcome,
        "duplicate"
    );
    assert_eq!(
        group_item(&client, &leases, "g-await").await.unwrap()["version"],
        1
    );

    serve(&client, (&leases, &hosts), "g-await", T0 + 100_000).await;
    let barrier = Arc::new(Barrier::new(8));
    let observers = (0..8u64).map(|n| {
        let (store, barrier, op_id) = (store.clone(), barrier.clone(), op_id.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            store.status(&op_id, T0 + 1_000 + n).await.unwrap().unwrap()
        })
    });
    let seen: Vec<_> = futures::future::join_all(observers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(seen
        .iter()
        .all(|r| r.state == RemoteState::Succeeded && r.outcome == "applied"));
    let first = seen[0].result["serving"].clone();
    assert_eq!(first["holder"], "a");
    assert!(
        seen.iter().all(|r| r.result["serving"] == first),
        "one observation recorded: {seen:?}"
    );
    let much_later = store.status(&op_id, T0 + 900_000).await.unwrap().unwrap();
    assert_eq!(much_later.result["serving"], first);
}

/// Not served within await_ms: FAILED expired; a later op on the group ends a waiting one
/// superseded (a success).
#[tokio::test]
async fn an_awaited_op_expires_unserved_and_a_later_op_supersedes_one() {
    let (store, _client, _leases) = inbound().await;
    let lonely = OpId::new();
    store
        .apply(&awaited(&lonely, "g-lonely", 1, 1_000), T0)
        .await
        .unwrap();
    assert_eq!(
        store
            .status(&lonely, T0 + 999)
            .await
            .unwrap()
            .unwrap()
            .state,
        RemoteState::InProgress
    );
    let expired = store.status(&lonely, T0 + 1_000).await.unwrap().unwrap();
    assert_eq!(
        (expired.state, expired.outcome.as_str()),
        (RemoteState::Failed, "expired")
    );
    assert_eq!(expired.body(&lonely, 1_000)["error"]["code"], "expired");

    let first = OpId::new();
    store
        .apply(&awaited(&first, "g-twice", 1, 60_000), T0)
        .await
        .unwrap();
    store
        .apply(&put_request(&OpId::new(), "g-twice", 2, 10_000), T0 + 5)
        .await
        .unwrap();
    let superseded = store.status(&first, T0 + 10).await.unwrap().unwrap();
    assert_eq!(
        (superseded.state, superseded.outcome.as_str()),
        (RemoteState::Succeeded, "superseded")
    );
}

/// A cancel that reaches the target first leaves a tombstone: the op never applies (its POST
/// answers cancelled, the group is never written). One that comes after the op reports the
/// op's real outcome, never hiding the effect.
#[tokio::test]
async fn a_tombstone_stops_an_op_that_has_not_arrived_and_a_late_cancel_reports_the_effect() {
    let (store, client, leases) = inbound().await;
    let us = Region::parse("us-east-1").unwrap();
    let early = OpId::new();
    let tomb = store.cancel(&early, &us, T0).await.unwrap();
    assert_eq!(tomb.outcome, "cancelled");
    let late_post = store
        .apply(&put_request(&early, "g-tomb", 1, 10_000), T0 + 1)
        .await
        .unwrap();
    assert_eq!(late_post.outcome, "cancelled");
    assert!(
        group_item(&client, &leases, "g-tomb").await.is_none(),
        "never applied"
    );

    let applied = OpId::new();
    store
        .apply(&put_request(&applied, "g-late", 1, 10_000), T0)
        .await
        .unwrap();
    let too_late = store.cancel(&applied, &us, T0 + 1).await.unwrap();
    assert_eq!(
        (too_late.state, too_late.outcome.as_str()),
        (RemoteState::Succeeded, "applied")
    );
    assert!(group_item(&client, &leases, "g-late").await.is_some());
}

/// WAITING_REMOTE: no claim takes it; a poll that finds it unchanged moves only its next
/// poll (no version, no event); its end and an operator's cancel race, and exactly one wins.
#[tokio::test]
async fn a_waiting_op_is_polled_quietly_and_its_end_races_a_cancel_once() {
    let store = work_items().await;
    let item = submitted(&store, "g").await;
    store.claim(&item.op_id, "t", T0, 60_000, 0).await.unwrap();
    let waiting = match store
        .complete(
            &item.op_id,
            "t",
            &Completion::Waiting {
                poll_at_ms: T0 + 1_000,
            },
            T0 + 5,
        )
        .await
        .unwrap()
    {
        CompleteOutcome::Completed(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (
            waiting.status,
            waiting.remote_state,
            waiting.due_at_ms,
            waiting.status_version
        ),
        (
            Status::WaitingRemote,
            Some(RemoteState::InProgress),
            T0 + 1_000,
            3
        )
    );
    assert!(matches!(
        store
            .claim(&item.op_id, "stray", T0 + 2_000, 60_000, 0)
            .await
            .unwrap(),
        ClaimOutcome::Waiting(_)
    ));
    assert!(store
        .follow(
            &waiting,
            &FollowUp::Poll {
                next_at_ms: T0 + 3_000
            },
            T0 + 1_000
        )
        .await
        .unwrap());
    let polled = store.get(&item.op_id).await.unwrap().unwrap();
    assert_eq!(
        (polled.due_at_ms, polled.polls, polled.status_version),
        (T0 + 3_000, 1, 3)
    );
    // A poll that read the item before that one lost: its condition names the old due time.
    assert!(!store
        .follow(
            &waiting,
            &FollowUp::Poll {
                next_at_ms: T0 + 9_000
            },
            T0 + 1_000
        )
        .await
        .unwrap());

    let ended = FollowUp::Ended {
        status: Status::Succeeded,
        field: "result",
        text: json!({"outcome": "applied", "result": {}}).to_string(),
        remote_state: RemoteState::Succeeded,
    };
    let (end, cancel) = tokio::join!(
        store.follow(&polled, &ended, T0 + 3_000),
        store.cancel(&item.op_id, T0 + 3_000, 60_000),
    );
    let end = end.unwrap();
    let cancel = cancel.unwrap();
    let last = store.get(&item.op_id).await.unwrap().unwrap();
    match (end, &cancel) {
        (true, CancelOutcome::Finished(_)) => assert_eq!(last.status, Status::Succeeded),
        (false, CancelOutcome::Cancelled(_)) => assert_eq!(last.status, Status::Cancelled),
        other => panic!("both or neither won: {other:?}, {last:?}"),
    }
    assert_eq!(last.status_version, 4, "one end, one version");
}

/// Never sent: CANCELLED at once. Sent before: the next attempt asks the target (the item is
/// claimable now). Finished: nothing changes.
#[tokio::test]
async fn cancel_is_local_only_for_an_op_never_sent() {
    let store = work_items().await;
    let fresh = submitted(&store, "a").await;
    assert!(matches!(
        store.cancel(&fresh.op_id, T0 + 1, 60_000).await.unwrap(),
        CancelOutcome::Cancelled(i) if i.status == Status::Cancelled && i.status_version == 2
    ));

    let sent = submitted(&store, "b").await;
    store.claim(&sent.op_id, "t", T0, 60_000, 0).await.unwrap();
    let hold = Completion::Retry {
        error: "HTTP 503".into(),
        retry_at_ms: T0 + 5_000,
        due_at_ms: T0 + 65_000,
        region_hold: true,
    };
    store
        .complete(&sent.op_id, "t", &hold, T0 + 1)
        .await
        .unwrap();
    // Its attempt was given back (attempts 0), but it was sent: only the target can say.
    let requested = match store.cancel(&sent.op_id, T0 + 2, 60_000).await.unwrap() {
        CancelOutcome::Requested(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (requested.status, requested.attempts),
        (Status::Retrying, 0)
    );
    assert!(requested.cancel_requested && requested.held.is_none());
    assert!(matches!(
        store.claim(&sent.op_id, "u", T0 + 3, 60_000, 0).await.unwrap(),
        ClaimOutcome::Claimed(i) if i.cancel_requested
    ));

    let done = submitted(&store, "c").await;
    store.claim(&done.op_id, "t", T0, 60_000, 0).await.unwrap();
    store
        .complete(
            &done.op_id,
            "t",
            &Completion::Succeeded {
                result: "{}".into(),
            },
            T0 + 1,
        )
        .await
        .unwrap();
    assert!(matches!(
        store.cancel(&done.op_id, T0 + 2, 60_000).await.unwrap(),
        CancelOutcome::Finished(i) if i.status == Status::Succeeded
    ));
}

/// An operator's cancel races the worker's 202 for an op in flight, over and over: whichever
/// lands first, the cancel is never lost. Either the wait stops (CANCELLED) or the request is
/// recorded on the item (`cancel_requested`), which the dispatcher's next look at the waiting
/// op turns into a stopped wait (`cancel` again, as it does). Never "nothing to cancel" while
/// the op waits on.
#[tokio::test]
async fn a_cancel_racing_the_workers_202_stops_the_wait_or_is_recorded_for_the_dispatcher() {
    let store = work_items().await;
    let (mut stopped, mut recorded) = (0, 0);
    for round in 0..16 {
        let item = submitted(&store, &format!("race-{round}")).await;
        store.claim(&item.op_id, "t", T0, 60_000, 0).await.unwrap();
        let waiting = Completion::Waiting {
            poll_at_ms: T0 + 1_000,
        };
        // The 202's write starts 0 to 15 ms after the cancel's first write, so it lands
        // before, between and after the cancel's writes.
        let (completed, cancel) = tokio::join!(
            async {
                tokio::time::sleep(std::time::Duration::from_millis(round)).await;
                store.complete(&item.op_id, "t", &waiting, T0 + 5).await
            },
            store.cancel(&item.op_id, T0 + 5, 60_000),
        );
        let completed = completed.unwrap();
        let last = store.get(&item.op_id).await.unwrap().unwrap();
        match cancel.unwrap() {
            CancelOutcome::Cancelled(_) => {
                // The 202 landed first and the cancel stopped the wait.
                assert!(matches!(completed, CompleteOutcome::Completed(_)));
                assert_eq!(last.status, Status::Cancelled, "{last:?}");
                stopped += 1;
            }
            CancelOutcome::Requested(_) => {
                // The request landed while the attempt was in flight; the 202 then made it
                // wait with the request on it, and the dispatcher's cancel stops the wait.
                assert_eq!(last.status, Status::WaitingRemote, "{last:?}");
                assert!(last.cancel_requested, "{last:?}");
                assert!(matches!(
                    store.cancel(&item.op_id, T0 + 1_000, 60_000).await.unwrap(),
                    CancelOutcome::Cancelled(i) if i.status == Status::Cancelled
                ));
                recorded += 1;
            }
            other => panic!("the cancel was lost: {other:?}, the op is {last:?}"),
        }
    }
    eprintln!("16 races: {stopped} stopped the wait, {recorded} recorded for the dispatcher");
}
