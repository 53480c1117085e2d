//! `tenurectl timeline --gate-logs PATH... [GROUP...]`: who could write each group when, from
//! the hosts' gate logs (`replica_agent::gate_log`), as an SVG picture and as text.
//!
//! Drawn from the gate logs rather than the leadership history: a gate log says when a host
//! could actually write (its gate open within its deadline), so a failover's gap is the real
//! time without a writer. The history says when a grant changed hands, and a revoked holder's
//! grant changes hands only at the next acquisition, long after the holder stopped writing.

use anyhow::{bail, Context, Result};
use replica_agent::clock::boot_ns;
use replica_agent::gate_log::{read_log, timeline, writable_intervals, WritableInterval};
use serde_json::json;
use std::path::{Path, PathBuf};
use tenure::timeline::Stretch;

#[derive(clap::Args)]
pub struct TimelineArgs {
    /// Groups to draw (every group in the logs when none is given).
    groups: Vec<String>,
    /// Gate-log files, or directories whose `*.jsonl` files are gate logs (one per host).
    #[arg(long = "gate-logs", value_name = "PATH", required = true, num_args = 1..)]
    gate_logs: Vec<PathBuf>,
    /// Where to write the SVG picture.
    #[arg(long, default_value = "timeline.svg")]
    out: PathBuf,
    /// The picture's title.
    #[arg(long, default_value = "Who could write each group")]
    title: String,
    /// A moment to draw across every row, `LABEL@UNIX_MS` (e.g. `"kill -9 a@1796593460123"`,
    /// from `date +%s%3N`); repeatable.
    #[arg(long = "mark", value_name = "LABEL@UNIX_MS", value_parser = parse_mark)]
    marks: Vec<(String, u64)>,
}

/// `LABEL@UNIX_MS` -> (label, Unix milliseconds).
fn parse_mark(raw: &str) -> Result<(String, u64), String> {
    let (label, at) = raw
        .rsplit_once('@')
        .ok_or_else(|| format!("{raw:?}: expected LABEL@UNIX_MS"))?;
    let at_ms: u64 = at
        .parse()
        .map_err(|_| format!("{raw:?}: {at:?} is not a time in Unix milliseconds"))?;
    if label.trim().is_empty() {
        return Err(format!("{raw:?}: the label is empty"));
    }
    Ok((label.to_owned(), at_ms))
}

/// Unix milliseconds on the gate logs' clock (CLOCK_BOOTTIME), by the two clocks' offset now:
/// good to the millisecond unless the wall clock was stepped in between.
fn unix_ms_to_boot_ns(at_ms: u64) -> u64 {
    let unix_now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let offset = unix_now_ns.saturating_sub(boot_ns());
    (at_ms * 1_000_000).saturating_sub(offset)
}

/// The gate-log files PATHS name: files as given, directories' `*.jsonl` files in name order.
fn log_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading the directory {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
                .collect();
            if found.is_empty() {
                bail!(
                    "{}: no gate logs (*.jsonl) in this directory",
                    path.display()
                );
            }
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            bail!("{}: no such gate log or directory", path.display());
        }
    }
    Ok(files)
}

/// Every host's writable intervals, then the groups asked for (all when `groups` is empty).
fn intervals(files: &[PathBuf], groups: &[String]) -> Result<Vec<WritableInterval>> {
    let mut all = Vec::new();
    for file in files {
        // The log's own ends are its bounds: a killed host's gate ends at its last deadline.
        all.extend(writable_intervals(&read_log(file)?, None));
    }
    if !groups.is_empty() {
        for g in groups {
            if !all.iter().any(|i| &i.group == g) {
                bail!("group {g}: no host's gate log has it");
            }
        }
        all.retain(|i| groups.contains(&i.group));
    }
    Ok(all)
}

fn stretch_json(s: &Stretch) -> serde_json::Value {
    json!({
        "group": s.group,
        "start_ns": s.start_ns,
        "end_ns": s.end_ns,
        "length_ms": s.length_ns() as f64 / 1e6,
        "holders": s.holders,
    })
}

