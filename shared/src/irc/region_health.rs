//! The health record of each target region, shared by the workers that call it and the
//! dispatcher that probes it: the `RegionHealth` table in the source region, partition key
//! `region`, sort key `slot`:
//!
//! - `slot = "state"`: the region's [`RegionState`] (open or closed, probes, when it recovered).
//! - `slot = "b#<bucket start, 13 digits>"`: one time bucket of call outcomes, `successes` and
//!   `failures` raised with `ADD` (an atomic counter, no read; every worker adds to the same
//!   few items, each for one bucket's width only, so no item is a lasting hot key), expiring
//!   by TTL an hour after it left the window.
//!
//! One `Query` reads the state and the window's buckets together. Counting is a plain update
//! (counters commute); the state changes only by conditional writes, see
//! [`RegionState`]. The trait is core (the worker's unit tests run on the in-memory one in
//! [`super::memory`]); the DynamoDB table [`RegionHealthTable`] needs the `aws` feature.

use super::health::{Admission, CallVerdict, HealthPolicy, RegionHealth, RegionState};
use super::ids::Region;
use super::remote::Prober;
use crate::{Millis, StoreError};
use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use tracing::{info, warn};

/// The sort key of the state item.
pub const STATE_SLOT: &str = "state";

/// The sort key of the bucket starting at `start_ms` (fixed width, so keys sort by time).
pub fn bucket_slot(start_ms: Millis) -> String {
    format!("b#{start_ms:013}")
}

/// What workers and the dispatcher need of the health records.
#[async_trait]
pub trait HealthRecords: Send + Sync {
    /// The region's state and its buckets starting at or after `since_ms`.
    async fn read(&self, region: &Region, since_ms: Millis) -> Result<RegionHealth, StoreError>;

    /// Adds one call's verdict to the bucket starting at `bucket_start_ms`.
    async fn count(
        &self,
        region: &Region,
        verdict: CallVerdict,
        bucket_start_ms: Millis,
        expires_at_ms: Millis,
    ) -> Result<(), StoreError>;

    /// Closed -> open, on the condition that it is not open: `true` if this call opened it
    /// (its probe schedule stands), `false` if it was open already.
    async fn open(
        &self,
        region: &Region,
        now: Millis,
        next_probe_at_ms: Millis,
        reason: &str,
    ) -> Result<bool, StoreError>;

    /// A probe's result, on the condition that the region is still in the opening `seen`
    /// (same `opened_at_ms`, same `probes`), so two probers never both count: `alive` closes it
    /// (`recovered_at_ms = now`), otherwise one more failed probe and the next one's time.
    async fn probed(
        &self,
        region: &Region,
        seen: &RegionState,
        alive: bool,
        now: Millis,
        next_probe_at_ms: Millis,
    ) -> Result<bool, StoreError>;
}

/// A worker's view of the regions it calls: reads each region's record at most once per
/// `policy.cache_ms`, adds its own verdicts to what it read at once, and opens a region when
/// the window says so.
///
/// The health store is advisory: when it cannot be read or written, ops are attempted as if
/// the region were healthy (logged), so a problem with the health table never stops the work.
pub struct HealthMonitor<H> {
    pub records: H,
    pub policy: HealthPolicy,
    cache: Mutex<HashMap<Region, (Millis, RegionHealth)>>,
}

impl<H: HealthRecords> HealthMonitor<H> {
    pub fn new(records: H, policy: HealthPolicy) -> Self {
        Self {
            records,
            policy,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, region: &Region, now: Millis) -> Option<RegionHealth> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(region)
            .filter(|(at, _)| now < at + self.policy.cache_ms)
            .map(|(_, h)| h.clone())
    }

    /// The region's health as of at most `cache_ms` ago; `None` if the store could not say.
    pub async fn health(&self, region: &Region, now: Millis) -> Option<RegionHealth> {
        if let Some(h) = self.cached(region, now) {
            return Some(h);
        }
        self.refresh(region, now).await
    }

