//! Waits for a connection across a process freeze (a serverless sandbox
//! paused between invocations). In a test binary of its own: a simulated
//! freeze stops the process-wide liveness thread, which other pools
//! consult.

use std::time::Duration;

use freshpool::{Client, Kind};
use freshpool_testkit::TestServer;

/// `pool_timeout` counts the time the process ran, not the time it was
/// frozen: nobody could free a connection then, and the limit is not to
/// blame. A request queued behind a held connection, frozen past its
/// `pool_timeout`, is served when the holder lets go just after the thaw;
/// it failed with PoolTimeout at the thaw. One whose holder never lets go
/// still fails, after `pool_timeout` of running time, and says so.
/// (A current-thread runtime: blocking its thread pauses the client,
/// timers and all, as a freeze does.)
#[tokio::test]
async fn a_wait_for_a_connection_does_not_count_a_freeze() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let queue = |client: &Client| {
        let (client, url) = (client.clone(), server.url("/"));
        tokio::spawn(async move { client.get(&url).await?.into_body().text().await })
    };
    let freeze = || async {
        // Queued by now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        freshpool::__simulate_freeze(Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(3200));
    };

    let held = client.get(&server.url("/bytes/10")).await.unwrap();
    let waiting = queue(&client);
    freeze().await;
    // The holder runs again too, and lets go a moment after the thaw.
    tokio::time::sleep(Duration::from_millis(300)).await;
    held.into_body().bytes().await.unwrap();
    let body = waiting.await.unwrap();
    assert_eq!(body.expect("served after the thaw"), "ok");
    // Its wait is recorded as running time: about 0.6 s of 3.8 s. (The
    // other wait recorded: the first request's, for its dial.)
    let stats = client.stats();
    let wait = stats.origins[0].pool_wait;
    assert_eq!(wait.count, 2, "{stats}");
    assert!(wait.max < Duration::from_millis(2000), "{stats}");

    let held = client.get(&server.url("/bytes/10")).await.unwrap();
    let started = tokio::time::Instant::now();
    let waiting = queue(&client);
    freeze().await;
    let err = waiting
        .await
        .unwrap()
        .expect_err("the holder never lets go");
    let waited = started.elapsed();
    assert_eq!(err.kind(), Kind::PoolTimeout, "{err}");
    let message = err.to_string();
    assert!(message.contains("timed out after 2.0s"), "{err}");
    assert!(message.contains("the process was frozen for 3."), "{err}");
    // 2 s of running time and the 3 s pause (and a little slack); not
    // stretched again and again.
    assert!(
        (Duration::from_millis(4500)..Duration::from_millis(7000)).contains(&waited),
        "{waited:?}: {err}"
    );
    let stats = client.stats();
    assert_eq!(stats.freezes_detected, 2, "{stats}");
    drop(held);

    // Served after a thaw before its timer ever fired: its wait is still
    // recorded as running time.
    let client = Client::builder()
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let held = client.get(&server.url("/bytes/10")).await.unwrap();
    let waiting = queue(&client);
    freeze().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    held.into_body().bytes().await.unwrap();
    assert_eq!(waiting.await.unwrap().expect("served"), "ok");
    let stats = client.stats();
    assert_eq!(stats.freezes_detected, 1, "{stats}");
    let wait = stats.origins[0].pool_wait;
    assert!(wait.max < Duration::from_millis(2000), "{stats}");
    drop(client);

    // Ended by the request's own `timeout` while it waits: the wait it
    // records is running time too (it was the whole 4 s).
    let client = Client::builder()
        .max_connections_per_host(1)
        .timeout(Some(Duration::from_secs(4)))
        .build()
        .unwrap();
    let held = client.get(&server.url("/bytes/10")).await.unwrap();
    let waiting = queue(&client);
    freeze().await;
    let err = waiting
        .await
        .unwrap()
        .expect_err("the holder never lets go");
    assert_eq!(err.kind(), Kind::Timeout, "{err}");
    let stats = client.stats();
    assert_eq!(stats.freezes_detected, 1, "{stats}");
    let wait = stats.origins[0].pool_wait;
    assert_eq!(wait.count, 2, "{stats}");
    assert!(wait.max < Duration::from_millis(2000), "{stats}");
    drop(held);
}
