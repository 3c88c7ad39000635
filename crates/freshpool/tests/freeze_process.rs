//! Issue 9, part 3: a real process freeze. A client runs in a child process;
//! the test SIGSTOPs it, lets the chaos proxy drop its connections (as a NAT
//! would while the process is frozen), SIGCONTs it, and checks that the next
//! requests (GETs and POSTs without idempotency keys) all succeed, none is
//! processed twice, and the child noticed the freeze.
//!
//! The child is this same test binary, re-run with `--ignored --exact
//! child_client` and the proxy URL in an environment variable.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use freshpool::Client;
use freshpool_testkit::{ChaosProxy, TestServer};

const CHILD_ENV: &str = "FRESHPOOL_FREEZE_CHILD_URL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_freeze_then_resume_loses_nothing() {
    let server = TestServer::http1().await;
    let proxy = ChaosProxy::start(server.addr()).await;
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_client",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, proxy.url(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let pid = child.id() as libc::pid_t;
    let mut child = ChildGuard(Some(child));
    let child = child.0.as_mut().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The harness may print "test child_client ... " before it.
            if let Some(at) = line.find("child:") {
                if lines_tx.send(line[at..].to_string()).is_err() {
                    return;
                }
            }
        }
    });
    let mut command = |cmd: &str| -> String {
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child answered")
    };

    let first = command("go 0");
    assert!(first.contains("errors=0"), "{first}");
    let open_before = proxy.stats().open_connections;
    assert!(open_before >= 1);

    // Freeze the process; meanwhile the network forgets its connections.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = proxy.kill_all_silently();
    assert!(killed >= 1);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);

    let second = command("go 1");
    let _ = command("quit");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the child quits");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(second.contains("errors=0"), "{second}");
    let freezes: u64 = second
        .split_whitespace()
        .find_map(|w| w.strip_prefix("freezes="))
        .and_then(|n| n.parse().ok())
        .expect("freezes field");
    assert!(
        freezes >= 1,
        "the child must notice it was frozen: {second}"
    );
    assert!(
        server.stats().duplicated_request_ids().is_empty(),
        "a POST was processed twice"
    );
}

/// Continues and kills the child when the test ends, however: a failure
/// between SIGSTOP and SIGCONT would leave it stopped for good.
struct ChildGuard(Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            if child.try_wait().ok().flatten().is_none() {
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The child's side: answers `go N` with 8 GETs and 8 POSTs, `quit` to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the SIGSTOP test's child process"]
async fn child_client() {
    let Ok(base) = std::env::var(CHILD_ENV) else {
        panic!("run by sigstop_freeze_then_resume_loses_nothing with {CHILD_ENV} set");
    };
    // Neither validation nor Expect: only freeze detection can save POSTs
    // (run with FRESHPOOL_NO_FREEZE=1 to see the 8 PossiblyProcessed POSTs
    // this test exists to prevent)
    // on connections that died while the process was stopped.
    let client = Client::builder()
        .validate_after_idle(Duration::from_secs(3600))
        .expect_continue(false)
        .freeze_threshold(
            std::env::var("FRESHPOOL_NO_FREEZE")
                .is_err()
                .then_some(Duration::from_secs(1)),
        )
        .build()
        .unwrap();
    let mut lines = BufReader::new(std::io::stdin()).lines();
    while let Some(Ok(line)) = lines.next() {
        let Some(round) = line.strip_prefix("go ") else {
            println!("child: bye after {line:?}");
            return;
        };
        let mut tasks = Vec::new();
        for i in 0..16 {
            let c = client.clone();
            let url = if i < 8 {
                format!("{base}/")
            } else {
                format!("{base}/echo")
            };
            let id = format!("{round}-{i}");
            tasks.push(tokio::spawn(async move {
                let req = if i < 8 {
                    http::Request::get(url).body(freshpool::RequestBody::empty())
                } else {
                    http::Request::post(url)
                        .header("x-request-id", id)
                        .body("body".into())
                };
                c.request(req.unwrap()).await?.into_body().bytes().await
            }));
        }
        let mut errors = Vec::new();
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                errors.push(format!("{:?}", e.kind()));
            }
        }
        let stats = client.stats();
        println!(
            "child: round={round} errors={} kinds={errors:?} freezes={} created={}",
            errors.len(),
            stats.freezes_detected,
            stats.created()
        );
    }
}
