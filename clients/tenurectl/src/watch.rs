//! `tenurectl watch group GROUP` / `tenurectl watch host HOST`: a live view for the terminal,
//! redrawn every `--interval-ms`: a group's holder, epochs and grant, its members' host leases
//! and recent history; or a host's lease, epoch and the groups it holds. Below each frame, the
//! changes seen while watching (holder, epoch, a lease going live or lapsing), so a failover
//! that happens between two glances is still on screen.
//!
//! A refresh that fails (throttling, a store outage) does not end the watch: the last frame
//! stays, with the error and its age, and the next refresh tries again. With `--json`, one JSON
//! line per frame; `--frames N` stops after N frames (scripts, tests).

use crate::history;
use crate::hosts::{ago, host_lines, lease_text};
use anyhow::Result;
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::time::Duration;
use tenure::clock::{Clock, SystemClock};
use tenure::ids::{GroupId, HostId};
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::history::HistoryEntry;
use tenure::lease::history_store::HistoryStore;
use tenure::lease::host::HostRecord;
use tenure::lease::protocol::{grant_state, is_revocable, GrantState};
use tenure::lease::record::LeaseRecord;
use tenure::lease::service::{HostView, LeaseService};
use tenure::lease::store::LeaseStore;
use tenure::lease::LeaseConfig;

/// Changes kept under the frame.
const CHANGES_KEPT: usize = 8;
/// Groups listed in a host's frame (the rest are counted).
const HOST_GROUPS_SHOWN: usize = 20;

#[derive(clap::Args)]
pub struct WatchSettings {
    /// Milliseconds between refreshes.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(100..))]
    interval_ms: u64,
    /// Stop after this many frames (default: until interrupted).
    #[arg(long)]
    frames: Option<u64>,
    /// History entries shown under a group (needs the LeaseHistory table).
    #[arg(long, default_value_t = 5)]
    history: i32,
}

#[derive(clap::Subcommand)]
pub enum WatchTarget {
    /// A group: holder, epochs, grant, members' host leases, recent history.
    Group {
        group: String,
        #[command(flatten)]
        settings: WatchSettings,
    },
    /// A host: its lease, epoch, incarnation and the groups it holds.
    Host {
        host: String,
        #[command(flatten)]
        settings: WatchSettings,
    },
}

/// One read of a group and its members.
#[derive(Debug, Clone)]
pub struct GroupSnapshot {
    pub group: GroupId,
    /// `None`: no such group (or deleted).
    pub record: Option<LeaseRecord>,
    pub members: BTreeMap<HostId, HostRecord>,
    /// `None`: no history table configured.
    pub history: Option<Vec<HistoryEntry>>,
    pub now_ms: u64,
}

/// The facts whose change is worth a line: for a group, its holder, epoch and each member's
/// lease being live; for a host, its epoch, incarnation, lease and groups held.
type Facts = BTreeMap<String, String>;

fn group_facts(s: &GroupSnapshot, cfg: &LeaseConfig) -> Facts {
    let mut facts = Facts::new();
    match &s.record {
        None => {
            facts.insert("group".into(), "absent".into());
        }
        Some(r) => {
            facts.insert(
                "holder".into(),
                r.holder.as_ref().map_or("none".into(), |h| h.to_string()),
            );
            facts.insert("epoch".into(), r.epoch.to_string());
            for (host, record) in &s.members {
                facts.insert(
                    format!("{host} lease"),
                    liveness(record, s.now_ms, cfg).into(),
                );
            }
        }
    }
    facts
}

fn host_facts(v: &HostView, cfg: &LeaseConfig) -> Facts {
    let h = &v.host;
    Facts::from([
        ("epoch".to_owned(), h.epoch.to_string()),
        (
            "incarnation".to_owned(),
            h.incarnation.as_ref().map_or("-".into(), |i| i.to_string()),
        ),
        ("lease".to_owned(), liveness(h, v.now_ms, cfg).into()),
        ("draining".to_owned(), h.draining.to_string()),
        (
            "groups held".to_owned(),
            v.groups.iter().filter(|g| g.current).count().to_string(),
        ),
    ])
}