    async fn refresh(&self, region: &Region, now: Millis) -> Option<RegionHealth> {
        let since = self
            .policy
            .bucket_of(now.saturating_sub(self.policy.window_ms));
        match self.records.read(region, since).await {
            Ok(h) => {
                self.cache
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(region.clone(), (now, h.clone()));
                Some(h)
            }
            Err(e) => {
                warn!(%region, error = %e, "could not read the region's health; attempting as if healthy");
                None
            }
        }
    }

    /// Whether `op_id` to `region` may be attempted now.
    pub async fn admission(&self, region: &Region, op_id: &str, now: Millis) -> Admission {
        match self.health(region, now).await {
            Some(h) => self.policy.admission(&h.state, op_id, now),
            None => Admission::Attempt,
        }
    }

    /// Counts one call's verdict; `Some(state)` when the region is open after it (this
    /// failure opened it, or found it open), `None` when it is not.
    pub async fn observe(
        &self,
        region: &Region,
        verdict: CallVerdict,
        now: Millis,
        reason: &str,
    ) -> Option<RegionState> {
        // Read (or take from the cache) before counting, then add this call to what was read:
        // counted once whether the read came before or after other workers' counts.
        let health = self.health(region, now).await;
        let start = self.policy.bucket_of(now);
        let expires = start + self.policy.window_ms + self.policy.bucket_ms + 3_600_000;
        if let Err(e) = self.records.count(region, verdict, start, expires).await {
            warn!(%region, error = %e, "could not count a call in the region's health");
        }
        let mut health = health?;
        self.policy.record(&mut health.buckets, verdict, now);
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(region.clone(), (now, health.clone()));
        if verdict == CallVerdict::Healthy {
            return None;
        }
        if health.state.open {
            return Some(health.state);
        }
        if !self.policy.unavailable(&health.buckets, now) {
            return None;
        }
        let next_probe = self.policy.next_probe_at(0, now);
        match self.records.open(region, now, next_probe, reason).await {
            Ok(true) => {
                warn!(%region, reason, next_probe_at_ms = next_probe, "region unavailable: its ops are held until a probe finds it alive");
                crate::metrics::irc_region_opened(region.as_str());
                let state = RegionState {
                    open: true,
                    opened_at_ms: now,
                    recovered_at_ms: health.state.recovered_at_ms,
                    probes: 0,
                    next_probe_at_ms: next_probe,
                    reason: Some(reason.to_owned()),
                };
                health.state = state.clone();
                self.cache
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(region.clone(), (now, health));
                Some(state)
            }
            // Another worker opened it first: its schedule stands.
            Ok(false) => self
                .refresh(region, now)
                .await
                .map(|h| h.state)
                .filter(|s| s.open),
            Err(e) => {
                warn!(%region, error = %e, "could not open the region in its health record");
                None
            }
        }
    }
}

/// What one round of probes found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeRound {
    /// Regions unavailable after the round: the dispatcher enqueues nothing for them.
    pub unavailable: BTreeSet<Region>,
    pub probes: u64,
    /// Regions a probe found alive (closed: their held ops come back over the ramp).
    pub recovered: Vec<Region>,
    pub errors: u64,
}

/// The dispatcher's round over `regions`: each open region whose probe is due is probed once
/// (a signed `GET` of an op that never exists); alive closes it, otherwise the next probe is
/// scheduled further out ([`HealthPolicy::next_probe_at`]). The write is conditional on the
/// opening it probed, so two dispatchers (or a late one) never both count a probe.
///
/// During an outage a region costs one call per probe interval, whatever its backlog.
pub async fn probe_round<H: HealthRecords + ?Sized, P: Prober + ?Sized>(
    records: &H,
    prober: &P,
    policy: &HealthPolicy,
    regions: &[Region],
    now: Millis,
    timeout: std::time::Duration,
) -> ProbeRound {
    let mut round = ProbeRound::default();
    for region in regions {
        let state = match records.read(region, now).await {
            Ok(h) => h.state,
            Err(e) => {
                warn!(%region, error = %e, "could not read the region's health");
                round.errors += 1;
                continue;
            }
        };
        if !state.open {
            continue;
        }
        if state.next_probe_at_ms > now {
            round.unavailable.insert(region.clone());
            continue;
        }
        let alive = prober.probe(region, timeout).await;
        round.probes += 1;
        crate::metrics::irc_region_probe(region.as_str(), alive);
        let next = policy.next_probe_at(state.probes + 1, now);
        match records.probed(region, &state, alive, now, next).await {
            Ok(true) if alive => {
                info!(%region, down_for_ms = now.saturating_sub(state.opened_at_ms), probes = state.probes + 1, "region alive again: its held ops resume over the ramp");
                round.recovered.push(region.clone());
            }
            Ok(true) => {
                info!(%region, probes = state.probes + 1, next_probe_at_ms = next, "region still unavailable");
                round.unavailable.insert(region.clone());
            }
            // Someone else probed this opening meanwhile; the next round reads their result.
            Ok(false) => {
                round.unavailable.insert(region.clone());
            }
            Err(e) => {
                warn!(%region, error = %e, "could not record the probe");
                round.errors += 1;
                round.unavailable.insert(region.clone());
            }
        }
    }
    round
}

