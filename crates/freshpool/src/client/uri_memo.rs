//! Each thread remembers the last request URI it parsed from a string.
//!
//! Why: `Client::get("http://host/path")` must turn the string into a
//! [`Uri`] on every call, and parsing one costs more than a pool checkout:
//! a copy into a fresh allocation, ~350 instructions of parsing, and a
//! second allocation the first time the parsed URI is cloned (its shared
//! buffer is created lazily). Services call the same few URLs over and
//! over, so a one-entry memo per thread, checked by one string comparison,
//! serves most calls with a clone of an already shared `Uri`: two
//! reference-count increments, no allocation.
//!
//! Never wrong: the memo keeps the exact text it parsed, and serves only
//! an identical text, so what it returns is what parsing would. A miss
//! costs the comparison (usually a length check) and then the parse, as
//! before; the text buffer is reused, so a miss allocates nothing more
//! than parsing does.

use std::cell::RefCell;

use http::Uri;

/// Longer texts are parsed but not remembered: the memo's buffer keeps
/// its largest size for the thread's life.
const MAX_TEXT: usize = 2048;

struct Memo {
    /// Reused across misses (cleared and refilled, not reallocated).
    text: String,
    uri: Option<Uri>,
    /// Whether `uri`'s authority holds an '@' (`Parsed::userinfo`).
    userinfo: bool,
}

/// A parsed request URI, and whether its authority holds an '@': a
/// `user:password@` that the request path moves into a header
/// (`move_userinfo`). Remembered with the URI, so a repeated URL skips that
/// search too (a `memchr` call, ~80 instructions per GET, callgrind).
pub(super) struct Parsed {
    pub(super) uri: Uri,
    pub(super) userinfo: bool,
}

thread_local! {
    static LAST: RefCell<Memo> = const {
        RefCell::new(Memo {
            text: String::new(),
            uri: None,
            userinfo: false,
        })
    };
}

/// `text` parsed as a URI: this thread's last one when `text` is the same.
pub(super) fn parse(text: &str) -> Result<Parsed, http::uri::InvalidUri> {
    let recalled = LAST.try_with(|memo| {
        let memo = memo.try_borrow().ok()?;
        if memo.text == text {
            let uri = memo.uri.clone()?;
            Some(Parsed {
                uri,
                userinfo: memo.userinfo,
            })
        } else {
            None
        }
    });
    if let Ok(Some(parsed)) = recalled {
        return Ok(parsed);
    }
    let uri: Uri = text.parse()?;
    let userinfo = uri.authority().is_some_and(|a| a.as_str().contains('@'));
    if text.len() <= MAX_TEXT {
        let _ = LAST.try_with(|memo| {
            if let Ok(mut memo) = memo.try_borrow_mut() {
                memo.text.clear();
                memo.text.push_str(text);
                memo.uri = Some(uri.clone());
                memo.userinfo = userinfo;
            }
        });
    }
    Ok(Parsed { uri, userinfo })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parts(uri: &Uri) -> (Option<&str>, Option<&str>, Option<&str>) {
        (
            uri.scheme_str(),
            uri.authority().map(|a| a.as_str()),
            uri.path_and_query().map(|p| p.as_str()),
        )
    }

    #[test]
    fn a_repeat_is_served_from_the_memo_and_a_change_is_parsed() {
        let first = parse("http://127.0.0.1:8080/a?x=1").unwrap().uri;
        let again = parse("http://127.0.0.1:8080/a?x=1").unwrap().uri;
        assert_eq!(first, again);
        // Served from the memo: the clone shares the memo's buffer.
        let recalled = LAST.with(|m| m.borrow().uri.clone()).unwrap();
        assert_eq!(
            again.authority().unwrap().as_str().as_ptr(),
            recalled.authority().unwrap().as_str().as_ptr()
        );
        let other = parse("http://127.0.0.1:8080/b").unwrap().uri;
        assert_eq!(other.path(), "/b");
        assert!(parse("http://[::1").is_err());
        // A failed parse leaves the memo as it was.
        assert_eq!(parse("http://127.0.0.1:8080/b").unwrap().uri.path(), "/b");
        // A very long text is parsed, not remembered.
        let long = format!("http://127.0.0.1:8080/{}", "x".repeat(MAX_TEXT));
        assert_eq!(parse(&long).unwrap().uri.path().len(), MAX_TEXT + 1);
        LAST.with(|m| assert_eq!(m.borrow().text, "http://127.0.0.1:8080/b"));
    }

    fn spelling() -> impl Strategy<Value = String> {
        let scheme = prop::sample::select(vec!["http://", "https://", "HTTP://", "", "ftp://"]);
        let host = prop::sample::select(vec![
            "a",
            "A",
            "a:80",
            "a:8080",
            "u@a",
            "[::1]",
            "[::1]:443",
            "127.0.0.1",
            "",
        ]);
        let path = prop::sample::select(vec!["", "/", "/p", "/p?q=1", "/p#f", "?q", "/%41", " "]);
        (scheme, host, path).prop_map(|(s, h, p)| format!("{s}{h}{p}"))
    }

    proptest! {
        /// Whatever sequence of texts a thread parses, the memo returns
        /// exactly what a fresh parse would: the same result, the same parts.
        #[test]
        fn the_memo_never_changes_a_parse(texts in proptest::collection::vec(spelling(), 1..40)) {
            for text in &texts {
                let memo = parse(text);
                let fresh = text.parse::<Uri>();
                prop_assert_eq!(memo.is_ok(), fresh.is_ok(), "{}", text);
                if let (Ok(memo), Ok(fresh)) = (memo, fresh) {
                    prop_assert_eq!(parts(&memo.uri), parts(&fresh), "{}", text);
                    // The remembered '@' is the fresh URI's.
                    let at = fresh.authority().is_some_and(|a| a.as_str().contains('@'));
                    prop_assert_eq!(memo.userinfo, at, "{}", text);
                }
            }
        }
    }
}
