//! End-to-end tests of the `freshpool` binary against loopback servers.

use std::process::Output;
use std::time::Duration;

use freshpool_testkit::{Protocol, ServerConfig, TestCa, TestServer};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_freshpool");

/// The `freshpool` binary, without the environment's proxies: `load` and
/// `probe` follow them, as users expect, but the tests' servers are on
/// 127.0.0.1, and a proxy set on the machine that runs them (without
/// NO_PROXY for loopback) took their requests. (A test about proxies sets
/// its own.)
fn binary() -> Command {
    let mut command = Command::new(BIN);
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        command.env_remove(var);
    }
    command
}

/// Runs the binary with `args`, bounded by `limit`.
async fn freshpool(args: &[&str], limit: Duration) -> Output {
    let child = binary().args(args).kill_on_drop(true).output();
    tokio::time::timeout(limit, child)
        .await
        .unwrap_or_else(|_| panic!("freshpool {args:?} took longer than {limit:?}"))
        .expect("run the freshpool binary")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first number on the line that starts with `label` (after trimming).
fn number_after(text: &str, label: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no '{label}' line in:\n{text}"));
    line.trim_start()[label.len()..]
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no number in '{line}'"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_finds_a_two_second_idle_timeout() {
    let server = TestServer::start(ServerConfig {
        idle_timeout: Some(Duration::from_secs(2)),
        ..ServerConfig::default()
    })
    .await;
    let out = freshpool(
        &["probe", &server.url("/"), "--max-wait", "8s"],
        Duration::from_secs(60),
    )
    .await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let idle = number_after(&text, "idle timeout");
    assert!(
        (1.6..=2.4).contains(&idle),
        "idle timeout {idle} s, want 2 s ±20%:\n{text}"
    );
    assert!(text.contains("HTTP/1.1"), "{text}");
    assert!(
        text.contains(".idle_timeout(Some("),
        "a recommendation: {text}"
    );
    for step in ["dns", "connect", "first byte"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(step)),
            "no {step} time:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_over_tls_reports_http2_and_its_stream_limit() {
    let ca = TestCa::new();
    let server = TestServer::start(ServerConfig {
        protocol: Protocol::Auto,
        tls: Some(ServerConfig::tls_config(&ca, &[b"h2", b"http/1.1"])),
        max_concurrent_streams: Some(37),
        idle_timeout: Some(Duration::from_secs(1)),
        ..ServerConfig::default()
    })
    .await;
    let dir = tempdir("probe-tls");
    let pem = dir.join("ca.pem");
    std::fs::write(&pem, ca.ca_cert_pem()).unwrap();
    let out = freshpool(
        &[
            "probe",
            &server.url("/"),
            "--max-wait",
            "3s",
            "--cacert",
            pem.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    )
    .await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("ALPN h2") && text.contains("HTTP/2"),
        "{text}"
    );
    assert_eq!(
        number_after(&text, "h2 max concurrent streams"),
        37.0,
        "{text}"
    );
    let idle = number_after(&text, "idle timeout");
    // (Late timers on a loaded machine only lengthen what it measures.)
    assert!(
        (0.8..=1.5).contains(&idle),
        "idle timeout {idle} s, want 1 s:\n{text}"
    );
    // Without the CA the certificate is rejected, in one line.
    let out = freshpool(&["probe", &server.url("/")], Duration::from_secs(30)).await;
    assert!(!out.status.success());
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
}

/// A raw HTTP/1 server on 127.0.0.1 that answers each connection's first
/// request with `first`, then closes the connection if `close` is set;
/// later requests on it get `later`, or no answer at all (`None`).
fn scripted_server(
    first: &'static [u8],
    close: bool,
    later: Option<&'static [u8]>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut answered = false;
                let mut seen = Vec::new();
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let reply = if answered { later } else { Some(first) };
                        answered = true;
                        let Some(reply) = reply else { continue };
                        if stream.write_all(reply).await.is_err() || close {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, server)
}

/// A probe's verdict for a server that serves one request per
/// connection: no idle timeout, and no pooling advised.
fn says_it_never_reuses(text: &str) {
    assert!(text.contains("reusing the connection failed"), "{text}");
    assert!(text.contains(".max_idle_per_host(0)"), "{text}");
    assert!(!text.contains(".idle_timeout("), "{text}");
}

/// Probes `addr`; the run must succeed. Its output.
async fn probe_ok(addr: std::net::SocketAddr) -> String {
    let out = freshpool(
        &["probe", &format!("http://{addr}/"), "--max-wait", "2s"],
        Duration::from_secs(60),
    )
    .await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    text
}

/// A server whose connections answer their first request only (later ones
/// get garbage, and the connection stays open): the probe says reuse fails
/// and recommends no pooling. (It bisected towards zero for ~90 s and
/// reported an idle timeout of 1 ms, with settings to match.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_of_a_server_that_never_reuses_says_so() {
    let (addr, server) = scripted_server(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        false,
        Some(b"garbage\r\n\r\n"),
    );
    says_it_never_reuses(&probe_ok(addr).await);
    server.abort();
}