#[cfg(feature = "aws")]
pub use table::RegionHealthTable;

#[cfg(feature = "aws")]
mod table {
    use super::*;
    use crate::aws::{condition_held, n, s};
    use crate::irc::health::Bucket;
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_sdk_dynamodb::Client;

    /// The `RegionHealth` table.
    #[derive(Debug, Clone)]
    pub struct RegionHealthTable {
        client: Client,
        table: String,
    }

    fn number(item: &crate::aws::Item, name: &str) -> Option<u64> {
        match item.get(name) {
            Some(AttributeValue::N(v)) => v.parse().ok(),
            _ => None,
        }
    }

    impl RegionHealthTable {
        pub fn new(client: Client, table: impl Into<String>) -> Self {
            Self {
                client,
                table: table.into(),
            }
        }

        /// Every region the table has a record of: a state item (it opened once) or a bucket
        /// still within its TTL (this stack called it lately). A `Scan` of the region keys: the
        /// table holds a state item per region and a few dozen live buckets, so it stays small.
        pub async fn regions(&self) -> Result<BTreeSet<Region>, StoreError> {
            let mut regions = BTreeSet::new();
            let mut start = None;
            loop {
                let out = self
                    .client
                    .scan()
                    .table_name(&self.table)
                    .projection_expression("#region")
                    .expression_attribute_names("#region", "region")
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| StoreError::from_sdk("Scan(RegionHealth)", e))?;
                for item in out.items.unwrap_or_default() {
                    if let Some(AttributeValue::S(raw)) = item.get("region") {
                        let region = Region::parse(raw).map_err(|e| StoreError::Corrupt {
                            item: raw.clone(),
                            reason: e.to_string(),
                        })?;
                        regions.insert(region);
                    }
                }
                match out.last_evaluated_key {
                    Some(key) if !key.is_empty() => start = Some(key),
                    _ => return Ok(regions),
                }
            }
        }

