//! irc-remote's HTTP contract (`docs/irc.md`, wire contract): `POST /v1/operations` with
//! `{v, op_id, source_region, kind, resource, seq, payload}`.
//!
//! 200 `{"op_id","outcome":"applied"|"duplicate"|"superseded","result"}`; 400 malformed JSON
//! or a bad envelope (ids, version, region not allowed); 409 same op_id with other content, or
//! the kind's own conflict (`lease_held`); 413 oversize; 422 unknown kind or a payload the kind
//! rejects; 503 store unavailable. Every error is `{"error":{"code","message"}}`.
//!
//! Parsing and checking ([`parse_request`]) are core, so they are property-tested and fuzzed
//! without AWS; [`RemoteApi`], which applies through the inbound store, needs `lambda`.

use super::awaiting::{AWAIT_MS_RANGE, AWAIT_SERVING, DEFAULT_AWAIT_MS};
use super::ids::{OpId, Region};
use super::kinds::Kinds;
use super::remote::OperationRequest;
use crate::http::{parse_json, ApiRequest, ApiResponse};
use crate::identity::{Caller, PeerIdentityRule};
use crate::ids::GroupId;
#[cfg(any(feature = "lambda", test))]
use crate::metrics::RemoteOutcome;
#[cfg(feature = "lambda")]
pub use handler::RemoteApi;
use serde_json::Value;
use std::collections::BTreeSet;

#[cfg(feature = "lambda")]
mod handler {
    use super::super::awaiting::RemoteState;
    use super::super::ids::Region;
    use super::super::inbound::{ApplyError, InboundRecord, InboundStore};
    use super::parse_authorized;
    use crate::clock::Clock;
    use crate::http::{into_lambda, ApiRequest, ApiResponse};
    use crate::identity::{caller_of, Caller, PeerIdentityRule};
    use crate::metrics;
    use lambda_http::{Body, Request, Response};
    use serde_json::json;
    use std::collections::BTreeSet;
    use tracing::{info, warn};

    /// The answer for an op's record: 202 while an awaited op is in progress (a POST or a GET
    /// alike: only a 200 is final), 200 otherwise.
    fn answer(op_id: &super::OpId, record: &InboundRecord) -> ApiResponse {
        let body = record.body(op_id, POLL_AFTER_MS);
        if record.state == RemoteState::InProgress {
            ApiResponse {
                status: 202,
                ..ApiResponse::ok(body)
            }
        } else {
            ApiResponse::ok(body)
        }
    }

    /// What the target suggests between polls of an op in progress.
    const POLL_AFTER_MS: u64 = 1_000;

    /// irc-remote's state: the inbound store, the regions it accepts ops from and which
    /// caller may speak for each.
    pub struct RemoteApi<C> {
        pub store: InboundStore,
        pub peers: BTreeSet<Region>,
        pub identity: PeerIdentityRule,
        pub clock: C,
    }

    impl<C: Clock> RemoteApi<C> {
        /// One request from `caller`, counted by outcome (`RemoteApplies`).
        pub async fn handle(
            &self,
            request: ApiRequest<'_>,
            caller: Option<&Caller>,
        ) -> ApiResponse {
            let response = self.answer(request, caller).await;
            metrics::remote_answered(super::outcome_of(&response));
            response
        }

