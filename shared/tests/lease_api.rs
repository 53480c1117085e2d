//! lease-check's HTTP contract (`docs/protocol.md`, wire contract), driven through the real handler on
//! the DynamoDB store (MiniStack): the v1 group endpoints answered by v2 with exactly v1's
//! fields, the v2 host check (per-group answers and per-group errors, attention, watched
//! holders), the v2 release, `GET /v1/hosts/{host_id}` from the `by-holder` index, and every
//! error status with the one JSON error shape. Parsing alone is unit-tested in
//! `src/lease/api_tests.rs`.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;
use tenure::clock::FakeClock;
use tenure::http::{ApiRequest, ApiResponse, MAX_BODY_BYTES};
use tenure::identity::HostIdentityRule;
use tenure::lease::api::{handle, handle_lambda};
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::service::LeaseService;
use tenure::lease::LeaseConfig;

const T0: u64 = 1_800_000_000_000;

/// One group, `orders-1`, with members host-a (priority 2) and host-b (1), at T0.
struct Fixture {
    service: LeaseService<DynamoLeaseStore, FakeClock>,
}

impl Fixture {
    async fn new() -> Self {
        let client = dynamodb(None).await;
        let store = store(&client).await;
        let service = LeaseService::new(store, LeaseConfig::default(), FakeClock::at(T0));
        service
            .create_group(
                group_id("orders-1"),
                10_000,
                new_group("orders-1", &["host-a", "host-b"], 10_000, T0).members,
            )
            .await
            .unwrap();
        Self { service }
    }

    async fn call(&self, method: &str, path: &str, body: &[u8]) -> ApiResponse {
        handle(
            &self.service,
            &HostIdentityRule::Off,
            None,
            ApiRequest { method, path, body },
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> ApiResponse {
        self.call("POST", path, body.to_string().as_bytes()).await
    }

    async fn get(&self, path: &str) -> ApiResponse {
        self.call("GET", path, b"").await
    }

    async fn done(self) {
        drop_lease_tables(self.service.store()).await;
    }
}

fn assert_error(response: &ApiResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.body);
    assert_eq!(response.body["error"]["code"], code, "{}", response.body);
    assert!(
        response.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error bodies carry a message: {}",
        response.body
    );
}

/// The entry for `group_id` in a host check's or host release's `groups`.
fn entry<'a>(body: &'a Value, group_id: &str) -> &'a Value {
    body["groups"]
        .as_array()
        .and_then(|groups| groups.iter().find(|g| g["group_id"] == group_id))
        .unwrap_or_else(|| panic!("no entry for {group_id} in {body}"))
}

