//! Against a MiniStack started with AUTH=true (IAM enforced) and the template deployed to it:
//! the Function URL refuses unsigned callers, and the Leases table refuses roles without the
//! template's policy. Reads the outputs file named by `TENURE_E2E_AUTH_REGIONS`.

use anyhow::{Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};
use std::time::Duration;
use tenure::sigv4::SigV4Client;
use tenure_testkit::{stacks, Stack};

fn auth_stack() -> Result<Stack> {
    stacks("TENURE_E2E_AUTH_REGIONS")?
        .into_iter()
        .next()
        .context("no stack in the AUTH=true outputs")
}

#[tokio::test]
async fn an_unsigned_request_to_the_function_url_is_refused() -> Result<()> {
    let stack = auth_stack()?;
    let url = format!("{}v1/groups/any/check", stack.output("LeaseCheckLocalUrl")?);
    let unsigned = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(json!({"host_id": "host-a"}).to_string())
        .send()
        .await?;
    assert_eq!(
        unsigned.status().as_u16(),
        403,
        "{}",
        unsigned.text().await?
    );
    // The same request signed goes through to the function (which answers the contract's 404).
    let signed = SigV4Client::for_function_urls(&stack.sdk().await)?
        .send(
            "POST",
            &url,
            &stack.region,
            json!({"host_id": "host-a"}).to_string().as_bytes(),
            Duration::from_secs(10),
        )
        .await?;
    let body: Value = serde_json::from_slice(&signed.body)?;
    assert_eq!(
        (signed.status, body["error"]["code"].clone()),
        (404, json!("unknown_group"))
    );
    Ok(())
}

async fn assume(stack: &Stack, role_arn: &str) -> Result<aws_sdk_dynamodb::Client> {
    let sdk = stack.sdk().await;
    let creds = aws_sdk_sts::Client::new(&sdk)
        .assume_role()
        .role_arn(role_arn)
        .role_session_name("tenure-testkit")
        .send()
        .await?
        .credentials
        .context("AssumeRole returned no credentials")?;
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .credentials_provider(aws_credential_types::Credentials::new(
            creds.access_key_id(),
            creds.secret_access_key(),
            Some(creds.session_token().to_owned()),
            None,
            "assumed",
        ))
        .build();
    Ok(aws_sdk_dynamodb::Client::from_conf(config))
}

fn is_access_denied<E: std::fmt::Debug>(result: &Result<impl std::fmt::Debug, E>) -> bool {
    matches!(result, Err(e) if format!("{e:?}").contains("AccessDenied"))
}

#[tokio::test]
async fn a_role_without_the_policy_cannot_touch_the_leases_table() -> Result<()> {
    let stack = auth_stack()?;
    let table = stack.output("LeasesTable")?.to_owned();
    let iam = aws_sdk_iam::Client::new(&stack.sdk().await);
    let name = format!("tenure-testkit-no-policy-{}", std::process::id());
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::000000000000:root"}, "Action": "sts:AssumeRole"}]});
    let role = iam
        .create_role()
        .role_name(&name)
        .assume_role_policy_document(trust.to_string())
        .send()
        .await?
        .role
        .context("no role")?;
    let outsider = assume(&stack, role.arn()).await?;
    let key = AttributeValue::S("any".into());
    let read = outsider
        .get_item()
        .table_name(&table)
        .key("group_id", key.clone())
        .send()
        .await;
    assert!(
        is_access_denied(&read),
        "GetItem without a policy: {read:?}"
    );
    let write = outsider
        .delete_item()
        .table_name(&table)
        .key("group_id", key)
        .send()
        .await;
    assert!(
        is_access_denied(&write),
        "DeleteItem without a policy: {write:?}"
    );
    let _ = iam.delete_role().role_name(&name).send().await;
    Ok(())
}

