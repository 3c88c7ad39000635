//! Bounded "arbitrary bytes" runs of the crate-private parsers that the
//! cargo-fuzz targets cannot reach without a public hook (see
//! RELIABILITY.md): the HTTP/2 frame reader and the pool key.

use proptest::prelude::*;

use crate::connect::preface::{FrameReader, Preface};
use crate::pool::key::{KeyParts, PoolKey};

/// The whole first frame at once, by the letter of RFC 9113 §3.4/§6.5.
#[allow(clippy::manual_is_multiple_of)] // rust-version 1.80
fn reference(bytes: &[u8]) -> Option<Preface> {
    if bytes.len() < 9 {
        return None;
    }
    let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
    if bytes[3] != 0x4 || bytes[4] & 0x1 != 0 || len % 6 != 0 {
        return Some(Preface::Invalid);
    }
    if bytes.len() < 9 + len {
        return None;
    }
    let max = bytes[9..9 + len]
        .chunks_exact(6)
        .filter(|e| u16::from_be_bytes([e[0], e[1]]) == 0x3)
        .map(|e| u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
        .next_back();
    Some(Preface::Settings(max))
}

/// Mostly plausible SETTINGS frames, sometimes garbage.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        (
            prop::collection::vec((0u16..8, any::<u32>()), 0..10),
            prop::bool::weighted(0.1),
            prop::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(|(entries, bad_type, tail)| {
                let len = entries.len() * 6;
                let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8];
                f.push(if bad_type { 0x1 } else { 0x4 });
                f.push(0);
                f.extend_from_slice(&0u32.to_be_bytes());
                for (id, v) in entries {
                    f.extend_from_slice(&id.to_be_bytes());
                    f.extend_from_slice(&v.to_be_bytes());
                }
                f.extend(tail);
                f
            }),
    ]
}

/// Regression (found by `pool_key_view_never_panics`, fixed with a
/// one-line change in `PoolKey::view`): `http://[]` parses, its host
/// `[]` passed the emptiness check before the brackets were trimmed,
/// and the key got an empty host.
/// And (found by the same property test): `http` parses `[0]-:0` with
/// port 0 while the key read port 80; junk after `]` is now an error.
#[test]
fn empty_bracketed_host_is_an_invalid_uri() {
    for s in ["http://[]", "https://[]:443/x", "HTTP://[0]-:0"] {
        let uri: http::Uri = s.parse().unwrap();
        let err = PoolKey::view(&uri, 1).unwrap_err();
        assert_eq!(err.kind(), crate::Kind::InvalidUri, "{s}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    /// However the bytes are split into reads, the reader never panics,
    /// decides on the first frame exactly what the whole-frame reference
    /// decides, and reports the same later SETTINGS frames as when fed
    /// everything at once.
    #[test]
    fn frame_reader_is_chunking_invariant(frames in prop::collection::vec(frame(), 1..4), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let bytes = frames.concat();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut reader = FrameReader::default();
        let mut got = Vec::new();
        for w in cuts.windows(2) {
            reader.feed(&bytes[w[0]..w[1]], |seen| got.push(seen));
        }
        prop_assert_eq!(got.first().copied(), reference(&bytes));
        let mut whole = Vec::new();
        FrameReader::default().feed(&bytes, |seen| whole.push(seen));
        prop_assert_eq!(got, whole);
    }

    /// Any URI that `http` parses gives a key or a typed error; hosts
    /// compare case-insensitively; default ports are filled in.
    #[test]
    fn pool_key_view_never_panics(s in "(HTTP|https?|ftp|)(://)?[a-zA-Z0-9.:@\\[\\]_%-]{0,30}(/[ -~]{0,10})?") {
        let Ok(uri) = s.parse::<http::Uri>() else { return Ok(()) };
        match PoolKey::view(&uri, 7) {
            Ok(view) => {
                prop_assert!(!view.host.is_empty());
                prop_assert!(matches!(uri.scheme_str(), Some("http") | Some("https")));
                let expected = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
                prop_assert_eq!(view.port, expected);
                let upper = s.to_ascii_uppercase().replacen("HTTPS", "https", 1).replacen("HTTP", "http", 1);
                if let Ok(u2) = upper.parse::<http::Uri>() {
                    if let Ok(v2) = PoolKey::view(&u2, 7) {
                        prop_assert!(
                            (&view as &dyn KeyParts) == (&v2 as &dyn KeyParts),
                            "{} vs {}", s, upper
                        );
                    }
                }
            }
            Err(e) => prop_assert_eq!(e.kind(), crate::Kind::InvalidUri),
        }
    }
}
