//! Each request runs in a `freshpool.request` span (DEBUG) that says what
//! was sent and what came of it. A recording layer on a real
//! `tracing-subscriber` registry reads the span's fields as they close.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use freshpool::Client;
use freshpool_testkit::TestServer;

mod common;
use common::SlowResolver;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Default)]
struct Fields(HashMap<&'static str, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

type Recorded = Arc<Mutex<Vec<HashMap<&'static str, String>>>>;

/// Collects the fields of every closed span of one name, in order.
struct NamedSpans(&'static str, Recorded);

#[allow(non_snake_case)]
fn RequestSpans(spans: Recorded) -> NamedSpans {
    NamedSpans("freshpool.request", spans)
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for NamedSpans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != self.0 {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        ctx.span(id)
            .expect("new span")
            .extensions_mut()
            .insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            if let Some(fields) = span.extensions_mut().remove::<Fields>() {
                self.1.lock().unwrap().push(fields.0);
            }
        }
    }
}

// A current-thread runtime: the subscriber set below is this thread's, and
// every poll of the requests happens here.
#[tokio::test]
async fn the_request_span_records_the_request_the_reuse_and_the_status() {
    let server = TestServer::http1().await;
    let spans = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(RequestSpans(spans.clone()));
    let _default = tracing::subscriber::set_default(subscriber);

    let client = Client::new();
    let url = server.url("/");
    for _ in 0..2 {
        let response = client.get(&url).await.unwrap();
        response.into_body().bytes().await.unwrap();
    }
    let missing = client.get(&format!("{url}missing")).await.unwrap();
    let missing_status = missing.status().as_u16();
    drop(missing);

    let spans = spans.lock().unwrap();
    assert_eq!(spans.len(), 3, "one span per request: {spans:?}");
    for span in spans.iter() {
        assert_eq!(span["method"], "GET", "{span:?}");
        assert!(
            span["uri"].starts_with(&url),
            "the span names the URI: {span:?}"
        );
        assert_eq!(span["retries"], "0", "{span:?}");
    }
    assert_eq!(spans[0]["reused"], "false", "the first request dials");
    assert_eq!(
        spans[1]["reused"], "true",
        "the second reuses its connection"
    );
    assert_eq!(spans[0]["status"], "200");
    assert_eq!(spans[2]["status"], missing_status.to_string());
}

/// A password `http` did not see as one (an unencoded '/', '#' in it) was
/// left in the URI by the userinfo handling and recorded in the span,
/// which exporters and every DEBUG event inside it show.
#[tokio::test]
async fn the_request_span_shows_no_password_nor_signature() {
    let server = TestServer::http1().await;
    let spans = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(RequestSpans(spans.clone()));
    let _default = tracing::subscriber::set_default(subscriber);

    let client = Client::new();
    let port = server.addr().port();
    for url in [
        format!("http://u:pa/ss3cret@127.0.0.1:{port}/"),
        format!("http://u:pa#ss3cret@127.0.0.1:{port}/"),
        format!("http://u:s3cret@127.0.0.1:{port}/"),
        // An '@' in a path is no password: shown as it is.
        format!("http://127.0.0.1:{port}/@types/node?by=a@b"),
        // A pre-signed URL's signature is a credential too.
        format!("http://127.0.0.1:{port}/obj?X-Amz-Expires=60&X-Amz-Signature=s3cret"),
    ] {
        let _ = client.get(&url).await;
    }
    let spans = spans.lock().unwrap();
    assert_eq!(spans.len(), 5, "{spans:?}");
    for span in spans.iter() {
        let uri = &span["uri"];
        assert!(!uri.contains("s3cret") && !uri.contains(":pa"), "{span:?}");
    }
    assert_eq!(spans[2]["uri"], format!("http://127.0.0.1:{port}/"));
    assert_eq!(
        spans[3]["uri"],
        format!("http://127.0.0.1:{port}/@types/node?by=a@b")
    );
    assert_eq!(
        spans[4]["uri"],
        format!("http://127.0.0.1:{port}/obj?X-Amz-Expires=60&X-Amz-Signature=REDACTED")
    );
}

/// Collects the fields of every "connection closed" event.
struct ClosedEvents(Arc<Mutex<Vec<HashMap<&'static str, String>>>>);

impl<S: Subscriber> Layer<S> for ClosedEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields
            .0
            .get("message")
            .is_some_and(|m| m == "connection closed")
        {
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

/// A close outside any request (here the freeze eviction of an idle
/// connection) says which origin's connection closed, and why: the event
/// named neither origin nor request, so with many hosts it told nothing.
#[tokio::test]
async fn a_connection_closed_event_names_its_origin_and_reason() {
    let server = TestServer::http1().await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(ClosedEvents(events.clone()));
    let _default = tracing::subscriber::set_default(subscriber);

    let client = Client::new();
    let response = client.get(&server.url("/")).await.unwrap();
    response.into_body().bytes().await.unwrap();
    client.on_resume();

    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let origin = format!("http://127.0.0.1:{}", server.addr().port());
    assert_eq!(events[0]["origin"], format!("{origin:?}"), "{events:?}");
    assert_eq!(events[0]["reason"], "\"freeze_eviction\"", "{events:?}");
}

/// A GET retried once that then fails still shows its retry in the span:
/// the fields were recorded with an answer only, so it read nothing. Its
/// pooled connection is dropped by a NAT (the write gets a reset: retried
/// on a new connection), and the new one never answers.
#[tokio::test]
async fn a_failed_request_span_still_counts_its_retries() {
    let server = TestServer::http1().await;
    let proxy = freshpool_testkit::ChaosProxy::start(server.addr()).await;
    let spans = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(RequestSpans(spans.clone()));
    let _default = tracing::subscriber::set_default(subscriber);

    let client = Client::builder()
        .response_header_timeout(Some(std::time::Duration::from_millis(300)))
        .build()
        .unwrap();
    let url = proxy.url("/");
    client
        .get(&url)
        .await
        .unwrap()
        .into_body()
        .bytes()
        .await
        .unwrap();
    proxy.kill_all_silently();
    proxy.set_blackhole(true);
    let err = client.get(&url).await.unwrap_err();
    assert_eq!(client.stats().origins[0].retries, 1, "{err}");
    let spans = spans.lock().unwrap();
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!(
        spans[1].get("retries").map(String::as_str),
        Some("1"),
        "{spans:?}"
    );
}

/// A filter that enables DEBUG for the caller's code but not for
/// freshpool (`freshpool=info,caller=debug`) disables the request's span,
/// so the current span is the caller's: the pool's `status`, `reused` and
/// `retries` were written into it, over the caller's own fields (an
/// inbound handler's `status` read the outbound request's).
#[tokio::test]
async fn a_disabled_request_span_leaves_the_callers_span_alone() {
    use tracing::Instrument;
    use tracing_subscriber::EnvFilter;
    let server = TestServer::http1().await;
    let spans = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry()
        .with(EnvFilter::new("freshpool=info,caller=debug"))
        .with(NamedSpans("handler", spans.clone()));
    let _default = tracing::subscriber::set_default(subscriber);

    let client = Client::new();
    let url = server.url("/status/404");
    let handler = tracing::debug_span!(
        target: "caller",
        "handler",
        status = tracing::field::Empty,
        retries = tracing::field::Empty,
        reused = tracing::field::Empty,
    );
    async {
        for _ in 0..2 {
            let response = client.get(&url).await.unwrap();
            assert_eq!(response.status(), 404);
            response.into_body().bytes().await.unwrap();
        }
        tracing::Span::current().record("status", 200);
    }
    .instrument(handler)
    .await;

    let spans = spans.lock().unwrap();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].get("status").map(String::as_str), Some("200"));
    assert!(!spans[0].contains_key("reused"), "{spans:?}");
    assert!(!spans[0].contains_key("retries"), "{spans:?}");
}

/// The span's `reused` is the stats' reuse: the first request on a
/// connection is none, though the retry rule (which asks whether a
/// connection may have gone stale) treats one that rested as reused.
/// Here a dial's requester gives up, the connection lands idle, and the
/// next request is its first.
#[tokio::test]
async fn the_request_span_reuse_is_the_stats_reuse() {
    let server = TestServer::http1().await;
    let spans = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(RequestSpans(spans.clone()));
    let _default = tracing::subscriber::set_default(subscriber);

    let client = Client::builder()
        .proxy_from_env(false)
        .resolver(SlowResolver(std::time::Duration::from_millis(300)))
        .build()
        .unwrap();
    let url = format!("http://slow-dns.test:{}/", server.addr().port());
    let gave_up =
        tokio::time::timeout(std::time::Duration::from_millis(50), client.get(&url)).await;
    assert!(gave_up.is_err(), "the lookup takes 300 ms");
    freshpool_testkit::eventually("the dial landed idle", || client.stats().idle() == 1).await;
    for _ in 0..2 {
        let response = client.get(&url).await.unwrap();
        response.into_body().bytes().await.unwrap();
    }
    let stats = client.stats();
    assert_eq!((stats.created(), stats.reused()), (1, 1), "{stats}");
    let spans = spans.lock().unwrap();
    let reused: Vec<&str> = spans
        .iter()
        .filter_map(|s| s.get("reused").map(String::as_str))
        .collect();
    assert_eq!(reused, ["false", "true"], "{stats}");
}
