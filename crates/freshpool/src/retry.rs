//! When a failed request may be sent again.
//!
//! The rule (Go's net/http's, with RFC 9110's idempotent methods, and a
//! proof for bodies held back by `Expect: 100-continue`):
//! a request is retried once, on another connection, only when
//! 1. it failed on a **reused** connection before its response head was
//!    complete (the classic stale-connection race: the server or a NAT
//!    closed it); a response whose head came is returned, never retried.
//!    (Go retries only before the first response byte. hyper does not say
//!    whether part of a head came before the connection broke, so a head
//!    cut short counts as none: for the requests rule 2 admits, which are
//!    safe to send twice, that costs at most a repeat), and
//! 2. sending it twice cannot do harm: the method is idempotent by RFC
//!    9110 (GET, HEAD, OPTIONS, TRACE, PUT, DELETE; Go retries the first
//!    four only, OkHttp any method), or it carries an `Idempotency-Key`
//!    or `X-Idempotency-Key` (as Go reads them), or its body provably never
//!    left (held back waiting for `100 Continue`), or the user opted in
//!    (`retry_non_idempotent`); and
//! 3. its body can be replayed (in memory, or made again by
//!    `RequestBody::replayable`).
//!
//! A request that hyper reports unsent (the connection closed before it
//! was written: see `client/sending.rs`) is always retried: it never
//! reached the server.

use http::Method;

/// Why a request may or may not be retried, for tests and tracing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Retry on another connection.
    Retry,
    /// Not retried: the connection was new, so the failure is not a stale
    /// reuse and a retry would most likely fail the same way.
    FreshConnection,
    /// Not retried: the server may have processed it.
    NotIdempotent,
    /// Not retried: the body was streamed and cannot be sent again.
    BodyNotReplayable,
    /// Not retried: a response had started, so the server answered.
    ResponseStarted,
    /// Not retried: this was already the retry.
    AlreadyRetried,
}

/// What is known about a failed attempt.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    /// The request method.
    pub method: &'a Method,
    /// It carried an `Idempotency-Key` (or `X-Idempotency-Key`) header.
    pub has_idempotency_key: bool,
    /// The connection came from the pool (not dialed for this request).
    pub reused_connection: bool,
    /// Response bytes had arrived before the failure. (The pool passes
    /// `false`: hyper does not tell a head cut short from none. For your
    /// own retry layer, over what you observed.)
    pub response_started: bool,
    /// The body can be sent again.
    pub body_replayable: bool,
    /// The body was held back (Expect: 100-continue) and never sent.
    pub body_withheld: bool,
    /// The user allows retrying non-idempotent requests.
    pub retry_non_idempotent: bool,
    /// Retries already made for this request.
    pub retries: u32,
}

/// True for methods RFC 9110 section 9.2.2 defines as idempotent.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Decides whether a failed attempt is retried.
///
/// ```
/// use freshpool::retry::{decide, Attempt, RetryDecision};
/// let attempt = Attempt {
///     method: &http::Method::POST,
///     has_idempotency_key: false,
///     reused_connection: true,
///     response_started: false,
///     body_replayable: true,
///     body_withheld: false,
///     retry_non_idempotent: false,
///     retries: 0,
/// };
/// assert_eq!(decide(&attempt), RetryDecision::NotIdempotent);
/// assert_eq!(decide(&Attempt { body_withheld: true, ..attempt }), RetryDecision::Retry);
/// ```
pub fn decide(a: &Attempt<'_>) -> RetryDecision {
    if a.retries >= 1 {
        return RetryDecision::AlreadyRetried;
    }
    if !a.reused_connection {
        return RetryDecision::FreshConnection;
    }
    if a.response_started {
        return RetryDecision::ResponseStarted;
    }
    let safe = is_idempotent(a.method)
        || a.has_idempotency_key
        || a.body_withheld
        || a.retry_non_idempotent;
    if !safe {
        return RetryDecision::NotIdempotent;
    }
    if !a.body_replayable {
        return RetryDecision::BodyNotReplayable;
    }
    RetryDecision::Retry
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn methods() -> impl Strategy<Value = Method> {
        prop_oneof![
            Just(Method::GET),
            Just(Method::POST),
            Just(Method::PUT),
            Just(Method::PATCH),
            Just(Method::DELETE),
            Just(Method::HEAD),
        ]
    }

    proptest! {
        /// The safety property: a non-idempotent request whose body may have
        /// left is never retried without the user's consent.
        #[test]
        fn never_retries_what_may_have_been_processed(
            method in methods(), key: bool, reused: bool, started: bool,
            replayable: bool, withheld: bool, opt_in: bool, retries in 0u32..3,
        ) {
            let a = Attempt { method: &method, has_idempotency_key: key, reused_connection: reused,
                response_started: started, body_replayable: replayable, body_withheld: withheld,
                retry_non_idempotent: opt_in, retries };
            if decide(&a) == RetryDecision::Retry {
                prop_assert!(reused && !started && replayable && retries == 0);
                prop_assert!(is_idempotent(&method) || key || withheld || opt_in);
            }
        }
    }
}