        async fn answer(&self, request: ApiRequest<'_>, caller: Option<&Caller>) -> ApiResponse {
            match super::status_request(&request) {
                Some(Ok(op_id)) => return self.status(&op_id).await,
                Some(Err(response)) => return response,
                None => {}
            }
            match super::cancel_request(&request, &self.peers) {
                Some(Ok((op_id, source))) => {
                    if let Err(denied) = self.identity.authorize(caller, &source) {
                        warn!(op_id = %op_id, source = %source, error = %denied, "cancel refused");
                        return denied.response();
                    }
                    return self.cancel(&op_id, &source).await;
                }
                Some(Err(response)) => return response,
                None => {}
            }
            let op = match parse_authorized(
                request,
                caller,
                &self.identity,
                &self.peers,
                self.store.kinds(),
            ) {
                Ok(op) => op,
                Err(response) => return response,
            };
            match self.store.apply(&op, self.clock.now_ms()).await {
                // An awaited op, new or repeated: answered as it stands (202 while in
                // progress; only a 200 is final).
                Ok(applied)
                    if op.await_for.is_some()
                        && matches!(applied.outcome, "applied" | "duplicate") =>
                {
                    info!(op_id = %op.op_id, source = %op.source_region, kind = %op.kind,
                      resource = %op.resource, seq = op.seq, outcome = applied.outcome, "awaited operation");
                    self.status(&op.op_id).await
                }
                Ok(applied) => {
                    info!(op_id = %op.op_id, source = %op.source_region, kind = %op.kind,
                      resource = %op.resource, seq = op.seq, outcome = applied.outcome, "operation");
                    let mut body = json!({
                        "op_id": op.op_id,
                        "outcome": applied.outcome,
                        "result": applied.result,
                    });
                    if let Some(first) = applied.first_outcome {
                        body["first_outcome"] = json!(first);
                    }
                    ApiResponse::ok(body)
                }
                Err(ApplyError::Invalid(m)) => ApiResponse::error(422, "invalid_operation", m),
                Err(ApplyError::Conflict { code, message }) => {
                    ApiResponse::error(409, code, message)
                }
                Err(ApplyError::Store(e)) => {
                    warn!(op_id = %op.op_id, error = %e, "store unavailable");
                    ApiResponse::error(503, "store_unavailable", e.to_string())
                }
            }
        }

        /// `GET /v1/operations/{op_id}`: where the op stands here. It claims no source region,
        /// so it needs no binding beyond IAM's (the Function URL's `AWS_IAM` lets only
        /// granted principals call at all): the dispatcher's probes and status polls use it.
        async fn status(&self, op_id: &super::OpId) -> ApiResponse {
            match self.store.status(op_id, self.clock.now_ms()).await {
                Ok(Some(record)) => answer(op_id, &record),
                Ok(None) => ApiResponse::error(
                    404,
                    "unknown_operation",
                    format!("no operation {op_id} was received here"),
                ),
                Err(e) => {
                    warn!(op_id = %op_id, error = %e, "store unavailable");
                    ApiResponse::error(503, "store_unavailable", e.to_string())
                }
            }
        }

        /// `POST /v1/operations/{op_id}/cancel`: a tombstone if the op is not here yet,
        /// otherwise its real state (a cancel never hides an effect that happened).
        async fn cancel(&self, op_id: &super::OpId, source: &Region) -> ApiResponse {
            match self.store.cancel(op_id, source, self.clock.now_ms()).await {
                Ok(record) => {
                    info!(op_id = %op_id, source = %source, outcome = %record.outcome, state = %record.state, "cancel");
                    answer(op_id, &record)
                }
                Err(e) => {
                    warn!(op_id = %op_id, error = %e, "store unavailable");
                    ApiResponse::error(503, "store_unavailable", e.to_string())
                }
            }
        }

        /// The Lambda entry point's body.
        pub async fn handle_lambda(&self, request: Request) -> Response<Body> {
            let caller = caller_of(&request);
            let response = self
                .handle(ApiRequest::from_lambda(&request), caller.as_ref())
                .await;
            metrics::flush();
            into_lambda(response)
        }
    }
}

/// What an answer counts as in the `RemoteApplies` metric.
#[cfg(any(feature = "lambda", test))]
pub(crate) fn outcome_of(response: &ApiResponse) -> RemoteOutcome {
    match response.status {
        200..=299 => match response.body["outcome"].as_str() {
            Some("duplicate") => RemoteOutcome::Duplicate,
            Some("superseded") => RemoteOutcome::Superseded,
            _ => RemoteOutcome::Applied,
        },
        403 => RemoteOutcome::Forbidden,
        409 => RemoteOutcome::Conflict,
        400..=499 => RemoteOutcome::Rejected,
        _ => RemoteOutcome::Unavailable,
    }
}

fn bad(code: &str, message: impl Into<String>) -> ApiResponse {
    ApiResponse::error(400, code, message)
}

