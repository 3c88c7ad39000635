//! `Keep-Alive` header parsing: never panics, never yields more than the
//! documented 24 h cap, and a value that parses keeps parsing with extra
//! unknown parameters around it.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &str| {
    let parsed = freshpool::parse_keep_alive(value);
    if let Some(d) = parsed {
        assert!(d <= Duration::from_secs(24 * 3600), "{value:?} -> {d:?}");
        // The first `timeout=` parameter wins; unknown ones are ignored.
        let padded = format!("max=5, {value}");
        assert_eq!(freshpool::parse_keep_alive(&padded), Some(d), "{value:?}");
    }
});
