use super::*;
use crate::clock::FakeClock;
use crate::identity::HostIdentityRule;
use crate::lease::memory::MemoryLeaseStore;
use crate::lease::record::Member;
use crate::lease::LeaseConfig;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn call(method: &str, path: &str, body: &str) -> Result<LeaseCall, ApiResponse> {
    parse_request(ApiRequest {
        method,
        path,
        body: body.as_bytes(),
    })
}

#[test]
fn the_v1_routes_parse() {
    let group = GroupId::parse("g1").unwrap();
    let host = HostId::parse("h1").unwrap();
    assert_eq!(
        call("POST", "/v1/groups/g1/check", r#"{"host_id":"h1"}"#),
        Ok(LeaseCall::Check {
            group: group.clone(),
            host: host.clone(),
            healthy: true,
            heartbeat: true
        })
    );
    assert_eq!(
        call(
            "POST",
            "/v1/groups/g1/release",
            r#"{"host_id":"h1","epoch":3}"#
        ),
        Ok(LeaseCall::Release(group.clone(), host, Epoch(3)))
    );
    assert_eq!(call("GET", "/v1/groups/g1", ""), Ok(LeaseCall::Get(group)));
}

#[test]
fn the_v2_routes_parse_and_a_bad_group_fails_alone() {
    let host = HostId::parse("h1").unwrap();
    let parsed = call(
        "POST",
        "/v1/hosts/h1/check",
        r#"{"heartbeat":false,"incarnation":"i-1","groups":["g1","bad id"],"watch":["h2"]}"#,
    )
    .unwrap();
    let LeaseCall::HostCheck { check, invalid } = parsed else {
        panic!("not a host check: {parsed:?}");
    };
    assert_eq!(check.host, host);
    assert!(!check.heartbeat && check.healthy);
    assert_eq!(check.incarnation.unwrap().as_str(), "i-1");
    assert_eq!(check.groups, vec![GroupId::parse("g1").unwrap()]);
    assert_eq!(check.watch, vec![HostId::parse("h2").unwrap()]);
    assert_eq!(invalid.len(), 1);
    assert_eq!(invalid[0].0, "bad id");
    assert_eq!(
        call("GET", "/v1/hosts/h1", ""),
        Ok(LeaseCall::HostGet(host))
    );
    let release = call(
        "POST",
        "/v1/hosts/h1/release",
        r#"{"groups":[{"group_id":"g1","epoch":4}]}"#,
    )
    .unwrap();
    assert!(
        matches!(release, LeaseCall::HostRelease { groups, .. } if groups == vec![(GroupId::parse("g1").unwrap(), Epoch(4))])
    );
}

#[test]
fn each_mistake_gets_its_status_and_code() {
    let cases = [
        ("GET", "/v1/nope", "", 404, "not_found"),
        ("GET", "/v1/groups/g1/check", "", 405, "method_not_allowed"),
        ("POST", "/v1/groups/bad%20id/check", "{}", 400, "invalid_id"),
        ("POST", "/v1/groups/g1/check", "{", 400, "malformed_request"),
        (
            "POST",
            "/v1/groups/g1/check",
            "{}",
            400,
            "malformed_request",
        ),
        (
            "POST",
            "/v1/groups/g1/check",
            r#"{"host_id":"a b"}"#,
            400,
            "invalid_id",
        ),
        (
            "POST",
            "/v1/groups/g1/release",
            r#"{"host_id":"h1","epoch":-1}"#,
            400,
            "malformed_request",
        ),
        ("GET", "/v1/hosts/h1/check", "", 405, "method_not_allowed"),
        ("POST", "/v1/hosts/h 1/check", "{}", 400, "invalid_id"),
        (
            "POST",
            "/v1/hosts/h1/check",
            r#"{"group":["g1"]}"#,
            400,
            "malformed_request",
        ),
        (
            "POST",
            "/v1/hosts/h1/check",
            r#"{"watch":["a b"]}"#,
            400,
            "invalid_id",
        ),
        (
            "POST",
            "/v1/hosts/h1/check",
            r#"{"incarnation":""}"#,
            400,
            "invalid_id",
        ),
        ("POST", "/v1/hosts/h1/other", "{}", 404, "not_found"),
        (
            "POST",
            "/v1/hosts/h1/release",
            r#"{"groups":[{"group_id":"g1"}]}"#,
            400,
            "malformed_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let err = call(method, path, body).unwrap_err();
        assert_eq!(
            (err.status, err.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path} {body}"
        );
    }
    let big = format!(
        r#"{{"host_id":"h1","pad":"{}"}}"#,
        "x".repeat(crate::http::MAX_BODY_BYTES)
    );
    assert_eq!(
        call("POST", "/v1/groups/g1/check", &big)
            .unwrap_err()
            .status,
        413
    );
    let groups: Vec<String> = (0..501).map(|i| format!("\"g{i}\"")).collect();
    let body = format!(r#"{{"groups":[{}]}}"#, groups.join(","));
    let err = call("POST", "/v1/hosts/h1/check", &body).unwrap_err();
    assert_eq!(
        (err.status, err.body["error"]["code"].as_str()),
        (413, Some("too_many"))
    );
}

fn service() -> (LeaseService<MemoryLeaseStore, FakeClock>, FakeClock) {
    let clock = FakeClock::at(1_000_000);
    let store = MemoryLeaseStore::new();
    (
        LeaseService::new(store, LeaseConfig::default(), clock.clone()),
        clock,
    )
}

async fn request(
    service: &LeaseService<MemoryLeaseStore, FakeClock>,
    method: &str,
    path: &str,
    body: &str,
) -> ApiResponse {
    handle(
        service,
        &HostIdentityRule::Off,
        None,
        ApiRequest {
            method,
            path,
            body: body.as_bytes(),
        },
    )
    .await
}

#[tokio::test]
async fn a_host_check_answers_each_group_and_fails_bad_ones_alone() {
    let (service, _clock) = service();
    let members = BTreeMap::from([
        (HostId::parse("h1").unwrap(), Member::new("az1", 2)),
        (HostId::parse("h2").unwrap(), Member::new("az2", 1)),
    ]);
    service
        .create_group(GroupId::parse("g1").unwrap(), 10_000, members)
        .await
        .unwrap();
    let answer = request(
        &service,
        "POST",
        "/v1/hosts/h1/check",
        r#"{"groups":["g1","nope","bad id"]}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let groups = answer.body["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3);
    assert_eq!(groups[0]["group_id"], "g1");
    assert_eq!(groups[0]["role"], "primary", "{}", answer.body);
    assert_eq!(groups[0]["holder_host_epoch"], 0);
    assert_eq!(groups[1]["error"]["code"], "unknown_group");
    assert_eq!(groups[2]["error"]["code"], "invalid_id");
    assert!(answer.body["valid_for_ms"].as_u64().unwrap() > 0);
    // The v1 endpoint answers the other member in v1's shape.
    let v1 = request(
        &service,
        "POST",
        "/v1/groups/g1/check",
        r#"{"host_id":"h2"}"#,
    )
    .await;
    assert_eq!(v1.status, 200, "{}", v1.body);
    assert_eq!(v1.body["role"], "secondary");
    assert_eq!(v1.body["holder"], "h1");
    let not_member = request(
        &service,
        "POST",
        "/v1/groups/g1/check",
        r#"{"host_id":"h9"}"#,
    )
    .await;
    assert_eq!(
        (not_member.status, not_member.body["error"]["code"].as_str()),
        (404, Some("not_member"))
    );
    let get = request(&service, "GET", "/v1/hosts/h1", "").await;
    assert_eq!(get.status, 200);
    assert_eq!(get.body["groups"][0]["group_id"], "g1");
    let stale = request(
        &service,
        "POST",
        "/v1/groups/g1/release",
        r#"{"host_id":"h1","epoch":7}"#,
    )
    .await;
    assert_eq!(
        (stale.status, stale.body["error"]["code"].as_str()),
        (409, Some("stale_epoch"))
    );
}

proptest! {
    // Any request: a call or a 4xx with the contract's error shape, never a panic.
    #[test]
    fn any_request_gets_a_call_or_a_4xx(
        method in "(GET|POST|PUT|DELETE|\\PC{0,6})",
        path in "(/v1/(groups|hosts)/[a-z0-9\\-]{0,8}(/check|/release)?|\\PC{0,40})",
        body in "(\\{\"host_id\":\"[a-z0-9 ]{0,6}\"(,\"epoch\":-?[0-9]{1,3})?\\}|\\{\"groups\":\\[\"[a-z ]{0,4}\"\\]\\}|\\PC{0,60})",
    ) {
        match call(&method, &path, &body) {
            Ok(LeaseCall::Check { host, .. }) => prop_assert!(!host.as_str().is_empty()),
            Ok(_) => {}
            Err(e) => prop_assert!(e.is_client_error(), "{e:?}"),
        }
    }
}

#[test]
fn checks_are_counted_by_outcome_and_other_routes_are_not() {
    let service = LeaseService::new(
        MemoryLeaseStore::new(),
        LeaseConfig::default(),
        FakeClock::at(1_800_000_000_000),
    );
    let request = |method, path, body: &'static str| ApiRequest {
        method,
        path,
        body: body.as_bytes(),
    };
    let ((), counts) = crate::metrics::testing::counted(async {
        let ok = handle(
            &service,
            &HostIdentityRule::Off,
            None,
            request("POST", "/v1/hosts/h1/check", "{}"),
        )
        .await;
        assert_eq!(ok.status, 200);
        let bad = handle(
            &service,
            &HostIdentityRule::Off,
            None,
            request("POST", "/v1/hosts/h1/check", "{"),
        )
        .await;
        assert_eq!(bad.status, 400);
        let unknown = handle(
            &service,
            &HostIdentityRule::Off,
            None,
            request("POST", "/v1/groups/g1/check", r#"{"host_id":"h1"}"#),
        )
        .await;
        assert_eq!(unknown.status, 404);
        handle(
            &service,
            &HostIdentityRule::Off,
            None,
            request("GET", "/v1/hosts/h1", ""),
        )
        .await;
    });
    assert_eq!(counts["Checks{Outcome=ok}"], 1);
    assert_eq!(counts["Checks{Outcome=rejected}"], 2);
    assert_eq!(counts["CheckDuration"], 3, "one duration sample per check");
}

/// Function URL events in the shape AWS documents, with `requestContext.authorizer.iam`
/// (`shared/tests/fixtures/identity-*.json`), through the Lambda entry point.
#[cfg(feature = "lambda")]
mod identity {
    use super::*;
    use serde_json::Value;

    async fn answer(rule: HostIdentityRule, fixture: &str) -> (u16, Value) {
        let service = LeaseService::new(
            MemoryLeaseStore::new(),
            LeaseConfig::default(),
            FakeClock::at(1_800_000_000_000),
        );
        let request = lambda_http::request::from_str(fixture).expect("a Function URL event");
        let response = handle_lambda(&service, &rule, request).await.unwrap();
        let body = serde_json::from_slice(response.body().as_ref()).unwrap();
        (response.status().as_u16(), body)
    }

    #[tokio::test]
    async fn a_host_session_checks_as_itself() {
        let fixture = include_str!("../../tests/fixtures/identity-host-a-checks-as-host-a.json");
        let (status, body) = answer(HostIdentityRule::SessionName, fixture).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["host_id"], "host-a");
    }

    #[tokio::test]
    async fn a_host_session_may_not_check_or_release_as_another_host() {
        for fixture in [
            include_str!("../../tests/fixtures/identity-host-a-checks-as-host-b.json"),
            include_str!("../../tests/fixtures/identity-host-a-releases-for-host-b-v1.json"),
        ] {
            let (status, body) = answer(HostIdentityRule::SessionName, fixture).await;
            assert_eq!(status, 403, "{body}");
            assert_eq!(body["error"]["code"], "not_this_host");
            assert!(body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("assumed-role/tenure-replica-hosts/host-a"));
        }
    }

    #[tokio::test]
    async fn without_a_caller_the_rule_refuses_and_off_lets_it_through() {
        let fixture = include_str!("../../tests/fixtures/identity-check-without-caller.json");
        let (status, body) = answer(HostIdentityRule::SessionName, fixture).await;
        assert_eq!(status, 403);
        assert_eq!(body["error"]["code"], "missing_identity");
        let (status, _) = answer(HostIdentityRule::Off, fixture).await;
        assert_eq!(status, 200);
    }
}