#[tokio::test]
async fn a_v1_check_answers_exactly_the_v1_fields() {
    let f = Fixture::new().await;
    let r = f
        .post("/v1/groups/orders-1/check", json!({"host_id": "host-a"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({
            "group_id": "orders-1", "host_id": "host-a", "role": "primary", "writable": true,
            "epoch": 1, "holder": "host-a", "valid_for_ms": 9_800, "poll_after_ms": 500,
            "draining": false
        })
    );
    let b = f
        .post(
            "/v1/groups/orders-1/check",
            json!({"host_id": "host-b", "heartbeat": false}),
        )
        .await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(
        (
            b.body["role"].as_str(),
            b.body["writable"].as_bool(),
            b.body["holder"].as_str(),
            b.body["valid_for_ms"].as_u64()
        ),
        (Some("secondary"), Some(false), Some("host-a"), Some(0)),
        "{}",
        b.body
    );
    assert!(b.body.get("holder_host_epoch").is_none(), "{}", b.body);
    let got = f.get("/v1/groups/orders-1").await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        (
            got.body["holder"].clone(),
            got.body["epoch"].clone(),
            got.body["holder_host_epoch"].clone(),
            got.body["grant_live"].clone(),
            got.body["expires_in_ms"].clone(),
            got.body["holder_host"]["epoch"].clone()
        ),
        (
            json!("host-a"),
            json!(1),
            json!(0),
            json!(true),
            json!(10_000),
            json!(0)
        ),
        "{}",
        got.body
    );
    f.done().await;
}

#[tokio::test]
async fn a_v2_host_check_answers_each_group_and_fails_bad_ones_alone() {
    let f = Fixture::new().await;
    let a = f
        .post(
            "/v1/hosts/host-a/check",
            json!({"incarnation": "a-1", "groups": ["orders-1"]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body,
        json!({
            "host_id": "host-a", "host_epoch": 0, "valid_for_ms": 9_800, "poll_after_ms": 500,
            "healthy": true, "draining": false, "attention": ["orders-1"],
            "groups": [{
                "group_id": "orders-1", "host_id": "host-a", "role": "primary",
                "writable": true, "epoch": 1, "holder": "host-a", "valid_for_ms": 9_800,
                "poll_after_ms": 500, "draining": false, "holder_host_epoch": 0
            }],
            "watched": []
        })
    );
    let b = f
        .post(
            "/v1/hosts/host-b/check",
            json!({
                "incarnation": "b-1",
                "groups": ["orders-1", "nope", "bad id"],
                "watch": ["host-a"]
            }),
        )
        .await;
    assert_eq!(b.status, 200, "a bad group fails alone: {}", b.body);
    assert_eq!(
        b.body["groups"].as_array().map(Vec::len),
        Some(3),
        "{}",
        b.body
    );
    let orders = entry(&b.body, "orders-1");
    assert_eq!(
        (
            orders["role"].clone(),
            orders["writable"].clone(),
            orders["holder"].clone(),
            orders["holder_host_epoch"].clone()
        ),
        (json!("secondary"), json!(false), json!("host-a"), json!(0)),
        "{}",
        b.body
    );
    assert_eq!(entry(&b.body, "nope")["error"]["code"], "unknown_group");
    assert_eq!(entry(&b.body, "bad id")["error"]["code"], "invalid_id");
    assert_eq!(b.body["attention"], json!(["orders-1"]));
    assert_eq!(
        b.body["watched"],
        json!([{"host_id": "host-a", "host_epoch": 0, "live": true, "expires_in_ms": 10_000}])
    );
    f.done().await;
}

#[tokio::test]
async fn a_v2_release_answers_per_group_and_hands_over_at_the_next_check() {
    let f = Fixture::new().await;
    let a = f
        .post("/v1/hosts/host-a/check", json!({"groups": ["orders-1"]}))
        .await;
    assert_eq!(entry(&a.body, "orders-1")["epoch"], 1, "{}", a.body);
    let refused = f
        .post(
            "/v1/hosts/host-a/release",
            json!({"groups": [
                {"group_id": "orders-1", "epoch": 0},
                {"group_id": "nope", "epoch": 1},
                {"group_id": "bad id", "epoch": 1}
            ]}),
        )
        .await;
    assert_eq!(
        refused.status, 200,
        "each group answers for itself: {}",
        refused.body
    );
    assert_eq!(refused.body["host_id"], "host-a");
    assert_eq!(
        entry(&refused.body, "orders-1")["error"]["code"],
        "stale_epoch"
    );
    assert_eq!(
        entry(&refused.body, "nope")["error"]["code"],
        "unknown_group"
    );
    assert_eq!(
        entry(&refused.body, "bad id")["error"]["code"],
        "invalid_id"
    );
    let released = f
        .post(
            "/v1/hosts/host-a/release",
            json!({"groups": [{"group_id": "orders-1", "epoch": 1}]}),
        )
        .await;
    assert_eq!(released.status, 200, "{}", released.body);
    let orders = entry(&released.body, "orders-1");
    assert_eq!(
        (orders["writable"].clone(), orders["holder"].clone()),
        (json!(false), Value::Null),
        "{}",
        released.body
    );
    let b = f.post("/v1/hosts/host-b/check", json!({})).await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(b.body["attention"], json!(["orders-1"]), "{}", b.body);
    let orders = entry(&b.body, "orders-1");
    assert_eq!(
        (orders["writable"].clone(), orders["epoch"].clone()),
        (json!(true), json!(2)),
        "the next candidate takes the group at its very next check: {}",
        b.body
    );
    f.done().await;
}

#[tokio::test]
async fn get_host_shows_the_host_record_and_the_groups_it_holds() {
    let f = Fixture::new().await;
    let nobody = f.get("/v1/hosts/nobody").await;
    assert_eq!(nobody.status, 200, "{}", nobody.body);
    assert_eq!(
        (
            nobody.body["host"]["host_id"].clone(),
            nobody.body["host"]["epoch"].clone(),
            nobody.body["live"].clone(),
            nobody.body["groups"].clone()
        ),
        (json!("nobody"), json!(0), json!(false), json!([])),
        "{}",
        nobody.body
    );
    let a = f
        .post("/v1/hosts/host-a/check", json!({"groups": ["orders-1"]}))
        .await;
    assert_eq!(
        entry(&a.body, "orders-1")["writable"],
        json!(true),
        "{}",
        a.body
    );
    // The by-holder index is eventually consistent: give it up to 3 s.
    let want =
        json!([{"group_id": "orders-1", "epoch": 1, "holder_host_epoch": 0, "current": true}]);
    let mut last = f.get("/v1/hosts/host-a").await;
    for _ in 0..30 {
        if last.status == 200 && last.body["groups"] == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = f.get("/v1/hosts/host-a").await;
    }
    assert_eq!(last.status, 200, "{}", last.body);
    assert_eq!(last.body["groups"], want, "{}", last.body);
    assert_eq!(
        (
            last.body["host"]["epoch"].clone(),
            last.body["live"].clone(),
            last.body["expires_in_ms"].clone()
        ),
        (json!(0), json!(true), json!(10_000)),
        "{}",
        last.body
    );
    f.done().await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    let f = Fixture::new().await;
    for body in [
        &b"{"[..],
        b"[]",
        b"{\"host\": \"host-a\"}",
        b"{\"host_id\": 7}",
        b"",
        b"\xff\xfe",
    ] {
        let r = f.call("POST", "/v1/groups/orders-1/check", body).await;
        assert_error(&r, 400, "malformed_request");
    }
    for body in [
        &b"{"[..],
        b"{\"group\": [\"orders-1\"]}",
        b"{\"groups\": \"orders-1\"}",
    ] {
        let r = f.call("POST", "/v1/hosts/host-a/check", body).await;
        assert_error(&r, 400, "malformed_request");
    }
    let r = f
        .post(
            "/v1/groups/orders-1/release",
            json!({"host_id": "host-a", "epoch": -1}),
        )
        .await;
    assert_error(&r, 400, "malformed_request");
    let r = f
        .post(
            "/v1/hosts/host-a/release",
            json!({"groups": [{"group_id": "orders-1"}]}),
        )
        .await;
    assert_error(&r, 400, "malformed_request");
    f.done().await;
}

#[tokio::test]
async fn bad_ids_are_400() {
    let f = Fixture::new().await;
    let long = "g".repeat(65);
    for path in [
        "/v1/groups/bad%20id/check".to_string(),
        format!("/v1/groups/{long}/check"),
        "/v1/groups/a*b/check".into(),
    ] {
        let r = f.post(&path, json!({"host_id": "host-a"})).await;
        assert_error(&r, 400, "invalid_id");
    }
    for host in ["", "has space", "slash/y", &"h".repeat(65)] {
        let r = f
            .post("/v1/groups/orders-1/check", json!({"host_id": host}))
            .await;
        assert_error(&r, 400, "invalid_id");
    }
    assert_error(
        &f.post("/v1/hosts/h%201/check", json!({})).await,
        400,
        "invalid_id",
    );
    assert_error(
        &f.post("/v1/hosts/host-a/check", json!({"watch": ["a b"]}))
            .await,
        400,
        "invalid_id",
    );
    assert_error(
        &f.post("/v1/hosts/host-a/check", json!({"incarnation": ""}))
            .await,
        400,
        "invalid_id",
    );
    f.done().await;
}

#[tokio::test]
async fn unknown_group_and_non_member_are_404_on_the_v1_endpoints() {
    let f = Fixture::new().await;
    for heartbeat in [true, false] {
        let r = f
            .post(
                "/v1/groups/nope/check",
                json!({"host_id": "host-a", "heartbeat": heartbeat}),
            )
            .await;
        assert_error(&r, 404, "unknown_group");
        let r = f
            .post(
                "/v1/groups/orders-1/check",
                json!({"host_id": "stranger", "heartbeat": heartbeat}),
            )
            .await;
        assert_error(&r, 404, "not_member");
    }
    assert_error(&f.get("/v1/groups/nope").await, 404, "unknown_group");
    let r = f
        .post(
            "/v1/groups/orders-1/release",
            json!({"host_id": "stranger", "epoch": 1}),
        )
        .await;
    assert_error(&r, 404, "not_member");
    let r = f
        .post("/v1/hosts/stranger/check", json!({"groups": ["orders-1"]}))
        .await;
    assert_eq!(
        r.status, 200,
        "a v2 check fails a foreign group alone: {}",
        r.body
    );
    assert_eq!(entry(&r.body, "orders-1")["error"]["code"], "not_member");
    f.done().await;
}

#[tokio::test]
async fn oversize_bodies_and_too_many_groups_are_413() {
    let f = Fixture::new().await;
    let padding = "x".repeat(MAX_BODY_BYTES);
    let r = f
        .post(
            "/v1/groups/orders-1/check",
            json!({"host_id": "host-a", "pad": padding}),
        )
        .await;
    assert_error(&r, 413, "payload_too_large");
    let groups: Vec<String> = (0..501).map(|i| format!("g{i}")).collect();
    let r = f
        .post("/v1/hosts/host-a/check", json!({"groups": groups}))
        .await;
    assert_error(&r, 413, "too_many");
    f.done().await;
}

#[tokio::test]
async fn a_stale_v1_release_is_409_and_a_good_one_frees_the_group() {
    let f = Fixture::new().await;
    let a = f
        .post("/v1/groups/orders-1/check", json!({"host_id": "host-a"}))
        .await;
    assert_eq!(a.body["epoch"], 1, "{}", a.body);
    let stale = f
        .post(
            "/v1/groups/orders-1/release",
            json!({"host_id": "host-a", "epoch": 0}),
        )
        .await;
    assert_error(&stale, 409, "stale_epoch");
    let not_holder = f
        .post(
            "/v1/groups/orders-1/release",
            json!({"host_id": "host-b", "epoch": 1}),
        )
        .await;
    assert_error(&not_holder, 409, "stale_epoch");
    let ok = f
        .post(
            "/v1/groups/orders-1/release",
            json!({"host_id": "host-a", "epoch": 1}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        (ok.body["holder"].clone(), ok.body["writable"].clone()),
        (Value::Null, json!(false))
    );
    assert!(ok.body.get("holder_host_epoch").is_none(), "{}", ok.body);
    f.done().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let f = Fixture::new().await;
    assert_error(&f.get("/").await, 404, "not_found");
    assert_error(
        &f.call("POST", "/v1/groups/orders-1/steal", b"{}").await,
        404,
        "not_found",
    );
    assert_error(
        &f.call("POST", "/v1/hosts/host-a/steal", b"{}").await,
        404,
        "not_found",
    );
    assert_error(
        &f.get("/v1/groups/orders-1/check").await,
        405,
        "method_not_allowed",
    );
    assert_error(
        &f.call("DELETE", "/v1/groups/orders-1", b"").await,
        405,
        "method_not_allowed",
    );
    assert_error(
        &f.get("/v1/hosts/host-a/check").await,
        405,
        "method_not_allowed",
    );
    f.done().await;
}

#[tokio::test]
async fn store_unavailable_is_503() {
    let client = dynamodb(None).await;
    let store = DynamoLeaseStore::new(
        client,
        "no-such-hosts-table-for-tenure",
        "no-such-leases-table-for-tenure",
    );
    let service = LeaseService::new(store, LeaseConfig::default(), FakeClock::at(T0));
    for (path, body) in [
        ("/v1/groups/orders-1/check", json!({"host_id": "host-a"})),
        ("/v1/hosts/host-a/check", json!({"groups": ["orders-1"]})),
    ] {
        let body = body.to_string();
        let r = handle(
            &service,
            &HostIdentityRule::Off,
            None,
            ApiRequest {
                method: "POST",
                path,
                body: body.as_bytes(),
            },
        )
        .await;
        assert_error(&r, 503, "store_unavailable");
    }
}

#[tokio::test]
async fn function_url_events_reach_the_handler() {
    let f = Fixture::new().await;
    let event = include_str!("fixtures/function-url-check.json");
    let request = lambda_http::request::from_str(event).expect("fixture is a Function URL event");
    let response = handle_lambda(&f.service, &HostIdentityRule::Off, request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(body["host_id"], "host-a");
    assert_eq!(body["role"], "primary");

    let event = include_str!("fixtures/function-url-malformed.json");
    let request = lambda_http::request::from_str(event).expect("fixture is a Function URL event");
    let response = handle_lambda(&f.service, &HostIdentityRule::Off, request)
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    f.done().await;
}
