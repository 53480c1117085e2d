//! The end-to-end tests' fault proxy. The test deploy points each region's worker at
//! `http://127.0.0.1:PORT/<target-region>/` (`local_regions.py --irc-proxy`); this proxy
//! forwards to the target's real irc-remote, unless a test scripted faults for that op id:
//! answer a status without forwarding (the remote never saw the call), or forward and then
//! tell the worker to die (`x-tenure-fault: exit-after-apply`: the remote applied, the worker
//! never completes). Every request is logged with its time and the status returned, so tests
//! can check attempts and backoff.
//!
//! For the fault campaign, [`Chaos`] draws a fault at random for every request on a resource
//! with a given prefix, adding two faults a script cannot: a request held past the worker's
//! timeout before it reaches the remote (it arrives late, after the worker moved on), or after
//! the remote applied it (the answer never arrives in time).

use crate::Stack;
use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tenure::irc::remote::FAULT_HEADER;

/// What the proxy does with one request for an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with a JSON error body; the remote never sees the call.
    Status(u16),
    /// Forward, then tell the worker to exit before it completes the op.
    ExitWorkerAfterApply,
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub status: u16,
    pub faulted: bool,
}

/// Random faults for every request whose `resource` starts with `resource_prefix`; each
/// probability is drawn independently, in this order, and the request passes unharmed when
/// none hits.
#[derive(Debug, Clone)]
pub struct Chaos {
    pub resource_prefix: String,
    /// Answer 500, 503 or 429 without forwarding.
    pub error_before: f64,
    /// Forward (the remote applies), then answer 500.
    pub error_after: f64,
    /// Forward, then tell the worker to exit before it completes.
    pub exit_after: f64,
    /// Hold the request `hold` before forwarding it.
    pub hold_before: f64,
    /// Forward, then hold the answer `hold`.
    pub hold_after: f64,
    /// Longer than the worker waits for an answer.
    pub hold: std::time::Duration,
}

/// What chaos did, by fault.
#[derive(Debug, Clone, Default)]
pub struct ChaosCounts {
    pub passed: u64,
    pub error_before: u64,
    pub error_after: u64,
    pub exit_after: u64,
    pub hold_before: u64,
    pub hold_after: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drawn {
    Pass,
    ErrorBefore(u16),
    ErrorAfter,
    ExitAfter,
    HoldBefore,
    HoldAfter,
}

impl Chaos {
    fn draw(&self, rng: &mut impl rand::Rng) -> Drawn {
        if rng.random_bool(self.error_before) {
            return Drawn::ErrorBefore([500, 503, 429][rng.random_range(0..3)]);
        }
        if rng.random_bool(self.error_after) {
            return Drawn::ErrorAfter;
        }
        if rng.random_bool(self.exit_after) {
            return Drawn::ExitAfter;
        }
        if rng.random_bool(self.hold_before) {
            return Drawn::HoldBefore;
        }
        if rng.random_bool(self.hold_after) {
            return Drawn::HoldAfter;
        }
        Drawn::Pass
    }
}

#[derive(Default)]
struct Plans {
    faults: HashMap<String, VecDeque<Fault>>,
    seen: HashMap<String, Vec<Seen>>,
    chaos: Option<Chaos>,
    counts: ChaosCounts,
}

#[derive(Clone)]
struct ProxyState {
    targets: Arc<BTreeMap<String, String>>,
    plans: Arc<Mutex<Plans>>,
    http: reqwest::Client,
}

/// A running proxy; scripts faults and reports what it saw.
#[derive(Clone)]
pub struct FaultProxy {
    plans: Arc<Mutex<Plans>>,
}

impl FaultProxy {
    /// Serves on `127.0.0.1:port` from a thread of its own (so it outlives any one test's
    /// runtime), forwarding `/<region>/...` to that stack's irc-remote.
    pub fn spawn(port: u16, stacks: &[Stack]) -> Result<Self> {
        let targets = stacks
            .iter()
            .map(|s| Ok((s.region.clone(), s.output("IrcRemoteLocalUrl")?.to_owned())))
            .collect::<Result<BTreeMap<_, _>>>()?;
        let plans = Arc::new(Mutex::new(Plans::default()));
        let state = ProxyState {
            targets: Arc::new(targets),
            plans: plans.clone(),
            http: reqwest::Client::new(),
        };
        let app = Router::new()
            .route("/{region}/{*rest}", post(forward))
            .with_state(state);
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("fault proxy cannot listen on 127.0.0.1:{port}"))?;
        listener.set_nonblocking(true)?;
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(async move {
                        if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                            let _ = axum::serve(listener, app).await;
                        }
                    });
                }
            })?;
        Ok(Self { plans })
    }

    /// The proxy of this test binary, on `TENURE_E2E_IRC_PROXY_PORT` (the port the test deploy
    /// pointed the workers at), started by the first caller.
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
                FaultProxy::spawn(port, &all).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The next requests for `op_id` get these faults, in order; later ones pass through.
    pub fn script(&self, op_id: &str, faults: &[Fault]) {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans
            .faults
            .entry(op_id.to_owned())
            .or_default()
            .extend(faults.iter().copied());
    }

    /// Random faults from now on (`None`: off).
    pub fn set_chaos(&self, chaos: Option<Chaos>) {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans.chaos = chaos;
        plans.counts = ChaosCounts::default();
    }

    pub fn chaos_counts(&self) -> ChaosCounts {
        let plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans.counts.clone()
    }

    pub fn seen(&self, op_id: &str) -> Vec<Seen> {
        let plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans.seen.get(op_id).cloned().unwrap_or_default()
    }
}

