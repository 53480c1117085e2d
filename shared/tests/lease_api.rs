//! lease-check's HTTP contract, driven through the real handler against MiniStack.

mod support;

use serde_json::{json, Value};
use support::*;
use tenure::clock::FakeClock;
use tenure::http::{ApiRequest, ApiResponse, MAX_BODY_BYTES};
use tenure::lease::api::{handle, handle_lambda};
use tenure::lease::service::LeaseService;
use tenure::lease::store::LeaseStore;
use tenure::lease::LeaseConfig;

const T0: u64 = 1_800_000_000_000;

struct Fixture {
    client: aws_sdk_dynamodb::Client,
    service: LeaseService<FakeClock>,
}

impl Fixture {
    async fn new() -> Self {
        let client = dynamodb(None).await;
        let table = create_table(&client, "group_id").await;
        let store = LeaseStore::new(client.clone(), table);
        store
            .create_group(&new_group("orders-1", &["host-a", "host-b"], 10_000, T0))
            .await
            .unwrap();
        let service = LeaseService::new(store, LeaseConfig::default(), FakeClock::at(T0));
        Self { client, service }
    }

    async fn call(&self, method: &str, path: &str, body: &[u8]) -> ApiResponse {
        handle(&self.service, ApiRequest { method, path, body }).await
    }

    async fn post(&self, path: &str, body: Value) -> ApiResponse {
        self.call("POST", path, body.to_string().as_bytes()).await
    }

    async fn done(self) {
        drop_table(&self.client, self.service.store().table()).await;
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

#[tokio::test]
async fn a_check_answers_the_contract_fields() {
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
    assert_eq!(b.status, 200);
    assert_eq!(
        (b.body["role"].as_str(), b.body["writable"].as_bool()),
        (Some("secondary"), Some(false))
    );
    let got = f.call("GET", "/v1/groups/orders-1", b"").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["holder"], "host-a");
    assert_eq!(got.body["expires_in_ms"], 10_000);
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
    let r = f
        .post(
            "/v1/groups/orders-1/release",
            json!({"host_id": "host-a", "epoch": -1}),
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
    f.done().await;
}

#[tokio::test]
async fn unknown_group_and_non_member_are_404() {
    let f = Fixture::new().await;
    let r = f
        .post("/v1/groups/nope/check", json!({"host_id": "host-a"}))
        .await;
    assert_error(&r, 404, "unknown_group");
    let r = f
        .post(
            "/v1/groups/nope/check",
            json!({"host_id": "host-a", "heartbeat": false}),
        )
        .await;
    assert_error(&r, 404, "unknown_group");
    let r = f.call("GET", "/v1/groups/nope", b"").await;
    assert_error(&r, 404, "unknown_group");
    let r = f
        .post("/v1/groups/orders-1/check", json!({"host_id": "stranger"}))
        .await;
    assert_error(&r, 404, "not_member");
    let r = f
        .post(
            "/v1/groups/orders-1/check",
            json!({"host_id": "stranger", "heartbeat": false}),
        )
        .await;
    assert_error(&r, 404, "not_member");
    let r = f
        .post(
            "/v1/groups/orders-1/release",
            json!({"host_id": "stranger", "epoch": 1}),
        )
        .await;
    assert_error(&r, 404, "not_member");
    f.done().await;
}

#[tokio::test]
async fn oversize_body_is_413() {
    let f = Fixture::new().await;
    let padding = "x".repeat(MAX_BODY_BYTES);
    let r = f
        .post(
            "/v1/groups/orders-1/check",
            json!({"host_id": "host-a", "pad": padding}),
        )
        .await;
    assert_error(&r, 413, "payload_too_large");
    f.done().await;
}

#[tokio::test]
async fn stale_release_is_409_and_a_good_one_frees_the_lease() {
    let f = Fixture::new().await;
    let a = f
        .post("/v1/groups/orders-1/check", json!({"host_id": "host-a"}))
        .await;
    assert_eq!(a.body["epoch"], 1);
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
    f.done().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let f = Fixture::new().await;
    assert_error(&f.call("GET", "/", b"").await, 404, "not_found");
    assert_error(
        &f.call("POST", "/v1/groups/orders-1/steal", b"{}").await,
        404,
        "not_found",
    );
    assert_error(
        &f.call("GET", "/v1/groups/orders-1/check", b"").await,
        405,
        "method_not_allowed",
    );
    assert_error(
        &f.call("DELETE", "/v1/groups/orders-1", b"").await,
        405,
        "method_not_allowed",
    );
    f.done().await;
}

#[tokio::test]
async fn store_unavailable_is_503() {
    let client = dynamodb(None).await;
    let store = LeaseStore::new(client, "no-such-table-for-tenure");
    let service = LeaseService::new(store, LeaseConfig::default(), FakeClock::at(T0));
    let body = json!({"host_id": "host-a"}).to_string();
    let r = handle(
        &service,
        ApiRequest {
            method: "POST",
            path: "/v1/groups/orders-1/check",
            body: body.as_bytes(),
        },
    )
    .await;
    assert_error(&r, 503, "store_unavailable");
}

#[tokio::test]
async fn function_url_events_reach_the_handler() {
    let f = Fixture::new().await;
    let event = include_str!("fixtures/function-url-check.json");
    let request = lambda_http::request::from_str(event).expect("fixture is a Function URL event");
    let response = handle_lambda(&f.service, request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(body["host_id"], "host-a");
    assert_eq!(body["role"], "primary");

    let event = include_str!("fixtures/function-url-malformed.json");
    let request = lambda_http::request::from_str(event).expect("fixture is a Function URL event");
    let response = handle_lambda(&f.service, request).await.unwrap();
    assert_eq!(response.status(), 400);
    f.done().await;
}
