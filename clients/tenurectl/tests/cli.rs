//! tenurectl as an operator runs it, against MiniStack (`TENURE_TEST_ENDPOINT`, set by the
//! README's test command; start one with `infra/ministack.sh start` to run this alone).

use serde_json::Value;
use std::process::{Command, Output};

fn endpoint() -> String {
    std::env::var("TENURE_TEST_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "TENURE_TEST_ENDPOINT is not set: run the README's test command (infra/test.sh), or \
             `infra/ministack.sh start` and TENURE_TEST_ENDPOINT=http://127.0.0.1:4566"
        )
    })
}

async fn sdk() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "cli",
        ))
        .load()
        .await
}

/// A Leases table (with its `by-holder` index) and a Hosts table (`{name}-hosts`) of the
/// test's own; returns the Leases table's name.
async fn leases_table() -> String {
    let sdk = sdk().await;
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "tenurectl-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    tenure::lease::dynamo::ensure_leases_table(&client, &name)
        .await
        .unwrap();
    tenure::aws::ensure_table(&client, &format!("{name}-hosts"), "host_id")
        .await
        .unwrap();
    name
}

/// tenurectl with `args`, pointed at the test's tables on MiniStack.
fn command(table: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenurectl"));
    command
        .args(args)
        .env("TENURE_LEASES_TABLE", table)
        .env("TENURE_HOSTS_TABLE", format!("{table}-hosts"))
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    command
}

fn tenurectl(table: &str, args: &[&str]) -> Output {
    command(table, args).output().unwrap()
}

