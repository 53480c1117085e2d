//! tenurectl: the operator's view of replica groups, their leases, and inter-region operations.
//!
//! Region, credentials and endpoint come from the usual AWS settings (`AWS_REGION`,
//! `AWS_PROFILE`, `AWS_ENDPOINT_URL`, ...). The tables come from `--table` or
//! `TENURE_LEASES_TABLE` (the stack's `LeasesTable` output) and `--hosts-table` or
//! `TENURE_HOSTS_TABLE` (`HostsTable`). Human tables by default, `--json` for scripts.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use futures::TryStreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use tenure::clock::{Clock, SystemClock};
use tenure::ids::{GroupId, HostId};
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::history_store::HistoryStore;
use tenure::lease::host::HostRecord;
use tenure::lease::protocol::{grant_state, GrantState};
use tenure::lease::record::{LeaseRecord, Member};
use tenure::lease::service::{CheckError, LeaseService};
use tenure::lease::store::{CreateOutcome, LeaseStore};
use tenure::lease::LeaseConfig;

mod history;
mod hosts;
mod ops;
mod timeline;
mod watch;

#[derive(Parser)]
#[command(
    name = "tenurectl",
    version,
    about = "Operate tenure's replica groups and leases"
)]
struct Cli {
    /// The Leases table (the stack's LeasesTable output).
    #[arg(long, env = "TENURE_LEASES_TABLE", global = true)]
    table: Option<String>,
    /// The Hosts table (the stack's HostsTable output).
    #[arg(long, env = "TENURE_HOSTS_TABLE", global = true)]
    hosts_table: Option<String>,
    /// The LeaseHistory table (the stack's LeaseHistoryTable output), for `lease history`.
    #[arg(long, env = "TENURE_LEASE_HISTORY_TABLE", global = true)]
    history_table: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    ops: ops::OpsSettings,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replica groups: create, show, list, delete.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Leases: show, drain, undrain (one group, or every group of a host).
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Database hosts: their host leases, incarnations and the groups they hold.
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Inter-region operations: submit, status, list, retry, wait.
    #[command(subcommand)]
    Ops(ops::OpsCommand),
    /// Who could write each group when, from the hosts' gate logs: an SVG picture (gaps in
    /// grey, any overlap of two hosts in red) and a line per group. Fails if two hosts could
    /// write one group at once.
    Timeline(timeline::TimelineArgs),
    /// A live view, redrawn every second: `watch group GROUP` (holder, epochs, members' host
    /// leases, recent history) or `watch host HOST` (lease, epoch, groups held), with the
    /// changes seen while watching.
    #[command(subcommand)]
    Watch(watch::WatchTarget),
}

#[derive(Subcommand)]
enum GroupsCommand {
    /// Create a group: `tenurectl groups create orders --member host-a:use1-az1:3 ...`
    Create {
        group: String,
        /// host_id:az:priority (priority: higher is preferred), once per replica.
        #[arg(long = "member", required = true)]
        members: Vec<String>,
        #[arg(long, default_value_t = 10_000)]
        lease_ms: u64,
    },
    /// One group's definition and lease.
    Show { group: String },
    /// Every group with its holder and epoch.
    List,
    /// Delete a group; refused while it has a live grant (a lapsed holder is revoked first).
    /// The item stays as a tombstone, so the epoch continues if the group is created again.
    Delete { group: String },
}

