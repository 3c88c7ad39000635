//! Measures what switching pooling off costs compared with freshpool's
//! freshness layers, in one run, over real TLS on loopback, including
//! "freezes" where the network silently drops every idle connection.
//! `cargo run --release -p freshpool --example freshness_cost`

use std::time::{Duration, Instant};

use freshpool::Client;
use freshpool_testkit::{ChaosProxy, ServerConfig, TestCa, TestServer};

const ROUNDS: usize = 20;
const PER_ROUND: usize = 10;

#[tokio::main]
async fn main() -> Result<(), freshpool::Error> {
    let ca = TestCa::new();
    let server = TestServer::start(ServerConfig {
        tls: Some(ServerConfig::tls_config(&ca, &[b"http/1.1"])),
        ..ServerConfig::default()
    })
    .await;
    let proxy = ChaosProxy::start(server.addr()).await;
    let url = format!("https://localhost:{}/", proxy.addr().port());
    let pooled = Client::builder()
        .add_root_certificate(ca.ca_cert_der())
        .validate_after_idle(Duration::from_millis(100))
        .build()?;
    let unpooled = Client::builder()
        .add_root_certificate(ca.ca_cert_der())
        .max_idle_per_host(0)
        .build()?;
    println!("{ROUNDS} rounds x {PER_ROUND} sequential HTTPS GETs; before each round the proxy drops every connection silently");
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>7} {:>12}",
        "strategy", "mean", "p50", "p99", "errors", "handshakes"
    );
    for (name, client) in [("freshpool (pooled)", &pooled), ("pooling off", &unpooled)] {
        let handshakes_before = server.stats().tls_handshakes();
        let mut lat = Vec::new();
        let mut errors = 0;
        for _ in 0..ROUNDS {
            tokio::time::sleep(Duration::from_millis(150)).await;
            proxy.kill_all_silently();
            for _ in 0..PER_ROUND {
                let t = Instant::now();
                match client.get(&url).await {
                    Ok(r) => {
                        r.into_body().bytes().await?;
                    }
                    Err(_) => errors += 1,
                }
                lat.push(t.elapsed());
            }
        }
        lat.sort();
        let mean = lat.iter().sum::<Duration>() / lat.len() as u32;
        let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        println!(
            "{:<22} {:>9.3?} {:>9.3?} {:>9.3?} {:>7} {:>12}",
            name,
            mean,
            q(0.5),
            q(0.99),
            errors,
            server.stats().tls_handshakes() - handshakes_before
        );
    }
    Ok(())
}
