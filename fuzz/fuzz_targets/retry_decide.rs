//! The retry decision: never panics, and never retries what may have been
//! processed without a proof or the user's consent.
#![no_main]

use arbitrary::Arbitrary;
use freshpool::retry::{decide, is_idempotent, Attempt, RetryDecision};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    method: Vec<u8>,
    has_idempotency_key: bool,
    reused_connection: bool,
    response_started: bool,
    body_replayable: bool,
    body_withheld: bool,
    retry_non_idempotent: bool,
    retries: u32,
}

fuzz_target!(|input: Input| {
    let Ok(method) = http::Method::from_bytes(&input.method) else {
        return;
    };
    let a = Attempt {
        method: &method,
        has_idempotency_key: input.has_idempotency_key,
        reused_connection: input.reused_connection,
        response_started: input.response_started,
        body_replayable: input.body_replayable,
        body_withheld: input.body_withheld,
        retry_non_idempotent: input.retry_non_idempotent,
        retries: input.retries,
    };
    if decide(&a) == RetryDecision::Retry {
        assert!(a.retries == 0, "{a:?}");
        assert!(
            a.reused_connection && !a.response_started && a.body_replayable,
            "{a:?}"
        );
        assert!(
            is_idempotent(&method)
                || a.has_idempotency_key
                || a.body_withheld
                || a.retry_non_idempotent,
            "{a:?}"
        );
    }
});