#[derive(Subcommand)]
enum LeaseCommand {
    /// Holder, epochs, the holder's host lease and the members.
    Show { group: String },
    /// Ask a host to hand over: `lease drain GROUP HOST` for one group, `lease drain --host
    /// HOST` for all its groups. A draining primary stops writing and releases once another
    /// member can take the group; a draining host acquires nothing.
    Drain(DrainTarget),
    /// Clear a drain request (same forms as `drain`).
    Undrain(DrainTarget),
    /// Who held the group when, and why each grant ended (acquired, released, drained,
    /// revoked with the host epoch, expired, first holder), oldest first.
    History {
        group: String,
        /// The most recent entries to show.
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
}

#[derive(clap::Args)]
struct DrainTarget {
    /// The group (with HOST).
    #[arg(requires = "member")]
    group: Option<String>,
    /// The member host of GROUP.
    #[arg(id = "member", value_name = "HOST")]
    host: Option<String>,
    /// Every group of this host.
    #[arg(long = "host", value_name = "HOST", conflicts_with = "group")]
    whole_host: Option<String>,
}

#[derive(Subcommand)]
enum HostsCommand {
    /// Every host with its epoch, lease, last check-in, incarnation and groups held.
    List,
    /// One host's record and the groups it holds.
    Show { host: String },
}

fn require_region(sdk: &aws_config::SdkConfig) -> Result<()> {
    if sdk.region().is_none() {
        bail!("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)");
    }
    Ok(())
}

/// The commands that work on the Leases table.
enum LeaseSide {
    Groups(GroupsCommand),
    Lease(LeaseCommand),
    Hosts(HostsCommand),
    Watch(watch::WatchTarget),
}

/// `host:az:priority` -> a member.
fn parse_member(spec: &str) -> Result<(HostId, Member)> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [host, az, priority] = parts.as_slice() else {
        bail!("--member {spec:?}: expected host_id:az:priority");
    };
    let host = HostId::parse(host).map_err(|e| anyhow!("--member {spec:?}: {e}"))?;
    if az.is_empty() {
        bail!("--member {spec:?}: the availability zone is empty");
    }
    let priority: u32 = priority
        .parse()
        .map_err(|_| anyhow!("--member {spec:?}: priority must be a non-negative integer"))?;
    Ok((host, Member::new(*az, priority)))
}

fn group_id(raw: &str) -> Result<GroupId> {
    GroupId::parse(raw).map_err(|e| anyhow!("group {raw:?}: {e}"))
}

pub(crate) fn host_id(raw: &str) -> Result<HostId> {
    HostId::parse(raw).map_err(|e| anyhow!("host {raw:?}: {e}"))
}

/// Whether the grant is live and how long its holder's host lease has left.
fn grant(
    record: &LeaseRecord,
    holder: Option<&HostRecord>,
    cfg: &LeaseConfig,
    now: u64,
) -> (bool, i64) {
    match grant_state(record, holder, now, cfg) {
        GrantState::Live { .. } => (
            true,
            holder.map_or(0, |h| h.expires_at_ms as i64 - now as i64),
        ),
        GrantState::V1Held { .. } => (true, record.expires_at_ms as i64 - now as i64),
        _ => (false, 0),
    }
}

fn lease_view(
    record: &LeaseRecord,
    holder: Option<&HostRecord>,
    cfg: &LeaseConfig,
    now: u64,
) -> serde_json::Value {
    let (live, expires_in) = grant(record, holder, cfg, now);
    let mut view = json!(record);
    view["expires_in_ms"] = json!(expires_in);
    view["lease_live"] = json!(live);
    view["holder_host"] = json!(holder);
    view
}

fn print_lease(record: &LeaseRecord, holder: Option<&HostRecord>, cfg: &LeaseConfig, now: u64) {
    let (live, expires_in) = grant(record, holder, cfg, now);
    println!("group        {}", record.group_id);
    println!(
        "holder       {}",
        record
            .holder
            .as_ref()
            .map(|h| h.as_str())
            .unwrap_or("(none)")
    );
    println!("epoch        {}", record.epoch);
    println!(
        "host epoch   {}",
        match (record.holder_host_epoch, holder) {
            (Some(e), Some(h)) => format!("{e} (holder now at {})", h.epoch),
            (Some(e), None) => e.to_string(),
            (None, _) if record.holder.is_some() => "(v1 lease)".into(),
            (None, _) => "-".into(),
        }
    );
    println!(
        "grant        {}",
        match &record.holder {
            Some(_) if live && expires_in > 0 =>
                format!("live, host lease ends in {expires_in} ms"),
            Some(_) if live => "live, host lease ending".to_owned(),
            Some(_) => "not live (holder lapsed or revoked)".to_owned(),
            None => "free".to_owned(),
        }
    );
    println!("version      {}", record.version);
    println!();
    println!(
        "{:<24} {:<14} {:>8} {:>9} {:>14}",
        "MEMBER", "AZ", "PRIORITY", "DRAINING", "RELEASED"
    );
    for (host, m) in &record.members {
        let released = m
            .released_at_ms
            .map(|t| format!("{} ms ago", now.saturating_sub(t)))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:<14} {:>8} {:>9} {:>14}",
            host, m.az, m.priority, m.draining, released
        );
    }
}

