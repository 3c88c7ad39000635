//! The four client strategies behind one `send` call.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use rustls_pki_types::CertificateDer;

/// Which client a cell uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// A new freshpool `Client` per request (the SDK-session-per-call bug).
    PerRequest,
    /// A shared freshpool client with pooling off (one request per HTTP/1
    /// connection, none kept idle; `max_requests_per_connection` is
    /// HTTP/1's: over HTTP/2 the requests riding on one dial share it).
    NoPool,
    /// A shared default reqwest client (today's Rust default).
    Reqwest,
    /// A shared freshpool client with the defaults.
    Freshpool,
}

impl Strategy {
    /// Every strategy, in table order.
    pub const ALL: [Strategy; 4] = [
        Strategy::PerRequest,
        Strategy::NoPool,
        Strategy::Reqwest,
        Strategy::Freshpool,
    ];

    /// The command-line / report name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::PerRequest => "per-request",
            Strategy::NoPool => "no-pool",
            Strategy::Reqwest => "reqwest",
            Strategy::Freshpool => "freshpool",
        }
    }
}

/// Client settings a scenario asks for.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Whole-request timeout (every strategy).
    pub timeout: Duration,
    /// Per-host connection limit (freshpool-based strategies only).
    pub per_host: Option<usize>,
    /// Pool wait limit (freshpool-based strategies only).
    pub pool_timeout: Option<Duration>,
    /// Extra trusted CA (DER) for the TLS servers.
    pub ca: Option<CertificateDer<'static>>,
}

/// One request of a scenario.
#[derive(Clone, Debug)]
pub struct Req {
    /// Method.
    pub method: Method,
    /// Absolute URL.
    pub url: String,
    /// Body (POST).
    pub body: Option<Bytes>,
    /// `x-request-id` header value.
    pub id: Option<String>,
    /// Hold the response body unread this long before dropping it.
    pub hold: Option<Duration>,
}

impl Req {
    /// A plain GET.
    pub fn get(url: &str) -> Req {
        Req {
            method: Method::GET,
            url: url.to_string(),
            body: None,
            id: None,
            hold: None,
        }
    }

    /// A POST with a body and a unique request id.
    pub fn post(url: &str, body: String, id: String) -> Req {
        Req {
            method: Method::POST,
            url: url.to_string(),
            body: Some(Bytes::from(body)),
            id: Some(id),
            hold: None,
        }
    }
}

/// A failed request: its kind (freshpool `Kind` Debug name, or a reqwest
/// class) and the full message.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Error class.
    pub kind: String,
    /// Human message (with its cause).
    pub message: String,
}

