//! The pool's origins, found by key and by the spelling requests use.
//!
//! Every request must find its origin, and the pool key is canonical:
//! `http://Example.com/` and `http://example.com:80/` share connections.
//! Building that key means parsing the authority, folding case and hashing
//! with SipHash (the host is caller-controlled): ~900 instructions, a third
//! of a whole checkout+return. But a service sends its requests to a few
//! origins, spelled the same way each time. So a second map remembers each
//! spelling (`scheme`, security context, the caller's runtime partition, the
//! authority's bytes as written)
//! and the hot path hashes those bytes as they are. A miss (a new spelling)
//! takes the canonical way and teaches the spelling map.
//!
//! The spelling map's hasher is foldhash with a per-process random seed:
//! several times cheaper than SipHash on short strings, still keyed so a
//! caller choosing hosts cannot aim at one bucket.
//!
//! Invariant: every origin in `by_spelling` is the one `by_key` holds for
//! that spelling's key (a spelling is only inserted after its canonical
//! lookup, and `forget` takes an origin's spellings out with it). So both
//! ways find the same `Origin`, and per-origin limits hold whichever way a
//! request came. An origin is forgotten only once it is retired (see
//! `Pool::forget_unused`): one still lent out takes no new connections.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::key::{KeyParts, PoolKey, Scheme};
use super::Origin;

/// The spelling map is cleared when it grows past this many entries per
/// origin (plus a constant): spellings that embed changing credentials
/// (`user:token@host`) must not grow it without bound.
const SPELLINGS_PER_ORIGIN: usize = 4;
const SPELLINGS_SLACK: usize = 256;

#[derive(Default)]
pub(super) struct OriginMap {
    /// The partition of record.
    by_key: HashMap<PoolKey, Arc<Origin>>,
    /// Spellings seen, each pointing at its origin in `by_key`.
    by_spelling: HashMap<Spelling, Arc<Origin>, foldhash::fast::RandomState>,
}

impl OriginMap {
    /// The origin a request URI spelled this way goes to, if seen before.
    pub(super) fn by_spelling(&self, tag: Tag, authority: &str) -> Option<&Arc<Origin>> {
        let view = SpellingView { tag, authority };
        self.by_spelling.get(&view as &dyn SpellingParts)
    }

    pub(super) fn by_key(&self, key: &dyn KeyParts) -> Option<&Arc<Origin>> {
        self.by_key.get(key)
    }

    /// Adds an origin this map does not hold yet. It stays until the map
    /// drops or `forget` takes it out.
    pub(super) fn insert(&mut self, origin: Arc<Origin>) {
        let replaced = self.by_key.insert(origin.key.clone(), origin);
        debug_assert!(replaced.is_none(), "an origin was replaced");
    }

    /// Remembers that `authority` (with this scheme, security context and
    /// runtime partition: `tag`)
    /// is spelled for `origin`, which `by_key` already holds.
    pub(super) fn learn_spelling(&mut self, tag: Tag, authority: &str, origin: &Arc<Origin>) {
        debug_assert!(self
            .by_key
            .get(&origin.key as &dyn KeyParts)
            .is_some_and(|o| Arc::ptr_eq(o, origin)));
        if self.by_spelling.len() >= SPELLINGS_PER_ORIGIN * self.by_key.len() + SPELLINGS_SLACK {
            self.by_spelling.clear();
        }
        let spelling = Spelling {
            tag,
            authority: authority.into(),
        };
        self.by_spelling.insert(spelling, origin.clone());
    }

