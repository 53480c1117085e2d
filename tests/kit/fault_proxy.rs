//! The one fault proxy of the tests: an HTTP proxy between a client under test and what it
//! calls, which forwards every request unless it was told to harm it.
//!
//! Two routes, one fault model:
//! - [`Route::Upstream`]: everything to one upstream, path kept. The lease path: a kvdemo host's
//!   `AWS_ENDPOINT_URL` and lease-check URL, or the lease functions' DynamoDB endpoint, point
//!   at the proxy, so every DynamoDB call and every lease check goes through it.
//! - [`Route::ByRegion`]: `/<region>/<rest>` to that region's base URL. The IRC: the test
//!   deploy points each region's worker at `http://127.0.0.1:PORT/<target-region>/`
//!   (`local_regions.py --irc-proxy`), and the proxy forwards to the target's irc-remote.
//!
//! Faults are drawn per request from a [`Chaos`] (probabilities, optionally only for requests
//! whose JSON body's `resource` has a prefix), or scripted per op id ([`Fault`], for IRC
//! bodies). Errors answer in the shape the caller expects: DynamoDB's `__type` errors on the
//! DynamoDB API, `{"error": {...}}` on Function URLs. The one fault that needs production
//! code's help is the worker's exit after an applied op: the proxy adds
//! `tenure::fault::FAULT_HEADER` to the answer (see `tenure::fault`).

use crate::Stack;
use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rand::Rng;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tenure::fault::FAULT_HEADER;

/// Where the proxy forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Everything to this base URL, path and query kept.
    Upstream(String),
    /// `/<region>/<rest>` to `<base of region><rest>`.
    ByRegion(BTreeMap<String, String>),
}

/// Random faults, each probability drawn independently in the order of the fields; a request
/// passes unharmed when none hits. The default harms nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Chaos {
    /// Only requests whose JSON body's `resource` starts with this (`None`: every request).
    pub resource_prefix: Option<String>,
    /// Only requests to this region (the IRC route's `/<region>/`; `None`: every region). A
    /// regional outage: every request to it, POSTs and probes alike.
    pub target_region: Option<String>,
    /// Hold every lease-check request until the caller gives up (a partition from lease-check).
    pub cut_off_lease_check: bool,
    /// Answer one of `error_statuses` without forwarding (the upstream never saw it).
    pub error_before: f64,
    pub error_statuses: Vec<u16>,
    /// Throttle without forwarding (DynamoDB's `ThrottlingException`, 429 on a Function URL).
    pub throttle: f64,
    /// Forward (the upstream applies it), then answer 500: the answer is lost.
    pub error_after: f64,
    /// Forward, then tell the worker to exit before it completes the op.
    pub exit_after: f64,
    /// Hold the request `hold` before forwarding it (it arrives late).
    pub hold_before: f64,
    /// Forward, then hold the answer `hold` (it arrives after the caller gave up).
    pub hold_after: f64,
    pub hold: Duration,
    /// Uniform extra latency, 0 to this, on every request.
    pub max_latency: Duration,
}

impl Default for Chaos {
    fn default() -> Self {
        Self {
            resource_prefix: None,
            target_region: None,
            cut_off_lease_check: false,
            error_before: 0.0,
            error_statuses: vec![500],
            throttle: 0.0,
            error_after: 0.0,
            exit_after: 0.0,
            hold_before: 0.0,
            hold_after: 0.0,
            hold: Duration::ZERO,
            max_latency: Duration::ZERO,
        }
    }
}

/// Requests by what was done to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub passed: u64,
    pub cut_off: u64,
    pub error_before: u64,
    pub throttle: u64,
    pub error_after: u64,
    pub exit_after: u64,
    pub hold_before: u64,
    pub hold_after: u64,
}

impl FaultCounts {
    /// Requests harmed in any way.
    pub fn injected(&self) -> u64 {
        self.cut_off
            + self.error_before
            + self.throttle
            + self.error_after
            + self.exit_after
            + self.hold_before
            + self.hold_after
    }

    pub fn merge(&mut self, other: &FaultCounts) {
        self.passed += other.passed;
        self.cut_off += other.cut_off;
        self.error_before += other.error_before;
        self.throttle += other.throttle;
        self.error_after += other.error_after;
        self.exit_after += other.exit_after;
        self.hold_before += other.hold_before;
        self.hold_after += other.hold_after;
    }
}