async fn forward(
    State(state): State<ProxyState>,
    Path((region, rest)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let envelope = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
    let op_id = envelope["op_id"].as_str().unwrap_or_default().to_owned();
    let resource = envelope["resource"].as_str().unwrap_or_default();
    let (mut fault, drawn, hold) = {
        let mut plans = state.plans.lock().unwrap_or_else(|p| p.into_inner());
        let scripted = plans.faults.get_mut(&op_id).and_then(VecDeque::pop_front);
        let (drawn, hold) = match &plans.chaos {
            Some(chaos) if scripted.is_none() && resource.starts_with(&chaos.resource_prefix) => {
                (chaos.draw(&mut rand::rng()), chaos.hold)
            }
            _ => (Drawn::Pass, std::time::Duration::ZERO),
        };
        if plans.chaos.is_some() {
            let c = &mut plans.counts;
            match drawn {
                Drawn::Pass => c.passed += 1,
                Drawn::ErrorBefore(_) => c.error_before += 1,
                Drawn::ErrorAfter => c.error_after += 1,
                Drawn::ExitAfter => c.exit_after += 1,
                Drawn::HoldBefore => c.hold_before += 1,
                Drawn::HoldAfter => c.hold_after += 1,
            }
        }
        (scripted, drawn, hold)
    };
    match drawn {
        Drawn::ErrorBefore(status) => fault = Some(Fault::Status(status)),
        Drawn::ExitAfter => fault = Some(Fault::ExitWorkerAfterApply),
        Drawn::HoldBefore => tokio::time::sleep(hold).await,
        _ => {}
    }
    let record = |status: u16, faulted: bool| {
        let mut plans = state.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans.seen.entry(op_id.clone()).or_default().push(Seen {
            at: Instant::now(),
            status,
            faulted,
        });
    };
    if let Some(Fault::Status(status)) = fault {
        record(status, true);
        let body = format!(
            r#"{{"error":{{"code":"injected","message":"fault proxy answered {status}"}}}}"#
        );
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (code, [("content-type", "application/json")], body).into_response();
    }
    let Some(base) = state.targets.get(&region) else {
        record(502, true);
        return (StatusCode::BAD_GATEWAY, format!("no stack for {region}")).into_response();
    };
    let mut request = state.http.post(format!("{base}{rest}")).body(body.to_vec());
    for (name, value) in headers.iter() {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let (status, bytes) = match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.bytes().await.unwrap_or_default())
        }
        Err(e) => {
            record(502, true);
            return (StatusCode::BAD_GATEWAY, e.to_string()).into_response();
        }
    };
    let exit = fault == Some(Fault::ExitWorkerAfterApply);
    record(status, exit || drawn != Drawn::Pass);
    match drawn {
        Drawn::HoldAfter => tokio::time::sleep(hold).await,
        Drawn::ErrorAfter => {
            let body = r#"{"error":{"code":"injected","message":"fault proxy lost the answer"}}"#;
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [("content-type", "application/json")],
                body,
            )
                .into_response();
        }
        _ => {}
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (code, [("content-type", "application/json")], bytes).into_response();
    if exit {
        if let Ok(v) = "exit-after-apply".parse() {
            response.headers_mut().insert(FAULT_HEADER, v);
        }
    }
    response
}
