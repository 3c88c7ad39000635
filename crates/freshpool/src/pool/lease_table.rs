//! Who holds each of an origin's leased connections (for the leak warning
//! and `stats()`'s oldest holders), with room for one lease inline.
//!
//! Why not a plain `Slab`: its entries live in an allocation of their own,
//! so every checkout and return of an origin not in cache paid one more
//! cache miss there (cachegrind, rotating over 3,000 origins: ~0.9 last-level
//! misses per checkout+return, BENCHMARKS.md). Most origins have one
//! request in flight at a time; that lease lives in `first`, inside the
//! origin's lock-guarded state, on a line the checkout reads anyway. A
//! second concurrent lease goes to the slab, as before.
//!
//! Ids: 0 is `first`; `n + 1` is the slab's entry `n`. An id is only ever
//! removed by the lease it was given to, once, so a freed id reused by a
//! later lease is never confused with the earlier one.

use super::{LeaseRecord, Stamp};

/// (`repr(C)`: the inline slot first, on the hot lines; see `Guarded`.)
#[derive(Default)]
#[repr(C)]
pub(super) struct LeaseTable {
    first: Option<LeaseRecord>,
    rest: slab::Slab<LeaseRecord>,
}

impl LeaseTable {
    /// Registers a lease; returns its id.
    #[inline]
    pub(super) fn insert(&mut self, record: LeaseRecord) -> usize {
        if self.first.is_none() {
            self.first = Some(record);
            0
        } else {
            self.rest.insert(record) + 1
        }
    }

    /// Forgets lease `id` (nothing if it is not registered).
    #[inline]
    pub(super) fn try_remove(&mut self, id: usize) -> Option<LeaseRecord> {
        match id {
            0 => self.first.take(),
            n => self.rest.try_remove(n - 1),
        }
    }

    /// Lease `id`'s holder showed progress at `at` (nothing if it is not
    /// registered).
    pub(super) fn note_progress(&mut self, id: usize, at: Stamp) {
        let record = match id {
            0 => self.first.as_mut(),
            n => self.rest.get_mut(n - 1),
        };
        if let Some(r) = record {
            // Never back: a note read from a beat that had not moved yet
            // (while a freeze was being judged) would undo the freeze's
            // discount.
            r.active = r.active.max(super::active_units(at.since(r.since)));
            r.flags |= super::PROGRESSED;
        }
    }

    /// Lease `id`'s body reader waits for the next frame (`on`), or got
    /// one (nothing if it is not registered).
    pub(super) fn note_awaited(&mut self, id: usize, on: bool) {
        let record = match id {
            0 => self.first.as_mut(),
            n => self.rest.get_mut(n - 1),
        };
        if let Some(r) = record {
            if on {
                r.flags |= super::AWAITED;
            } else {
                r.flags &= !super::AWAITED;
            }
        }
    }

