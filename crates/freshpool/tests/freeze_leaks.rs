//! Leak reports across a process freeze (a serverless sandbox paused
//! between invocations). In a test binary of its own: a simulated freeze
//! stops the process-wide liveness thread, which other pools' heartbeats
//! consult.

use std::time::Duration;

mod common;
use common::logs::{leak_reports, logs, warning_after};

/// A freeze is time the holder did not run: a response held across one is
/// judged by the time the process ran without progress. Held 2 s, paused
/// 4 s, then 1 s more against a 5 s limit: not reported (the first sweep
/// after the thaw reported it, counting the pause). Past the limit of
/// running time it is, and that time includes the 2 s before the pause (a
/// count restarted at the thaw would never report a body leaked in one
/// invocation and held across many short ones). Once found by the
/// heartbeat, once by `on_resume` called at the thaw, as the docs advise
/// serverless users (it moved the last beat and hid the freeze).
/// (A current-thread runtime: blocking its thread pauses the client,
/// heartbeat and all, as a freeze does.)
#[tokio::test]
async fn a_response_held_across_a_freeze_counts_only_running_time() {
    let _ = logs();
    for on_resume in [false, true] {
        let (server, client, origin) = warning_after(Duration::from_secs(5)).await;
        let held = client.get(&server.url("/bytes/10")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        freshpool::__simulate_freeze(Duration::from_secs(4));
        std::thread::sleep(Duration::from_millis(4200));
        if on_resume {
            // (Before the heartbeat's overdue tick: nothing has yielded yet.)
            client.on_resume();
        }
        // The thaw's beats: the freeze is found, and a sweep or more runs.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let stats = client.stats();
        assert_eq!(stats.freezes_detected, 1, "on_resume {on_resume}: {stats}");
        let reported = stats.origin(&origin).unwrap().leaks_reported;
        assert_eq!(reported, 0, "on_resume {on_resume}: {stats}");
        let line = leak_reports(&format!("127.0.0.1:{}", server.addr().port()))
            .await
            .remove(0);
        assert!(line.contains("process freezes not counted"), "{line}");
        // "held for H by ..., with no progress seen for Q": H - Q is the
        // pause (about 4 s; a count restarted at the thaw would give 6.2 s).
        let paused =
            seconds_after(&line, "held for ") - seconds_after(&line, "no progress seen for ");
        assert!(
            (3.5..5.5).contains(&paused),
            "on_resume {on_resume}: {line}"
        );
        drop(held);
    }
}

/// The duration `fmt_duration` wrote right after `prefix` in `line`, in s.
fn seconds_after(line: &str, prefix: &str) -> f64 {
    let at = line
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} in {line}"));
    let token = line[at + prefix.len()..].split([' ', ',']).next().unwrap();
    match token.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().unwrap() / 1e3,
        None => token.trim_end_matches('s').parse().unwrap(),
    }
}