/// Checks the envelope field by field, so each mistake gets its own message.
fn envelope(body: &Value, peers: &BTreeSet<Region>) -> Result<OperationRequest, ApiResponse> {
    let Some(obj) = body.as_object() else {
        return Err(bad("malformed_request", "body must be a JSON object"));
    };
    const FIELDS: [&str; 9] = [
        "v",
        "op_id",
        "source_region",
        "kind",
        "resource",
        "seq",
        "payload",
        "await",
        "await_ms",
    ];
    if let Some(extra) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad("malformed_request", format!("unknown field {extra:?}")));
    }
    let text = |name: &str| -> Result<&str, ApiResponse> {
        obj.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| bad("malformed_request", format!("{name} must be a string")))
    };
    let v = match obj.get("v").and_then(Value::as_u64) {
        Some(v @ (1 | 2)) => v as u32,
        _ => return Err(bad("unsupported_version", "v must be 1 or 2")),
    };
    let (await_for, await_ms) = awaited(obj, v)?;
    let op_id = OpId::parse(text("op_id")?).map_err(|e| bad("invalid_id", e.to_string()))?;
    let source_region =
        Region::parse(text("source_region")?).map_err(|e| bad("invalid_region", e.to_string()))?;
    if !peers.contains(&source_region) {
        return Err(bad(
            "region_not_allowed",
            format!("source_region {source_region} is not one of this stack's peer regions"),
        ));
    }
    let kind = text("kind")?.to_owned();
    let resource = text("resource")?;
    GroupId::parse(resource).map_err(|e| bad("invalid_id", format!("resource: {e}")))?;
    let seq = obj
        .get("seq")
        .and_then(Value::as_u64)
        .filter(|s| *s >= 1)
        .ok_or_else(|| bad("malformed_request", "seq must be an integer >= 1"))?;
    let payload = obj
        .get("payload")
        .filter(|p| p.is_object())
        .cloned()
        .ok_or_else(|| bad("malformed_request", "payload must be a JSON object"))?;
    Ok(OperationRequest {
        v,
        op_id,
        source_region,
        kind,
        resource: resource.to_owned(),
        seq,
        payload,
        await_for,
        await_ms,
    })
}

/// `await` and `await_ms`: only in a v 2 envelope; `await` is `serving`; `await_ms` in
/// [`AWAIT_MS_RANGE`], [`DEFAULT_AWAIT_MS`] when absent.
fn awaited(
    obj: &serde_json::Map<String, Value>,
    v: u32,
) -> Result<(Option<String>, Option<u64>), ApiResponse> {
    let Some(condition) = obj.get("await") else {
        if obj.contains_key("await_ms") {
            return Err(bad("malformed_request", "await_ms without await"));
        }
        return Ok((None, None));
    };
    if v < 2 {
        return Err(bad("malformed_request", "await needs \"v\": 2"));
    }
    if condition.as_str() != Some(AWAIT_SERVING) {
        return Err(bad(
            "malformed_request",
            format!("await must be \"{AWAIT_SERVING}\""),
        ));
    }
    let await_ms = match obj.get("await_ms") {
        None => DEFAULT_AWAIT_MS,
        Some(ms) => ms
            .as_u64()
            .filter(|ms| AWAIT_MS_RANGE.contains(ms))
            .ok_or_else(|| {
                bad(
                    "malformed_request",
                    format!(
                        "await_ms must be an integer from {} to {}",
                        AWAIT_MS_RANGE.start(),
                        AWAIT_MS_RANGE.end()
                    ),
                )
            })?,
    };
    Ok((Some(AWAIT_SERVING.to_owned()), Some(await_ms)))
}

/// `GET /v1/operations/{op_id}`: `Some(Ok(op_id))` to answer with the op's state,
/// `Some(Err)` for a bad id or method on that route, `None` for any other route.
pub fn status_request(request: &ApiRequest<'_>) -> Option<Result<OpId, ApiResponse>> {
    let path = request.path.trim_end_matches('/');
    let id = path.strip_prefix("/v1/operations/")?;
    if id.contains('/') {
        return None;
    }
    if request.method != "GET" {
        return Some(Err(ApiResponse::error(
            405,
            "method_not_allowed",
            format!("{} is not allowed on {path}", request.method),
        )));
    }
    Some(OpId::parse(id).map_err(|e| bad("invalid_id", e.to_string())))
}