/// Rust ignores SIGPIPE, so `tenurectl ... | head` would panic in `println!` once `head`
/// exits. A command-line tool should end quietly instead, as `ls` and `cat` do.
fn restore_default_sigpipe() {
    // SAFETY: called first thing in main, before the runtime's threads exist or any I/O is
    // done; resetting a signal's disposition to its default has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> Result<()> {
    restore_default_sigpipe();
    tokio::runtime::Runtime::new()?.block_on(run(Cli::parse()))
}

async fn run(cli: Cli) -> Result<()> {
    let command = match cli.command {
        // The gate logs are files on this machine: no AWS settings needed.
        Command::Timeline(args) => return timeline::run(args, cli.json),
        Command::Ops(command) => {
            let sdk = tenure::aws::load_sdk_config().await;
            require_region(&sdk)?;
            return ops::run(command, cli.ops, &sdk, cli.json).await;
        }
        Command::Groups(c) => LeaseSide::Groups(c),
        Command::Lease(c) => LeaseSide::Lease(c),
        Command::Hosts(c) => LeaseSide::Hosts(c),
        Command::Watch(target) => LeaseSide::Watch(target),
    };
    let sdk = tenure::aws::load_sdk_config().await;
    let table = cli.table.clone().context(
        "no table: pass --table or set TENURE_LEASES_TABLE (the stack's LeasesTable output)",
    )?;
    let hosts_table = cli.hosts_table.clone().context(
        "no hosts table: pass --hosts-table or set TENURE_HOSTS_TABLE (the stack's HostsTable output)",
    )?;
    require_region(&sdk)?;
    let store = DynamoLeaseStore::new(tenure::aws::dynamodb_client(&sdk, None), hosts_table, table);
    let lease = LeaseConfig::from_env(&tenure::config::ProcessEnv)?;
    let service = LeaseService::new(store.clone(), lease, SystemClock);
    let now = SystemClock.now_ms();
    let history_store = cli.history_table.clone().map(|table| {
        HistoryStore::new(
            tenure::aws::dynamodb_client(&sdk, None),
            table,
            store.hosts_table(),
            0,
        )
    });
    match command {
        LeaseSide::Groups(GroupsCommand::Create {
            group,
            members,
            lease_ms,
        }) => {
            let group = group_id(&group)?;
            let members: BTreeMap<HostId, Member> = members
                .iter()
                .map(|m| parse_member(m))
                .collect::<Result<_>>()?;
            match service
                .create_group(group.clone(), lease_ms, members)
                .await?
            {
                CreateOutcome::Created if cli.json => {
                    println!("{}", json!({"group_id": group, "created": true}))
                }
                CreateOutcome::Created => println!("created group {group}"),
                CreateOutcome::AlreadyExists => bail!("group {group} already exists"),
            }
        }
        LeaseSide::Groups(GroupsCommand::Show { group })
        | LeaseSide::Lease(LeaseCommand::Show { group }) => {
            let (record, holder) = service.get_group(&group_id(&group)?).await?;
            if cli.json {
                println!("{}", lease_view(&record, holder.as_ref(), &lease, now));
            } else {
                print_lease(&record, holder.as_ref(), &lease, now);
            }
        }
        LeaseSide::Groups(GroupsCommand::List) => {
            let records: Vec<LeaseRecord> = store
                .scan_groups()
                .try_filter(|g| futures::future::ready(!g.deleted))
                .try_collect()
                .await?;
            let holders: Vec<HostId> = records.iter().filter_map(|r| r.holder.clone()).collect();
            let hosts = store.read(&holders, &[]).await?.hosts;
            let holder_of = |r: &LeaseRecord| r.holder.as_ref().and_then(|h| hosts.get(h));
            if cli.json {
                let all: Vec<_> = records
                    .iter()
                    .map(|r| lease_view(r, holder_of(r), &lease, now))
                    .collect();
                println!("{}", json!(all));
            } else {
                println!(
                    "{:<32} {:<24} {:>8} {:>14} {:>8}",
                    "GROUP", "HOLDER", "EPOCH", "GRANT", "MEMBERS"
                );
                for r in &records {
                    let (live, expires_in) = grant(r, holder_of(r), &lease, now);
                    println!(
                        "{:<32} {:<24} {:>8} {:>14} {:>8}",
                        r.group_id,
                        r.holder.as_ref().map(|h| h.as_str()).unwrap_or("-"),
                        r.epoch,
                        match (&r.holder, live) {
                            (None, _) => "free".to_owned(),
                            (Some(_), true) => format!("live {expires_in} ms"),
                            (Some(_), false) => "lapsed".to_owned(),
                        },
                        r.members.len()
                    );
                }
            }
        }
        LeaseSide::Groups(GroupsCommand::Delete { group }) => {
            let group = group_id(&group)?;
            match service.delete_group(&group).await {
                Ok(()) if cli.json => {
                    println!("{}", json!({"group_id": group, "deleted": true}))
                }
                Ok(()) => println!("deleted group {group}"),
                Err(CheckError::LeaseHeld { holder, .. }) => bail!(
                    "group {group} has a live grant (holder {holder}): drain the holder first"
                ),
                Err(e) => return Err(e.into()),
            }
        }
        LeaseSide::Lease(LeaseCommand::Drain(target)) => {
            drain(&service, target, true, cli.json).await?
        }
        LeaseSide::Lease(LeaseCommand::Undrain(target)) => {
            drain(&service, target, false, cli.json).await?
        }
        LeaseSide::Lease(LeaseCommand::History { group, limit }) => {
            let history = history_store.context(
                "no history table: pass --history-table or set TENURE_LEASE_HISTORY_TABLE (the stack's LeaseHistoryTable output)",
            )?;
            history::show(&history, &group_id(&group)?, limit.max(1), cli.json).await?
        }
        LeaseSide::Watch(target) => {
            watch::run(target, &service, &store, history_store.as_ref(), cli.json).await?
        }
        LeaseSide::Hosts(HostsCommand::List) => hosts::list(&store, &lease, now, cli.json).await?,
        LeaseSide::Hosts(HostsCommand::Show { host }) => {
            hosts::show(&service, &host_id(&host)?, cli.json).await?
        }
    }
    Ok(())
}