/// The same for a server that leaves a second request unanswered, the
/// connection open: the look right after a response now counts that as no
/// reuse (it bisected from zero, 10 s a step, towards "1 ms" again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_of_a_server_silent_to_a_second_request_says_it_never_reuses() {
    let (addr, server) = scripted_server(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        false,
        None,
    );
    says_it_never_reuses(&probe_ok(addr).await);
    server.abort();
}

/// An HTTP/1.0 server that keeps connections says so in any of its
/// `Connection` lines: every line counts, as hyper reads them (the probe
/// read the first only, and said "no keep-alive").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reads_every_connection_line() {
    const KEEPS: &[u8] =
        b"HTTP/1.0 200 OK\r\nconnection: TE\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok";
    let (addr, server) = scripted_server(KEEPS, false, Some(KEEPS));
    let text = probe_ok(addr).await;
    assert!(text.contains("http version  HTTP/1.0"), "{text}");
    assert!(text.contains("keep-alive    yes"), "{text}");
    server.abort();
}

/// An HTTP/1.0 server without `Connection: keep-alive` closes after each
/// response: no keep-alive, and the probe says so (it read it as
/// HTTP/1.1 keeping connections, then failed with exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_of_an_http10_server_says_it_keeps_no_connections() {
    let (addr, server) = scripted_server(
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        true,
        None,
    );
    let text = probe_ok(addr).await;
    assert!(text.contains("http version  HTTP/1.0"), "{text}");
    assert!(text.contains("keep-alive    no: HTTP/1.0"), "{text}");
    assert!(text.contains(".max_idle_per_host(0)"), "{text}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_reports_the_request_count_statuses_and_pool_stats() {
    let server = TestServer::http1().await;
    let url = server.url("/");
    let out = freshpool(
        &["load", &url, "-n", "300", "-c", "8"],
        Duration::from_secs(60),
    )
    .await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert_eq!(number_after(&text, "Requests:"), 300.0, "{text}");
    assert!(text.contains("ok 300, 4xx/5xx 0, errors 0"), "{text}");
    assert!(text.contains("200: 300"), "status codes: {text}");
    assert!(text.contains("p99"), "{text}");
    assert_eq!(server.stats().requests(), 300);
    let created = number_after(&text, "connections created");
    assert!(
        (1.0..=8.0).contains(&created),
        "at most -c connections: {text}"
    );
    // POST with headers and a body, bounded by duration.
    let echo = server.url("/echo");
    let out = freshpool(
        &[
            "load",
            &echo,
            "-d",
            "1s",
            "-c",
            "2",
            "-m",
            "post",
            "-H",
            "x-test: 1",
            "--body",
            "hello",
        ],
        Duration::from_secs(30),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(number_after(&stdout(&out), "Requests:") >= 1.0);
}

/// `-d` ends the run at its deadline, also for requests in flight (the
/// first one, sent alone, included): they are stopped there and reported
/// as cut off, not waited out to `--timeout`. (It used to run until every
/// request in flight had finished: against a server that answers after
/// 30 s, `-d 1s` took 30 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_stops_requests_in_flight_when_its_duration_runs_out() {
    let server = TestServer::http1().await;
    let started = std::time::Instant::now();
    let out = freshpool(
        &[
            "load",
            &server.url("/delay/30000"),
            "-d",
            "1s",
            "-c",
            "3",
            "--timeout",
            "60s",
        ],
        Duration::from_secs(25),
    )
    .await;
    let took = started.elapsed();
    let text = stdout(&out);
    assert!(took < Duration::from_secs(20), "ran {took:?}:\n{text}");
    // The first request went alone and was cut off: nothing was answered,
    // nothing failed.
    assert_eq!(number_after(&text, "Cut off:"), 1.0, "{text}");
    assert!(text.contains("ok 0, 4xx/5xx 0, errors 0"), "{text}");
    assert!(text.contains("no answered request"), "{text}");
    // Nothing answered in the whole run is no success.
    assert!(!out.status.success(), "{text}");
    assert!(
        stderr(&out).contains("no request was answered within -d (1 cut off in flight)"),
        "{}",
        stderr(&out)
    );
    // Answered requests in a run cut short are counted as usual.
    let out = freshpool(
        &["load", &server.url("/delay/50"), "-d", "1s", "-c", "4"],
        Duration::from_secs(25),
    )
    .await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let answered = number_after(&text, "Requests:");
    assert!(answered >= 4.0, "{text}");
    assert!(number_after(&text, "p50") >= 50.0, "{text}");
    // Exact extremes: no request took less than the server's 50 ms.
    assert!(number_after(&text, "min") >= 50.0, "{text}");
}