    /// Takes these (retired) origins out, with every spelling that led to
    /// them; a key that holds another origin by now keeps it. One pass
    /// over the spellings for the whole batch.
    pub(super) fn forget(&mut self, gone: &[Arc<Origin>]) {
        for origin in gone {
            let key: &dyn KeyParts = &origin.key;
            if self.by_key.get(key).is_some_and(|o| Arc::ptr_eq(o, origin)) {
                self.by_key.remove(key);
            }
        }
        let gone: std::collections::HashSet<*const Origin> = gone.iter().map(Arc::as_ptr).collect();
        self.by_spelling
            .retain(|_, o| !gone.contains(&Arc::as_ptr(o)));
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Arc<Origin>> {
        self.by_key.values()
    }

    #[cfg(test)]
    pub(super) fn spellings(&self) -> usize {
        self.by_spelling.len()
    }
}

/// Scheme, security context and runtime partition (see `partition`): what
/// a spelling's origin depends on besides the authority, in one value.
pub(super) type Tag = u128;

pub(super) fn tag(scheme: Scheme, security: u64, runtime: u64) -> Tag {
    u128::from(security) << 65 | u128::from(runtime) << 1 | u128::from(scheme == Scheme::Https)
}

/// An authority as a request wrote it, with its scheme, security context
/// and runtime partition (`tag`).
struct Spelling {
    tag: Tag,
    authority: Box<str>,
}

#[derive(Clone, Copy)]
struct SpellingView<'a> {
    tag: Tag,
    authority: &'a str,
}

/// Lets the map be queried with a borrowed [`SpellingView`] (no
/// allocation), the same way [`KeyParts`] does for keys.
trait SpellingParts {
    fn parts(&self) -> SpellingView<'_>;
}

impl SpellingParts for Spelling {
    fn parts(&self) -> SpellingView<'_> {
        SpellingView {
            tag: self.tag,
            authority: &self.authority,
        }
    }
}

impl SpellingParts for SpellingView<'_> {
    fn parts(&self) -> SpellingView<'_> {
        *self
    }
}

impl<'a> Borrow<dyn SpellingParts + 'a> for Spelling {
    fn borrow(&self) -> &(dyn SpellingParts + 'a) {
        self
    }
}

impl Hash for dyn SpellingParts + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let p = self.parts();
        state.write_u128(p.tag);
        state.write(p.authority.as_bytes());
    }
}

impl PartialEq for dyn SpellingParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.parts(), other.parts());
        a.tag == b.tag && a.authority == b.authority
    }
}
impl Eq for dyn SpellingParts + '_ {}

impl Hash for Spelling {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn SpellingParts).hash(state)
    }
}
impl PartialEq for Spelling {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn SpellingParts) == (other as &dyn SpellingParts)
    }
}
impl Eq for Spelling {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::origin_of;

    #[test]
    fn every_spelling_finds_the_one_origin_of_its_key() {
        let client = crate::Client::new();
        let first = origin_of(&client, "http://example.test/");
        for url in [
            "http://example.test/again",
            "http://EXAMPLE.test/",
            "http://example.test:80/",
            "http://user:secret@Example.Test:80/x",
            "http://example.test/",
        ] {
            assert!(Arc::ptr_eq(&first, &origin_of(&client, url)), "{url}");
        }
        for other in ["https://example.test/", "http://example.test:8080/"] {
            assert!(!Arc::ptr_eq(&first, &origin_of(&client, other)), "{other}");
        }
        let map = client.pool().read_origins();
        assert_eq!(map.values().count(), 3);
        // Five spellings of the first origin (the repeat is not new), one
        // of each other.
        assert_eq!(map.spellings(), 6);
    }

    #[test]
    fn spellings_that_embed_changing_credentials_stay_bounded() {
        let client = crate::Client::new();
        let first = origin_of(&client, "http://example.test/");
        let bound = SPELLINGS_PER_ORIGIN + SPELLINGS_SLACK;
        for i in 0..3 * bound {
            let origin = origin_of(&client, &format!("http://user:token{i}@example.test/"));
            assert!(Arc::ptr_eq(&first, &origin));
            let spellings = client.pool().read_origins().spellings();
            assert!(spellings <= bound, "{spellings} spellings after {i}");
        }
        assert_eq!(client.pool().read_origins().values().count(), 1);
    }
}