/// A fault scripted for one request of an op (IRC bodies carry `op_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with a JSON error body; the remote never sees the call.
    Status(u16),
    /// Forward, then tell the worker to exit before it completes the op.
    ExitWorkerAfterApply,
}

/// One request of an op the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub status: u16,
    pub faulted: bool,
}

/// What one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drawn {
    Pass,
    CutOff,
    ErrorBefore(u16),
    Throttle,
    ErrorAfter,
    ExitAfter,
    HoldBefore,
    HoldAfter,
}

impl Chaos {
    fn in_scope(&self, region: Option<&str>, resource: &str) -> bool {
        self.resource_prefix
            .as_deref()
            .is_none_or(|p| resource.starts_with(p))
            && self
                .target_region
                .as_deref()
                .is_none_or(|r| region == Some(r))
    }

    fn draw(&self, lease_check: bool, rng: &mut impl Rng) -> Drawn {
        let p = |x: f64| x.clamp(0.0, 1.0);
        if lease_check && self.cut_off_lease_check {
            return Drawn::CutOff;
        }
        if rng.random_bool(p(self.error_before)) {
            let statuses = if self.error_statuses.is_empty() {
                &[500][..]
            } else {
                &self.error_statuses[..]
            };
            return Drawn::ErrorBefore(statuses[rng.random_range(0..statuses.len())]);
        }
        if rng.random_bool(p(self.throttle)) {
            return Drawn::Throttle;
        }
        if rng.random_bool(p(self.error_after)) {
            return Drawn::ErrorAfter;
        }
        if rng.random_bool(p(self.exit_after)) {
            return Drawn::ExitAfter;
        }
        if rng.random_bool(p(self.hold_before)) {
            return Drawn::HoldBefore;
        }
        if rng.random_bool(p(self.hold_after)) {
            return Drawn::HoldAfter;
        }
        Drawn::Pass
    }

    fn latency(&self, rng: &mut impl Rng) -> Duration {
        if self.max_latency.is_zero() {
            Duration::ZERO
        } else {
            self.max_latency.mul_f64(rng.random::<f64>())
        }
    }
}

impl FaultCounts {
    fn count(&mut self, drawn: Drawn) {
        match drawn {
            Drawn::Pass => self.passed += 1,
            Drawn::CutOff => self.cut_off += 1,
            Drawn::ErrorBefore(_) => self.error_before += 1,
            Drawn::Throttle => self.throttle += 1,
            Drawn::ErrorAfter => self.error_after += 1,
            Drawn::ExitAfter => self.exit_after += 1,
            Drawn::HoldBefore => self.hold_before += 1,
            Drawn::HoldAfter => self.hold_after += 1,
        }
    }
}

#[derive(Default)]
struct Plans {
    scripts: HashMap<String, VecDeque<Fault>>,
    seen: HashMap<String, Vec<Seen>>,
    chaos: Chaos,
    counts: FaultCounts,
    /// Requests per (region, method) on the IRC route.
    by_region: BTreeMap<(String, String), u64>,
}

#[derive(Clone)]
struct ProxyState {
    route: Arc<Route>,
    plans: Arc<Mutex<Plans>>,
    http: reqwest::Client,
}

/// A running proxy. It serves from a thread of its own, so it outlives any one test's runtime
/// and the hosts' restarts, and stops with the process.
#[derive(Clone)]
pub struct FaultProxy {
    pub url: String,
    plans: Arc<Mutex<Plans>>,
}

/// Local Function URLs are paths on the MiniStack endpoint.
const FUNCTION_URL_PATH: &str = "/_aws/lambda-url/";
/// How long a cut-off request is held (lease-check clients give up after 2 s).
const CUT_OFF_HOLD: Duration = Duration::from_secs(60);

impl FaultProxy {
    /// Listens on a free loopback port.
    pub fn start(route: Route) -> Result<Self> {
        Self::start_on(0, route)
    }