fn liveness(h: &HostRecord, now: u64, cfg: &LeaseConfig) -> &'static str {
    if h.expires_at_ms == 0 {
        "none"
    } else if is_revocable(h, now, cfg) {
        "lapsed"
    } else {
        "live"
    }
}

/// What changed between frames, newest last, at most [`CHANGES_KEPT`].
#[derive(Debug, Default)]
pub struct Changes {
    last: Option<Facts>,
    seen: VecDeque<(u64, String)>,
}

impl Changes {
    /// Compares with the previous frame's facts; the first frame records nothing.
    pub fn observe(&mut self, now_ms: u64, facts: Facts) {
        if let Some(last) = &self.last {
            let keys: std::collections::BTreeSet<&String> =
                last.keys().chain(facts.keys()).collect();
            for key in keys {
                let (was, is) = (last.get(key), facts.get(key));
                if was != is {
                    self.seen.push_back((
                        now_ms,
                        format!(
                            "{key}: {} -> {}",
                            was.map_or("-", String::as_str),
                            is.map_or("-", String::as_str)
                        ),
                    ));
                }
            }
            while self.seen.len() > CHANGES_KEPT {
                self.seen.pop_front();
            }
        }
        self.last = Some(facts);
    }

    fn lines(&self) -> String {
        if self.seen.is_empty() {
            return "  (none yet)".into();
        }
        self.seen
            .iter()
            .map(|(at, what)| format!("  {}  {what}", history::utc(*at)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn json(&self) -> serde_json::Value {
        json!(self
            .seen
            .iter()
            .map(|(at, what)| json!({"at_ms": at, "change": what}))
            .collect::<Vec<_>>())
    }
}

/// A group's frame.
pub fn group_frame(s: &GroupSnapshot, changes: &Changes, cfg: &LeaseConfig) -> String {
    let mut out = format!("group {}    {} UTC\n\n", s.group, history::utc(s.now_ms));
    let Some(r) = &s.record else {
        out.push_str("no such group (never created, or deleted)\n");
        out.push_str(&format!(
            "\nchanges seen while watching\n{}\n",
            changes.lines()
        ));
        return out;
    };
    let holder_record = r.holder.as_ref().and_then(|h| s.members.get(h));
    let grant = match grant_state(r, holder_record, s.now_ms, cfg) {
        GrantState::Free => "free: no holder".to_owned(),
        GrantState::Live { holder } => format!(
            "live: {holder} may write until its host lease ends in {} ms",
            holder_record.map_or(0, |h| h.expires_at_ms.saturating_sub(s.now_ms))
        ),
        GrantState::Lapsed { holder, host_epoch } => format!(
            "lapsed: {holder}'s host lease (epoch {host_epoch}) is over; the next check by a member revokes it"
        ),
        GrantState::Revoked { holder, .. } => {
            format!("revoked: {holder}'s host epoch moved on; a member acquires at its next check")
        }
        GrantState::V1Held { holder } => format!("v1 lease held by {holder}"),
        GrantState::V1Lapsed { holder } => format!("v1 lease of {holder} expired"),
    };
    out.push_str(&format!(
        "holder      {}\nepoch       {}\nhost epoch  {}\ngrant       {grant}\n\n",
        r.holder.as_ref().map_or("(none)", |h| h.as_str()),
        r.epoch,
        r.holder_host_epoch
            .map_or_else(|| "-".to_owned(), |e| e.to_string()),
    ));
    out.push_str(&format!(
        "{:<2}{:<24} {:<12} {:>4} {:<22} {:<16} {:>10} {:>8} {:>9}\n",
        "", "MEMBER", "AZ", "PRIO", "HOST LEASE", "LAST SEEN", "HOST EPOCH", "HEALTHY", "DRAINING"
    ));
    for (host, member) in &r.members {
        let marker = if r.holder.as_ref() == Some(host) {
            "*"
        } else {
            ""
        };
        let (lease, seen, epoch, healthy, draining) = match s.members.get(host) {
            Some(h) => (
                lease_text(h, s.now_ms, cfg),
                ago(h.last_seen_ms, s.now_ms),
                h.epoch.to_string(),
                h.healthy.to_string(),
                (h.draining || member.draining).to_string(),
            ),
            None => (
                "none".into(),
                "never".into(),
                "-".into(),
                "-".into(),
                member.draining.to_string(),
            ),
        };
        out.push_str(&format!(
            "{marker:<2}{:<24} {:<12} {:>4} {lease:<22} {seen:<16} {epoch:>10} {healthy:>8} {draining:>9}\n",
            host.as_str(),
            member.az,
            member.priority
        ));
    }
    out.push_str("(* the holder)\n\nrecent history\n");
    match &s.history {
        None => out.push_str("  (set TENURE_LEASE_HISTORY_TABLE or --history-table to see it)\n"),
        Some(entries) if entries.is_empty() => out.push_str("  (none)\n"),
        Some(entries) => {
            for e in entries {
                out.push_str(&format!("  {}\n", history::line(e)));
            }
        }
    }
    out.push_str(&format!(
        "\nchanges seen while watching\n{}\n",
        changes.lines()
    ));
    out
}

/// A host's frame.
pub fn host_frame(v: &HostView, changes: &Changes, cfg: &LeaseConfig) -> String {
    let h = &v.host;
    let now = v.now_ms;
    let current: Vec<_> = v.groups.iter().filter(|g| g.current).collect();
    let mut out = format!(
        "host {}    {} UTC\n\n{}",
        h.host_id,
        history::utc(now),
        host_lines(h, now, cfg)
    );
    out.push_str(&format!(
        "\ngroups held at epoch {}: {} (by-holder index, eventually consistent)\n",
        h.epoch,
        current.len()
    ));
    for g in current.iter().take(HOST_GROUPS_SHOWN) {
        out.push_str(&format!("  {:<40} epoch {}\n", g.group_id, g.epoch));
    }
    if current.len() > HOST_GROUPS_SHOWN {
        out.push_str(&format!(
            "  ... and {} more\n",
            current.len() - HOST_GROUPS_SHOWN
        ));
    }
    out.push_str(&format!(
        "\nchanges seen while watching\n{}\n",
        changes.lines()
    ));
    out
}

async fn group_snapshot(
    store: &DynamoLeaseStore,
    history: Option<&HistoryStore>,
    group: &GroupId,
    history_len: i32,
) -> Result<GroupSnapshot> {
    let record = store.read_group(group).await?.filter(|r| !r.deleted);
    let member_ids: Vec<HostId> = record
        .as_ref()
        .map(|r| r.members.keys().cloned().collect())
        .unwrap_or_default();
    let members = if member_ids.is_empty() {
        BTreeMap::new()
    } else {
        store
            .read(&member_ids, &[])
            .await?
            .hosts
            .into_iter()
            .collect()
    };
    let history = match history {
        Some(h) if history_len > 0 => Some(h.list(group, history_len).await?),
        _ => None,
    };
    Ok(GroupSnapshot {
        group: group.clone(),
        record,
        members,
        history,
        now_ms: SystemClock.now_ms(),
    })
}

/// Draws frames until interrupted (or `--frames`).
pub async fn run(
    target: WatchTarget,
    service: &LeaseService<DynamoLeaseStore, SystemClock>,
    store: &DynamoLeaseStore,
    history: Option<&HistoryStore>,
    json_output: bool,
) -> Result<()> {
    let cfg = *service.config();
    let (settings, group, host) = match &target {
        WatchTarget::Group { group, settings } => (settings, Some(crate::group_id(group)?), None),
        WatchTarget::Host { host, settings } => (settings, None, Some(crate::host_id(host)?)),
    };
    // Clear and redraw in place only on a terminal; a pipe gets frames one after another.
    let redraw = std::io::stdout().is_terminal() && !json_output;
    let mut changes = Changes::default();
    let mut last_frame = String::new();
    let mut drawn = 0u64;
    loop {
        let refreshed: Result<(String, serde_json::Value)> = async {
            if let Some(group) = &group {
                let s = group_snapshot(store, history, group, settings.history).await?;
                changes.observe(s.now_ms, group_facts(&s, &cfg));
                let holder = s
                    .record
                    .as_ref()
                    .and_then(|r| r.holder.as_ref())
                    .and_then(|h| s.members.get(h));
                let view = json!({
                    "at_ms": s.now_ms,
                    "group_id": s.group,
                    "record": s.record,
                    "lease_live": s.record.as_ref().is_some_and(|r| matches!(
                        grant_state(r, holder, s.now_ms, &cfg),
                        GrantState::Live { .. } | GrantState::V1Held { .. }
                    )),
                    "members": s.members.values().map(|h| json!({
                        "host_id": h.host_id,
                        "epoch": h.epoch,
                        "lease": liveness(h, s.now_ms, &cfg),
                        // A host that never checked in has no lease to count down.
                        "expires_in_ms": (h.expires_at_ms > 0)
                            .then(|| h.expires_at_ms as i64 - s.now_ms as i64),
                    })).collect::<Vec<_>>(),
                    "history": s.history,
                    "changes": changes.json(),
                });
                Ok((group_frame(&s, &changes, &cfg), view))
            } else if let Some(host) = &host {
                let v = service.get_host(host).await?;
                changes.observe(v.now_ms, host_facts(&v, &cfg));
                let view = json!({
                    "at_ms": v.now_ms,
                    "host": v.host,
                    "lease_live": v.live,
                    "groups": v.groups,
                    "changes": changes.json(),
                });
                Ok((host_frame(&v, &changes, &cfg), view))
            } else {
                anyhow::bail!("nothing to watch")
            }
        }
        .await;
        let mut out = std::io::stdout().lock();
        let failure = refreshed.as_ref().err().map(|e| format!("{e:#}"));
        match refreshed {
            Ok((_, view)) if json_output => writeln!(out, "{view}")?,
            Ok((frame, _)) => {
                if redraw {
                    write!(out, "\x1b[H\x1b[2J")?;
                } else if drawn > 0 {
                    writeln!(out, "\n----")?;
                }
                write!(out, "{frame}")?;
                writeln!(out, "\nevery {} ms; Ctrl-C to stop", settings.interval_ms)?;
                last_frame = frame;
            }
            Err(e) if json_output => writeln!(
                out,
                "{}",
                json!({"at_ms": SystemClock.now_ms(), "error": format!("{e:#}")})
            )?,
            Err(e) => {
                if redraw {
                    write!(out, "\x1b[H\x1b[2J{last_frame}")?;
                }
                writeln!(
                    out,
                    "\n! refresh failed at {} UTC: {e:#} ({}; retrying)",
                    history::utc(SystemClock.now_ms()),
                    if last_frame.is_empty() {
                        "no frame yet"
                    } else {
                        "the frame above is older"
                    }
                )?;
            }
        }
        out.flush()?;
        drop(out);
        drawn += 1;
        if settings.frames.is_some_and(|n| drawn >= n) {
            // A script that asked for N frames learns whether the last one is current.
            return match failure {
                Some(e) => Err(anyhow::anyhow!("the last refresh failed: {e}")),
                None => Ok(()),
            };
        }
        tokio::time::sleep(Duration::from_millis(settings.interval_ms)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenure::lease::record::Member;
    use tenure::lease::Epoch;

    fn host(id: &str, epoch: u64, expires_at_ms: u64) -> HostRecord {
        let mut h = HostRecord::absent(HostId::parse(id).unwrap());
        h.epoch = Epoch(epoch);
        h.expires_at_ms = expires_at_ms;
        h.last_seen_ms = expires_at_ms.saturating_sub(10_000);
        h.healthy = true;
        h
    }

    fn snapshot(holder: &str, epoch: u64, a_expires: u64, now_ms: u64) -> GroupSnapshot {
        let group = GroupId::parse("orders").unwrap();
        let members: BTreeMap<HostId, Member> = [("db-a", 3), ("db-b", 2)]
            .into_iter()
            .map(|(h, p)| (HostId::parse(h).unwrap(), Member::new("az", p)))
            .collect();
        let mut record = LeaseRecord::new_group(group.clone(), 10_000, members, now_ms);
        record.holder = Some(HostId::parse(holder).unwrap());
        record.epoch = Epoch(epoch);
        record.holder_host_epoch = Some(Epoch(0));
        GroupSnapshot {
            group,
            record: Some(record),
            members: [host("db-a", 0, a_expires), host("db-b", 0, now_ms + 9_000)]
                .into_iter()
                .map(|h| (h.host_id.clone(), h))
                .collect(),
            history: None,
            now_ms,
        }
    }

    #[test]
    fn a_group_frame_shows_holder_grant_members_and_where_history_comes_from() {
        let cfg = LeaseConfig::default();
        let now = 1_800_000_000_000;
        let s = snapshot("db-a", 7, now + 4_000, now);
        let frame = group_frame(&s, &Changes::default(), &cfg);
        assert!(frame.contains("holder      db-a"), "{frame}");
        assert!(frame.contains("epoch       7"), "{frame}");
        assert!(
            frame.contains("live: db-a may write until its host lease ends in 4000 ms"),
            "{frame}"
        );
        assert!(frame.contains("* db-a"), "{frame}");
        assert!(frame.contains("TENURE_LEASE_HISTORY_TABLE"), "{frame}");
        let lapsed = snapshot("db-a", 7, now - 60_000, now);
        assert!(group_frame(&lapsed, &Changes::default(), &cfg).contains("lapsed: db-a"));
    }

    #[test]
    fn changes_between_frames_are_listed_newest_last_and_bounded() {
        let cfg = LeaseConfig::default();
        let now = 1_800_000_000_000;
        let mut changes = Changes::default();
        changes.observe(
            now,
            group_facts(&snapshot("db-a", 7, now + 4_000, now), &cfg),
        );
        assert!(changes.seen.is_empty(), "the first frame is the baseline");
        let later = now + 20_000;
        changes.observe(
            later,
            group_facts(&snapshot("db-b", 8, now + 4_000, later), &cfg),
        );
        let seen: Vec<&str> = changes.seen.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(
            seen,
            vec![
                "db-a lease: live -> lapsed",
                "epoch: 7 -> 8",
                "holder: db-a -> db-b"
            ]
        );
        for n in 0..20 {
            changes.observe(
                later + n,
                group_facts(&snapshot("db-b", 9 + n, 0, later), &cfg),
            );
        }
        assert_eq!(changes.seen.len(), CHANGES_KEPT);
        assert!(changes
            .lines()
            .lines()
            .last()
            .unwrap()
            .ends_with("epoch: 27 -> 28"));
    }

    #[test]
    fn an_absent_group_is_a_frame_too() {
        let s = GroupSnapshot {
            group: GroupId::parse("gone").unwrap(),
            record: None,
            members: BTreeMap::new(),
            history: Some(vec![]),
            now_ms: 0,
        };
        let frame = group_frame(&s, &Changes::default(), &LeaseConfig::default());
        assert!(frame.contains("no such group"), "{frame}");
    }
}
