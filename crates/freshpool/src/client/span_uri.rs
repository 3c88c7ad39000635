//! A request's URI as its span and its error messages show it: no
//! password, and no value of a query parameter known to carry a secret.

use std::fmt;

use http::Uri;

/// A request URI as the request's span shows it (formatted only when a
/// subscriber records the span). The values of query parameters that
/// carry credentials ([`SECRET_QUERY_KEYS`]) read `REDACTED`, as
/// OpenTelemetry's HTTP conventions ask of `url.full`: a pre-signed
/// URL's signature or token in a DEBUG span is a key to the object for
/// whoever reads the logs. A password with an unencoded '/', '?' or
/// '#' is no userinfo to RFC 3986 parsers (`http`, curl), so
/// `move_userinfo` left it in place: its text before that character reads
/// as the port, the rest as the path. When that "port" is no number the
/// URI fails `PoolKey::view` and is not shown. When it is empty or a
/// number (`u:/secret@h`, `u:2024/secret@h`) the URI is valid, to the
/// user name as the host: the request is misrouted and its path, with the
/// rest of the password, is shown as parsed, since an '@' in a path
/// (`/@types/node`) is no sign of a password. (RELIABILITY.md lists it.)
pub(super) struct SpanUri<'a>(pub(super) &'a Uri);

/// Query parameters whose value is a credential: OpenTelemetry's list
/// for `url.full` (`AWSAccessKeyId`, `Signature`, `sig`,
/// `X-Goog-Signature`), AWS Signature V4's pre-signed URL parts
/// (`X-Amz-Signature`, `X-Amz-Credential`, `X-Amz-Security-Token`) and
/// the OAuth 2 bearer token of RFC 6750 section 2.3 (`access_token`).
/// Compared ignoring ASCII case.
const SECRET_QUERY_KEYS: [&str; 8] = [
    "AWSAccessKeyId",
    "Signature",
    "sig",
    "X-Goog-Signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "access_token",
];

fn is_secret(pair: &str) -> bool {
    let key = pair.split_once('=').map_or(pair, |(key, _)| key);
    SECRET_QUERY_KEYS
        .iter()
        .any(|secret| secret.eq_ignore_ascii_case(key))
}

impl fmt::Display for SpanUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = self.0;
        if crate::pool::key::PoolKey::view(uri, 0).is_err() {
            // (Its checkout fails with a message that shows no password.)
            return f.write_str("(an invalid URI, not shown)");
        }
        let Some(query) = uri.query().filter(|q| q.split('&').any(is_secret)) else {
            return fmt::Display::fmt(uri, f);
        };
        if let Some(scheme) = uri.scheme() {
            write!(f, "{scheme}://")?;
        }
        if let Some(authority) = uri.authority() {
            f.write_str(authority.as_str())?;
        }
        f.write_str(uri.path())?;
        f.write_str("?")?;
        write_pairs(f, query)
    }
}

/// `pairs` (a query, and a fragment after its '#') with the values of
/// secret parameters `REDACTED`, separators kept.
fn write_pairs(out: &mut impl fmt::Write, pairs: &str) -> fmt::Result {
    for piece in pairs.split_inclusive(['&', '#']) {
        let pair = piece.strip_suffix(['&', '#']).unwrap_or(piece);
        match pair.split_once('=') {
            Some((key, _)) if is_secret(key) => write!(out, "{key}=REDACTED")?,
            _ => out.write_str(pair)?,
        }
        out.write_str(&piece[pair.len()..])?;
    }
    Ok(())
}

/// A request URL's text for an error message, parsed or not (a URI that
/// failed to parse, one refused before its checkout): the values of
/// secret parameters `REDACTED`, as its span shows them ([`SpanUri`]),
/// in the query and in the fragment too (OAuth's implicit flow puts its
/// token there), then its userinfo `***` (`redact_userinfo`). They were
/// shown whole: a pre-signed URL's signature reached the logs with the
/// error. (In that order: `redact_userinfo` cuts at the last '@', which
/// may be in the query, `?email=a@b`, and took the '?' with it.)
pub(crate) fn shown_url(text: &str) -> String {
    // (From the first '?' or '#': a fragment may come without a query.)
    let after_path = text.find(['?', '#']);
    let redacted = match after_path.map(|at| (&text[..=at], &text[at + 1..])) {
        Some((head, rest)) if rest.split(['&', '#']).any(is_secret) => {
            let mut shown = String::with_capacity(text.len() + 8);
            shown.push_str(head);
            // (Writing to a String cannot fail.)
            let _ = write_pairs(&mut shown, rest);
            shown
        }
        _ => text.to_owned(),
    };
    crate::error::redact_userinfo(&redacted)
}

#[cfg(test)]
mod tests {
    use super::{shown_url, SpanUri};

    #[test]
    fn an_error_messages_url_hides_the_password_and_secret_values() {
        assert_eq!(
            shown_url("https://u:pw@h/k?X-Amz-Signature=abc&a=1#frag"),
            "https://***@h/k?X-Amz-Signature=REDACTED&a=1#frag"
        );
        // Text that is no URI: the same rules, on the text.
        assert_eq!(
            shown_url("/p?access_token=t0k&x"),
            "/p?access_token=REDACTED&x"
        );
        assert_eq!(shown_url("http://h/p?q=1"), "http://h/p?q=1");
        assert_eq!(shown_url("ht tp://h"), "ht tp://h");
        // An '@' in the query (the last one, which `redact_userinfo` cuts
        // at) took the '?' away before the query was looked at.
        let shown = shown_url("https://x.test/k?email=a@b&X-Amz-Signature=s3cret");
        assert!(!shown.contains("s3cret"), "{shown}");
        // A token in the fragment (OAuth's implicit flow).
        assert_eq!(
            shown_url("https://h/cb?x=1#access_token=t0k x&state=s"),
            "https://h/cb?x=1#access_token=REDACTED&state=s"
        );
        assert_eq!(
            shown_url("https://h/cb#access_token=t0k"),
            "https://h/cb#access_token=REDACTED"
        );
    }

    fn shown(uri: &str) -> String {
        SpanUri(&uri.parse().unwrap()).to_string()
    }

    #[test]
    fn a_pre_signed_urls_secrets_are_redacted_and_the_rest_kept() {
        assert_eq!(
            shown("https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20261205&X-Amz-Signature=abc123&x-amz-security-token=tok"),
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&x-amz-security-token=REDACTED"
        );
        assert_eq!(
            shown("http://h/p?sig=s3cret&sv=2024&access_token=t0k"),
            "http://h/p?sig=REDACTED&sv=2024&access_token=REDACTED"
        );
    }

    #[test]
    fn a_query_without_secrets_is_shown_as_it_is() {
        for uri in [
            "http://h/p?signature_version=2&q=a=b",
            "http://h:8080/p?sig",
            "http://h/",
        ] {
            assert_eq!(shown(uri), uri.parse::<http::Uri>().unwrap().to_string());
        }
    }
}