        fn state_of(item: &crate::aws::Item) -> RegionState {
            RegionState {
                open: matches!(item.get("open"), Some(AttributeValue::Bool(true))),
                opened_at_ms: number(item, "opened_at_ms").unwrap_or(0),
                recovered_at_ms: number(item, "recovered_at_ms"),
                probes: number(item, "probes")
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or(0),
                next_probe_at_ms: number(item, "next_probe_at_ms").unwrap_or(0),
                reason: match item.get("reason") {
                    Some(AttributeValue::S(r)) => Some(r.clone()),
                    _ => None,
                },
            }
        }
    }

    #[async_trait]
    impl HealthRecords for RegionHealthTable {
        async fn read(
            &self,
            region: &Region,
            since_ms: Millis,
        ) -> Result<RegionHealth, StoreError> {
            // "b#..." sorts before "state": one range from the window's first bucket on.
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#region = :region AND slot >= :since")
                .expression_attribute_names("#region", "region")
                .expression_attribute_values(":region", s(region.as_str()))
                .expression_attribute_values(":since", s(&bucket_slot(since_ms)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| StoreError::from_sdk("Query(RegionHealth)", e))?;
            let mut health = RegionHealth::default();
            for item in out.items.unwrap_or_default() {
                match item.get("slot") {
                    Some(AttributeValue::S(slot)) if slot == STATE_SLOT => {
                        health.state = Self::state_of(&item)
                    }
                    Some(AttributeValue::S(slot)) => {
                        if let Some(start_ms) = slot.strip_prefix("b#").and_then(|t| t.parse().ok())
                        {
                            // A bucket has only the counters it was given: a missing one is 0.
                            let count = |name: &str| {
                                number(&item, name)
                                    .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
                                    .unwrap_or(0)
                            };
                            health.buckets.push(Bucket {
                                start_ms,
                                successes: count("successes"),
                                failures: count("failures"),
                            });
                        }
                    }
                    _ => {}
                }
            }
            Ok(health)
        }

        async fn count(
            &self,
            region: &Region,
            verdict: CallVerdict,
            bucket_start_ms: Millis,
            expires_at_ms: Millis,
        ) -> Result<(), StoreError> {
            let field = match verdict {
                CallVerdict::Healthy => "successes",
                CallVerdict::RegionFailure => "failures",
            };
            // A plain update: counters commute, and a lost count only blurs the rate.
            self.client
                .update_item()
                .table_name(&self.table)
                .key("region", s(region.as_str()))
                .key("slot", s(&bucket_slot(bucket_start_ms)))
                .update_expression(format!("ADD {field} :one SET expires_at = :ttl"))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":ttl", n(expires_at_ms / 1_000))
                .send()
                .await
                .map_err(|e| StoreError::from_sdk("UpdateItem(health count)", e))?;
            Ok(())
        }

        async fn open(
            &self,
            region: &Region,
            now: Millis,
            next_probe_at_ms: Millis,
            reason: &str,
        ) -> Result<bool, StoreError> {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("region", s(region.as_str()))
                .key("slot", s(STATE_SLOT))
                .update_expression(
                    "SET #open = :true, opened_at_ms = :now, probes = :zero, \
                     next_probe_at_ms = :next, reason = :reason, updated_at_ms = :now",
                )
                .condition_expression("attribute_not_exists(#open) OR #open = :false")
                .expression_attribute_names("#open", "open")
                .expression_attribute_values(":true", AttributeValue::Bool(true))
                .expression_attribute_values(":false", AttributeValue::Bool(false))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":next", n(next_probe_at_ms))
                .expression_attribute_values(":reason", s(reason))
                .send()
                .await;
            condition_held("UpdateItem(health open)", result)
        }

        async fn probed(
            &self,
            region: &Region,
            seen: &RegionState,
            alive: bool,
            now: Millis,
            next_probe_at_ms: Millis,
        ) -> Result<bool, StoreError> {
            let request = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("region", s(region.as_str()))
                .key("slot", s(STATE_SLOT))
                .condition_expression(
                    "#open = :true AND opened_at_ms = :opened AND probes = :probes",
                )
                .expression_attribute_names("#open", "open")
                .expression_attribute_values(":true", AttributeValue::Bool(true))
                .expression_attribute_values(":opened", n(seen.opened_at_ms))
                .expression_attribute_values(":probes", n(u64::from(seen.probes)))
                .expression_attribute_values(":now", n(now));
            let request = if alive {
                request
                    .update_expression(
                        "SET #open = :false, recovered_at_ms = :now, updated_at_ms = :now",
                    )
                    .expression_attribute_values(":false", AttributeValue::Bool(false))
            } else {
                request
                    .update_expression(
                        "SET next_probe_at_ms = :next, updated_at_ms = :now ADD probes :one",
                    )
                    .expression_attribute_values(":next", n(next_probe_at_ms))
                    .expression_attribute_values(":one", n(1))
            };
            condition_held("UpdateItem(health probe)", request.send().await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irc::memory::MemoryHealth;
    use std::time::Duration;

    struct Answers(Mutex<Vec<bool>>, Mutex<u32>);

    #[async_trait]
    impl Prober for Answers {
        async fn probe(&self, _region: &Region, _timeout: Duration) -> bool {
            *self.1.lock().unwrap() += 1;
            let mut answers = self.0.lock().unwrap();
            if answers.is_empty() {
                false
            } else {
                answers.remove(0)
            }
        }
    }

    fn eu() -> Region {
        Region::parse("eu-west-1").unwrap()
    }

    fn policy() -> HealthPolicy {
        HealthPolicy {
            cache_ms: 0,
            ..HealthPolicy::default()
        }
    }

    /// Five failures with no success open the region; only one of two racing openings wins.
    #[tokio::test]
    async fn failures_open_the_region_once_and_successes_do_not() {
        let monitor = HealthMonitor::new(MemoryHealth::new(), policy());
        for n in 0..4 {
            assert_eq!(
                monitor
                    .observe(&eu(), CallVerdict::RegionFailure, 1_000 + n, "HTTP 503")
                    .await,
                None
            );
        }
        let opened = monitor
            .observe(&eu(), CallVerdict::RegionFailure, 1_010, "HTTP 503")
            .await
            .expect("the fifth failure opens it");
        assert_eq!(opened.next_probe_at_ms, 1_010 + policy().probe_first_ms);
        assert_eq!(
            monitor.admission(&eu(), "op", 1_020).await,
            Admission::Hold {
                until_ms: opened.next_probe_at_ms
            }
        );
        // Another worker's failure finds it open: the first opening's schedule stands.
        let again = monitor
            .observe(&eu(), CallVerdict::RegionFailure, 1_030, "HTTP 503")
            .await
            .unwrap();
        assert_eq!(again.opened_at_ms, 1_010);
        assert!(!monitor.records.open(&eu(), 1_040, 9, "x").await.unwrap());
    }

    #[tokio::test]
    async fn probes_back_off_while_the_region_fails_and_close_it_when_it_answers() {
        let records = MemoryHealth::new();
        let p = policy();
        assert!(records.open(&eu(), 0, 5_000, "HTTP 503").await.unwrap());
        let prober = Answers(Mutex::new(vec![false, false, true]), Mutex::new(0));
        let regions = [eu()];
        let t = Duration::from_secs(1);

        // Not due yet: no probe, still unavailable.
        let r = probe_round(&records, &prober, &p, &regions, 4_000, t).await;
        assert_eq!((r.probes, r.unavailable.len()), (0, 1));
        // Due: probed, failed, next in 10 s (doubling from 5 s).
        let r = probe_round(&records, &prober, &p, &regions, 5_000, t).await;
        assert_eq!((r.probes, r.unavailable.len()), (1, 1));
        assert_eq!(records.state(&eu()).next_probe_at_ms, 15_000);
        // Rounds before then cost nothing.
        for now in [6_000, 10_000, 14_999] {
            assert_eq!(
                probe_round(&records, &prober, &p, &regions, now, t)
                    .await
                    .probes,
                0
            );
        }
        let r = probe_round(&records, &prober, &p, &regions, 15_000, t).await;
        assert_eq!(r.probes, 1);
        assert_eq!(records.state(&eu()).next_probe_at_ms, 15_000 + 20_000);
        let r = probe_round(&records, &prober, &p, &regions, 35_000, t).await;
        assert_eq!((r.recovered.clone(), r.unavailable.len()), (vec![eu()], 0));
        let state = records.state(&eu());
        assert!(!state.open);
        assert_eq!(state.recovered_at_ms, Some(35_000));
        assert_eq!(*prober.1.lock().unwrap(), 3, "one probe per interval");
    }

    #[tokio::test]
    async fn a_probe_result_for_an_older_opening_changes_nothing() {
        let records = MemoryHealth::new();
        assert!(records.open(&eu(), 0, 5_000, "x").await.unwrap());
        let seen = records.state(&eu());
        // Closed and opened again since it was read.
        assert!(records.probed(&eu(), &seen, true, 5_000, 0).await.unwrap());
        assert!(records.open(&eu(), 6_000, 11_000, "y").await.unwrap());
        assert!(!records.probed(&eu(), &seen, true, 7_000, 0).await.unwrap());
        assert!(records.state(&eu()).open);
    }

    #[test]
    fn bucket_slots_sort_by_time_and_before_the_state() {
        let slots = [
            bucket_slot(5_000),
            bucket_slot(45_000),
            bucket_slot(1_765_000_000_000),
        ];
        assert!(slots.windows(2).all(|w| w[0] < w[1]), "{slots:?}");
        assert!(slots.iter().all(|s| s.as_str() < STATE_SLOT));
    }
}