/// Answers with 4xx/5xx statuses are no success: counted apart from
/// "ok", and the exit status says the run failed (it said "ok 20" and
/// exited 0 for 20 answers of 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_counts_error_statuses_apart_and_fails() {
    let server = TestServer::http1().await;
    let out = freshpool(
        &["load", &server.url("/status/503"), "-n", "20", "-c", "2"],
        Duration::from_secs(60),
    )
    .await;
    let text = stdout(&out);
    assert!(text.contains("ok 0, 4xx/5xx 20, errors 0"), "{text}");
    assert!(text.contains("503: 20"), "{text}");
    assert!(!out.status.success(), "{text}");
    assert!(
        stderr(&out).contains("20 of 20 requests did not succeed"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_and_a_nonzero_exit() {
    let cases: [&[&str]; 7] = [
        &["probe", "not a url"],
        // (`http` parses these ports; they used to be probed on port 80.)
        &["probe", "http://127.0.0.1:65536/"],
        &["load", "http://127.0.0.1:8o80/", "-n", "1"],
        &["load", "ftp://example.com/"],
        &["load", "http://127.0.0.1:1/", "-n", "5"],
        &["probe", "http://127.0.0.1:1/"],
        &["load", "http://127.0.0.1:1/", "-d", "soon"],
    ];
    for args in cases {
        let out = freshpool(args, Duration::from_secs(30)).await;
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(!err.trim().is_empty(), "{args:?}: no message");
        if args[0] != "load" || args.len() < 4 || args[3] != "soon" {
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        }
        if args[1].contains("65536") || args[1].contains("8o80") {
            assert!(err.contains("is not a number"), "{args:?}: {err}");
        }
    }
    let out = freshpool(&["bench", "--scenario", "nope"], Duration::from_secs(30)).await;
    assert_eq!(out.status.code(), Some(2), "clap rejects it");
    // No time at all is refused up front (`-d 0` ran nothing and reported
    // "no request was answered", as if the server had failed).
    for args in [
        &["load", "http://127.0.0.1:1/", "-d", "0s"][..],
        &["bench", "--serve", "--serve-for", "0"][..],
    ] {
        let out = freshpool(args, Duration::from_secs(30)).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains("no time at all"), "{}", stderr(&out));
    }
    // (`--max-wait 0` probed one reuse with no pause: "no idle close
    // within 0 s".)
    for wait in ["0", "100ms", "2h"] {
        let out = freshpool(
            &["probe", "http://127.0.0.1:1/", "--max-wait", wait],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "--max-wait {wait}");
        assert!(stderr(&out).contains("max-wait"), "{}", stderr(&out));
    }
    // A zero `--timeout` got the library's builder words ("use None to
    // switch it off"), which a CLI user cannot act on.
    for timeout in ["0", "0ms", "9000h"] {
        let out = freshpool(
            &["load", "http://127.0.0.1:1/", "--timeout", timeout],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "--timeout {timeout}");
        let err = stderr(&out);
        assert!(err.contains("--timeout must be more than 0"), "{err}");
        assert!(!err.contains("None"), "{err}");
    }
}

/// The summary shows no password from the URL (it printed it whole), and
/// the concurrency actually used: `-n 3 -c 50` has 2 in flight (the first
/// request goes alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_summary_hides_the_password_and_says_the_real_concurrency() {
    let server = TestServer::http1().await;
    let url = format!("http://alice:hunter2@{}/", server.addr());
    let out = freshpool(
        &["load", &url, "-n", "3", "-c", "50"],
        Duration::from_secs(60),
    )
    .await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("alice:***@"), "{text}");
    assert_eq!(number_after(&text, "Concurrency:"), 2.0, "{text}");
    // Without -n, of the default 200 requests (it said 300).
    let out = freshpool(&["load", &url, "-c", "300"], Duration::from_secs(60)).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert_eq!(number_after(&text, "Concurrency:"), 199.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_serve_prints_its_servers_and_serves() {
    let mut child = binary()
        .args(["bench", "--serve", "--serve-for", "20s"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut found = std::collections::HashMap::new();
    while found.len() < 5 {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("serve prints its servers")
            .unwrap()
            .expect("a line");
        let (name, value) = line.split_once(' ').expect("NAME VALUE");
        found.insert(name.to_string(), value.to_string());
    }
    let pem = std::fs::read(&found["ca"]).expect("the CA PEM exists");
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let client = freshpool::Client::builder()
        .add_root_certificate(der)
        .proxy_from_env(false)
        .build()
        .unwrap();
    for name in ["http1", "https", "chaos", "stale"] {
        let url = format!("{}/", found[name]);
        let resp = client
            .get(&url)
            .await
            .unwrap_or_else(|e| panic!("{name} {url}: {e}"));
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(resp.into_body().text().await.unwrap(), "ok");
    }
    assert!(found["https"].starts_with("https://localhost:"));
    // SIGTERM (what `kill` sends) ends it and removes its CA file (only
    // Ctrl-C and --serve-for did; the file stayed in the temp directory).
    let pid = child.id().expect("running");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("SIGTERM ends --serve")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        !std::path::Path::new(&found["ca"]).exists(),
        "the CA file is removed"
    );
}

/// A fresh directory under the target dir.
pub fn tempdir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("freshpool-cli-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An unreachable proxy is one line too (it printed a whole summary of
/// identical errors).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_through_an_unreachable_proxy_is_one_line() {
    // Not a loopback host, which no proxy from the environment takes: the
    // name goes to the proxy unresolved (and the proxy is not there).
    let child = binary()
        .args(["load", "http://origin.invalid:8080/", "-n", "3"])
        .env("http_proxy", "http://127.0.0.1:1")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), child)
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot reach"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(stdout(&out).trim().is_empty(), "{}", stdout(&out));
}

