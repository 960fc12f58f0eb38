//! One signed AWS request, sent again on throttling, 5xx and dropped
//! connections (only those) with backoff, each attempt under its own
//! timeout: the thin client the EBS, EC2, SSM and STS calls share.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::credentials::CredentialsError;
use super::sigv4::{self, Credentials, Scope};

/// AWS error codes that mean "slow down" or "try again": retried, like 5xx.
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "SlowDown",
    "EC2ThrottledException",
    "InternalError",
    "InternalFailure",
    "InternalServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{action} in {region}: {code}: {message}")]
    Service {
        action: String,
        region: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{action} in {region}: no answer from {url} after {attempts} attempts")]
    Transport {
        action: String,
        region: String,
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("{action} in {region}: the answer is not what AWS sends ({reason})")]
    Answer {
        action: String,
        region: String,
        reason: String,
    },
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("{action} in {region}: {reason}")]
    Failed {
        action: String,
        region: String,
        reason: String,
    },
}

impl AwsError {
    /// The AWS error code, if AWS answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Service { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Where requests go: AWS's regional endpoints, or one URL for every
/// service (an emulator, a partition's own), or one per service
/// (`AWS_ENDPOINT_URL_<SERVICE>`, as the AWS tools read it).
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    pub all: Option<String>,
    pub per_service: Vec<(String, String)>,
}

impl Endpoints {
    /// The template's `endpoint`, else the environment's.
    pub fn from_environment(endpoint: Option<&str>, var: &dyn Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| var(name).filter(|value| !value.is_empty());
        let per_service = ["ebs", "ec2", "ssm", "sts"]
            .into_iter()
            .filter_map(|service| {
                let url = set(&format!(
                    "AWS_ENDPOINT_URL_{}",
                    service.to_ascii_uppercase()
                ))?;
                Some((service.to_owned(), url))
            })
            .collect();
        Endpoints {
            all: endpoint
                .map(str::to_owned)
                .or_else(|| set("AWS_ENDPOINT_URL")),
            per_service,
        }
    }

    fn base(&self, service: &str, region: &str) -> String {
        let url = self.all.clone().or_else(|| {
            self.per_service
                .iter()
                .find(|(name, _)| name == service)
                .map(|(_, url)| url.clone())
        });
        url.map(|url| url.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("https://{service}.{region}.amazonaws.com"))
    }
}

/// One call: everything that is signed.
pub struct AwsRequest<'a> {
    /// The API's name, for errors (`PutSnapshotBlock`).
    pub action: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub method: reqwest::Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body's sha256 in hex, when the caller has it already.
    pub body_sha256: Option<String>,
}

impl<'a> AwsRequest<'a> {
    pub fn new(
        action: &'a str,
        service: &'a str,
        region: &'a str,
        method: reqwest::Method,
        path: impl Into<String>,
    ) -> Self {
        AwsRequest {
            action,
            service,
            region,
            method,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
            body_sha256: None,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.headers
            .push(("content-type".to_owned(), content_type.to_owned()));
        self.body = body;
        self
    }

    fn failed(&self, reason: impl Into<String>) -> AwsError {
        AwsError::Failed {
            action: self.action.to_owned(),
            region: self.region.to_owned(),
            reason: reason.into(),
        }
    }

    pub fn bad_answer(&self, reason: impl Into<String>) -> AwsError {
        AwsError::Answer {
            action: self.action.to_owned(),
            region: self.region.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A successful answer.
pub struct AwsResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl AwsResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How hard to try.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Each attempt's own limit.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
        }
    }
}

/// A signing client, cheap to clone into tasks.
#[derive(Clone)]
pub struct AwsClient {
    http: reqwest::Client,
    endpoints: Arc<Endpoints>,
    /// `None`: unsigned (STS's web identity call).
    credentials: Option<Arc<Credentials>>,
    pub retry: RetryPolicy,
}

/// The HTTP client every AWS call uses.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    crate::remote::install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .build()
}