/// `POST /v1/operations/{op_id}/cancel` with `{"v": 2, "source_region"}`: `Some(Ok)` to
/// cancel, `Some(Err)` for a bad request on that route, `None` for any other route.
pub fn cancel_request(
    request: &ApiRequest<'_>,
    peers: &BTreeSet<Region>,
) -> Option<Result<(OpId, Region), ApiResponse>> {
    let path = request.path.trim_end_matches('/');
    let id = path
        .strip_prefix("/v1/operations/")?
        .strip_suffix("/cancel")?;
    if request.method != "POST" {
        return Some(Err(ApiResponse::error(
            405,
            "method_not_allowed",
            format!("{} is not allowed on {path}", request.method),
        )));
    }
    Some((|| {
        let op_id = OpId::parse(id).map_err(|e| bad("invalid_id", e.to_string()))?;
        let body: super::remote::CancelRequest = serde_json::from_slice(request.body)
            .map_err(|e| bad("malformed_request", format!("cancel body: {e}")))?;
        if body.v != 2 {
            return Err(bad("unsupported_version", "a cancel is v 2"));
        }
        if !peers.contains(&body.source_region) {
            return Err(bad(
                "region_not_allowed",
                format!(
                    "source_region {} is not one of this stack's peer regions",
                    body.source_region
                ),
            ));
        }
        Ok((op_id, body.source_region))
    })())
}

/// Route, JSON, envelope and the kind's payload check, without touching the store: the
/// operation, or the 4xx answer for a malformed request (a bad payload is 422 whatever the
/// state). Pure, so it is property-tested and fuzzed (`fuzz/`) on arbitrary input.
pub fn parse_request(
    request: ApiRequest<'_>,
    peers: &BTreeSet<Region>,
    kinds: &Kinds,
) -> Result<OperationRequest, ApiResponse> {
    let path = request.path.trim_end_matches('/');
    if path != "/v1/operations" {
        return Err(ApiResponse::error(
            404,
            "not_found",
            format!("no route for {}", request.path),
        ));
    }
    if request.method != "POST" {
        return Err(ApiResponse::error(
            405,
            "method_not_allowed",
            format!("{} is not allowed on {path}", request.method),
        ));
    }
    let body: Value = parse_json(request.body)?;
    let op = envelope(&body, peers)?;
    kinds
        .get(&op.kind)
        .and_then(|k| k.check(&op.resource, &op.payload))
        .map_err(|e| ApiResponse::error(422, "invalid_operation", e.to_string()))?;
    if op.await_for.is_some() && op.kind != "group.put" {
        return Err(ApiResponse::error(
            422,
            "invalid_operation",
            format!(
                "kind {} cannot be awaited (only group.put, await \"serving\")",
                op.kind
            ),
        ));
    }
    Ok(op)
}

