//! HTTP calls to Function URLs with `AuthType: AWS_IAM`: each request is signed with SigV4
//! (service `lambda`, the URL's region) using credentials from `aws-config`'s default chain.
//! Used by replica hosts to call lease-check, and by tests and tools.

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use std::time::{Duration, SystemTime};

/// Why a signed call did not produce an HTTP response.
#[derive(Debug, thiserror::Error)]
pub enum SigV4Error {
    #[error("no AWS credentials configured (the default chain found none)")]
    NoCredentialsProvider,
    #[error("cannot load AWS credentials: {0}")]
    Credentials(String),
    #[error("cannot sign the request: {0}")]
    Signing(String),
    #[error("request to {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("request to {url} timed out after {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

/// A status and a body: every HTTP answer, including 4xx/5xx, is a response, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedResponse {
    pub status: u16,
    pub body: Vec<u8>,
    /// Response headers (lowercase names).
    pub headers: Vec<(String, String)>,
}

impl SignedResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Signs and sends requests to AWS_IAM Function URLs. Cheap to clone; build once per process.
#[derive(Debug, Clone)]
pub struct SigV4Client {
    http: reqwest::Client,
    credentials: SharedCredentialsProvider,
    service: &'static str,
}

impl SigV4Client {
    /// A client for Function URLs (service name `lambda`), with the SDK's credentials.
    pub fn for_function_urls(sdk: &SdkConfig) -> Result<Self, SigV4Error> {
        let credentials = sdk
            .credentials_provider()
            .ok_or(SigV4Error::NoCredentialsProvider)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| SigV4Error::Transport {
                url: String::new(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            credentials,
            service: "lambda",
        })
    }

    /// Sends `method url` with `body`, signed for `region`, giving up after `timeout`.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        region: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<SignedResponse, SigV4Error> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| SigV4Error::Credentials(e.to_string()))?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(self.service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| SigV4Error::Signing(e.to_string()))?
            .into();
        let host = reqwest::Url::parse(url)
            .map_err(|e| SigV4Error::Signing(format!("bad url {url}: {e}")))?;
        let host_header = match (host.host_str(), host.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => return Err(SigV4Error::Signing(format!("url without host: {url}"))),
        };
        let headers = [
            ("host", host_header.as_str()),
            ("content-type", "application/json"),
        ];
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| SigV4Error::Signing(e.to_string()))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| SigV4Error::Signing(e.to_string()))?
            .into_parts();
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| SigV4Error::Signing(e.to_string()))?;
        let mut request = self
            .http
            .request(method, url)
            .header("content-type", "application/json")
            .timeout(timeout)
            .body(body.to_vec());
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                SigV4Error::Timeout {
                    url: url.to_owned(),
                    timeout,
                }
            } else {
                SigV4Error::Transport {
                    url: url.to_owned(),
                    message: e.to_string(),
                }
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = response.bytes().await.map_err(transport)?.to_vec();
        Ok(SignedResponse {
            status,
            body,
            headers,
        })
    }
}