impl AwsClient {
    pub fn new(
        http: reqwest::Client,
        endpoints: Endpoints,
        credentials: Option<Credentials>,
    ) -> Self {
        AwsClient {
            http,
            endpoints: Arc::new(endpoints),
            credentials: credentials.map(Arc::new),
            retry: RetryPolicy::default(),
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Sends `request`, signed afresh for each attempt, and returns the
    /// 2xx answer or the error AWS gave.
    pub async fn send(&self, request: &AwsRequest<'_>) -> Result<AwsResponse, AwsError> {
        let base = self.endpoints.base(request.service, request.region);
        let url = reqwest::Url::parse(&format!("{base}{}", request.path))
            .map_err(|error| request.failed(format!("invalid endpoint {base}: {error}")))?;
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(request.failed(format!("invalid endpoint {base}: no host"))),
        };
        let query: String = request
            .query
            .iter()
            .map(|(name, value)| format!("{}={}", sigv4::encode(name), sigv4::encode(value)))
            .collect::<Vec<_>>()
            .join("&");
        let mut full_url = url.clone();
        full_url.set_query((!query.is_empty()).then_some(query.as_str()));
        let payload_sha256 = request
            .body_sha256
            .clone()
            .unwrap_or_else(|| hex(&Sha256::digest(&request.body)));
        let mut headers = request.headers.clone();
        headers.push(("host".to_owned(), host));
        headers.push(("x-amz-content-sha256".to_owned(), payload_sha256.clone()));

        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut signed = headers.clone();
            if let Some(credentials) = &self.credentials {
                let amz_date = amz_date();
                let scope = Scope {
                    region: request.region,
                    service: request.service,
                    amz_date: &amz_date,
                };
                let to_sign = sigv4::Request {
                    method: request.method.as_str(),
                    path: url.path(),
                    query: &request.query,
                    headers: &headers,
                    payload_sha256: &payload_sha256,
                };
                signed.extend(sigv4::sign(&to_sign, &scope, credentials));
            }
            let mut builder = self
                .http
                .request(request.method.clone(), full_url.clone())
                .timeout(self.retry.timeout)
                .body(request.body.clone());
            for (name, value) in &signed {
                if name != "host" {
                    builder = builder.header(name.as_str(), value.as_str());
                }
            }
            let outcome = match builder.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let response_headers = response.headers().clone();
                    match response.bytes().await {
                        Ok(body) => Ok((status, response_headers, body.to_vec())),
                        Err(error) => Err(error),
                    }
                }
                Err(error) => Err(error),
            };
            match outcome {
                Ok((status, headers, body)) if (200..300).contains(&status) => {
                    return Ok(AwsResponse {
                        status,
                        headers,
                        body,
                    });
                }
                Ok((status, headers, body)) => {
                    let (code, message) = error_of(status, &headers, &body);
                    let retryable =
                        status >= 500 || status == 429 || RETRYABLE_CODES.contains(&code.as_str());
                    if !retryable || attempt >= self.retry.attempts {
                        return Err(AwsError::Service {
                            action: request.action.to_owned(),
                            region: request.region.to_owned(),
                            status,
                            code,
                            message,
                        });
                    }
                }
                Err(source) => {
                    if attempt >= self.retry.attempts {
                        return Err(AwsError::Transport {
                            action: request.action.to_owned(),
                            region: request.region.to_owned(),
                            url: base,
                            attempts: attempt,
                            source,
                        });
                    }
                }
            }
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    /// Exponential, capped, with jitter (half to all of it).
    fn backoff(&self, attempt: u32) -> Duration {
        let full = self
            .retry
            .first_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.retry.max_backoff);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        full / 2 + full.mul_f64(f64::from(nanos % 1000) / 2000.0)
    }
}

/// `20150830T123600Z`, now.
fn amz_date() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    crate::oci::rfc3339(now).replace(['-', ':'], "")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The error code and message of a failed answer, in whichever of AWS's
/// shapes it came: EC2's and STS's XML, the JSON protocols', or only a
/// header or a status.
fn error_of(status: u16, headers: &reqwest::header::HeaderMap, body: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.starts_with('<')
        && let Some(root) = super::xml::parse(trimmed)
    {
        let error = root
            .child("Errors")
            .and_then(|errors| errors.child("Error"))
            .or_else(|| root.child("Error"))
            .unwrap_or(&root);
        if let Some(code) = error.text_at(&["Code"]) {
            let message = error.text_at(&["Message"]).unwrap_or_default();
            return (code.to_owned(), message.to_owned());
        }
    }
    if let Ok(serde_json::Value::Object(object)) =
        serde_json::from_str::<serde_json::Value>(trimmed)
    {
        let field = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| object.get(*name).and_then(|value| value.as_str()))
                .map(str::to_owned)
        };
        if let Some(code) = field(&["__type", "code", "Code"]) {
            let code = code.rsplit('#').next().unwrap_or(&code).to_owned();
            return (code, field(&["message", "Message"]).unwrap_or_default());
        }
    }
    if let Some(code) = headers
        .get("x-amzn-errortype")
        .and_then(|value| value.to_str().ok())
    {
        let code = code.split(':').next().unwrap_or(code).to_owned();
        return (code, String::new());
    }
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("error");
    (format!("HTTP {status}"), reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_come_from_xml_json_headers_or_the_status() {
        let empty = reqwest::header::HeaderMap::new();
        let ec2 = b"<Response><Errors><Error><Code>AuthFailure</Code><Message>no</Message></Error></Errors></Response>";
        assert_eq!(
            error_of(401, &empty, ec2),
            ("AuthFailure".into(), "no".into())
        );
        let sts = b"<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code><Message><![CDATA[bad]]></Message></Error></ErrorResponse>";
        assert_eq!(
            error_of(403, &empty, sts),
            ("SignatureDoesNotMatch".into(), "bad".into())
        );
        let json = br#"{"__type": "com.amazonaws#ValidationException", "message": "size"}"#;
        assert_eq!(
            error_of(400, &empty, json),
            ("ValidationException".into(), "size".into())
        );
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "x-amzn-errortype",
            "AccessDeniedException:http://x".parse().unwrap(),
        );
        assert_eq!(error_of(403, &headers, b"").0, "AccessDeniedException");
        assert_eq!(error_of(503, &empty, b"busy").0, "HTTP 503");
    }

    #[test]
    fn endpoints_prefer_the_template_then_the_service_then_the_region() {
        let vars = |name: &str| match name {
            "AWS_ENDPOINT_URL_EC2" => Some("http://127.0.0.1:1/".to_owned()),
            _ => None,
        };
        let endpoints = Endpoints::from_environment(None, &vars);
        assert_eq!(endpoints.base("ec2", "eu-west-1"), "http://127.0.0.1:1");
        assert_eq!(
            endpoints.base("ebs", "eu-west-1"),
            "https://ebs.eu-west-1.amazonaws.com"
        );
        let endpoints = Endpoints::from_environment(Some("http://127.0.0.1:2"), &vars);
        assert_eq!(endpoints.base("ec2", "eu-west-1"), "http://127.0.0.1:2");
    }
}