    /// Listens on `127.0.0.1:port` (0: a free one).
    pub fn start_on(port: u16, route: Route) -> Result<Self> {
        let plans = Arc::new(Mutex::new(Plans::default()));
        let state = ProxyState {
            route: Arc::new(route),
            plans: plans.clone(),
            http: reqwest::Client::builder().build()?,
        };
        let app = Router::new().fallback(forward).with_state(state);
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("fault proxy cannot listen on 127.0.0.1:{port}"))?;
        let url = crate::serve_in_thread("fault-proxy", listener, app, 1)?;
        Ok(Self { url, plans })
    }

    /// The IRC route: `/<region>/...` to each stack's irc-remote.
    pub fn for_irc(port: u16, stacks: &[Stack]) -> Result<Self> {
        let targets = stacks
            .iter()
            .map(|s| Ok((s.region.clone(), s.output("IrcRemoteLocalUrl")?.to_owned())))
            .collect::<Result<BTreeMap<_, _>>>()?;
        Self::start_on(port, Route::ByRegion(targets))
    }

    /// The IRC proxy of this test binary, on `TENURE_E2E_IRC_PROXY_PORT` (the port the test
    /// deploy pointed the workers at), started by the first caller.
    pub fn shared() -> Result<&'static FaultProxy> {
        static PROXY: std::sync::OnceLock<Result<FaultProxy, String>> = std::sync::OnceLock::new();
        PROXY
            .get_or_init(|| {
                let port: u16 = std::env::var("TENURE_E2E_IRC_PROXY_PORT")
                    .map_err(|_| {
                        "TENURE_E2E_IRC_PROXY_PORT is not set: run the README's test command \
                         (infra/test.sh), which deploys with --irc-proxy and sets it"
                            .to_owned()
                    })?
                    .parse()
                    .map_err(|e| format!("TENURE_E2E_IRC_PROXY_PORT: {e}"))?;
                let all = crate::stacks("TENURE_E2E_REGIONS").map_err(|e| e.to_string())?;
                FaultProxy::for_irc(port, &all).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Random faults from now on (`Chaos::default()`: none). Counts keep running.
    pub fn set_chaos(&self, chaos: Chaos) {
        self.lock().chaos = chaos;
    }

    pub fn chaos(&self) -> Chaos {
        self.lock().chaos.clone()
    }

    /// Requests routed to `region` with `method` so far (the IRC route).
    pub fn requests_to(&self, region: &str, method: &str) -> u64 {
        self.lock()
            .by_region
            .get(&(region.to_owned(), method.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn counts(&self) -> FaultCounts {
        self.lock().counts.clone()
    }

    pub fn reset_counts(&self) {
        self.lock().counts = FaultCounts::default();
    }

    /// The next requests for `op_id` get these faults, in order; later ones pass through.
    pub fn script(&self, op_id: &str, faults: &[Fault]) {
        self.lock()
            .scripts
            .entry(op_id.to_owned())
            .or_default()
            .extend(faults.iter().copied());
    }

    /// Drops what is left of `op_id`'s script: its next request passes through.
    pub fn unscript(&self, op_id: &str) {
        self.lock().scripts.remove(op_id);
    }

    /// Every request for `op_id`, with the status it was answered.
    pub fn seen(&self, op_id: &str) -> Vec<Seen> {
        self.lock().seen.get(op_id).cloned().unwrap_or_default()
    }

    /// `url` (on `upstream`) as reached through this proxy.
    pub fn rewrite(&self, url: &str, upstream: &str) -> String {
        match url.strip_prefix(upstream.trim_end_matches('/')) {
            Some(rest) => format!("{}{rest}", self.url),
            None => url.to_owned(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Plans> {
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The error shapes the callers parse: DynamoDB's on its API, the contract's on Function URLs.
fn error_response(status: u16, function_url: bool, dynamodb_type: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if function_url {
        let body = serde_json::json!({"error": {"code": "injected", "message": message}});
        (
            code,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response()
    } else {
        let body = serde_json::json!({
            "__type": format!("com.amazonaws.dynamodb.v20120810#{dynamodb_type}"),
            "message": message,
        });
        (
            code,
            [("content-type", "application/x-amz-json-1.0")],
            body.to_string(),
        )
            .into_response()
    }
}

/// Where a request goes: the upstream URL, and whether it is a Function URL.
fn target(route: &Route, uri: &Uri) -> Option<(String, bool)> {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    match route {
        Route::Upstream(base) => Some((
            format!("{}{path}", base.trim_end_matches('/')),
            path.starts_with(FUNCTION_URL_PATH),
        )),
        Route::ByRegion(bases) => {
            let rest = path.strip_prefix('/')?;
            let (region, rest) = rest.split_once('/').unwrap_or((rest, ""));
            bases
                .get(region)
                .map(|base| (format!("{base}{rest}"), true))
        }
    }
}

async fn forward(
    State(state): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let envelope = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
    let op_id = envelope["op_id"].as_str().unwrap_or_default().to_owned();
    let resource = envelope["resource"].as_str().unwrap_or_default();
    let Some((url, function_url)) = target(&state.route, &uri) else {
        return (StatusCode::BAD_GATEWAY, format!("no route for {uri}")).into_response();
    };
    let lease_check = function_url && matches!(*state.route, Route::Upstream(_));
    let region = match *state.route {
        Route::ByRegion(_) => uri.path().split('/').nth(1).map(str::to_owned),
        Route::Upstream(_) => None,
    };
    let (scripted, drawn, latency, hold) = {
        let mut plans = state.plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = &region {
            *plans
                .by_region
                .entry((r.clone(), method.to_string()))
                .or_default() += 1;
        }
        let scripted = plans.scripts.get_mut(&op_id).and_then(VecDeque::pop_front);
        let mut rng = rand::rng();
        let chaos = &plans.chaos;
        let drawn = if scripted.is_none() && chaos.in_scope(region.as_deref(), resource) {
            chaos.draw(lease_check, &mut rng)
        } else {
            Drawn::Pass
        };
        let (latency, hold) = (chaos.latency(&mut rng), chaos.hold);
        plans.counts.count(drawn);
        (scripted, drawn, latency, hold)
    };
    let record = |status: u16, faulted: bool| {
        if op_id.is_empty() {
            return;
        }
        let mut plans = state.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans.seen.entry(op_id.clone()).or_default().push(Seen {
            at: Instant::now(),
            status,
            faulted,
        });
    };
    tokio::time::sleep(latency).await;
    let before = match (scripted, drawn) {
        (Some(Fault::Status(status)), _) | (None, Drawn::ErrorBefore(status)) => Some(status),
        _ => None,
    };
    if let Some(status) = before {
        record(status, true);
        let message = format!("fault proxy answered {status}");
        return error_response(status, function_url, "InternalServerError", &message);
    }
    match drawn {
        // The caller times out and drops the connection, which cancels this handler.
        Drawn::CutOff => {
            tokio::time::sleep(CUT_OFF_HOLD).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Drawn::Throttle => {
            record(429, true);
            let status = if function_url { 429 } else { 400 };
            return error_response(status, function_url, "ThrottlingException", "fault proxy");
        }
        Drawn::HoldBefore => tokio::time::sleep(hold).await,
        _ => {}
    }
    let forwarded = match crate::forward_request(&state.http, method, url, &headers, &body).await {
        Ok(f) => f,
        Err(e) => {
            record(502, true);
            return (StatusCode::BAD_GATEWAY, e.to_string()).into_response();
        }
    };
    let exit = scripted == Some(Fault::ExitWorkerAfterApply) || drawn == Drawn::ExitAfter;
    record(forwarded.status.as_u16(), exit || drawn != Drawn::Pass);
    match drawn {
        Drawn::ErrorAfter => {
            return error_response(
                500,
                function_url,
                "InternalServerError",
                "fault proxy lost the answer",
            )
        }
        Drawn::HoldAfter => tokio::time::sleep(hold).await,
        _ => {}
    }
    let mut response = forwarded.into_response();
    if exit {
        if let Ok(v) = tenure::fault::Fault::ExitAfterApply.as_header().parse() {
            response.headers_mut().insert(FAULT_HEADER, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_chaos_passes_everything_and_cut_off_only_holds_lease_checks() {
        let mut rng = rand::rng();
        let none = Chaos::default();
        for _ in 0..100 {
            assert_eq!(none.draw(true, &mut rng), Drawn::Pass);
            assert_eq!(none.latency(&mut rng), Duration::ZERO);
        }
        let cut = Chaos {
            cut_off_lease_check: true,
            ..Chaos::default()
        };
        assert_eq!(cut.draw(true, &mut rng), Drawn::CutOff);
        assert_eq!(cut.draw(false, &mut rng), Drawn::Pass);
    }

    #[test]
    fn certain_faults_always_fire_and_latency_stays_under_its_bound() {
        let mut rng = rand::rng();
        let always_throttle = Chaos {
            throttle: 1.0,
            max_latency: Duration::from_millis(30),
            ..Chaos::default()
        };
        for _ in 0..100 {
            assert_eq!(always_throttle.draw(false, &mut rng), Drawn::Throttle);
            assert!(always_throttle.latency(&mut rng) <= Duration::from_millis(30));
        }
        let errors = Chaos {
            error_before: 1.0,
            error_statuses: vec![503, 429],
            ..Chaos::default()
        };
        for _ in 0..100 {
            assert!(matches!(
                errors.draw(false, &mut rng),
                Drawn::ErrorBefore(503 | 429)
            ));
        }
    }

    #[test]
    fn a_prefix_scopes_chaos_to_matching_resources() {
        let scoped = Chaos {
            resource_prefix: Some("chaos-1".into()),
            ..Chaos::default()
        };
        assert!(scoped.in_scope(None, "chaos-1-r3"));
        assert!(!scoped.in_scope(None, "other"));
        assert!(Chaos::default().in_scope(None, ""));
        let outage = Chaos {
            target_region: Some("eu-west-1".into()),
            ..Chaos::default()
        };
        assert!(outage.in_scope(Some("eu-west-1"), ""));
        assert!(!outage.in_scope(Some("ap-southeast-2"), "chaos-1"));
        assert!(!outage.in_scope(None, ""));
    }

    #[test]
    fn routes_keep_paths_and_tell_function_urls_from_dynamodb() {
        let single = Route::Upstream("http://127.0.0.1:4566/".into());
        let uri: Uri = "/_aws/lambda-url/abc/v1/hosts/h/check".parse().unwrap();
        assert_eq!(
            target(&single, &uri),
            Some((
                "http://127.0.0.1:4566/_aws/lambda-url/abc/v1/hosts/h/check".into(),
                true
            ))
        );
        let dynamodb: Uri = "/".parse().unwrap();
        assert_eq!(
            target(&single, &dynamodb),
            Some(("http://127.0.0.1:4566/".into(), false))
        );
        let irc = Route::ByRegion(BTreeMap::from([(
            "eu-west-1".to_owned(),
            "http://127.0.0.1:4566/_aws/lambda-url/xyz/".to_owned(),
        )]));
        let uri: Uri = "/eu-west-1/v1/operations".parse().unwrap();
        assert_eq!(
            target(&irc, &uri),
            Some((
                "http://127.0.0.1:4566/_aws/lambda-url/xyz/v1/operations".into(),
                true
            ))
        );
        let unknown: Uri = "/ap-south-1/v1/operations".parse().unwrap();
        assert_eq!(target(&irc, &unknown), None);
    }

    #[test]
    fn rewrite_moves_only_urls_on_the_upstream() {
        let proxy = FaultProxy {
            url: "http://127.0.0.1:9".into(),
            plans: Arc::default(),
        };
        assert_eq!(
            proxy.rewrite(
                "http://127.0.0.1:4566/_aws/lambda-url/abc/",
                "http://127.0.0.1:4566"
            ),
            "http://127.0.0.1:9/_aws/lambda-url/abc/"
        );
        assert_eq!(
            proxy.rewrite("https://elsewhere/x", "http://127.0.0.1:4566"),
            "https://elsewhere/x"
        );
    }

    #[test]
    fn counts_add_up() {
        let mut total = FaultCounts::default();
        let mut one = FaultCounts::default();
        for d in [
            Drawn::Pass,
            Drawn::Throttle,
            Drawn::ErrorAfter,
            Drawn::ExitAfter,
        ] {
            one.count(d);
        }
        total.merge(&one);
        total.merge(&one);
        assert_eq!((total.passed, total.injected()), (2, 6));
    }
}
