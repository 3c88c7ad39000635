//! Prints a real stats snapshot after a scripted workload against loopback
//! servers (used for docs/observability.md):
//! `cargo run -p freshpool --example stats_snapshot`

use std::time::Duration;

use freshpool::Client;
use freshpool_testkit::{ChaosProxy, TestServer};

#[tokio::main]
async fn main() -> Result<(), freshpool::Error> {
    let server = TestServer::http1().await;
    let proxy = ChaosProxy::start(server.addr()).await;
    let client = Client::builder()
        .max_connections_per_host(4)
        .validate_after_idle(Duration::from_millis(100))
        .build()?;
    // 40 requests, 8 at a time.
    for _ in 0..5 {
        let wave: Vec<_> = (0..8)
            .map(|_| {
                let c = client.clone();
                let url = proxy.url("/delay/5");
                tokio::spawn(async move { c.get(&url).await?.into_body().bytes().await })
            })
            .collect();
        for t in wave {
            t.await.expect("task")?;
        }
    }
    // The network silently drops every connection; the next GETs are
    // retried on fresh connections.
    tokio::time::sleep(Duration::from_millis(150)).await;
    proxy.kill_all_silently();
    for _ in 0..3 {
        client
            .get(&proxy.url("/"))
            .await?
            .into_body()
            .bytes()
            .await?;
    }
    // A response body held (neither read nor dropped) shows as a lease.
    let _held = client.get(&proxy.url("/stream/100000")).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!("{}", client.stats());
    Ok(())
}
