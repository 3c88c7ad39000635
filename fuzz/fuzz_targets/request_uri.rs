//! Request URIs (and so the pool key built from them): `Client::get` with
//! any string returns a response or a typed error, never panics. The
//! resolver answers nothing, so no packet leaves the process.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use freshpool::{Client, Kind, Resolve, ResolveFuture};
use libfuzzer_sys::fuzz_target;

struct Nowhere;

impl Resolve for Nowhere {
    fn resolve(&self, host: &str, _port: u16) -> ResolveFuture {
        let msg = format!("{host} does not resolve (fuzzing)");
        Box::pin(async move { Err(std::io::Error::new(std::io::ErrorKind::NotFound, msg)) })
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|uri: &str| {
    let client = Client::builder()
        .resolver(Nowhere)
        .proxy_from_env(false)
        .pool_timeout(Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(200))
        .build()
        .expect("valid config");
    let result = runtime()
        .block_on(async { tokio::time::timeout(Duration::from_secs(2), client.get(uri)).await });
    match result {
        Err(_) => panic!("GET {uri:?} hung"),
        Ok(Ok(_)) => panic!("GET {uri:?} got a response from nowhere"),
        Ok(Err(e)) => assert!(
            matches!(
                e.kind(),
                Kind::InvalidUri | Kind::Connect | Kind::ConnectTimeout | Kind::Tls
            ),
            "GET {uri:?}: unexpected {:?}: {e}",
            e.kind()
        ),
    }
    // The pool's books balance after the failed attempt.
    let stats = client.stats();
    assert_eq!(stats.open_connections, 0, "GET {uri:?}: {stats}");
});
