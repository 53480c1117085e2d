//! `tenurectl lease history GROUP`: a group's leadership history (table `LeaseHistory`,
//! written by lease-history from the Leases stream), oldest first.

use anyhow::Result;
use serde_json::json;
use tenure::ids::GroupId;
use tenure::lease::history::{Change, HistoryEntry, PreviousEnd};
use tenure::lease::history_store::HistoryStore;

/// Why the grant before an acquisition ended, in a few words.
fn previous(entry: &HistoryEntry) -> String {
    match &entry.previous {
        None => String::new(),
        Some(PreviousEnd::FirstHolder) => "first holder".into(),
        Some(PreviousEnd::Released { holder, epoch }) => format!("{holder} released epoch {epoch}"),
        Some(PreviousEnd::Drained { holder, epoch }) => {
            format!("{holder} drained at epoch {epoch}")
        }
        Some(PreviousEnd::Revoked {
            holder,
            epoch,
            host_epoch,
        }) => format!("{holder} revoked (host epoch {host_epoch}) at epoch {epoch}"),
        Some(PreviousEnd::Expired { holder, epoch }) => {
            format!("{holder}'s v1 lease expired at epoch {epoch}")
        }
        Some(PreviousEnd::Unheld { epoch }) => format!("free at epoch {epoch} (created again)"),
    }
}

fn change(entry: &HistoryEntry) -> &'static str {
    match (entry.change, entry.drained) {
        (Change::Acquired, _) => "acquired",
        (Change::Released, true) => "drained",
        (Change::Released, false) => "released",
        (Change::Deleted, _) => "deleted",
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1_000;
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        ms % 1_000
    )
}

pub async fn show(
    store: &HistoryStore,
    group: &GroupId,
    limit: i32,
    json_output: bool,
) -> Result<()> {
    let entries = store.list(group, limit).await?;
    if json_output {
        println!("{}", json!({"group_id": group, "entries": entries}));
        return Ok(());
    }
    if entries.is_empty() {
        println!(
            "no history for group {group} (kept for LeaseHistoryDays; written by lease-history)"
        );
        return Ok(());
    }
    println!(
        "{:<23}  {:<8}  {:>5}  {:<20}  {:>10}  PREVIOUS GRANT",
        "AT (UTC)", "CHANGE", "EPOCH", "HOLDER", "HOST EPOCH"
    );
    for entry in &entries {
        println!("{}", line(entry));
    }
    Ok(())
}

/// One entry as a row of `lease history`'s table.
pub(crate) fn line(entry: &HistoryEntry) -> String {
    format!(
        "{:<23}  {:<8}  {:>5}  {:<20}  {:>10}  {}",
        utc(entry.at_ms),
        change(entry),
        entry.epoch.0,
        entry.holder.as_ref().map(|h| h.as_str()).unwrap_or("-"),
        entry
            .holder_host_epoch
            .map(|e| e.0.to_string())
            .unwrap_or_else(|| "-".into()),
        previous(entry)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_796_587_794_369), "2026-12-06 20:09:54.369");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000");
    }
}
