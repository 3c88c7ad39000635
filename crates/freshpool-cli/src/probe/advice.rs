//! Recommended freshpool settings, each with its reason.

use std::fmt::Write as _;
use std::time::Duration;

use super::Idle;

/// What the probe learned of the server's concurrency per connection.
pub(super) enum Streams {
    /// HTTP/1.x: one request at a time.
    Http1,
    /// HTTP/2 with this `SETTINGS_MAX_CONCURRENT_STREAMS` (`None`: not
    /// advertised).
    Http2(Option<u32>),
    /// HTTP/2, its SETTINGS not read.
    Http2Unknown,
}

/// The settings that match what the probe measured.
pub(super) fn recommend(
    keeps: bool,
    hint: Option<Duration>,
    observed: Option<Duration>,
    idle: &Idle,
    streams: Streams,
    max_wait: Duration,
) -> String {
    let mut o = String::from("recommended freshpool settings:\n");
    let mut item = |code: String, why: String| {
        let _ = writeln!(o, "  {code}\n      {why}");
    };
    if let Idle::NoReuse(_) = idle {
        item(
            ".max_idle_per_host(0)".into(),
            "a second request on a connection failed, even right after the first: pooling cannot help".into(),
        );
        return o;
    }
    if !keeps {
        item(
            ".max_idle_per_host(0)".into(),
            "the server closes the connection after each response: pooling cannot help".into(),
        );
        return o;
    }
    if let Some(t) = observed {
        let margin = (t / 5)
            .clamp(Duration::from_millis(50), Duration::from_secs(5))
            .min(t / 2);
        // (At least 1 ms: `idle_timeout` of zero is refused by build().)
        let idle_ms = (t - margin).as_millis().max(1);
        item(
            format!(".idle_timeout(Some(Duration::from_millis({idle_ms})))"),
            format!(
                "the server closes connections idle for ~{:.2} s; expiring them {} ms earlier means a \
                 request never races the server's FIN",
                t.as_secs_f64(),
                margin.as_millis()
            ),
        );
        if t <= Duration::from_secs(4) {
            item(
                format!(".validate_after_idle(Duration::from_millis({}))", idle_ms / 2),
                "the default (2 s) is too close to the server's timeout: check sockets idle for half of it".into(),
            );
        }
        if let Some(h) = hint {
            if h > t + Duration::from_millis(500) {
                item(
                    "(no setting: the Keep-Alive hint overstates the timeout)".into(),
                    format!("the server announces {} s but closed after {:.2} s; trust idle_timeout above", h.as_secs(), t.as_secs_f64()),
                );
            }
        }
    } else if let Some(h) = hint {
        item(
            "(none: the default honours Keep-Alive)".into(),
            format!("the server announces timeout={} s; freshpool expires connections keep_alive_margin (500 ms) before it", h.as_secs()),
        );
    } else if matches!(idle, Idle::Beyond(_)) {
        let why = if max_wait >= Duration::from_secs(55) {
            "no idle close seen: the default idle_timeout (55 s) is safe".to_string()
        } else {
            format!(
                "no idle close within {:.0} s; the default idle_timeout (55 s) is longer than that: probe \
                 with --max-wait 60s to be sure (validate_after_idle checks long-idle sockets meanwhile)",
                max_wait.as_secs_f64()
            )
        };
        item("(keep the default idle_timeout)".into(), why);
    }
    match streams {
        Streams::Http2(Some(n)) => item(
            ".max_connections_per_host(4)".into(),
            format!(
                "HTTP/2: each connection carries up to {n} concurrent requests (SETTINGS_MAX_CONCURRENT_STREAMS), \
                 so 4 connections serve {} in flight; freshpool opens another only when streams run out",
                4 * n as u64
            ),
        ),
        Streams::Http2(None) => item(
            ".max_connections_per_host(2)".into(),
            "HTTP/2 without a stream limit: one connection multiplexes everything; a second one spreads load".into(),
        ),
        Streams::Http2Unknown => item(
            "(keep the default max_connections_per_host)".into(),
            "HTTP/2, its stream limit not read: freshpool opens another connection only when a \
             connection's streams run out"
                .into(),
        ),
        Streams::Http1 => item(
            ".max_connections_per_host(<peak concurrency>)".into(),
            "HTTP/1.1 carries one request at a time per connection: set it to your peak concurrency to \
             this host (default 64), so bursts wait briefly instead of opening unbounded connections"
                .into(),
        ),
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP/2 server whose SETTINGS could not be read is still HTTP/2:
    /// no HTTP/1.1 advice (it was given, "one request at a time").
    #[test]
    fn http2_with_its_stream_limit_unread_gets_no_http1_advice() {
        let idle = Idle::Beyond(Duration::from_secs(60));
        let wait = Duration::from_secs(60);
        let unknown = recommend(true, None, None, &idle, Streams::Http2Unknown, wait);
        assert!(!unknown.contains("HTTP/1.1"), "{unknown}");
        assert!(
            unknown.contains("HTTP/2, its stream limit not read"),
            "{unknown}"
        );
        let http1 = recommend(true, None, None, &idle, Streams::Http1, wait);
        assert!(http1.contains("HTTP/1.1 carries one request"), "{http1}");
        let limited = recommend(true, None, None, &idle, Streams::Http2(Some(100)), wait);
        assert!(
            limited.contains("up to 100 concurrent requests"),
            "{limited}"
        );
    }
}
