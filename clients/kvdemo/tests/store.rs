//! The data table's two fences against the deployed local stack's DynamoDB: an older epoch can
//! neither overwrite a newer epoch's key nor write a fresh key once a newer epoch has written
//! anything or raised the group fence.

use anyhow::{ensure, Context, Result};
use kvdemo::store::{KvError, KvStore};
use tenure::clock::{Clock, SystemClock};
use tenure::lease::Epoch;
use tenure_e2e::stacks;

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

#[tokio::test]
async fn an_older_epoch_is_refused_for_every_key_once_a_newer_one_wrote() -> Result<()> {
    let s = store("fence").await?;
    s.put("a", "1", Epoch(1)).await?;
    s.put("a", "2", Epoch(2)).await?;
    // A fresh key: only the group fence can refuse this one.
    let stale = s.put("b", "old", Epoch(1)).await;
    ensure!(
        matches!(stale, Err(KvError::StaleEpoch { .. })),
        "{stale:?}"
    );
    ensure!(s.get("b").await?.is_none(), "the stale write was stored");
    ensure!(s.get("a").await?.map(|v| v.value) == Some("2".into()));
    Ok(())
}

#[tokio::test]
async fn raising_the_fence_refuses_older_epochs_before_any_write() -> Result<()> {
    let s = store("raise").await?;
    s.put("a", "1", Epoch(4)).await?;
    s.raise_fence(Epoch(5)).await?;
    let stale = s.put("fresh", "x", Epoch(4)).await;
    ensure!(
        matches!(stale, Err(KvError::StaleEpoch { .. })),
        "{stale:?}"
    );
    let behind = s.raise_fence(Epoch(3)).await;
    ensure!(
        matches!(behind, Err(KvError::FenceAhead { .. })),
        "{behind:?}"
    );
    s.put("fresh", "y", Epoch(5)).await?;
    let reserved = s.put("#fence", "x", Epoch(9)).await;
    ensure!(
        matches!(reserved, Err(KvError::ReservedKey(_))),
        "{reserved:?}"
    );
    Ok(())
}