    /// A process freeze ended at `now`, stopping the process for `frozen`.
    /// A sandbox paused between invocations stops the lease holders too (a
    /// long poll for the next event, a response in hand), yet the monotonic
    /// clock runs on: each lease's last progress moves on by `frozen` (not
    /// past `now`), so its time without progress counts the time the
    /// process ran. Restarting the count at the thaw instead would never
    /// report a body leaked in one invocation and held across many short
    /// ones.
    pub(super) fn discount_freeze(&mut self, now: Stamp, frozen: std::time::Duration) {
        let frozen = super::active_units(frozen);
        for r in self.iter_mut() {
            let held = super::active_units(now.since(r.since));
            r.active = r.active.saturating_add(frozen).min(held);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &LeaseRecord> {
        self.first.iter().chain(self.rest.iter().map(|(_, r)| r))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut LeaseRecord> {
        self.first
            .iter_mut()
            .chain(self.rest.iter_mut().map(|(_, r)| r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Stamp;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn record(n: u64) -> LeaseRecord {
        LeaseRecord {
            since: Stamp::from_nanos(n),
            caller: std::panic::Location::caller(),
            active: 0,
            flags: 0,
            reads_at_take: 0,
        }
    }

    #[test]
    fn the_first_lease_is_inline_and_later_ones_spill() {
        let mut t = LeaseTable::default();
        let a = t.insert(record(1));
        let b = t.insert(record(2));
        assert_eq!((a, b), (0, 1));
        assert!(t.rest.len() == 1, "the second lease is in the slab");
        assert_eq!(t.try_remove(a).map(|r| r.since), Some(Stamp::from_nanos(1)));
        // The inline slot is free again: the next lease takes it.
        assert_eq!(t.insert(record(3)), 0);
        assert_eq!(t.try_remove(b).map(|r| r.since), Some(Stamp::from_nanos(2)));
        assert!(t.try_remove(b).is_none(), "removed once only");
    }

    /// A freeze moves each lease's last progress on by its length, never
    /// past the thaw. (Times in multiples of the 16 ms unit.)
    #[test]
    fn a_freeze_is_not_time_without_progress() {
        let ms = |n: u64| Stamp::from_nanos(n * 1_000_000);
        let mut t = LeaseTable::default();
        let old = t.insert(record(0));
        let young = t.insert(record(9_216_000_000));
        t.note_progress(old, ms(2_048));
        t.discount_freeze(ms(10_240), Duration::from_millis(5_120));
        let last = |id: usize| t.iter().nth(id).unwrap().last_active();
        assert_eq!(last(old), ms(7_168), "2 s of progress, then 5 s frozen");
        assert_eq!(last(young), ms(10_240), "taken 1 s before the thaw");
        assert!(t.iter().nth(old).unwrap().has(crate::pool::PROGRESSED));
        assert!(!t.iter().nth(young).unwrap().has(crate::pool::PROGRESSED));
        // A note stamped before the discount (a frame read while the
        // freeze was being judged, by the beat still from before it) does
        // not undo it.
        t.note_progress(old, ms(2_560));
        assert_eq!(t.iter().nth(old).unwrap().last_active(), ms(7_168));
    }

    /// Progress on a stream read for longer than 49.7 days still moves:
    /// in milliseconds the 32 bits ran out there, and the lease was then
    /// reported as a leak while it was being read. (A review found it.)
    #[test]
    fn progress_after_fifty_days_still_counts() {
        let day_ms = 24 * 3_600 * 1_000u64;
        let ms = |n: u64| Stamp::from_nanos(n * 1_000_000);
        let mut t = LeaseTable::default();
        let id = t.insert(record(0));
        t.note_progress(id, ms(60 * day_ms));
        let last = t.iter().next().unwrap().last_active();
        assert_eq!(ms(60 * day_ms).since(last), Duration::ZERO);
    }

    proptest! {
        /// Against a map of live ids: every insert gets an id no live lease
        /// has, removal returns exactly that lease's record, and iteration
        /// yields the live records, each once.
        #[test]
        fn behaves_as_a_map_of_live_leases(ops in proptest::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 1..200)) {
            let mut t = LeaseTable::default();
            let mut live: HashMap<usize, u64> = HashMap::new();
            for (n, (insert, pick)) in ops.into_iter().enumerate() {
                if insert || live.is_empty() {
                    let id = t.insert(record(n as u64));
                    prop_assert!(live.insert(id, n as u64).is_none(), "id {} given twice", id);
                } else {
                    let mut ids: Vec<usize> = live.keys().copied().collect();
                    ids.sort_unstable();
                    let id = ids[pick.index(ids.len())];
                    let want = live.remove(&id).unwrap();
                    prop_assert_eq!(t.try_remove(id).map(|r| r.since.nanos()), Some(want));
                }
                let mut seen: Vec<u64> = t.iter().map(|r| r.since.nanos()).collect();
                let mut want: Vec<u64> = live.values().copied().collect();
                seen.sort_unstable();
                want.sort_unstable();
                prop_assert_eq!(seen, want);
            }
        }
    }
}