#[tokio::test]
async fn lease_check_role_may_read_and_update_but_not_scan_or_delete() -> Result<()> {
    let stack = auth_stack()?;
    let table = stack.output("LeasesTable")?.to_owned();
    let role = stack.output("LeaseCheckFunctionRole")?.to_owned();
    let lease_check = assume(&stack, &role).await?;
    let key = AttributeValue::S("least-privilege-probe".into());
    let read = lease_check
        .get_item()
        .table_name(&table)
        .key("group_id", key.clone())
        .send()
        .await;
    assert!(
        read.is_ok(),
        "lease-check's role must read the Leases table: {read:?}"
    );
    let scan = lease_check.scan().table_name(&table).send().await;
    assert!(
        is_access_denied(&scan),
        "lease-check's role must not scan: {scan:?}"
    );
    let delete = lease_check
        .delete_item()
        .table_name(&table)
        .key("group_id", key)
        .send()
        .await;
    assert!(
        is_access_denied(&delete),
        "lease-check's role must not delete: {delete:?}"
    );
    Ok(())
}

/// lease-history's role, with IAM enforced, is enough for its whole path: read the Leases
/// stream, write `LeaseHistory`, publish on the default bus (an entry appears only after the
/// publish succeeded, since a failed publish fails the batch and keeps retrying it).
#[tokio::test]
async fn lease_history_records_a_grant_with_only_its_own_policy() -> Result<()> {
    use tenure::ids::{GroupId, HostId};
    use tenure::lease::history_store::HistoryStore;
    use tenure::lease::Member;
    let stack = auth_stack()?;
    let sdk = stack.sdk().await;
    let dynamodb = tenure::aws::dynamodb_client(&sdk, None);
    let service = tenure::lease::service::LeaseService::new(
        tenure::lease::dynamo::DynamoLeaseStore::new(
            dynamodb.clone(),
            stack.output("HostsTable")?,
            stack.output("LeasesTable")?,
        ),
        tenure::lease::LeaseConfig::default(),
        tenure::clock::SystemClock,
    );
    let tag = format!(
        "{}-{}",
        std::process::id(),
        tenure::clock::Clock::now_ms(&tenure::clock::SystemClock)
    );
    let host = HostId::parse(&format!("lp-host-{tag}"))?;
    let group = GroupId::parse(&format!("lp-group-{tag}"))?;
    service
        .create_group(
            group.clone(),
            10_000,
            std::collections::BTreeMap::from([(host.clone(), Member::new("use1-az1", 1))]),
        )
        .await?;
    stack
        .lease_check()
        .await?
        .check_host(
            &host,
            &tenure_testkit::healthy_check(std::slice::from_ref(&group)),
        )
        .await?;
    let history = HistoryStore::new(
        dynamodb,
        stack.output("LeaseHistoryTable")?,
        stack.output("HostsTable")?,
        86_400_000,
    );
    for _ in 0..150 {
        if !history.list(&group, 10).await?.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("no history entry for {group} within 30 s: lease-history's role lacks a permission (its log says which)")
}

/// irc-events' role, with IAM enforced, is enough for its whole path: read the WorkItems
/// stream, publish on the default bus, mark the item published (which happens only after the
/// publish succeeded). The op is only written, never sent: no worker touches it.
#[tokio::test]
async fn irc_events_publishes_a_status_change_with_only_its_own_policy() -> Result<()> {
    use tenure::irc::store::{NewOp, SubmitOutcome, WorkItemStore};
    use tenure::irc::{OpId, Region};
    let stack = auth_stack()?;
    let sdk = stack.sdk().await;
    let items = WorkItemStore::new(
        tenure::aws::dynamodb_client(&sdk, None),
        stack.output("WorkItemsTable")?,
    );
    let op = NewOp {
        op_id: OpId::new(),
        source_region: Region::parse("us-east-1")?,
        target_region: Region::parse("eu-west-1")?,
        kind: "group.put".into(),
        resource: "lp-events".into(),
        payload: "{}".into(),
        max_attempts: 1,
        await_for: None,
        await_ms: None,
    };
    let now = tenure::clock::Clock::now_ms(&tenure::clock::SystemClock);
    let SubmitOutcome::Submitted(item) = items.submit(op, now, 3_600_000).await? else {
        anyhow::bail!("a fresh op id was already submitted");
    };
    for _ in 0..150 {
        let current = items.get(&item.op_id).await?.context("the op vanished")?;
        if current.published_version == 1 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("op {} never marked published within 30 s: irc-events' role lacks a permission (its log says which)", item.op_id)
}
