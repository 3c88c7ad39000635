//! A response body dropped unread, drained in the background when little
//! is left, so its HTTP/1 connection goes back to the pool.
//!
//! Why: `if !response.status().is_success() { return Err(..) }` drops the
//! body of every error response unread, and an HTTP/1 connection with
//! unread response bytes cannot carry another request: each cost a new
//! connection (a TCP and TLS handshake, a TIME_WAIT socket), most under a
//! storm of 503s, when the server struggles most. .NET drains up to 1 MiB
//! or 2 s on dispose, OkHttp what arrives within 100 ms; Go closes. Here:
//! at most [`DRAIN_MAX_BYTES`] within [`DRAIN_TIME`], else the connection
//! closes as before.
//!
//! Only HTTP/1 (dropping an HTTP/2 body resets its stream, and the
//! connection serves on), only for a request whose body was not streamed
//! (its upload may still be going out), only for a connection that stays
//! reusable (not `Connection: close`, not HTTP/1.0), and only on a
//! multi-thread tokio runtime (the drain is a task of its own).

use std::time::Duration;

use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::pool::Lease;

/// The most a dropped body may still have to send to be drained.
pub(crate) const DRAIN_MAX_BYTES: u64 = 64 * 1024;

/// How long a drain may take before the connection is closed instead.
pub(crate) const DRAIN_TIME: Duration = Duration::from_millis(100);

/// The runtime to drain a dropped `body` on, when it is worth it (see
/// the module); `None`: close its connection as before.
pub(super) fn runtime_for(body: &Incoming, lease: &Lease) -> Option<tokio::runtime::Handle> {
    // (Unknown length: bounded by bytes and time while it is read.)
    let small = body
        .size_hint()
        .upper()
        .is_none_or(|left| left <= DRAIN_MAX_BYTES);
    // (A connection that closes anyway, `Connection: close` or an HTTP/1.0
    // answer, is closed now: nothing to drain it for.)
    if lease.is_h2() || !small || lease.not_reusable.is_some() {
        return None;
    }
    // Only a runtime that runs its tasks whoever polls it: a
    // current-thread runtime runs them only inside its `block_on`, and
    // the task, with the connection's slot, could wait there for good.
    tokio::runtime::Handle::try_current()
        .ok()
        .filter(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Reads what is left of `body` on `runtime`, then gives `lease` back to
/// the pool, or, past [`DRAIN_MAX_BYTES`] or [`DRAIN_TIME`], closes it.
pub(super) fn spawn(runtime: &tokio::runtime::Handle, body: Incoming, lease: Lease) {
    runtime.spawn(async move {
        let mut body = body;
        let drained = tokio::time::timeout(DRAIN_TIME, async {
            let mut read = 0u64;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return false;
                };
                if let Some(data) = frame.data_ref() {
                    read += data.len() as u64;
                    // (A body of unknown length may be long.)
                    if read > DRAIN_MAX_BYTES {
                        return false;
                    }
                }
            }
            true
        })
        .await;
        if drained == Ok(true) {
            // (As at a body's end: the response's own reuse rules apply.)
            lease.release();
        } else {
            lease.discard();
        }
    });
}