async fn drain(
    service: &LeaseService<DynamoLeaseStore, SystemClock>,
    target: DrainTarget,
    draining: bool,
    json_output: bool,
) -> Result<()> {
    match target {
        DrainTarget {
            whole_host: Some(host),
            ..
        } => {
            let host = host_id(&host)?;
            service.set_host_draining(&host, draining).await?;
            if json_output {
                println!("{}", json!({"host_id": host, "draining": draining}));
            } else if draining {
                println!("{host}: draining every group (its agent reads the groups it holds at its next check and hands each over once another member can take it; it acquires nothing)");
            } else {
                println!("{host}: no longer draining");
            }
            Ok(())
        }
        DrainTarget {
            group: Some(group),
            host: Some(host),
            ..
        } => set_draining(service, &group, &host, draining, json_output).await,
        _ => bail!("give GROUP HOST (one group) or --host HOST (every group of the host)"),
    }
}

async fn set_draining(
    service: &LeaseService<DynamoLeaseStore, SystemClock>,
    group: &str,
    host: &str,
    draining: bool,
    json_output: bool,
) -> Result<()> {
    let (group, host) = (group_id(group)?, host_id(host)?);
    service.set_draining(&group, &host, draining).await?;
    if json_output {
        println!(
            "{}",
            json!({"group_id": group, "host_id": host, "draining": draining})
        );
    } else if draining {
        println!("{host} in {group}: draining (a primary hands over at its next poll once another member can take it)");
    } else {
        println!("{host} in {group}: no longer draining");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_from_host_az_priority() {
        let (host, member) = parse_member("host-a:use1-az1:3").unwrap();
        assert_eq!(
            (host.as_str(), member.az.as_str(), member.priority),
            ("host-a", "use1-az1", 3)
        );
        assert!(parse_member("host-a:az").is_err());
        assert!(parse_member("host a:az:1").is_err());
        assert!(parse_member("h::1").is_err());
        assert!(parse_member("h:az:-1")
            .unwrap_err()
            .to_string()
            .contains("priority"));
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
