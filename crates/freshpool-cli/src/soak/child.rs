//! The soak's other process: the test server behind the chaos proxy and
//! the fault injector (`soak --serve`), and the parent's handle on it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use freshpool_testkit::{ChaosProxy, ServerConfig, TestServer};

use super::mix::Rng;
use super::SoakArgs;

pub(super) const FAULTS: [&str; 6] = [
    "kill_all_silently",
    "idle_close",
    "truncate_next_response",
    "garbage_next_response",
    "blackhole",
    "server_close_all",
];

/// The child process holding the server, the proxy and the fault injector.
pub(super) struct Child {
    proc: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    pub(super) port: u16,
}

impl Child {
    pub(super) async fn spawn(
        seed: u64,
        fault_every: Duration,
        http2: bool,
    ) -> Result<Child, String> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let mut command = tokio::process::Command::new(exe);
        // Its own process group: a terminal's Ctrl-C (SIGINT to the whole
        // foreground group) then reaches the soak alone, which stops the
        // load and still asks this process for its report. (In the soak's
        // group it died at once, and the soak could only fail.) It ends
        // when the soak does: its stdin closes.
        #[cfg(unix)]
        command.process_group(0);
        let mut proc = command
            .args([
                "soak".to_string(),
                "--serve".to_string(),
                "--seed".to_string(),
                seed.to_string(),
                "--fault-every".to_string(),
                format!("{}ms", fault_every.as_millis()),
            ])
            .args(http2.then_some("--http2"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the server process: {e}"))?;
        let stdin = proc.stdin.take().ok_or("no stdin for the server process")?;
        let stdout = proc
            .stdout
            .take()
            .ok_or("no stdout for the server process")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .map_err(|_| "the server process did not start in 20 s".to_string())?
            .map_err(|e| format!("reading the server process: {e}"))?
            .ok_or("the server process exited before it was ready")?;
        let port = ready
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| format!("unexpected first line from the server process: {ready:?}"))?;
        Ok(Child {
            proc,
            stdin,
            lines,
            port,
        })
    }

    pub(super) async fn send(&mut self, line: &str) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| format!("writing to the server process: {e}"))?;
        self.stdin
            .flush()
            .await
            .map_err(|e| format!("writing to the server process: {e}"))
    }

    async fn expect(&mut self, prefix: &str) -> Result<serde_json::Value, String> {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
                .await
                .map_err(|_| format!("no {prefix:?} answer from the server process in 20 s"))?
                .map_err(|e| format!("reading the server process: {e}"))?
                .ok_or("the server process exited")?;
            if let Some(json) = line.strip_prefix(prefix) {
                return serde_json::from_str(json)
                    .map_err(|e| format!("bad answer from the server process: {e}"));
            }
        }
    }

    pub(super) async fn stats(&mut self) -> Result<serde_json::Value, String> {
        self.send("STATS").await?;
        self.expect("STATS ").await
    }

    pub(super) async fn report(mut self) -> Result<serde_json::Value, String> {
        self.send("REPORT").await?;
        let report = self.expect("REPORT ").await?;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.proc.wait()).await;
        Ok(report)
    }
}

/// `soak --serve`: the server, the proxy and the fault injector, driven
/// by the parent over stdin (`FAULTS ON`, `FAULTS OFF`, `STATS`, `REPORT`).
pub(super) async fn serve(args: SoakArgs) -> Result<(), String> {
    use tokio::io::AsyncBufReadExt;
    let seed = args.seed.unwrap_or(1);
    let server = Arc::new(
        TestServer::start(ServerConfig {
            // The server also closes idle keep-alive connections on its own.
            idle_timeout: Some(Duration::from_secs(4)),
            protocol: if args.http2 {
                freshpool_testkit::Protocol::Http2
            } else {
                freshpool_testkit::Protocol::Http1
            },
            // A handful of streams per connection, so HTTP/2 also opens
            // several connections.
            max_concurrent_streams: args.http2.then_some(8),
            ..ServerConfig::default()
        })
        .await,
    );
    let proxy = Arc::new(ChaosProxy::start(server.addr()).await);
    println!("READY {}", proxy.addr().port());
    let faults = Arc::new(Mutex::new(BTreeMap::<&'static str, u64>::new()));
    let mut injector: Option<tokio::task::JoinHandle<()>> = None;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match line.trim() {
            "FAULTS ON" if injector.is_none() => {
                injector = Some(tokio::spawn(inject(
                    proxy.clone(),
                    server.clone(),
                    faults.clone(),
                    args.fault_every,
                    seed,
                )));
            }
            "FAULTS OFF" => {
                // Stopped at once, even mid-sleep: the parent's next
                // command (`STATS`) waits only so long for its answer, and
                // a long `--fault-every` sleeps longer. A fault cut short
                // is not counted; the settings it left are undone below.
                if let Some(task) = injector.take() {
                    task.abort();
                    let _ = task.await;
                }
                proxy.set_idle_close(None);
                proxy.set_blackhole(false);
            }
            "STATS" => println!(
                "STATS {}",
                serde_json::json!({
                    "proxy_open": proxy.stats().open_connections,
                    "server_open": server.stats().open_connections(),
                })
            ),
            "REPORT" => {
                let faults = faults.lock().unwrap_or_else(|p| p.into_inner()).clone();
                println!(
                    "REPORT {}",
                    serde_json::json!({
                        "duplicated": server.stats().duplicated_request_ids(),
                        "server_requests": server.stats().requests(),
                        "faults": faults,
                        "proxy_accepted": proxy.stats().connections_accepted,
                        "proxy_resets": proxy.stats().resets_sent,
                    })
                );
                return Ok(());
            }
            _ => {}
        }
    }
    Ok(())
}

/// Injects one random fault about every `every` until aborted.
async fn inject(
    proxy: Arc<ChaosProxy>,
    server: Arc<TestServer>,
    faults: Arc<Mutex<BTreeMap<&'static str, u64>>>,
    every: Duration,
    seed: u64,
) {
    let every = every.max(Duration::from_millis(50));
    let mut rng = Rng(seed ^ 0xFA17);
    let mut idle_close_on = false;
    // Let the pool warm up before the first fault.
    tokio::time::sleep(every).await;
    loop {
        let ms = every.as_millis() as u64;
        tokio::time::sleep(rng.millis(ms / 2, ms * 3 / 2)).await;
        let fault = FAULTS[rng.below(FAULTS.len() as u64) as usize];
        // (Counted as faults: what was injected. Turning idle closes off
        // injects nothing.)
        let mut injected = true;
        match fault {
            "kill_all_silently" => {
                proxy.kill_all_silently();
            }
            "idle_close" => {
                idle_close_on = !idle_close_on;
                proxy.set_idle_close(idle_close_on.then(|| rng.millis(100, 1500)));
                injected = idle_close_on;
            }
            "truncate_next_response" => {
                proxy.truncate_next_response(rng.below(120) as usize);
            }
            "garbage_next_response" => {
                let bytes: &[u8] = match rng.below(3) {
                    0 => b"garbage\r\n\r\n",
                    1 => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
                    _ => b"\x00\x01\x02 not http at all",
                };
                proxy.garbage_next_response(bytes.to_vec());
            }
            "blackhole" => {
                proxy.set_blackhole(true);
                tokio::time::sleep(rng.millis(100, 800)).await;
                proxy.set_blackhole(false);
            }
            _ => server.close_all(),
        }
        if injected {
            *faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(fault)
                .or_default() += 1;
        }
    }
}