/// Writes the picture, prints the summary; an overlap (two hosts could write one group at
/// once) is an error, so scripts and the demo stop on it.
pub fn run(args: TimelineArgs, json_output: bool) -> Result<()> {
    let files = log_files(&args.gate_logs)?;
    let mut picture = timeline(&args.title, &intervals(&files, &args.groups)?);
    for (label, at_ms) in &args.marks {
        picture.mark(unix_ms_to_boot_ns(*at_ms), label.clone());
    }
    write_svg(&args.out, &picture.to_svg())?;
    let overlaps = picture.overlaps();
    if json_output {
        println!(
            "{}",
            json!({
                "svg": args.out,
                "groups": picture.group_count(),
                "spans": picture.span_count(),
                "gaps": picture.gaps().iter().map(stretch_json).collect::<Vec<_>>(),
                "overlaps": overlaps.iter().map(stretch_json).collect::<Vec<_>>(),
            })
        );
    } else {
        println!("{}", picture.summary());
        println!("picture: {}", args.out.display());
    }
    if !overlaps.is_empty() {
        bail!(
            "{} overlaps: two hosts could write one group at once (red in {})",
            overlaps.len(),
            args.out.display()
        );
    }
    Ok(())
}

fn write_svg(path: &Path, svg: &str) -> Result<()> {
    std::fs::write(path, svg).with_context(|| format!("writing the picture {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(dir: &Path, host: &str, lines: &[serde_json::Value]) {
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        std::fs::write(dir.join(format!("{host}.gate.jsonl")), text.join("\n")).unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tenurectl-timeline-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn host_log(dir: &Path, host: &str, group: &str, epoch: u64, from: u64, to: u64) {
        log(
            dir,
            host,
            &[
                json!({"t_ns": from, "host": host, "state": "open", "group": group, "epoch": epoch, "host_epoch": 0}),
                json!({"t_ns": from, "host": host, "state": "window", "host_epoch": 0, "deadline_ns": to}),
            ],
        );
    }

    #[test]
    fn a_directory_of_gate_logs_becomes_one_picture_with_its_gap() {
        let dir = scratch("dir");
        host_log(&dir, "a", "g1", 1, 0, 10_000_000_000);
        host_log(&dir, "b", "g1", 2, 12_000_000_000, 20_000_000_000);
        std::fs::write(dir.join("notes.txt"), "not a log").unwrap();
        let files = log_files(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(files.len(), 2);
        let picture = timeline("t", &intervals(&files, &[]).unwrap());
        assert_eq!(picture.span_count(), 2);
        assert_eq!(picture.gaps().len(), 1);
        assert_eq!(picture.gaps()[0].length_ns(), 2_000_000_000);
        assert!(picture.overlaps().is_empty());
    }

    #[test]
    fn an_overlap_fails_the_command_after_drawing_it() {
        let dir = scratch("overlap");
        host_log(&dir, "a", "g1", 1, 0, 10_000_000_000);
        host_log(&dir, "b", "g1", 2, 5_000_000_000, 20_000_000_000);
        let out = dir.join("t.svg");
        let args = TimelineArgs {
            groups: vec![],
            gate_logs: vec![dir.clone()],
            out: out.clone(),
            title: "t".into(),
            marks: vec![],
        };
        let err = run(args, true).unwrap_err().to_string();
        assert!(err.contains("1 overlaps"), "{err}");
        assert!(std::fs::read_to_string(&out).unwrap().contains("overlap"));
    }

    #[test]
    fn marks_are_label_at_unix_ms_and_land_on_the_boot_clock() {
        assert_eq!(
            parse_mark("kill -9 a@b@1700000000000").unwrap(),
            ("kill -9 a@b".to_owned(), 1_700_000_000_000)
        );
        assert!(parse_mark("kill").unwrap_err().contains("LABEL@UNIX_MS"));
        assert!(parse_mark("kill@soon")
            .unwrap_err()
            .contains("Unix milliseconds"));
        assert!(parse_mark(" @1").unwrap_err().contains("empty"));
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let there = unix_ms_to_boot_ns(now_ms);
        assert!(
            boot_ns().abs_diff(there) < 50_000_000,
            "{there} vs {}",
            boot_ns()
        );
    }

    #[test]
    fn bad_paths_and_unknown_groups_get_clear_errors() {
        let dir = scratch("bad");
        let missing = dir.join("nope");
        assert!(log_files(&[missing])
            .unwrap_err()
            .to_string()
            .contains("no such gate log"));
        assert!(log_files(std::slice::from_ref(&dir))
            .unwrap_err()
            .to_string()
            .contains("no gate logs"));
        host_log(&dir, "a", "g1", 1, 0, 10);
        let files = log_files(std::slice::from_ref(&dir)).unwrap();
        assert!(intervals(&files, &["g9".into()])
            .unwrap_err()
            .to_string()
            .contains("group g9"));
        std::fs::write(dir.join("broken.jsonl"), "{not json").unwrap();
        let files = log_files(&[dir]).unwrap();
        assert!(intervals(&files, &[])
            .unwrap_err()
            .to_string()
            .contains("line 1"));
    }
}
