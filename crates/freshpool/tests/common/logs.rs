//! Logs captured in a test binary, and the leak reports among them.
#![allow(dead_code)] // (Not every test file that declares `mod common;` uses them.)

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use freshpool::Client;
use freshpool_testkit::TestServer;

/// Everything logged at WARN and above in this test binary.
pub fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Capture(writer.clone()))
            .init();
        buf
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);
impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn log_lines_with(needle: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// A server, a client that reports leases without progress for `limit`,
/// and the origin's name in its stats.
pub async fn warning_after(limit: Duration) -> (TestServer, Client, String) {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .lease_warn_after(Some(limit))
        .build()
        .unwrap();
    let origin = format!("http://127.0.0.1:{}", server.addr().port());
    (server, client, origin)
}

/// The leak reports logged for `origin` (`host:port`), once there is one.
pub async fn leak_reports(origin: &str) -> Vec<String> {
    let reports = || -> Vec<String> {
        log_lines_with(origin)
            .into_iter()
            .filter(|l| l.contains("has been held"))
            .collect()
    };
    freshpool_testkit::eventually("a leak reported", || !reports().is_empty()).await;
    reports()
}
