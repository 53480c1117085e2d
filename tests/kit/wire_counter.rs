//! A counting proxy in front of MiniStack's DynamoDB, for cost figures: a function's
//! `AWS_ENDPOINT_URL_DYNAMODB` points at it, and it counts, per table, the requests and the
//! **request units** they cost at on-demand prices, read off the wire:
//!
//! - reads (`GetItem`, `BatchGetItem`): one read unit per item asked for and per started 4 KB
//!   of it (a missing item still costs one), half for an eventually consistent read;
//! - `Query`, `Scan`: per started 4 KB of the items returned (at least one unit a page), half
//!   when eventually consistent;
//! - writes (`PutItem`, `UpdateItem`, `DeleteItem`): one write unit per started 1 KB of the
//!   larger of the item before and after (at least one; a refused condition still costs one);
//! - `TransactWriteItems`: two write units per item and KB.
//!
//! Sizes are estimated from the JSON on the wire (attribute names and values), which
//! overstates DynamoDB's binary sizes slightly: the figures err high.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What one table (or `*` for requests naming none) was charged.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub requests: u64,
    pub read_units: f64,
    pub write_units: f64,
    /// Items asked for by reads, or written.
    pub items: u64,
}

impl Usage {
    fn add(&mut self, other: &Usage) {
        self.requests += other.requests;
        self.read_units += other.read_units;
        self.write_units += other.write_units;
        self.items += other.items;
    }
}

/// Per operation (`GetItem`, ...) and table.
pub type Counts = BTreeMap<(String, String), Usage>;

#[derive(Clone)]
struct ProxyState {
    upstream: Arc<str>,
    counts: Arc<Mutex<Counts>>,
    http: reqwest::Client,
}

/// A running counter. It serves from a thread of its own and stops with the process.
#[derive(Clone)]
pub struct WireCounter {
    pub url: String,
    counts: Arc<Mutex<Counts>>,
}

