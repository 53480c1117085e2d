//! The lease store contract, written once and run against both stores: `MemoryLeaseStore` (the
//! protocol's own predicates under one lock) and `DynamoLeaseStore` on MiniStack (real
//! conditional writes, `ALL_OLD` on a failed condition, transactions). Each scenario proves the
//! condition of one of the protocol's writes (`docs/protocol.md`, Writes) (heartbeat, incarnation change, renew, revoke,
//! acquire, release, attention, group create/redefine/delete, drain) on the item as it stands,
//! and that both stores give the same outcome — including DynamoDB's rule that a comparison
//! with a missing item or attribute is false, which the in-memory store must follow too.
//!
//! Every scenario is an `async fn` generic over `S: LeaseStore`; `contract!` turns each into a
//! test in `memory::` and one in `dynamo::` (fresh tables per test).

mod support;

use futures::TryStreamExt;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;
use support::*;
use tenure::ids::{GroupId, Incarnation};
use tenure::lease::host::HostRecord;
use tenure::lease::protocol::{
    revoke_decision, AcquireExpect, AcquirePlan, HeartbeatPlan, ReleasePlan, RenewPlan, RevokePlan,
};
use tenure::lease::record::{Epoch, LeaseRecord};
use tenure::lease::store::{
    CreateOutcome, DeleteExpect, DeleteOutcome, DeletePlan, GroupDefinition, HeartbeatOutcome,
    LeaseStore, MemberUpdate, PutMode, ReleaseOutcome, RenewOutcome, Written,
};
use tenure::lease::LeaseConfig;

const T0: u64 = 1_800_000_000_000;
/// `LeaseConfig::default()`'s lease and skew, which the plans below are written against.
const LEASE: u64 = 10_000;
const SKEW: u64 = 200;

/// One test per store for each scenario: `memory::<scenario>` and `dynamo::<scenario>`.
macro_rules! contract {
    ($($scenario:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(tenure::lease::memory::MemoryLeaseStore::new()).await;
                }
            )+
        }
        mod dynamo {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let client = crate::support::dynamodb(None).await;
                    let store = crate::support::store(&client).await;
                    super::$scenario(store.clone()).await;
                    crate::support::drop_lease_tables(&store).await;
                }
            )+
        }
    };
}

contract!(
    heartbeat_creates_a_host_item_at_epoch_zero_with_the_defaults,
    a_heartbeat_from_another_incarnation_is_refused_and_change_incarnation_marks_it,
    renew_is_refused_at_another_epoch_when_not_forward_unhealthy_or_after_an_incarnation_change,
    renew_is_refused_until_the_host_is_heard_from_after_its_revocation,
    a_missing_item_or_attribute_compares_false,
    revoke_only_after_expiry_plus_skew_bumps_the_epoch_once_and_clears_incarnation_changed,
    revoking_a_host_never_written_creates_it_at_epoch_one,
    acquire_is_refused_at_another_epoch_for_a_non_member_and_when_free_was_expected_but_held,
    release_frees_the_group_and_tells_every_other_member,
    a_release_never_puts_the_group_in_the_releasers_own_attention,
    consume_attention_removes_exactly_the_given_ids,
    put_group_create_refuses_an_existing_group_and_revives_a_tombstone_with_its_epoch,
    delete_group_tombstones_and_keeps_the_epoch,
    set_member_draining_marks_the_member_and_tells_its_host,
    a_batch_read_returns_what_exists_across_more_than_a_hundred_keys,
    scan_hosts_segments_cover_every_host_once,
    groups_held_by_lists_the_groups_a_host_holds_with_their_epochs,
);

// ---------------------------------------------------------------------------------------------
// Helpers

fn inc(id: &str) -> Incarnation {
    Incarnation::parse(id).unwrap()
}

fn ids(list: &[&str]) -> BTreeSet<GroupId> {
    list.iter().map(|g| group_id(g)).collect()
}

fn beat(host_id: &str, incarnation: &str, healthy: bool, now: u64) -> HeartbeatPlan {
    HeartbeatPlan {
        host: host(host_id),
        healthy,
        incarnation: inc(incarnation),
        now,
    }
}

fn renew(host_id: &str, epoch: u64, new_expires_at_ms: u64, now: u64) -> RenewPlan {
    RenewPlan {
        host: host(host_id),
        epoch: Epoch(epoch),
        new_expires_at_ms,
        now,
    }
}

/// A contender's revocation at `now` of a host it read at `seen_epoch`.
fn revoke(host_id: &str, seen_epoch: u64, now: u64) -> RevokePlan {
    RevokePlan {
        host: host(host_id),
        seen_epoch: Epoch(seen_epoch),
        seen_absent: false,
        not_after_ms: now - SKEW,
        now,
    }
}

fn acquire(
    host_id: &str,
    host_epoch: u64,
    seen_epoch: u64,
    expect: AcquireExpect,
    now: u64,
) -> AcquirePlan {
    AcquirePlan {
        host: host(host_id),
        host_epoch: Epoch(host_epoch),
        seen_epoch: Epoch(seen_epoch),
        expect,
        now,
    }
}

fn definition(id: &str, hosts: &[&str]) -> GroupDefinition {
    let record = new_group(id, hosts, LEASE, T0);
    GroupDefinition {
        group_id: record.group_id,
        lease_ms: record.lease_ms,
        members: record.members,
    }
}

