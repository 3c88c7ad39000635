//! The README's example: one shared client, concurrent requests, stats.
//! `cargo run -p freshpool --example quickstart`

use std::time::Duration;

use freshpool::{Client, Kind};

#[tokio::main]
async fn main() -> Result<(), freshpool::Error> {
    // A loopback server to talk to (freshpool-testkit, a dev-dependency).
    let server = freshpool_testkit::TestServer::http1().await;
    let url = server.url("/delay/10");

    // One client per process. Clones are an Arc bump and share the pool.
    let client = Client::builder()
        .max_connections_per_host(8)
        .pool_timeout(Duration::from_secs(5))
        .build()?;

    // 100 concurrent requests: at most 8 connections, waiters served FIFO.
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move { client.get(&url).await?.into_body().text().await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task")?, "ok");
    }

    // Errors are typed and carry the numbers.
    let err = client.get("not a url").await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidUri);

    println!("{}", client.stats());
    println!(
        "server saw {} connections",
        server.stats().connections_accepted()
    );
    Ok(())
}