impl Failure {
    fn new(kind: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// A built client of one strategy; clone it into tasks.
#[derive(Clone)]
pub enum Driver {
    /// Builds a new client for every request.
    PerRequest(Arc<Settings>),
    /// A shared freshpool client (defaults or pooling off).
    Fresh(freshpool::Client, Duration),
    /// A shared reqwest client.
    Reqwest(reqwest::Client, Duration),
}

fn fresh_builder(s: &Settings) -> freshpool::ClientBuilder {
    // The bench's servers are in-process on 127.0.0.1: a proxy from the
    // environment (`http_proxy`) would measure the proxy, or fail.
    let mut b = freshpool::Client::builder()
        .timeout(Some(s.timeout))
        .proxy_from_env(false);
    if let Some(n) = s.per_host {
        b = b.max_connections_per_host(n).max_idle_per_host(n);
    }
    if let Some(t) = s.pool_timeout {
        b = b.pool_timeout(t);
    }
    if let Some(ca) = &s.ca {
        b = b.add_root_certificate(ca.clone());
    }
    b
}

impl Driver {
    /// Builds the client of `strategy` (inside the runtime that will use it).
    pub fn new(strategy: Strategy, s: &Settings) -> Result<Driver, String> {
        let err =
            |e: &dyn std::fmt::Display| format!("building the {} client: {e}", strategy.name());
        Ok(match strategy {
            Strategy::PerRequest => Driver::PerRequest(Arc::new(s.clone())),
            Strategy::NoPool => {
                // One request per connection: with only no idle kept, a
                // connection returned was handed to the next waiting
                // request, and under load the row measured freshpool.
                let c = fresh_builder(s)
                    .max_idle_per_host(0)
                    .max_requests_per_connection(Some(1))
                    .build()
                    .map_err(|e| err(&e))?;
                Driver::Fresh(c, s.timeout)
            }
            Strategy::Freshpool => {
                Driver::Fresh(fresh_builder(s).build().map_err(|e| err(&e))?, s.timeout)
            }
            Strategy::Reqwest => {
                let mut b = reqwest::Client::builder().timeout(s.timeout).no_proxy();
                if let Some(ca) = &s.ca {
                    let cert = reqwest::Certificate::from_der(ca).map_err(|e| err(&e))?;
                    b = b.add_root_certificate(cert);
                }
                Driver::Reqwest(b.build().map_err(|e| err(&e))?, s.timeout)
            }
        })
    }

    /// Sends `req` and reads (or holds, then drops) its body. Bounded by the
    /// strategy's timeout plus a 2 s guard.
    pub async fn send(&self, req: Req) -> Result<(), Failure> {
        let limit = match self {
            Driver::PerRequest(s) => s.timeout,
            Driver::Fresh(_, t) | Driver::Reqwest(_, t) => *t,
        } + req.hold.unwrap_or_default()
            + Duration::from_secs(2);
        match tokio::time::timeout(limit, self.send_inner(req)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                "Timeout(guard)",
                format!("no answer within {limit:?}"),
            )),
        }
    }

    async fn send_inner(&self, req: Req) -> Result<(), Failure> {
        match self {
            Driver::PerRequest(s) => {
                let client = fresh_builder(s).build().map_err(fresh_failure)?;
                fresh_send(&client, req).await
            }
            Driver::Fresh(client, _) => fresh_send(client, req).await,
            Driver::Reqwest(client, _) => reqwest_send(client, req).await,
        }
    }
}

fn fresh_failure(e: freshpool::Error) -> Failure {
    Failure::new(format!("{:?}", e.kind()), e.to_string())
}

async fn fresh_send(client: &freshpool::Client, req: Req) -> Result<(), Failure> {
    let mut builder = http::Request::builder().method(req.method).uri(&req.url);
    if let Some(id) = &req.id {
        builder = builder.header("x-request-id", id);
    }
    let request = builder
        .body(req.body.unwrap_or_default())
        .map_err(|e| Failure::new("InvalidUri", e.to_string()))?;
    let response = client.request(request).await.map_err(fresh_failure)?;
    let status = response.status();
    if let Some(hold) = req.hold {
        tokio::time::sleep(hold).await;
        drop(response);
    } else {
        response.into_body().drain().await.map_err(fresh_failure)?;
    }
    check_status(status)
}

fn check_status(status: http::StatusCode) -> Result<(), Failure> {
    if status.is_success() {
        Ok(())
    } else {
        Err(Failure::new(
            format!("Status{}", status.as_u16()),
            format!("HTTP status {status}"),
        ))
    }
}

/// Maps a reqwest error to a short class name.
pub fn reqwest_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() {
        "body"
    } else if e.is_decode() {
        "decode"
    } else if e.is_request() {
        "request"
    } else if e.is_redirect() {
        "redirect"
    } else {
        "other"
    }
}

fn reqwest_failure(e: reqwest::Error) -> Failure {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    Failure::new(reqwest_kind(&e), message)
}

async fn reqwest_send(client: &reqwest::Client, req: Req) -> Result<(), Failure> {
    let mut builder = client.request(req.method, &req.url);
    if let Some(id) = &req.id {
        builder = builder.header("x-request-id", id);
    }
    if let Some(body) = req.body {
        builder = builder.body(body);
    }
    let response = builder.send().await.map_err(reqwest_failure)?;
    let status = response.status();
    if let Some(hold) = req.hold {
        tokio::time::sleep(hold).await;
        drop(response);
    } else {
        response.bytes().await.map_err(reqwest_failure)?;
    }
    check_status(status)
}
