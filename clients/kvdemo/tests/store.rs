//! The data table's two fences against the deployed local stack's DynamoDB: an older epoch of a
//! group can neither overwrite a newer epoch's key nor write a fresh key once a newer epoch has
//! written anything or raised the group's fence; other groups' epochs are their own.

use anyhow::{ensure, Context, Result};
use kvdemo::store::{KvError, KvStore};
use tenure::clock::{Clock, SystemClock};
use tenure::ids::GroupId;
use tenure::lease::Epoch;
use tenure_testkit::stacks;

async fn store(tag: &str) -> Result<KvStore> {
    let stack = stacks("TENURE_E2E_REGIONS")?
        .into_iter()
        .next()
        .context("a deployed stack")?;
    let client = tenure::aws::dynamodb_client(&stack.sdk().await, None);
    let store = KvStore::new(
        client,
        format!(
            "kvdemo-store-{tag}-{}-{}",
            std::process::id(),
            SystemClock.now_ms()
        ),
    );
    store.ensure_table().await?;
    Ok(store)
}

fn g(id: &str) -> GroupId {
    GroupId::parse(id).expect("valid group id")
}

#[tokio::test]
async fn an_older_epoch_is_refused_for_every_key_once_a_newer_one_wrote() -> Result<()> {
    let s = store("fence").await?;
    let g1 = g("g1");
    s.put(&g1, "a", "1", Epoch(1)).await?;
    s.put(&g1, "a", "2", Epoch(2)).await?;
    // A fresh key: only the group fence can refuse this one.
    let stale = s.put(&g1, "b", "old", Epoch(1)).await;
    ensure!(
        matches!(stale, Err(KvError::StaleEpoch { .. })),
        "{stale:?}"
    );
    ensure!(
        s.get(&g1, "b").await?.is_none(),
        "the stale write was stored"
    );
    ensure!(s.get(&g1, "a").await?.map(|v| v.value) == Some("2".into()));
    Ok(())
}

#[tokio::test]
async fn raising_the_fence_refuses_older_epochs_before_any_write() -> Result<()> {
    let s = store("raise").await?;
    let g1 = g("g1");
    s.put(&g1, "a", "1", Epoch(4)).await?;
    s.raise_fence(&g1, Epoch(5)).await?;
    let stale = s.put(&g1, "fresh", "x", Epoch(4)).await;
    ensure!(
        matches!(stale, Err(KvError::StaleEpoch { .. })),
        "{stale:?}"
    );
    let behind = s.raise_fence(&g1, Epoch(3)).await;
    ensure!(
        matches!(behind, Err(KvError::FenceAhead { .. })),
        "{behind:?}"
    );
    s.put(&g1, "fresh", "y", Epoch(5)).await?;
    let reserved = s.put(&g1, "#fence", "x", Epoch(9)).await;
    ensure!(
        matches!(reserved, Err(KvError::ReservedKey(_))),
        "{reserved:?}"
    );
    Ok(())
}

#[tokio::test]
async fn each_group_has_its_own_key_space_and_fence() -> Result<()> {
    let s = store("groups").await?;
    let (g1, g2) = (g("g1"), g("g2"));
    s.put(&g1, "k", "one", Epoch(7)).await?;
    // g2 is at epoch 1: g1's epoch 7 does not fence it, and the same key is another item.
    s.put(&g2, "k", "two", Epoch(1)).await?;
    ensure!(s.get(&g1, "k").await?.map(|v| v.value) == Some("one".into()));
    ensure!(s.get(&g2, "k").await?.map(|v| v.value) == Some("two".into()));
    s.raise_fence(&g2, Epoch(3)).await?;
    let stale = s.put(&g2, "other", "x", Epoch(2)).await;
    ensure!(
        matches!(stale, Err(KvError::StaleEpoch { .. })),
        "{stale:?}"
    );
    s.put(&g1, "other", "y", Epoch(7)).await?;
    Ok(())
}
