//! `freshpool bench --serve`: the scenario servers, standalone.

use std::io::Write;
use std::time::Duration;

use freshpool_testkit::{ChaosProxy, Protocol, TestCa};

use super::scenarios::{h1_server, tls_server, STALE_IDLE};

/// Starts the servers, prints one line per server and the CA path, then
/// serves until killed (Ctrl-C) or until `serve_for` elapsed.
pub async fn serve(serve_for: Option<Duration>) -> Result<(), String> {
    // Watched before the CA file is written: a supervisor may signal as
    // soon as it reads the `ca` line.
    // (`signal()` registers at once; `ctrl_c()` only when first polled.)
    #[cfg(unix)]
    let (mut terminate, mut interrupt) = {
        use tokio::signal::unix::{signal, SignalKind};
        let watch =
            |kind, name: &str| signal(kind).map_err(|e| format!("cannot watch for {name}: {e}"));
        (
            watch(SignalKind::terminate(), "SIGTERM")?,
            watch(SignalKind::interrupt(), "SIGINT")?,
        )
    };
    let ca = TestCa::new();
    let http1 = h1_server(None).await;
    let https = tls_server(&ca, Protocol::Auto).await;
    let stale = h1_server(Some(STALE_IDLE)).await;
    let chaos = ChaosProxy::start(http1.addr()).await;
    let pem_path =
        std::env::temp_dir().join(format!("freshpool-bench-ca-{}.pem", std::process::id()));
    std::fs::write(&pem_path, ca.ca_cert_pem())
        .map_err(|e| format!("cannot write the CA PEM to {}: {e}", pem_path.display()))?;
    let mut out = std::io::stdout().lock();
    let lines = [
        format!("http1 {}", http1.url("").trim_end_matches('/')),
        format!("https {}", https.url("").trim_end_matches('/')),
        format!("chaos {}", chaos.url("").trim_end_matches('/')),
        format!("stale {}", stale.url("").trim_end_matches('/')),
        format!("ca {}", pem_path.display()),
    ];
    for line in lines {
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    drop(out);
    let until = async {
        match serve_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    // (SIGTERM too, as `kill` and service managers send: the CA file was
    // left behind in the temp directory.)
    #[cfg(unix)]
    let stopped = async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    #[cfg(not(unix))]
    let stopped = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    tokio::select! {
        _ = until => {}
        _ = stopped => {}
    }
    let _ = std::fs::remove_file(&pem_path);
    Ok(())
}