/// [`parse_request`], then the caller's right to send as the operation's `source_region`
/// (403 otherwise): a well-formed request from the wrong worker is refused before anything is
/// recorded.
pub fn parse_authorized(
    request: ApiRequest<'_>,
    caller: Option<&Caller>,
    identity: &PeerIdentityRule,
    peers: &BTreeSet<Region>,
    kinds: &Kinds,
) -> Result<OperationRequest, ApiResponse> {
    let op = parse_request(request, peers, kinds)?;
    identity
        .authorize(caller, &op.source_region)
        .map_err(|denied| {
            tracing::warn!(op_id = %op.op_id, source = %op.source_region, error = %denied, "caller refused");
            denied.response()
        })?;
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Function URL events in the shape AWS documents (`shared/tests/fixtures/identity-*`).
    #[cfg(feature = "lambda")]
    mod identity {
        use super::*;
        use crate::identity::caller_of;

        fn verdict(fixture: &str) -> Result<OperationRequest, ApiResponse> {
            let env: [(&str, &str); 2] = [
                ("TENURE_PEER_IDENTITY_RULE", "worker-role"),
                (
                    "TENURE_PEER_WORKER_ROLES",
                    r#"{"us-east-1":"arn:aws:iam::111122223333:role/tenure-use1-IrcWorkerFunctionRole-1A2B3C","eu-west-1":"arn:aws:iam::111122223333:role/tenure-euw1-IrcWorkerFunctionRole-4D5E6F"}"#,
                ),
            ];
            let rule = PeerIdentityRule::from_env(&env[..]).unwrap();
            let request = lambda_http::request::from_str(fixture).expect("a Function URL event");
            let caller = caller_of(&request);
            parse_authorized(
                ApiRequest::from_lambda(&request),
                caller.as_ref(),
                &rule,
                &peers(),
                &Kinds::shipped(),
            )
        }

        #[test]
        fn a_worker_sends_as_its_own_region() {
            let op = verdict(include_str!(
                "../../tests/fixtures/identity-us-east-1-worker-sends-as-us-east-1.json"
            ))
            .unwrap();
            assert_eq!(op.source_region.as_str(), "us-east-1");
        }

        #[test]
        fn a_worker_may_not_claim_another_region() {
            let refused = verdict(include_str!(
                "../../tests/fixtures/identity-us-east-1-worker-sends-as-eu-west-1.json"
            ))
            .unwrap_err();
            assert_eq!(refused.status, 403);
            assert_eq!(refused.body["error"]["code"], "not_this_region");
        }

        #[test]
        fn an_operation_without_a_caller_is_refused() {
            let refused = verdict(include_str!(
                "../../tests/fixtures/identity-operation-without-caller.json"
            ))
            .unwrap_err();
            assert_eq!(refused.status, 403);
            assert_eq!(refused.body["error"]["code"], "missing_identity");
        }
    }

    #[test]
    fn answers_count_by_their_outcome() {
        let ok = |outcome: &str| ApiResponse::ok(json!({"op_id": "x", "outcome": outcome}));
        assert_eq!(outcome_of(&ok("applied")), RemoteOutcome::Applied);
        assert_eq!(outcome_of(&ok("duplicate")), RemoteOutcome::Duplicate);
        assert_eq!(outcome_of(&ok("superseded")), RemoteOutcome::Superseded);
        let error = |status| ApiResponse::error(status, "c", "m");
        assert_eq!(outcome_of(&error(409)), RemoteOutcome::Conflict);
        assert_eq!(outcome_of(&error(403)), RemoteOutcome::Forbidden);
        assert_eq!(outcome_of(&error(422)), RemoteOutcome::Rejected);
        assert_eq!(outcome_of(&error(503)), RemoteOutcome::Unavailable);
    }

    fn peers() -> BTreeSet<Region> {
        ["us-east-1", "eu-west-1"]
            .iter()
            .map(|r| Region::parse(r).unwrap())
            .collect()
    }

    fn body() -> Value {
        json!({"v": 1, "op_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "source_region": "us-east-1",
               "kind": "group.delete", "resource": "g1", "seq": 1, "payload": {"group_id": "g1"}})
    }

    #[test]
    fn an_awaited_op_is_a_v2_envelope_with_serving_and_a_bounded_await_ms() {
        let mut b = body();
        b["v"] = json!(2);
        b["await"] = json!("serving");
        let op = envelope(&b, &peers()).unwrap();
        assert_eq!(
            (op.v, op.await_for.as_deref(), op.await_ms),
            (2, Some("serving"), Some(DEFAULT_AWAIT_MS))
        );
        b["await_ms"] = json!(5_000);
        assert_eq!(envelope(&b, &peers()).unwrap().await_ms, Some(5_000));
        for (field, value) in [
            ("await_ms", json!(10)),
            ("await", json!("applied")),
            ("await_ms", json!("soon")),
        ] {
            let mut bad = b.clone();
            bad[field] = value;
            assert_eq!(envelope(&bad, &peers()).unwrap_err().status, 400, "{field}");
        }
        let mut plain = body();
        plain["await_ms"] = json!(5_000);
        assert_eq!(envelope(&plain, &peers()).unwrap_err().status, 400);
        // A v 2 envelope need not await.
        let mut v2 = body();
        v2["v"] = json!(2);
        assert_eq!(envelope(&v2, &peers()).unwrap().await_for, None);
        // Only group.put can be awaited (the body above is a group.delete).
        let request = ApiRequest {
            method: "POST",
            path: "/v1/operations",
            body: &serde_json::to_vec(&b).unwrap(),
        };
        let refused = parse_request(request, &peers(), &Kinds::shipped()).unwrap_err();
        assert_eq!(refused.status, 422);
    }

    #[test]
    fn a_status_request_names_a_valid_op_by_get_only() {
        let get = |path| ApiRequest {
            method: "GET",
            path,
            body: b"",
        };
        let id = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
        let path = format!("/v1/operations/{id}");
        assert_eq!(status_request(&get(&path)).unwrap().unwrap().as_str(), id);
        assert_eq!(
            status_request(&get("/v1/operations/nope"))
                .unwrap()
                .unwrap_err()
                .status,
            400
        );
        let post = ApiRequest {
            method: "POST",
            path: &path,
            body: b"",
        };
        assert_eq!(status_request(&post).unwrap().unwrap_err().status, 405);
        assert!(status_request(&get("/v1/operations")).is_none());
        assert!(status_request(&get("/v1/operations/x/cancel")).is_none());
    }

    #[test]
    fn a_cancel_names_a_valid_op_and_a_peer_source() {
        let path = "/v1/operations/01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel";
        let post = |body: &'static [u8]| ApiRequest {
            method: "POST",
            path,
            body,
        };
        let (op, source) =
            cancel_request(&post(br#"{"v":2,"source_region":"us-east-1"}"#), &peers())
                .unwrap()
                .unwrap();
        assert_eq!(
            (op.as_str(), source.as_str()),
            ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "us-east-1")
        );
        for (body, code) in [
            (
                &br#"{"v":1,"source_region":"us-east-1"}"#[..],
                "unsupported_version",
            ),
            (
                br#"{"v":2,"source_region":"ap-south-1"}"#,
                "region_not_allowed",
            ),
            (br#"{"v":2}"#, "malformed_request"),
            (b"nope", "malformed_request"),
        ] {
            let err = cancel_request(&post(body), &peers()).unwrap().unwrap_err();
            assert_eq!(err.body["error"]["code"], code);
        }
        let get = ApiRequest {
            method: "GET",
            path,
            body: b"",
        };
        assert_eq!(
            cancel_request(&get, &peers()).unwrap().unwrap_err().status,
            405
        );
        assert!(cancel_request(&post(b""), &peers()).is_some());
        let other = ApiRequest {
            method: "POST",
            path: "/v1/operations",
            body: b"",
        };
        assert!(cancel_request(&other, &peers()).is_none());
    }

    #[test]
    fn a_good_envelope_parses() {
        let op = envelope(&body(), &peers()).unwrap();
        assert_eq!((op.seq, op.kind.as_str()), (1, "group.delete"));
    }

    #[test]
    fn each_bad_field_gets_its_own_400() {
        let cases: [(&str, Value, &str); 9] = [
            ("await", json!("serving"), "malformed_request"),
            ("v", json!(3), "unsupported_version"),
            ("op_id", json!("nope"), "invalid_id"),
            ("source_region", json!("ap-south-1"), "region_not_allowed"),
            ("source_region", json!("Mars"), "invalid_region"),
            ("resource", json!("a b"), "invalid_id"),
            ("seq", json!(0), "malformed_request"),
            ("payload", json!("x"), "malformed_request"),
            ("extra", json!(1), "malformed_request"),
        ];
        for (field, value, code) in cases {
            let mut b = body();
            b[field] = value;
            let err = envelope(&b, &peers()).unwrap_err();
            assert_eq!(
                (err.status, err.body["error"]["code"].as_str()),
                (400, Some(code)),
                "{field}"
            );
        }
        assert_eq!(envelope(&json!([1]), &peers()).unwrap_err().status, 400);
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,30}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("v".to_owned()),
                        Just("op_id".to_owned()),
                        Just("source_region".to_owned()),
                        Just("kind".to_owned()),
                        Just("resource".to_owned()),
                        Just("seq".to_owned()),
                        Just("payload".to_owned()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        // Any request: a parsed op or a 4xx with the contract's error shape, never a panic.
        #[test]
        fn any_request_gets_an_op_or_a_4xx(
            raw in "\\PC{0,200}",
            value in arbitrary_json(),
            method in prop::sample::select(vec!["POST", "GET", "PUT", ""]),
            path in prop::sample::select(vec!["/v1/operations", "/v1/operations/", "/", "/v2/x"]),
        ) {
            for body in [raw.into_bytes(), value.to_string().into_bytes()] {
                let request = ApiRequest { method, path, body: &body };
                match parse_request(request, &peers(), &Kinds::shipped()) {
                    Ok(op) => prop_assert!(op.seq >= 1 && op.payload.is_object()),
                    Err(e) => prop_assert!(e.is_client_error(), "{e:?}"),
                }
            }
        }
    }
}
