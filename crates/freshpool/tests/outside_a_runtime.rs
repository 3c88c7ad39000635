//! A request future made outside any tokio runtime and awaited in one:
//! `rt.block_on(client.get(url))` evaluates `get` before `block_on` enters
//! the runtime. With the overall `timeout` set, making the future created
//! the deadline's tokio timer, which panicked there ("there is no reactor
//! running").

use std::time::Duration;

use freshpool::Client;
use freshpool_testkit::TestServer;

#[test]
fn a_request_future_made_outside_a_runtime_runs_in_one_with_a_timeout() {
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let server = server_rt.block_on(TestServer::http1());
    let client = Client::builder()
        .timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let response = rt.block_on(client.get(&server.url("/"))).unwrap();
    let body = rt.block_on(response.into_body().text()).unwrap();
    assert_eq!(body, "ok");
    // The deadline still bounds the request: a slow answer fails on time.
    let client = Client::builder()
        .timeout(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    let err = rt
        .block_on(client.get(&server.url("/delay/5000")))
        .unwrap_err();
    assert_eq!(err.kind(), freshpool::Kind::Timeout, "{err}");
    assert!(err.to_string().contains("timed out after 200ms"), "{err}");
}