/// A request that cannot be sent at all (its Content-Length disagrees
/// with --body) is one line and a quick exit: the first request alone
/// tells. It ran for all of -d, every worker spinning on an error that came
/// back at once, deaf to Ctrl-C (its task never got a thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_of_a_request_that_cannot_be_sent_is_one_line() {
    let server = TestServer::http1().await;
    let out = freshpool(
        &[
            "load",
            &server.url("/echo"),
            "-m",
            "POST",
            "--body",
            "hi",
            "-H",
            "Content-Length: 10",
            "-d",
            "10m",
        ],
        Duration::from_secs(30),
    )
    .await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot send this request"), "{err}");
    assert!(err.contains("Content-Length"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(server.stats().requests(), 0, "nothing was sent");
}

/// Ctrl-C stops a run and still prints its summary, with what was in
/// flight cut off; the exit status says it was interrupted. (It printed
/// nothing: a long run's results were lost.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_interrupted_by_ctrl_c_prints_its_summary() {
    let server = TestServer::http1().await;
    let child = binary()
        .args(["load", &server.url("/delay/200"), "-d", "60s", "-c", "4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().expect("running");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the run stops at Ctrl-C")
        .unwrap();
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("Summary:"), "{text}\n{}", stderr(&out));
    assert!(number_after(&text, "Requests:") >= 4.0, "{text}");
    assert!(number_after(&text, "Cut off:") >= 1.0, "{text}");
    assert!(
        stderr(&out).contains("interrupted (Ctrl-C)"),
        "{}",
        stderr(&out)
    );
}

