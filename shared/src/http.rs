//! The HTTP edge shared by tenure's Function URLs: one JSON error shape for every endpoint
//! (`{"error":{"code","message"}}`), a body size limit, and the conversion to and from
//! `lambda_http`'s types (feature `lambda`), so handlers stay plain functions over (method,
//! path, body) and the parsers can be tested and fuzzed without a Lambda runtime.

#[cfg(feature = "lambda")]
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};

/// Request bodies over this size are refused with 413 before they are parsed.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A handler's answer: a status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Value,
}

impl ApiResponse {
    pub fn ok(body: Value) -> Self {
        Self { status: 200, body }
    }

    /// Whether this is a client error in the contract's shape: 4xx, with a non-empty
    /// `error.code` and a string `error.message`. What the property tests and fuzz targets
    /// demand of every answer to malformed input.
    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.status)
            && self.body["error"]["code"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
            && self.body["error"]["message"].is_string()
    }

    /// The one error shape every endpoint uses.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({"error": {"code": code, "message": message.into()}}),
        }
    }
}

/// The parts of a Function URL request a handler looks at.
#[derive(Debug, Clone, Copy)]
pub struct ApiRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a [u8],
}

#[cfg(feature = "lambda")]
impl<'a> ApiRequest<'a> {
    pub(crate) fn from_lambda(request: &'a Request) -> Self {
        Self {
            method: request.method().as_str(),
            path: request.uri().path(),
            body: request.body().as_ref(),
        }
    }
}

/// Turns an [`ApiResponse`] into the Function URL response.
#[cfg(feature = "lambda")]
pub(crate) fn into_lambda(response: ApiResponse) -> Response<Body> {
    let mut out = Response::new(Body::Text(response.body.to_string()));
    *out.status_mut() = lambda_http::http::StatusCode::from_u16(response.status)
        .unwrap_or(lambda_http::http::StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut().insert(
        lambda_http::http::header::CONTENT_TYPE,
        lambda_http::http::HeaderValue::from_static("application/json"),
    );
    out
}

/// Parses a JSON body, refusing oversize bodies (413) and malformed JSON (400).
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiResponse> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiResponse::error(
            413,
            "payload_too_large",
            format!(
                "request body is {} bytes; the limit is {MAX_BODY_BYTES}",
                body.len()
            ),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiResponse::error(400, "malformed_request", format!("invalid JSON body: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_the_contract_shape() {
        let r = ApiResponse::error(404, "unknown_group", "no such group");
        assert_eq!(r.body["error"]["code"], "unknown_group");
        assert_eq!(r.body["error"]["message"], "no such group");
    }

    #[test]
    fn oversize_bodies_are_refused_before_parsing() {
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let err = parse_json::<Value>(&big).unwrap_err();
        assert_eq!(err.status, 413);
    }

    #[cfg(feature = "lambda")]
    #[test]
    fn lambda_response_carries_status_and_json() {
        let resp = into_lambda(ApiResponse::error(409, "stale_epoch", "x"));
        assert_eq!(resp.status(), 409);
        assert_eq!(resp.headers()["content-type"], "application/json");
    }
}