async fn create<S: LeaseStore>(store: &S, id: &str, hosts: &[&str], now: u64) {
    let outcome = store
        .put_group(&definition(id, hosts), PutMode::Create, now)
        .await
        .expect("put_group");
    assert_eq!(outcome, CreateOutcome::Created, "create {id}");
}

async fn recorded<S: LeaseStore>(store: &S, plan: &HeartbeatPlan) -> HostRecord {
    match store.heartbeat(plan).await.expect("heartbeat") {
        HeartbeatOutcome::Recorded(record) => record,
        HeartbeatOutcome::OtherIncarnation(current) => {
            panic!("heartbeat of {} refused: {current:?}", plan.host)
        }
    }
}

async fn host_item<S: LeaseStore>(store: &S, id: &str) -> HostRecord {
    store
        .read_host(&host(id))
        .await
        .expect("read host")
        .unwrap_or_else(|| panic!("no host item for {id}"))
}

async fn group_item<S: LeaseStore>(store: &S, id: &str) -> LeaseRecord {
    store
        .read_group(&group_id(id))
        .await
        .expect("read group")
        .unwrap_or_else(|| panic!("no group item for {id}"))
}

/// A host that heartbeated at `seen` and holds its lease at epoch 0 until `seen + LEASE`.
async fn leased<S: LeaseStore>(store: &S, id: &str, seen: u64) -> HostRecord {
    recorded(store, &beat(id, "i-1", true, seen)).await;
    assert_eq!(
        store
            .renew(&renew(id, 0, seen + LEASE, seen))
            .await
            .expect("renew"),
        RenewOutcome::Renewed {
            expires_at_ms: seen + LEASE
        }
    );
    host_item(store, id).await
}

fn done<T: Debug>(outcome: Written<T>, what: &str) -> T {
    match outcome {
        Written::Done(record) => record,
        Written::LostRace(current) => panic!("{what} must succeed; refused on {current:?}"),
    }
}

/// A refusal that returns the item as it stands.
fn refused<T: Debug>(outcome: Written<T>, what: &str) -> T {
    match outcome {
        Written::LostRace(Some(current)) => current,
        other => panic!("{what} must be refused with the item as it stands: {other:?}"),
    }
}

const LOST: RenewOutcome = RenewOutcome::LostRace;

// ---------------------------------------------------------------------------------------------
// Heartbeat and incarnations

async fn heartbeat_creates_a_host_item_at_epoch_zero_with_the_defaults<S: LeaseStore>(store: S) {
    assert_eq!(
        store.read_host(&host("h1")).await.unwrap(),
        None,
        "no host item before the first heartbeat"
    );
    let first = recorded(&store, &beat("h1", "i-1", true, T0)).await;
    let expected = HostRecord {
        host_id: host("h1"),
        epoch: Epoch(0),
        expires_at_ms: 0,
        last_seen_ms: T0,
        healthy: true,
        draining: false,
        attention: BTreeSet::new(),
        incarnation: Some(inc("i-1")),
        incarnation_changed: None,
        revoked_at_ms: 0,
        updated_at_ms: first.updated_at_ms,
        version: 1,
    };
    assert_eq!(
        first, expected,
        "the first heartbeat starts epoch, expiry and revocation time at 0"
    );
    assert_eq!(
        host_item(&store, "h1").await,
        first,
        "what the heartbeat returned is what is stored"
    );
    let second = recorded(&store, &beat("h1", "i-1", false, T0 + 100)).await;
    assert_eq!(
        (
            second.epoch,
            second.expires_at_ms,
            second.revoked_at_ms,
            second.last_seen_ms,
            second.healthy,
            second.version
        ),
        (Epoch(0), 0, 0, T0 + 100, false, 2),
        "a later heartbeat records its time and health and leaves the lease alone: {second:?}"
    );
}

async fn a_heartbeat_from_another_incarnation_is_refused_and_change_incarnation_marks_it<
    S: LeaseStore,
