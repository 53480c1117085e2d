//! The end-to-end tests' fault proxy. The test deploy points each region's worker at
//! `http://127.0.0.1:PORT/<target-region>/` (`local_regions.py --irc-proxy`); this proxy
//! forwards to the target's real irc-remote, unless a test scripted faults for that op id:
//! answer a status without forwarding (the remote never saw the call), or forward and then
//! tell the worker to die (`x-tenure-fault: exit-after-apply`: the remote applied, the worker
//! never completes). Every request is logged with its time and the status returned, so tests
//! can check attempts and backoff.

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

#[derive(Default)]
struct Plans {
    faults: HashMap<String, VecDeque<Fault>>,
    seen: HashMap<String, Vec<Seen>>,
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

    /// The next requests for `op_id` get these faults, in order; later ones pass through.
    pub fn script(&self, op_id: &str, faults: &[Fault]) {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans
            .faults
            .entry(op_id.to_owned())
            .or_default()
            .extend(faults.iter().copied());
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
    let op_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["op_id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let fault = {
        let mut plans = state.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans.faults.get_mut(&op_id).and_then(VecDeque::pop_front)
    };
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
    record(status, exit);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (code, [("content-type", "application/json")], bytes).into_response();
    if exit {
        if let Ok(v) = "exit-after-apply".parse() {
            response.headers_mut().insert(FAULT_HEADER, v);
        }
    }
    response
}