impl WireCounter {
    /// Listens on a free loopback port and forwards everything to `upstream`.
    pub fn start(upstream: &str) -> std::io::Result<Self> {
        let counts = Arc::new(Mutex::new(Counts::new()));
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').into(),
            counts: counts.clone(),
            http: reqwest::Client::builder()
                .build()
                .map_err(std::io::Error::other)?,
        };
        let app = Router::new().fallback(forward).with_state(state);
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let url = crate::serve_in_thread("wire-counter", listener, app, 2)?;
        Ok(Self { url, counts })
    }

    /// The counts so far, and zero them.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The counts so far.
    pub fn peek(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Everything charged to tables whose name contains `table`.
pub fn table_usage(counts: &Counts, table: &str) -> Usage {
    let mut total = Usage::default();
    for ((_, t), u) in counts {
        if t.contains(table) {
            total.add(u);
        }
    }
    total
}

/// Everything charged.
pub fn total_usage(counts: &Counts) -> Usage {
    let mut total = Usage::default();
    for u in counts.values() {
        total.add(u);
    }
    total
}

fn json_len(value: &Value) -> usize {
    value.to_string().len()
}

fn units(bytes: usize, per: usize) -> f64 {
    bytes.div_ceil(per).max(1) as f64
}

/// The usage of one request, from its body and its answer's, by table.
pub fn charge(operation: &str, request: &Value, response: &Value) -> Vec<(String, Usage)> {
    let table = |v: &Value| v["TableName"].as_str().unwrap_or("*").to_owned();
    let consistent = |v: &Value| {
        if v["ConsistentRead"].as_bool().unwrap_or(false) {
            1.0
        } else {
            0.5
        }
    };
    match operation {
        "GetItem" => {
            let size = response.get("Item").map(json_len).unwrap_or(0);
            vec![(
                table(request),
                Usage {
                    requests: 1,
                    read_units: units(size, 4096) * consistent(request),
                    items: 1,
                    ..Usage::default()
                },
            )]
        }
        "BatchGetItem" => {
            let mut out = Vec::new();
            let asked = request["RequestItems"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for (name, spec) in asked {
                let found: Vec<usize> = response["Responses"][&name]
                    .as_array()
                    .map(|items| items.iter().map(json_len).collect())
                    .unwrap_or_default();
                let keys = spec["Keys"].as_array().map(Vec::len).unwrap_or(0);
                let missing = keys.saturating_sub(found.len());
                let read: f64 = found.iter().map(|s| units(*s, 4096)).sum::<f64>() + missing as f64;
                out.push((
                    name,
                    Usage {
                        // One call, however many tables it reads: counted on the first.
                        requests: u64::from(out.is_empty()),
                        read_units: read * consistent(&spec),
                        items: keys as u64,
                        ..Usage::default()
                    },
                ));
            }
            out
        }
        "Query" | "Scan" => {
            let size: usize = response["Items"]
                .as_array()
                .map(|items| items.iter().map(json_len).sum())
                .unwrap_or(0);
            let returned = response["Items"].as_array().map(Vec::len).unwrap_or(0);
            vec![(
                table(request),
                Usage {
                    requests: 1,
                    read_units: units(size, 4096) * consistent(request),
                    items: returned as u64,
                    ..Usage::default()
                },
            )]
        }
        "PutItem" | "UpdateItem" | "DeleteItem" => {
            let after = response.get("Attributes").map(json_len).unwrap_or(0);
            let before = response.get("Item").map(json_len).unwrap_or(0);
            let sent = request.get("Item").map(json_len).unwrap_or(0);
            vec![(
                table(request),
                Usage {
                    requests: 1,
                    write_units: units(after.max(before).max(sent), 1024),
                    items: 1,
                    ..Usage::default()
                },
            )]
        }
        "TransactWriteItems" => {
            let mut out = Vec::new();
            for item in request["TransactItems"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let Some((_, op)) = item.as_object().and_then(|o| o.iter().next()) else {
                    continue;
                };
                let size = op.get("Item").map(json_len).unwrap_or(0);
                out.push((
                    table(op),
                    Usage {
                        requests: 0,
                        write_units: 2.0 * units(size, 1024),
                        items: 1,
                        ..Usage::default()
                    },
                ));
            }
            if let Some(first) = out.first_mut() {
                first.1.requests = 1;
            }
            out
        }
        _ => vec![(
            table(request),
            Usage {
                requests: 1,
                ..Usage::default()
            },
        )],
    }
}

async fn forward(
    State(state): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let operation = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("")
        .to_owned();
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{path}", state.upstream);
    let forwarded = match crate::forward_request(&state.http, method, url, &headers, &body).await {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    if !operation.is_empty() {
        let request_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let response_json: Value = serde_json::from_slice(&forwarded.body).unwrap_or(Value::Null);
        let charged = charge(&operation, &request_json, &response_json);
        let mut counts = state.counts.lock().unwrap_or_else(|p| p.into_inner());
        for (table, usage) in charged {
            counts
                .entry((operation.clone(), table))
                .or_default()
                .add(&usage);
        }
    }
    forwarded.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_consistent_batch_read_costs_a_unit_per_key_found_or_not() {
        let request = json!({"RequestItems": {
            "Hosts": {"Keys": [{"host_id": {"S": "a"}}, {"host_id": {"S": "b"}}], "ConsistentRead": true}}});
        let response = json!({"Responses": {"Hosts": [{"host_id": {"S": "a"}}]}});
        let charged = charge("BatchGetItem", &request, &response);
        assert_eq!(charged.len(), 1);
        assert_eq!(charged[0].0, "Hosts");
        assert_eq!(charged[0].1.read_units, 2.0);
        assert_eq!(charged[0].1.items, 2);
        // Two tables in one call: one request.
        let two = json!({"RequestItems": {
            "Hosts": {"Keys": [{"host_id": {"S": "a"}}], "ConsistentRead": true},
            "Leases": {"Keys": [{"group_id": {"S": "g"}}], "ConsistentRead": true}}});
        let charged = charge("BatchGetItem", &two, &Value::Null);
        assert_eq!(charged.iter().map(|(_, u)| u.requests).sum::<u64>(), 1);
        assert_eq!(charged.iter().map(|(_, u)| u.read_units).sum::<f64>(), 2.0);
    }

    #[test]
    fn a_transaction_costs_two_write_units_per_item() {
        let request = json!({"TransactItems": [
            {"Update": {"TableName": "Leases", "Key": {}}},
            {"Update": {"TableName": "Hosts", "Key": {}}},
            {"Update": {"TableName": "Hosts", "Key": {}}}]});
        let charged = charge("TransactWriteItems", &request, &Value::Null);
        let total: f64 = charged.iter().map(|(_, u)| u.write_units).sum();
        assert_eq!(total, 6.0);
        assert_eq!(charged.iter().map(|(_, u)| u.requests).sum::<u64>(), 1);
    }

    #[test]
    fn an_eventually_consistent_read_costs_half() {
        let request = json!({"TableName": "Leases", "Key": {}});
        let charged = charge("GetItem", &request, &json!({"Item": {"a": {"S": "b"}}}));
        assert_eq!(charged[0].1.read_units, 0.5);
        let big = json!({"Item": {"a": {"S": "x".repeat(5000)}}});
        let charged = charge(
            "GetItem",
            &json!({"TableName": "T", "ConsistentRead": true}),
            &big,
        );
        assert_eq!(charged[0].1.read_units, 2.0);
    }
}