>(
    store: S,
) {
    recorded(&store, &beat("h1", "i-1", true, T0)).await;
    let new = beat("h1", "i-2", true, T0 + 10);
    let current = match store.heartbeat(&new).await.unwrap() {
        HeartbeatOutcome::OtherIncarnation(current) => current,
        other => panic!("a heartbeat from another incarnation must be refused: {other:?}"),
    };
    assert_eq!(
        (current.incarnation.clone(), current.last_seen_ms),
        (Some(inc("i-1")), T0),
        "the refusal carries the item as it stands"
    );
    assert_eq!(
        host_item(&store, "h1").await.last_seen_ms,
        T0,
        "a refused heartbeat writes nothing"
    );

    // The second write records the new incarnation and marks the change.
    let changed = done(
        store
            .change_incarnation(&new.change_from(inc("i-1")))
            .await
            .unwrap(),
        "the incarnation change",
    );
    assert_eq!(changed.incarnation, Some(inc("i-2")));
    assert_eq!(changed.incarnation_changed, Some(T0 + 10));
    assert_eq!(
        (changed.last_seen_ms, changed.epoch),
        (T0 + 10, Epoch(0)),
        "the change is also a heartbeat, and it keeps the epoch"
    );
    assert_eq!(host_item(&store, "h1").await, changed);

    // A change made on a stale reading of the recorded incarnation is refused.
    let stale = beat("h1", "i-3", true, T0 + 20).change_from(inc("i-1"));
    let current = refused(
        store.change_incarnation(&stale).await.unwrap(),
        "a change from an incarnation no longer recorded",
    );
    assert_eq!(current.incarnation, Some(inc("i-2")));

    // The new incarnation's own heartbeats are accepted and keep the mark: only a revocation
    // clears it. The old incarnation's are refused.
    let again = recorded(&store, &beat("h1", "i-2", true, T0 + 30)).await;
    assert_eq!(again.incarnation_changed, Some(T0 + 10));
    assert!(matches!(
        store
            .heartbeat(&beat("h1", "i-1", true, T0 + 40))
            .await
            .unwrap(),
        HeartbeatOutcome::OtherIncarnation(_)
    ));

    // No item, so no recorded incarnation to compare with: the change is refused, nothing made.
    match store
        .change_incarnation(&beat("ghost", "i-2", true, T0).change_from(inc("i-1")))
        .await
        .unwrap()
    {
        Written::LostRace(None) => {}
        other => panic!("a change on a host never written must be refused with no item: {other:?}"),
    }
    assert_eq!(store.read_host(&host("ghost")).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Renew

async fn renew_is_refused_at_another_epoch_when_not_forward_unhealthy_or_after_an_incarnation_change<
    S: LeaseStore,
>(
    store: S,
) {
    recorded(&store, &beat("h1", "i-1", true, T0)).await;
    assert_eq!(
        store.renew(&renew("h1", 0, T0 + LEASE, T0)).await.unwrap(),
        RenewOutcome::Renewed {
            expires_at_ms: T0 + LEASE
        }
    );
    assert_eq!(host_item(&store, "h1").await.expires_at_ms, T0 + LEASE);
    for (plan, why) in [
        (renew("h1", 1, T0 + LEASE + 1, T0), "at another epoch"),
        (renew("h1", 0, T0 + LEASE, T0), "to the same expiry"),
        (renew("h1", 0, T0 + LEASE - 1, T0), "backwards"),
    ] {
        assert_eq!(
            store.renew(&plan).await.unwrap(),
            LOST,
            "a renewal {why} is refused"
        );
    }
    assert_eq!(
        host_item(&store, "h1").await.expires_at_ms,
        T0 + LEASE,
        "refused renewals write nothing"
    );

    // An unhealthy host is not renewed until it reports healthy again.
    recorded(&store, &beat("h1", "i-1", false, T0 + 100)).await;
    assert_eq!(
        store
            .renew(&renew("h1", 0, T0 + 100 + LEASE, T0 + 100))
            .await
            .unwrap(),
        LOST,
        "an unhealthy host is not renewed"
    );
    recorded(&store, &beat("h1", "i-1", true, T0 + 200)).await;
    assert_eq!(
        store
            .renew(&renew("h1", 0, T0 + 200 + LEASE, T0 + 200))
            .await
            .unwrap(),
        RenewOutcome::Renewed {
            expires_at_ms: T0 + 200 + LEASE
        }
    );

    // A new incarnation stops renewals, even after its own heartbeats.
    recorded(&store, &beat("h2", "i-1", true, T0)).await;
    done(
        store
            .change_incarnation(&beat("h2", "i-2", true, T0 + 100).change_from(inc("i-1")))
            .await
            .unwrap(),
        "the incarnation change",
    );
    assert_eq!(
        store
            .renew(&renew("h2", 0, T0 + 100 + LEASE, T0 + 100))
            .await
            .unwrap(),
        LOST,
        "no renewal while incarnation_changed is set"
    );
    recorded(&store, &beat("h2", "i-2", true, T0 + 200)).await;
    assert_eq!(
        store
            .renew(&renew("h2", 0, T0 + 200 + LEASE, T0 + 200))
            .await
            .unwrap(),
        LOST,
        "still none after the new incarnation's heartbeats"
    );
    assert_eq!(host_item(&store, "h2").await.expires_at_ms, 0);
}

async fn renew_is_refused_until_the_host_is_heard_from_after_its_revocation<S: LeaseStore>(
    store: S,
) {
    recorded(&store, &beat("h1", "i-1", true, T0)).await;
    let revoked_at = T0 + 1_000;
    let revoked = done(
        store.revoke(&revoke("h1", 0, revoked_at)).await.unwrap(),
        "revoking a host with no lease",
    );
    assert_eq!(
        (revoked.epoch, revoked.revoked_at_ms),
        (Epoch(1), revoked_at)
    );
    assert_eq!(
        store
            .renew(&renew("h1", 1, T0 + LEASE, revoked_at))
            .await
            .unwrap(),
        LOST,
        "last heard from before its revocation: not renewed, even at the new epoch"
    );
    recorded(&store, &beat("h1", "i-1", true, revoked_at)).await;
    assert_eq!(
        store
            .renew(&renew("h1", 1, revoked_at + LEASE, revoked_at))
            .await
            .unwrap(),
        LOST,
        "last_seen_ms == revoked_at_ms is not after it"
    );
    recorded(&store, &beat("h1", "i-1", true, revoked_at + 1)).await;
    assert_eq!(
        store
            .renew(&renew("h1", 1, revoked_at + 1 + LEASE, revoked_at + 1))
            .await
            .unwrap(),
        RenewOutcome::Renewed {
            expires_at_ms: revoked_at + 1 + LEASE
        },
        "heard from after the revocation: renewed at the new epoch"
    );
}

async fn a_missing_item_or_attribute_compares_false<S: LeaseStore>(store: S) {
    // No item at all.
    assert_eq!(
        store
            .renew(&renew("ghost", 0, T0 + LEASE, T0))
            .await
            .unwrap(),
        LOST,
        "a host never written is not renewed"
    );
    assert_eq!(
        store.read_host(&host("ghost")).await.unwrap(),
        None,
        "a refused renewal creates no item"
    );
    match store
        .acquire(
            &group_id("nope"),
            &acquire("ghost", 0, 0, AcquireExpect::Free, T0),
        )
        .await
        .unwrap()
    {
        Written::LostRace(None) => {}
        other => panic!("acquiring a group that does not exist must be refused: {other:?}"),
    }
    assert_eq!(store.read_group(&group_id("nope")).await.unwrap(), None);

    // A host item written only by a drain: in DynamoDB it has no `healthy`, `last_seen_ms` or
    // `incarnation` attribute, so the renewal's `healthy = :true AND last_seen_ms >
    // revoked_at_ms` compares missing attributes and is refused.
    let drained = store
        .set_host_draining(&host("drained"), true, T0)
        .await
        .unwrap();
    assert_eq!(
        (
            drained.epoch,
            drained.expires_at_ms,
            drained.revoked_at_ms,
            drained.draining
        ),
        (Epoch(0), 0, 0, true),
        "the host defaults are written with the drain"
    );
    assert_eq!(
        store
            .renew(&renew("drained", 0, T0 + LEASE, T0))
            .await
            .unwrap(),
        LOST,
        "a host never heard from is not renewed"
    );
    assert_eq!(host_item(&store, "drained").await.expires_at_ms, 0);
    // No incarnation recorded: the first heartbeat is accepted, and the drain stays.
    let first = recorded(&store, &beat("drained", "i-1", true, T0 + 1)).await;
    assert!(first.draining, "{first:?}");
    assert_eq!(first.epoch, Epoch(0));
}

// ---------------------------------------------------------------------------------------------
// Revoke

async fn revoke_only_after_expiry_plus_skew_bumps_the_epoch_once_and_clears_incarnation_changed<
    S: LeaseStore,
>(
    store: S,
) {
    let cfg = LeaseConfig::default();
    assert_eq!((cfg.lease_ms, cfg.clock_skew_ms), (LEASE, SKEW));
    let expiry = leased(&store, "h1", T0).await.expires_at_ms;
    assert_eq!(expiry, T0 + LEASE);
    // A new incarnation appeared and waits for the old lease to lapse.
    done(
        store
            .change_incarnation(&beat("h1", "i-2", true, T0 + 500).change_from(inc("i-1")))
            .await
            .unwrap(),
        "the incarnation change",
    );
    let before = host_item(&store, "h1").await;
    assert!(
        revoke_decision(&before, expiry + SKEW, &cfg).is_none(),
        "the protocol does not revoke at expiry + skew"
    );
    let current = refused(
        store.revoke(&revoke("h1", 0, expiry + SKEW)).await.unwrap(),
        "a revocation at expiry + skew",
    );
    assert_eq!(current.epoch, Epoch(0));

    let plan = revoke_decision(&before, expiry + SKEW + 1, &cfg).expect("revocable 1 ms later");
    assert_eq!((plan.seen_epoch, plan.seen_absent), (Epoch(0), false));
    let revoked = done(store.revoke(&plan).await.unwrap(), "the revocation");
    assert_eq!(
        revoked.epoch,
        Epoch(1),
        "a revocation raises the epoch by one"
    );
    assert_eq!(revoked.revoked_at_ms, expiry + SKEW + 1);
    assert_eq!(
        revoked.incarnation_changed, None,
        "a revocation clears incarnation_changed: no grant exists at the new epoch"
    );
    assert_eq!(
        revoked.incarnation,
        Some(inc("i-2")),
        "the incarnation recorded stays"
    );
    assert_eq!(
        revoked.expires_at_ms, expiry,
        "a revocation leaves the expiry alone"
    );
    assert_eq!(host_item(&store, "h1").await, revoked);

    // Every other revocation made on the same reading is refused, however late.
    let current = refused(
        store.revoke(&plan).await.unwrap(),
        "a second revocation at epoch 0",
    );
    assert_eq!(current.epoch, Epoch(1));
    let current = refused(
        store
            .revoke(&revoke("h1", 0, expiry + 100 * LEASE))
            .await
            .unwrap(),
        "a much later revocation at epoch 0",
    );
    assert_eq!(current.epoch, Epoch(1));
    let later = recorded(&store, &beat("h1", "i-2", true, expiry + 1_000)).await;
    assert_eq!(later.epoch, Epoch(1), "a heartbeat never resets the epoch");
}

async fn revoking_a_host_never_written_creates_it_at_epoch_one<S: LeaseStore>(store: S) {
    let cfg = LeaseConfig::default();
    let plan = revoke_decision(&HostRecord::absent(host("ghost")), T0, &cfg)
        .expect("a host never written has no lease and is revocable");
    assert!(plan.seen_absent);
    let created = done(
        store.revoke(&plan).await.unwrap(),
        "revoking an absent host",
    );
    assert_eq!(
        (
            created.epoch,
            created.revoked_at_ms,
            created.expires_at_ms,
            created.last_seen_ms,
            created.incarnation.clone()
        ),
        (Epoch(1), T0, 0, 0, None),
        "{created:?}"
    );
    assert_eq!(host_item(&store, "ghost").await, created);
    let current = refused(
        store.revoke(&plan).await.unwrap(),
        "a second revocation of the host seen absent",
    );
    assert_eq!(current.epoch, Epoch(1));
}

// ---------------------------------------------------------------------------------------------
// Acquire, release

async fn acquire_is_refused_at_another_epoch_for_a_non_member_and_when_free_was_expected_but_held<
    S: LeaseStore,
>(
    store: S,
) {
    use AcquireExpect::{Free, Revoked};
    create(&store, "g1", &["a", "b"], T0).await;
    let g = group_id("g1");
    let current = refused(
        store
            .acquire(&g, &acquire("a", 0, 1, Free, T0))
            .await
            .unwrap(),
        "an acquisition at another group epoch",
    );
    assert_eq!((current.epoch, current.holder), (Epoch(0), None));
    refused(
        store
            .acquire(&g, &acquire("x", 0, 0, Free, T0))
            .await
            .unwrap(),
        "an acquisition by a non-member",
    );
    refused(
        store
            .acquire(&g, &acquire("x", 0, 0, Revoked, T0))
            .await
            .unwrap(),
        "an acquisition by a non-member, whatever it expects",
    );
    let won = done(
        store
            .acquire(&g, &acquire("a", 0, 0, Free, T0 + 1))
            .await
            .unwrap(),
        "acquiring a free group",
    );
    assert_eq!(
        (won.holder.clone(), won.holder_host_epoch, won.epoch),
        (Some(host("a")), Some(Epoch(0)), Epoch(1))
    );
    assert_eq!(
        group_item(&store, "g1").await,
        won,
        "what the write returned is stored"
    );
    let held = refused(
        store
            .acquire(&g, &acquire("b", 0, 1, Free, T0 + 2))
            .await
            .unwrap(),
        "an acquisition expecting a free group that has a holder",
    );
    assert_eq!(held.holder, Some(host("a")));
    refused(
        store
            .acquire(&g, &acquire("b", 0, 0, Revoked, T0 + 2))
            .await
            .unwrap(),
        "an acquisition at the epoch before the last one",
    );
    // After a revocation the caller expects only the epoch: host epochs never go back.
    let taken = done(
        store
            .acquire(&g, &acquire("b", 3, 1, Revoked, T0 + 3))
            .await
            .unwrap(),
        "acquiring a revoked grant",
    );
    assert_eq!(
        (taken.holder, taken.holder_host_epoch, taken.epoch),
        (Some(host("b")), Some(Epoch(3)), Epoch(2))
    );
}

async fn release_frees_the_group_and_tells_every_other_member<S: LeaseStore>(store: S) {
    create(&store, "g1", &["a", "b", "c"], T0).await;
    let g = group_id("g1");
    for h in ["a", "b", "c"] {
        assert_eq!(
            host_item(&store, h).await.attention,
            ids(&["g1"]),
            "a new group is in each member's attention"
        );
        store
            .consume_attention(&host(h), &ids(&["g1"]), T0)
            .await
            .unwrap();
    }
    done(
        store
            .acquire(&g, &acquire("a", 0, 0, AcquireExpect::Free, T0))
            .await
            .unwrap(),
        "a acquires",
    );
    let plan = ReleasePlan {
        host: host("a"),
        epoch: Epoch(1),
        now: T0 + 500,
    };
    let notify = plan.notified(&group_item(&store, "g1").await);
    assert_eq!(
        notify,
        vec![host("b"), host("c")],
        "every member but the releaser"
    );
    let released = match store.release(&g, &plan, &notify).await.unwrap() {
        ReleaseOutcome::Released(record) => record,
        other => panic!("the holder's release at its epoch must succeed: {other:?}"),
    };
    assert_eq!(
        (
            released.holder.clone(),
            released.holder_host_epoch,
            released.epoch
        ),
        (None, None, Epoch(1)),
        "a release removes the grant and keeps the fencing epoch"
    );
    assert_eq!(released.free_since_ms, Some(T0 + 500));
    assert_eq!(
        released.members[&host("a")].released_at_ms,
        Some(T0 + 500),
        "the releaser's member entry says when"
    );
    assert_eq!(released.members[&host("b")].released_at_ms, None);
    assert_eq!(
        group_item(&store, "g1").await,
        released,
        "what the release returned is what is stored"
    );
    for h in ["b", "c"] {
        assert_eq!(
            host_item(&store, h).await.attention,
            ids(&["g1"]),
            "{h} is told in the same transaction"
        );
    }
    assert!(
        host_item(&store, "a").await.attention.is_empty(),
        "the releaser is not told"
    );

    for (stale, why) in [
        (
            ReleasePlan {
                host: host("a"),
                epoch: Epoch(1),
                now: T0 + 600,
            },
            "a second time",
        ),
        (
            ReleasePlan {
                host: host("b"),
                epoch: Epoch(1),
                now: T0 + 600,
            },
            "by a member that does not hold it",
        ),
    ] {
        match store
            .release(&g, &stale, &stale.notified(&released))
            .await
            .unwrap()
        {
            ReleaseOutcome::NotHolder(current) => assert_eq!(current.holder, None),
            other => panic!("a release {why} must be refused: {other:?}"),
        }
    }
    assert_eq!(
        store.release(&group_id("nope"), &plan, &[]).await.unwrap(),
        ReleaseOutcome::UnknownGroup
    );

    // A holder that is no longer a member may release.
    done(
        store
            .acquire(&g, &acquire("b", 0, 1, AcquireExpect::Free, T0 + 700))
            .await
            .unwrap(),
        "b acquires",
    );
    assert_eq!(
        store
            .put_group(&definition("g1", &["a", "c"]), PutMode::Upsert, T0 + 800)
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    let redefined = group_item(&store, "g1").await;
    assert_eq!(
        (redefined.holder.clone(), redefined.epoch),
        (Some(host("b")), Epoch(2)),
        "a redefinition never touches the grant"
    );
    assert!(!redefined.members.contains_key(&host("b")));
    let plan = ReleasePlan {
        host: host("b"),
        epoch: Epoch(2),
        now: T0 + 900,
    };
    match store
        .release(&g, &plan, &plan.notified(&redefined))
        .await
        .unwrap()
    {
        ReleaseOutcome::Released(record) => {
            assert_eq!(record.holder, None);
            assert!(!record.members.contains_key(&host("b")), "{record:?}");
        }
        other => panic!("a holder that is no longer a member may release: {other:?}"),
    }
    let stored = group_item(&store, "g1").await;
    assert_eq!((stored.holder.clone(), stored.epoch), (None, Epoch(2)));
    assert!(!stored.members.contains_key(&host("b")), "{stored:?}");
}

/// The protocol: a release adds the group to "every *other* member's host item". Named in `notify` or
/// not, the releaser is not one of them; both stores must agree on that.
async fn a_release_never_puts_the_group_in_the_releasers_own_attention<S: LeaseStore>(store: S) {
    create(&store, "g1", &["a", "b"], T0).await;
    let g = group_id("g1");
    for h in ["a", "b"] {
        store
            .consume_attention(&host(h), &ids(&["g1"]), T0)
            .await
            .unwrap();
    }
    done(
        store
            .acquire(&g, &acquire("a", 0, 0, AcquireExpect::Free, T0))
            .await
            .unwrap(),
        "a acquires",
    );
    let plan = ReleasePlan {
        host: host("a"),
        epoch: Epoch(1),
        now: T0 + 500,
    };
    let every_member = [host("a"), host("b")];
    assert!(matches!(
        store.release(&g, &plan, &every_member).await.unwrap(),
        ReleaseOutcome::Released(_)
    ));
    assert_eq!(host_item(&store, "b").await.attention, ids(&["g1"]));
    assert!(
        host_item(&store, "a").await.attention.is_empty(),
        "the releaser must not be told of its own release, even when named in notify"
    );
}

async fn consume_attention_removes_exactly_the_given_ids<S: LeaseStore>(store: S) {
    for g in ["g1", "g2", "g3"] {
        create(&store, g, &["h"], T0).await;
    }
    let h = host("h");
    assert_eq!(
        host_item(&store, "h").await.attention,
        ids(&["g1", "g2", "g3"])
    );
    store
        .consume_attention(&h, &ids(&["g1", "g3"]), T0 + 1)
        .await
        .unwrap();
    assert_eq!(host_item(&store, "h").await.attention, ids(&["g2"]));
    store
        .consume_attention(&h, &ids(&["g9"]), T0 + 2)
        .await
        .unwrap();
    assert_eq!(
        host_item(&store, "h").await.attention,
        ids(&["g2"]),
        "an id not in the set is no error and removes nothing"
    );
    create(&store, "g4", &["h"], T0 + 3).await;
    assert_eq!(
        host_item(&store, "h").await.attention,
        ids(&["g2", "g4"]),
        "an id added after a consumption stays for the next one"
    );
    store
        .consume_attention(&h, &ids(&["g2", "g4"]), T0 + 4)
        .await
        .unwrap();
    let after = host_item(&store, "h").await;
    assert!(after.attention.is_empty(), "{after:?}");
    assert_eq!(
        (after.epoch, after.expires_at_ms, after.incarnation),
        (Epoch(0), 0, None),
        "consuming attention touches nothing else"
    );
}

// ---------------------------------------------------------------------------------------------
// Group definitions

async fn put_group_create_refuses_an_existing_group_and_revives_a_tombstone_with_its_epoch<
    S: LeaseStore,
>(
    store: S,
) {
    let g = group_id("g1");
    create(&store, "g1", &["a", "b"], T0).await;
    let first = group_item(&store, "g1").await;
    assert_eq!(
        first,
        LeaseRecord {
            group_id: g.clone(),
            holder: None,
            holder_host_epoch: None,
            epoch: Epoch(0),
            expires_at_ms: 0,
            lease_ms: LEASE,
            members: definition("g1", &["a", "b"]).members,
            free_since_ms: Some(T0),
            deleted: false,
            updated_at_ms: T0,
            version: 1,
        },
        "a new group: epoch 0, no holder, free since its creation"
    );
    store
        .consume_attention(&host("a"), &ids(&["g1"]), T0)
        .await
        .unwrap();
    assert_eq!(
        store
            .put_group(&definition("g1", &["a"]), PutMode::Create, T0 + 5)
            .await
            .unwrap(),
        CreateOutcome::AlreadyExists
    );
    assert_eq!(
        group_item(&store, "g1").await,
        first,
        "a refused create changes nothing"
    );
    assert!(
        host_item(&store, "a").await.attention.is_empty(),
        "and tells nobody"
    );

    // Held, released, deleted: the tombstone keeps the epoch.
    done(
        store
            .acquire(&g, &acquire("a", 0, 0, AcquireExpect::Free, T0 + 10))
            .await
            .unwrap(),
        "a acquires",
    );
    let release = ReleasePlan {
        host: host("a"),
        epoch: Epoch(1),
        now: T0 + 20,
    };
    assert!(matches!(
        store.release(&g, &release, &[host("b")]).await.unwrap(),
        ReleaseOutcome::Released(_)
    ));
    let plan = DeletePlan {
        seen_epoch: Epoch(1),
        expect: DeleteExpect::Free,
        now: T0 + 30,
    };
    assert_eq!(
        store.delete_group(&g, &plan).await.unwrap(),
        DeleteOutcome::Deleted
    );
    let tombstone = group_item(&store, "g1").await;
    assert!(tombstone.deleted);
    assert_eq!(tombstone.epoch, Epoch(1));

    // Created again: a tombstone does not count as existing, and its epoch continues.
    assert_eq!(
        store
            .put_group(&definition("g1", &["b", "c"]), PutMode::Create, T0 + 1_000)
            .await
            .unwrap(),
        CreateOutcome::Created,
        "a tombstone is no existing group"
    );
    let revived = group_item(&store, "g1").await;
    assert!(!revived.deleted, "{revived:?}");
    assert_eq!(
        revived.epoch,
        Epoch(1),
        "the epoch continues from the tombstone"
    );
    assert_eq!(
        (
            revived.holder.clone(),
            revived.holder_host_epoch,
            revived.free_since_ms
        ),
        (None, None, Some(T0 + 1_000))
    );
    assert_eq!(revived.members, definition("g1", &["b", "c"]).members);
    let next = done(
        store
            .acquire(&g, &acquire("b", 0, 1, AcquireExpect::Free, T0 + 1_001))
            .await
            .unwrap(),
        "b acquires the re-created group",
    );
    assert_eq!(
        next.epoch,
        Epoch(2),
        "the first acquisition after re-creation is above every epoch before the delete"
    );

    // Upsert of a held group: the members change, the grant and free_since do not.
    assert_eq!(
        store
            .put_group(
                &definition("g1", &["b", "c", "d"]),
                PutMode::Upsert,
                T0 + 2_000
            )
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    let upserted = group_item(&store, "g1").await;
    assert_eq!(
        (
            upserted.holder,
            upserted.holder_host_epoch,
            upserted.epoch,
            upserted.free_since_ms
        ),
        (Some(host("b")), Some(Epoch(0)), Epoch(2), Some(T0 + 1_000))
    );
    assert_eq!(upserted.members.len(), 3);
}

async fn delete_group_tombstones_and_keeps_the_epoch<S: LeaseStore>(store: S) {
    create(&store, "g1", &["a", "b"], T0).await;
    let g = group_id("g1");
    done(
        store
            .acquire(&g, &acquire("a", 0, 0, AcquireExpect::Free, T0))
            .await
            .unwrap(),
        "a acquires",
    );
    let plan = |seen: u64, expect: DeleteExpect, now: u64| DeletePlan {
        seen_epoch: Epoch(seen),
        expect,
        now,
    };
    for (refused_plan, why) in [
        (plan(1, DeleteExpect::Free, T0 + 10), "expecting no holder"),
        (
            plan(0, DeleteExpect::RevokedGrant(Epoch(0)), T0 + 10),
            "at another epoch",
        ),
        (
            plan(1, DeleteExpect::RevokedGrant(Epoch(5)), T0 + 10),
            "of another grant",
        ),
    ] {
        match store.delete_group(&g, &refused_plan).await.unwrap() {
            DeleteOutcome::Changed(current) => assert_eq!(current.holder, Some(host("a"))),
            other => panic!("a delete {why} must be refused: {other:?}"),
        }
    }
    assert_eq!(
        store
            .delete_group(&g, &plan(1, DeleteExpect::RevokedGrant(Epoch(0)), T0 + 20))
            .await
            .unwrap(),
        DeleteOutcome::Deleted
    );
    let tombstone = group_item(&store, "g1").await;
    assert!(tombstone.deleted);
    assert_eq!(
        (
            tombstone.epoch,
            tombstone.holder.clone(),
            tombstone.holder_host_epoch,
            tombstone.updated_at_ms
        ),
        (Epoch(1), None, None, T0 + 20),
        "the tombstone keeps the epoch and nothing of the grant"
    );
    assert!(tombstone.members.is_empty(), "{tombstone:?}");
    assert_eq!(
        store
            .delete_group(&g, &plan(1, DeleteExpect::Free, T0 + 30))
            .await
            .unwrap(),
        DeleteOutcome::UnknownGroup,
        "a group is deleted once"
    );
    assert_eq!(
        store
            .delete_group(&group_id("nope"), &plan(0, DeleteExpect::Free, T0 + 30))
            .await
            .unwrap(),
        DeleteOutcome::UnknownGroup
    );
    refused(
        store
            .acquire(&g, &acquire("a", 0, 1, AcquireExpect::Revoked, T0 + 40))
            .await
            .unwrap(),
        "acquiring a tombstone",
    );
    let release = ReleasePlan {
        host: host("a"),
        epoch: Epoch(1),
        now: T0 + 40,
    };
    assert_eq!(
        store.release(&g, &release, &[]).await.unwrap(),
        ReleaseOutcome::UnknownGroup
    );
    assert_eq!(
        store
            .set_member_draining(&g, &host("a"), true, T0 + 40)
            .await
            .unwrap(),
        MemberUpdate::UnknownGroup
    );
    assert_eq!(
        group_item(&store, "g1").await,
        tombstone,
        "only a re-creation writes a tombstone"
    );
}

async fn set_member_draining_marks_the_member_and_tells_its_host<S: LeaseStore>(store: S) {
    create(&store, "g1", &["a", "b"], T0).await;
    let g = group_id("g1");
    store
        .consume_attention(&host("a"), &ids(&["g1"]), T0)
        .await
        .unwrap();
    match store
        .set_member_draining(&g, &host("a"), true, T0 + 10)
        .await
        .unwrap()
    {
        MemberUpdate::Recorded(record) => {
            assert!(record.members[&host("a")].draining);
            assert!(!record.members[&host("b")].draining);
        }
        other => panic!("draining a member must be recorded: {other:?}"),
    }
    assert!(group_item(&store, "g1").await.members[&host("a")].draining);
    assert_eq!(
        host_item(&store, "a").await.attention,
        ids(&["g1"]),
        "the drained host is told in the same transaction"
    );
    match store
        .set_member_draining(&g, &host("x"), true, T0 + 10)
        .await
        .unwrap()
    {
        MemberUpdate::NotMember(record) => assert!(!record.members.contains_key(&host("x"))),
        other => panic!("draining a non-member must be refused: {other:?}"),
    }
    assert_eq!(
        store.read_host(&host("x")).await.unwrap(),
        None,
        "a refused drain tells nobody"
    );
    assert_eq!(
        store
            .set_member_draining(&group_id("nope"), &host("a"), true, T0 + 10)
            .await
            .unwrap(),
        MemberUpdate::UnknownGroup
    );
    let drained = store
        .set_host_draining(&host("b"), true, T0 + 20)
        .await
        .unwrap();
    assert!(drained.draining);
    let undrained = store
        .set_host_draining(&host("b"), false, T0 + 30)
        .await
        .unwrap();
    assert!(!undrained.draining);
    assert_eq!(host_item(&store, "b").await, undrained);
}

// ---------------------------------------------------------------------------------------------
// Reads

async fn a_batch_read_returns_what_exists_across_more_than_a_hundred_keys<S: LeaseStore>(store: S) {
    for g in ["g-0", "g-50", "g-104"] {
        create(&store, g, &["a"], T0).await;
    }
    recorded(&store, &beat("a", "i-1", true, T0)).await;
    let groups: Vec<GroupId> = (0..105).map(|i| group_id(&format!("g-{i}"))).collect();
    let reads = store
        .read(&[host("a"), host("ghost")], &groups)
        .await
        .unwrap();
    assert_eq!(
        reads.hosts.keys().cloned().collect::<Vec<_>>(),
        vec![host("a")],
        "a missing host is simply absent"
    );
    assert_eq!(
        reads.groups.keys().cloned().collect::<BTreeSet<_>>(),
        ids(&["g-0", "g-50", "g-104"]),
        "107 keys, read in more than one batch"
    );
    assert_eq!(
        reads.groups[&group_id("g-50")],
        group_item(&store, "g-50").await
    );
}

async fn scan_hosts_segments_cover_every_host_once<S: LeaseStore>(store: S) {
    let mut names: Vec<String> = (0..10).map(|i| format!("h{i}")).collect();
    for name in &names {
        recorded(&store, &beat(name, "i-1", true, T0)).await;
    }
    let mut seen = Vec::new();
    for segment in 0..3 {
        let hosts: Vec<HostRecord> = store.scan_hosts(segment, 3).try_collect().await.unwrap();
        seen.extend(hosts.into_iter().map(|h| h.host_id.to_string()));
    }
    seen.sort();
    names.sort();
    assert_eq!(seen, names, "three segments list every host exactly once");
}

/// The `by-holder` index serves `GET /v1/hosts/{host_id}` and operators (eventually
/// consistent, so this waits up to 3 s for it).
async fn groups_held_by_lists_the_groups_a_host_holds_with_their_epochs<S: LeaseStore>(store: S) {
    for g in ["g1", "g2", "g3"] {
        create(&store, g, &["a", "b"], T0).await;
    }
    for (g, h) in [("g1", "a"), ("g2", "a"), ("g3", "b")] {
        done(
            store
                .acquire(&group_id(g), &acquire(h, 0, 0, AcquireExpect::Free, T0))
                .await
                .unwrap(),
            "acquire",
        );
    }
    let expected = vec![
        ("g1".to_owned(), Epoch(1), Some(Epoch(0))),
        ("g2".to_owned(), Epoch(1), Some(Epoch(0))),
    ];
    let mut last = None;
    for _ in 0..30 {
        match store.groups_held_by(&host("a")).await {
            Ok(groups) => {
                let mut got: Vec<_> = groups
                    .iter()
                    .map(|g| (g.group_id.to_string(), g.epoch, g.holder_host_epoch))
                    .collect();
                got.sort();
                if got == expected {
                    return;
                }
                last = Some(Ok(got));
            }
            Err(e) => last = Some(Err(e.to_string())),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("groups_held_by(a) never listed {expected:?}; last answer: {last:?}");
}