/// Creates `group` with members db-1 (priority 2) and db-2 (priority 1), through tenurectl.
fn create_two_member_group(table: &str, group: &str) {
    let created = tenurectl(
        table,
        &[
            "groups",
            "create",
            group,
            "--member",
            "db-1:az-a:2",
            "--member",
            "db-2:az-b:1",
        ],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
}

/// A healthy host check by `host` (as its agent would send) for `groups`, through the library.
async fn check_in(
    table: &str,
    host: &str,
    incarnation: Option<&str>,
    groups: &[&str],
) -> tenure::lease::service::HostAnswer {
    use tenure::ids::{GroupId, HostId, Incarnation};
    use tenure::lease::service::{HostCheck, LeaseService};
    let store = tenure::lease::dynamo::DynamoLeaseStore::new(
        aws_sdk_dynamodb::Client::new(&sdk().await),
        format!("{table}-hosts"),
        table.to_owned(),
    );
    LeaseService::new(
        store,
        tenure::lease::LeaseConfig::default(),
        tenure::clock::SystemClock,
    )
    .check_host(&HostCheck {
        host: HostId::parse(host).unwrap(),
        healthy: true,
        heartbeat: true,
        incarnation: incarnation.map(|i| Incarnation::parse(i).unwrap()),
        groups: groups.iter().map(|g| GroupId::parse(g).unwrap()).collect(),
        watch: Vec::new(),
        watch_groups: Vec::new(),
    })
    .await
    .unwrap()
}

fn ok_json(output: Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn stderr_of_failure(output: Output) -> String {
    assert!(
        !output.status.success(),
        "expected failure: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn groups_and_leases_round_trip() {
    let table = leases_table().await;
    let created = tenurectl(
        &table,
        &[
            "groups",
            "create",
            "orders",
            "--member",
            "host-a:az-a:3",
            "--member",
            "host-b:az-b:2",
            "--json",
        ],
    );
    assert_eq!(ok_json(created)["created"], true);
    let again = tenurectl(
        &table,
        &["groups", "create", "orders", "--member", "host-a:az-a:3"],
    );
    assert!(stderr_of_failure(again).contains("already exists"));

    let shown = ok_json(tenurectl(&table, &["lease", "show", "orders", "--json"]));
    assert_eq!(shown["epoch"], 0);
    assert_eq!(shown["lease_live"], false);
    assert_eq!(shown["members"]["host-a"]["priority"], 3);
    let human = tenurectl(&table, &["lease", "show", "orders"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("holder       (none)") && text.contains("host-b"),
        "{text}"
    );

    assert_eq!(
        ok_json(tenurectl(
            &table,
            &["lease", "drain", "orders", "host-b", "--json"]
        ))["draining"],
        true
    );
    let shown = ok_json(tenurectl(&table, &["groups", "show", "orders", "--json"]));
    assert_eq!(shown["members"]["host-b"]["draining"], true);
    assert_eq!(
        ok_json(tenurectl(
            &table,
            &["lease", "undrain", "orders", "host-b", "--json"]
        ))["draining"],
        false
    );
    assert!(
        stderr_of_failure(tenurectl(&table, &["lease", "drain", "orders", "nobody"]))
            .contains("not a member")
    );

    let listed = ok_json(tenurectl(&table, &["groups", "list", "--json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(
        ok_json(tenurectl(&table, &["groups", "delete", "orders", "--json"]))["deleted"],
        true
    );
    assert!(
        stderr_of_failure(tenurectl(&table, &["groups", "delete", "orders"]))
            .contains("unknown group")
    );
    // A deleted group is a tombstone: listing skips it, and creating it again works.
    let listed = ok_json(tenurectl(&table, &["groups", "list", "--json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(0));
    let again = tenurectl(
        &table,
        &[
            "groups",
            "create",
            "orders",
            "--member",
            "host-a:az-a:3",
            "--json",
        ],
    );
    assert_eq!(ok_json(again)["created"], true);
}

#[tokio::test]
async fn bad_input_gets_a_clear_error() {
    let table = leases_table().await;
    let bad_member = tenurectl(&table, &["groups", "create", "g", "--member", "host-a:az"]);
    assert!(stderr_of_failure(bad_member).contains("host_id:az:priority"));
    let bad_lease = tenurectl(
        &table,
        &[
            "groups",
            "create",
            "g",
            "--member",
            "h:az:1",
            "--lease-ms",
            "100",
        ],
    );
    assert!(stderr_of_failure(bad_lease).contains("lease_ms (100)"));
    let bad_id = tenurectl(&table, &["lease", "show", "no/slash"]);
    assert!(stderr_of_failure(bad_id).contains("may contain only"));
    let unknown = tenurectl(&table, &["lease", "show", "missing"]);
    assert!(stderr_of_failure(unknown).contains("unknown group missing"));
    let no_table = Command::new(env!("CARGO_BIN_EXE_tenurectl"))
        .args(["groups", "list"])
        .env_remove("TENURE_LEASES_TABLE")
        .output()
        .unwrap();
    assert!(stderr_of_failure(no_table).contains("--table"));
}

/// A host checks in and takes a group through the library (as lease-check would), then
/// `hosts list|show` and a whole-host drain show and change it.
#[tokio::test]
async fn hosts_show_their_lease_incarnation_and_groups_and_drain_as_a_whole() {
    let table = leases_table().await;
    for group in ["g1", "g2"] {
        create_two_member_group(&table, group);
    }
    let answer = check_in(&table, "db-1", Some("proc-7"), &["g1", "g2"]).await;
    assert!(answer.valid_for_ms > 0, "db-1 has a host lease: {answer:?}");

    let listed = ok_json(tenurectl(&table, &["hosts", "list", "--json"]));
    let db1 = listed
        .as_array()
        .and_then(|a| a.iter().find(|h| h["host_id"] == "db-1"))
        .cloned()
        .unwrap_or_else(|| panic!("db-1 listed: {listed}"));
    assert_eq!(db1["lease_live"], true);
    assert_eq!(db1["incarnation"], "proc-7");
    assert_eq!(db1["groups_held"], 2);
    let human = String::from_utf8_lossy(&tenurectl(&table, &["hosts", "list"]).stdout).into_owned();
    assert!(
        human.contains("db-1") && human.contains("proc-7"),
        "{human}"
    );

    // The by-holder index is eventually consistent: give it a few seconds.
    let mut shown = serde_json::Value::Null;
    for _ in 0..30 {
        shown = ok_json(tenurectl(&table, &["hosts", "show", "db-1", "--json"]));
        if shown["groups"].as_array().map(Vec::len) == Some(2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(shown["groups"].as_array().map(Vec::len), Some(2), "{shown}");
    assert_eq!(shown["epoch"], 0);
    let text =
        String::from_utf8_lossy(&tenurectl(&table, &["hosts", "show", "db-1"]).stdout).into_owned();
    assert!(
        text.contains("incarnation  proc-7") && text.contains("g2"),
        "{text}"
    );

    assert_eq!(
        ok_json(tenurectl(
            &table,
            &["lease", "drain", "--host", "db-1", "--json"]
        ))["draining"],
        true
    );
    let listed = ok_json(tenurectl(&table, &["hosts", "list", "--json"]));
    assert!(
        listed.as_array().is_some_and(|a| a
            .iter()
            .any(|h| h["host_id"] == "db-1" && h["draining"] == true)),
        "{listed}"
    );
    assert_eq!(
        ok_json(tenurectl(
            &table,
            &["lease", "undrain", "--host", "db-1", "--json"]
        ))["draining"],
        false
    );
    // Neither a group alone nor both forms at once.
    assert!(stderr_of_failure(tenurectl(&table, &["lease", "drain", "g1"])).contains("HOST"));
    assert!(
        !tenurectl(&table, &["lease", "drain", "g1", "db-1", "--host", "db-1"])
            .status
            .success()
    );
    let unknown = ok_json(tenurectl(&table, &["hosts", "show", "nobody", "--json"]));
    assert_eq!(unknown["lease_live"], false);
}

#[tokio::test]
async fn lease_history_lists_a_groups_grants_oldest_first_with_why_each_ended() {
    use tenure::ids::{GroupId, HostId};
    use tenure::lease::history::{Change, HistoryEntry, PreviousEnd};
    use tenure::lease::history_store::HistoryStore;
    use tenure::lease::Epoch;
    let table = leases_table().await;
    let history_table = format!("{table}-history");
    let client = aws_sdk_dynamodb::Client::new(&sdk().await);
    tenure::aws::ensure_table_with_sort_key(&client, &history_table, "group_id", "seq")
        .await
        .unwrap();
    let store = HistoryStore::new(client, &history_table, format!("{table}-hosts"), 86_400_000);
    let group = GroupId::parse("orders").unwrap();
    let host = |h: &str| HostId::parse(h).unwrap();
    let entry = |change, epoch: u64, holder: &str, previous, at_ms| HistoryEntry {
        group_id: group.clone(),
        seq: epoch * 4 + u64::from(change == Change::Released),
        change,
        epoch: Epoch(epoch),
        holder: Some(host(holder)),
        holder_host_epoch: Some(Epoch(0)),
        previous,
        drained: false,
        at_ms,
    };
    // Written out of order, and one twice (a stream batch delivered again).
    let revoked = entry(
        Change::Acquired,
        2,
        "host-b",
        Some(PreviousEnd::Revoked {
            holder: host("host-a"),
            epoch: Epoch(1),
            host_epoch: Epoch(0),
        }),
        1_800_000_011_000,
    );
    let first = entry(
        Change::Acquired,
        1,
        "host-a",
        Some(PreviousEnd::FirstHolder),
        1_800_000_000_000,
    );
    for e in [&revoked, &first, &revoked] {
        store.record(e).await.unwrap();
    }

    let run = |args: &[&str]| {
        let mut all = vec![
            "lease",
            "history",
            "orders",
            "--history-table",
            &history_table,
        ];
        all.extend_from_slice(args);
        tenurectl(&table, &all)
    };
    let listed = ok_json(run(&["--json"]));
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["holder"], "host-a");
    assert_eq!(entries[1]["previous"]["reason"], "revoked");
    let human = run(&[]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("first holder") && text.contains("host-a revoked (host epoch 0) at epoch 1"),
        "{text}"
    );
    let missing = tenurectl(&table, &["lease", "history", "orders"]);
    assert!(stderr_of_failure(missing).contains("TENURE_LEASE_HISTORY_TABLE"));
}

#[tokio::test]
async fn watch_redraws_a_group_and_a_host_and_lists_what_changed_between_frames() {
    let table = leases_table().await;
    create_two_member_group(&table, "w1");
    check_in(&table, "db-1", None, &["w1"]).await;

    // Two JSON frames of the group: db-1 holds it, live; db-2 never checked in.
    let frames = tenurectl(
        &table,
        &[
            "watch",
            "group",
            "w1",
            "--frames",
            "2",
            "--interval-ms",
            "200",
            "--json",
        ],
    );
    assert!(
        frames.status.success(),
        "{}",
        String::from_utf8_lossy(&frames.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&frames.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["record"]["holder"], "db-1");
    assert_eq!(lines[1]["lease_live"], true);
    let members = lines[1]["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{}", lines[1]);
    assert_eq!(members[0]["lease"], "live");
    assert_eq!(members[1]["lease"], "none");
    assert!(members[1]["expires_in_ms"].is_null());
    let human = tenurectl(&table, &["watch", "group", "w1", "--frames", "1"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("holder      db-1")
            && text.contains("live: db-1 may write")
            && text.contains("db-2"),
        "{text}"
    );

    // A change while watching a host is listed under the frames that follow it.
    let watcher = command(
        &table,
        &[
            "watch",
            "host",
            "db-1",
            "--frames",
            "10",
            "--interval-ms",
            "250",
            "--json",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(tenurectl(&table, &["lease", "drain", "--host", "db-1"])
        .status
        .success());
    let out = tokio::task::spawn_blocking(move || watcher.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    let last: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    let changes: Vec<String> = last["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["change"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        changes.contains(&"draining: false -> true".to_owned()),
        "{last}"
    );
    assert_eq!(last["host"]["draining"], true);

    let unknown = tenurectl(&table, &["watch", "group", "bad group!", "--frames", "1"]);
    assert!(stderr_of_failure(unknown).contains("bad group!"));
}

/// A RegionHealth table of the test's own.
async fn region_health_table() -> (tenure::irc::region_health::RegionHealthTable, String) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let client = aws_sdk_dynamodb::Client::new(&sdk().await);
    let name = format!("tenurectl-health-{}", std::process::id());
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("region"))
        .attribute_definitions(attribute("slot"))
        .key_schema(key("region", KeyType::Hash))
        .key_schema(key("slot", KeyType::Range))
        .send()
        .await
        .unwrap_or_else(|e| panic!("create table: {e:?} (endpoint {})", endpoint()));
    (
        tenure::irc::region_health::RegionHealthTable::new(client, name.clone()),
        name,
    )
}

/// Workers' verdicts and an opening written through the library; `ops regions` shows each
/// target region as the workers see it: eu-west-1 open with its reason, probes and failures
/// counted, ap-southeast-2 closed with its successes; a region can be named alone.
#[tokio::test]
async fn ops_regions_shows_which_target_regions_are_open_and_why() {
    use tenure::clock::{Clock, SystemClock};
    use tenure::irc::health::CallVerdict;
    use tenure::irc::region_health::HealthRecords;
    use tenure::irc::Region;
    let (records, table) = region_health_table().await;
    let (eu, ap) = (
        Region::parse("eu-west-1").unwrap(),
        Region::parse("ap-southeast-2").unwrap(),
    );
    let now = SystemClock.now_ms();
    let bucket = now - now % 2_000;
    let expires = now + 120_000;
    for _ in 0..6 {
        records
            .count(&eu, CallVerdict::RegionFailure, bucket, expires)
            .await
            .unwrap();
    }
    for _ in 0..3 {
        records
            .count(&ap, CallVerdict::Healthy, bucket, expires)
            .await
            .unwrap();
    }
    assert!(records
        .open(&eu, now, now + 5_000, "503 from irc-remote")
        .await
        .unwrap());
    let run = |args: &[&str]| {
        command("unused", args)
            .env("TENURE_REGION_HEALTH_TABLE", &table)
            .output()
            .unwrap()
    };

    let all = ok_json(run(&["--json", "ops", "regions"]));
    let by_region = |region: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|v| v["region"] == region)
            .unwrap_or_else(|| panic!("{region} missing from {all}"))
            .clone()
    };
    let eu_view = by_region("eu-west-1");
    assert_eq!(eu_view["state"], "open", "{eu_view}");
    assert_eq!(eu_view["reason"], "503 from irc-remote");
    assert_eq!(eu_view["probes"], 0);
    assert_eq!(eu_view["next_probe_at_ms"], now + 5_000);
    assert_eq!(eu_view["window"]["failures"], 6);
    assert_eq!(eu_view["rate_window"]["failures"], 6);
    let ap_view = by_region("ap-southeast-2");
    assert_eq!(ap_view["state"], "closed", "{ap_view}");
    assert_eq!(ap_view["window"]["successes"], 3);
    assert_eq!(ap_view["window"]["failures"], 0);
    assert_eq!(ap_view["next_probe_at_ms"], Value::Null);

    let one = ok_json(run(&[
        "--json",
        "ops",
        "regions",
        "--target-region",
        "ap-southeast-2",
    ]));
    assert_eq!(one.as_array().map(Vec::len), Some(1), "{one}");
    let table_view = run(&["ops", "regions"]);
    assert!(table_view.status.success());
    let text = String::from_utf8_lossy(&table_view.stdout);
    let eu_line = text
        .lines()
        .find(|l| l.starts_with("eu-west-1"))
        .unwrap_or_else(|| panic!("no eu-west-1 line in\n{text}"));
    assert!(
        eu_line.contains("open")
            && eu_line.contains("6/6")
            && eu_line.contains("503 from irc-remote"),
        "{eu_line}"
    );

    let bad_region = run(&["ops", "regions", "--target-region", "Not A Region"]);
    assert!(stderr_of_failure(bad_region).contains("--target-region Not A Region"));
    let no_table = command("unused", &["ops", "regions"])
        .env_remove("TENURE_REGION_HEALTH_TABLE")
        .output()
        .unwrap();
    assert!(stderr_of_failure(no_table).contains("--region-health-table"));
}
