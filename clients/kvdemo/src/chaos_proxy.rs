//! A fault-injecting HTTP proxy in front of MiniStack, one per kvdemo host in a fault campaign:
//! the host's `AWS_ENDPOINT_URL` and lease-check URL point at it, so every DynamoDB call on the
//! data table and every lease check of that host goes through it. It can cut the host off from
//! lease-check (requests are held until the host gives up, as on a partition), and for every
//! request draw a store fault: a 500 before forwarding, a 500 after the upstream applied it (the
//! answer is lost), throttling (DynamoDB's `ThrottlingException`, 429 for lease-check), and
//! added latency.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rand::Rng;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to requests; the default passes everything unharmed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Hold every lease-check request until the caller gives up.
    pub cut_off_lease_check: bool,
    /// Probability of a 500 before forwarding.
    pub error: f64,
    /// Probability of forwarding, then answering 500 (the upstream applied the request).
    pub lost_answer: f64,
    /// Probability of throttling without forwarding.
    pub throttle: f64,
    /// Uniform extra latency, 0 to this, on every request.
    pub max_latency: Duration,
}

/// Requests by what was done to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub passed: u64,
    pub cut_off: u64,
    pub error: u64,
    pub lost_answer: u64,
    pub throttle: u64,
}

#[derive(Default)]
struct Shared {
    faults: Faults,
    counts: FaultCounts,
}

#[derive(Clone)]
struct ProxyState {
    upstream: Arc<str>,
    shared: Arc<Mutex<Shared>>,
    http: reqwest::Client,
}

/// A running proxy. It serves from a thread of its own, so it outlives the hosts' restarts and
/// any one runtime, and stops with the process.
#[derive(Clone)]
pub struct ChaosProxy {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

/// Lease-check's local Function URLs are paths on the MiniStack endpoint.
const LEASE_CHECK_PATH: &str = "/_aws/lambda-url/";
/// How long a cut-off request is held (the host's lease-check client gives up after 2 s).
const CUT_OFF_HOLD: Duration = Duration::from_secs(60);

impl ChaosProxy {
    /// Listens on a free loopback port and forwards everything to `upstream`.
    pub fn start(upstream: &str) -> std::io::Result<Self> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').into(),
            shared: shared.clone(),
            http: reqwest::Client::builder()
                .build()
                .map_err(std::io::Error::other)?,
        };
        let app = Router::new().fallback(forward).with_state(state);
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        std::thread::Builder::new()
            .name("chaos-proxy".into())
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
        Ok(Self { url, shared })
    }

    pub fn set(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    pub fn counts(&self) -> FaultCounts {
        self.lock().counts.clone()
    }

    /// `url` (on the upstream) as reached through this proxy.
    pub fn rewrite(&self, url: &str, upstream: &str) -> String {
        match url.strip_prefix(upstream.trim_end_matches('/')) {
            Some(rest) => format!("{}{rest}", self.url),
            None => url.to_owned(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drawn {
    Pass,
    CutOff,
    Error,
    LostAnswer,
    Throttle,
}

fn draw(faults: &Faults, lease_check: bool, rng: &mut impl Rng) -> (Drawn, Duration) {
    let latency = if faults.max_latency.is_zero() {
        Duration::ZERO
    } else {
        faults.max_latency.mul_f64(rng.random::<f64>())
    };
    let drawn = if lease_check && faults.cut_off_lease_check {
        Drawn::CutOff
    } else if rng.random_bool(faults.error.clamp(0.0, 1.0)) {
        Drawn::Error
    } else if rng.random_bool(faults.throttle.clamp(0.0, 1.0)) {
        Drawn::Throttle
    } else if rng.random_bool(faults.lost_answer.clamp(0.0, 1.0)) {
        Drawn::LostAnswer
    } else {
        Drawn::Pass
    };
    (drawn, latency)
}

fn json_error(status: StatusCode, lease_check: bool, dynamodb_type: &str) -> Response {
    let body = if lease_check {
        format!(r#"{{"error":{{"code":"injected","message":"chaos proxy: {status}"}}}}"#)
    } else {
        format!(
            r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{dynamodb_type}","message":"chaos proxy"}}"#
        )
    };
    let content_type = if lease_check {
        "application/json"
    } else {
        "application/x-amz-json-1.0"
    };
    (status, [("content-type", content_type)], body).into_response()
}

async fn forward(
    State(state): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let lease_check = uri.path().starts_with(LEASE_CHECK_PATH);
    let (drawn, latency) = {
        let mut shared = state.shared.lock().unwrap_or_else(|p| p.into_inner());
        let (drawn, latency) = draw(&shared.faults, lease_check, &mut rand::rng());
        let c = &mut shared.counts;
        match drawn {
            Drawn::Pass => c.passed += 1,
            Drawn::CutOff => c.cut_off += 1,
            Drawn::Error => c.error += 1,
            Drawn::LostAnswer => c.lost_answer += 1,
            Drawn::Throttle => c.throttle += 1,
        }
        (drawn, latency)
    };
    tokio::time::sleep(latency).await;
    match drawn {
        // The caller times out and drops the connection, which cancels this handler.
        Drawn::CutOff => {
            tokio::time::sleep(CUT_OFF_HOLD).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Drawn::Error => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                lease_check,
                "InternalServerError",
            )
        }
        Drawn::Throttle if lease_check => {
            return json_error(StatusCode::TOO_MANY_REQUESTS, true, "")
        }
        Drawn::Throttle => {
            return json_error(StatusCode::BAD_REQUEST, false, "ThrottlingException")
        }
        Drawn::Pass | Drawn::LostAnswer => {}
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = state
        .http
        .request(method, format!("{}{path}", state.upstream))
        .body(body.to_vec());
    for (name, value) in headers.iter() {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let upstream = match request.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = upstream.status();
    let upstream_headers = upstream.headers().clone();
    let bytes = upstream.bytes().await.unwrap_or_default();
    if drawn == Drawn::LostAnswer {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            lease_check,
            "InternalServerError",
        );
    }
    let mut response = (status, bytes).into_response();
    for (name, value) in upstream_headers.iter() {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_faults_pass_everything_and_cut_off_only_holds_lease_checks() {
        let mut rng = rand::rng();
        let none = Faults::default();
        for _ in 0..100 {
            assert_eq!(draw(&none, true, &mut rng), (Drawn::Pass, Duration::ZERO));
        }
        let cut = Faults {
            cut_off_lease_check: true,
            ..Faults::default()
        };
        assert_eq!(draw(&cut, true, &mut rng).0, Drawn::CutOff);
        assert_eq!(draw(&cut, false, &mut rng).0, Drawn::Pass);
    }

    #[test]
    fn certain_faults_always_fire_and_latency_stays_under_its_bound() {
        let mut rng = rand::rng();
        let always_throttle = Faults {
            throttle: 1.0,
            max_latency: Duration::from_millis(30),
            ..Faults::default()
        };
        for _ in 0..100 {
            let (drawn, latency) = draw(&always_throttle, false, &mut rng);
            assert_eq!(drawn, Drawn::Throttle);
            assert!(latency <= Duration::from_millis(30));
        }
    }

    #[test]
    fn rewrite_moves_only_urls_on_the_upstream() {
        let proxy = ChaosProxy {
            url: "http://127.0.0.1:9".into(),
            shared: Arc::default(),
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
}