/// A target that takes connections and never answers stops the run at
/// its first request, in one line: every request waited out its
/// `--timeout` (20,000 of them at 64 at a time: most of an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_against_a_server_that_never_answers_stops_at_once() {
    let server = TestServer::http1().await;
    let out = freshpool(
        &[
            "load",
            &server.url("/delay/30000"),
            "-n",
            "20000",
            "-c",
            "64",
            "--timeout",
            "500ms",
        ],
        Duration::from_secs(20),
    )
    .await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("did not answer the first request"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Output piped into a reader that stopped (`freshpool load URL | head
/// -1`): the process ends quietly with SIGPIPE's status, as other Unix
/// tools do. `print!` panicked on the closed pipe ("failed printing to
/// stdout: Broken pipe").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_the_run_quietly() {
    let server = TestServer::http1().await;
    let mut child = binary()
        .args(["load", &server.url("/"), "-n", "20"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The reader goes before the summary is printed.
    drop(child.stdout.take());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
}

/// A first request whose head comes but whose body outlasts `--timeout`
/// does not stop the run: that target answers, and the run measures it
/// (every request then fails its timeout, and the summary says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_measures_a_target_whose_bodies_outlast_the_timeout() {
    let server = TestServer::http1().await;
    let out = freshpool(
        &[
            "load",
            &server.url("/stall/3000"),
            "-n",
            "3",
            "-c",
            "1",
            "--timeout",
            "300ms",
        ],
        Duration::from_secs(30),
    )
    .await;
    let err = stderr(&out);
    assert!(!err.contains("did not answer the first request"), "{err}");
    let text = stdout(&out);
    assert!(text.contains("errors 3"), "{text}\n{err}");
}

/// `load -c` past the open-file limit says so before the run (its
/// connections past the limit failed as the target's errors, unexplained).
/// The child gets a hard limit of 100 (the binary raises its soft limit to
/// the hard one, as Go does); `-c 200` warns, `-c 10` does not.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_past_the_open_file_limit_warns() {
    let server = TestServer::http1().await;
    let run = |concurrency: &'static str, requests: &'static str| {
        let mut command = binary();
        command
            .args(["load", &server.url("/"), "-c", concurrency, "-n", requests])
            .kill_on_drop(true);
        // SAFETY: only setrlimit between fork and exec (async-signal-safe).
        unsafe {
            command.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 100,
                    rlim_max: 100,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        async move {
            tokio::time::timeout(Duration::from_secs(60), command.output())
                .await
                .expect("load ends")
                .expect("load runs")
        }
    };
    let out = run("200", "201").await;
    let err = stderr(&out);
    assert!(
        err.contains("warning: -c 200 may need 264 file descriptors")
            && err.contains("more than this process may open (100,"),
        "{err}"
    );
    let out = run("10", "50").await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}
