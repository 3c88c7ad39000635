//! One origin's idle HTTP/1 connections: the newest is reused first (LIFO,
//! keeping warm connections warm and letting cold ones age out), the oldest
//! is evicted first, and any one can be removed by id when its socket
//! closes.
//!
//! Why not a `VecDeque`: a closing socket must leave the list, and finding
//! it in a deque is a linear scan plus a shift of the records behind it.
//! When a server restart or NAT flush closes all n idle connections at
//! once, that is O(n²) under the origin's lock. Here every operation is
//! O(log n): a `BTreeMap` orders connection ids by a push sequence number,
//! and a `HashMap` holds the records by id (so the tree's nodes stay small:
//! 16-byte entries).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::state::Idle;
use super::IdHash;

/// Idle connections in the order they were returned.
///
/// Invariant: `order` and `records` hold the same connections
/// (`order[s] == id` exactly when `records[id].0 == s`).
pub(crate) struct IdleList<C> {
    /// Push sequence number -> connection id; last = newest.
    order: BTreeMap<u64, u64>,
    /// Connection id -> (its sequence number, the record).
    records: HashMap<u64, (u64, Idle<C>), IdHash>,
    next_seq: u64,
    /// No entry expires before this (a lower bound: lowered on push,
    /// recomputed by `take_where`), so the periodic sweep can skip an
    /// origin without looking at its connections.
    earliest_expiry: Option<Instant>,
}

impl<C> Default for IdleList<C> {
    fn default() -> Self {
        IdleList {
            order: BTreeMap::new(),
            records: HashMap::default(),
            next_seq: 0,
            earliest_expiry: None,
        }
    }
}

impl<C> IdleList<C> {
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Adds the newest entry.
    pub(crate) fn push_back(&mut self, idle: Idle<C>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(t) = idle.expires_at {
            self.earliest_expiry = Some(self.earliest_expiry.map_or(t, |e| e.min(t)));
        }
        self.order.insert(seq, idle.id);
        self.records.insert(idle.id, (seq, idle));
    }

    /// Takes the newest entry (reuse).
    pub(crate) fn pop_back(&mut self) -> Option<Idle<C>> {
        let (_, id) = self.order.pop_last()?;
        self.records.remove(&id).map(|(_, idle)| idle)
    }

    /// Takes the oldest entry (eviction).
    pub(crate) fn pop_front(&mut self) -> Option<Idle<C>> {
        let (_, id) = self.order.pop_first()?;
        self.records.remove(&id).map(|(_, idle)| idle)
    }

    /// Takes the entry of connection `id`, if it is idle here.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Idle<C>> {
        let (seq, idle) = self.records.remove(&id)?;
        self.order.remove(&seq);
        Some(idle)
    }

    /// Oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Idle<C>> {
        self.order
            .values()
            .filter_map(|id| self.records.get(id).map(|(_, idle)| idle))
    }

    /// Takes every entry `pred` selects, oldest first; keeps the others in
    /// their order.
    pub(crate) fn take_where(&mut self, mut pred: impl FnMut(&Idle<C>) -> bool) -> Vec<Idle<C>> {
        let chosen: Vec<u64> = self
            .iter()
            .filter(|idle| pred(idle))
            .map(|idle| idle.id)
            .collect();
        let taken = chosen
            .into_iter()
            .filter_map(|id| self.remove(id))
            .collect();
        self.earliest_expiry = self.iter().filter_map(|idle| idle.expires_at).min();
        taken
    }

    /// Whether some entry may have expired by `now` (false: none has).
    pub(crate) fn may_have_expired(&self, now: Instant) -> bool {
        self.earliest_expiry.is_some_and(|t| now >= t)
    }

    /// Takes everything, oldest first.
    #[cfg(test)]
    pub(crate) fn take_all(&mut self) -> Vec<Idle<C>> {
        self.take_where(|_| true)
    }

    #[cfg(test)]
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.order.len() != self.records.len() {
            return Err(format!(
                "idle list: {} in order but {} records",
                self.order.len(),
                self.records.len()
            ));
        }
        for (seq, id) in &self.order {
            match self.records.get(id) {
                Some((s, idle)) if s == seq && idle.id == *id => {}
                _ => return Err(format!("idle list: connection {id} mis-indexed")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::state::IdleRecord;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn idle(id: u64) -> Idle<()> {
        let now = Instant::now();
        Idle::new(IdleRecord {
            id,
            conn: (),
            created: now,
            idle_since: now,
            expires_at: None,
            requests: 0,
            fresh: true,
        })
    }

    #[test]
    fn the_sweep_hint_never_hides_an_expired_entry() {
        let t0 = Instant::now();
        let at = |ms| t0 + std::time::Duration::from_millis(ms);
        let mut list = IdleList::default();
        assert!(
            !list.may_have_expired(at(1_000_000)),
            "empty: nothing to sweep"
        );
        for (id, expiry) in [(1, Some(300)), (2, None), (3, Some(100)), (4, Some(200))] {
            let mut i = idle(id);
            i.expires_at = expiry.map(at);
            list.push_back(i);
        }
        assert!(!list.may_have_expired(at(99)));
        assert!(list.may_have_expired(at(100)));
        let gone = list.take_where(|i| i.expires_at.is_some_and(|t| at(150) >= t));
        assert_eq!(gone.iter().map(|i| i.id).collect::<Vec<_>>(), [3]);
        // Recomputed from what is left: the next expiry is 200.
        assert!(!list.may_have_expired(at(199)));
        assert!(list.may_have_expired(at(200)));
        // Taking the 200 one out by id leaves a stale (lower) bound: a
        // wasted scan at worst, never a missed expiry.
        assert_eq!(list.remove(4).map(|i| i.id), Some(4));
        assert!(list.may_have_expired(at(250)));
        assert!(list
            .take_where(|i| i.expires_at.is_some_and(|t| at(250) >= t))
            .is_empty());
        assert!(!list.may_have_expired(at(299)));
        assert!(list.may_have_expired(at(300)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push,
        PopBack,
        PopFront,
        Remove(u64),
        TakeOdd,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Push),
            2 => Just(Op::PopBack),
            1 => Just(Op::PopFront),
            2 => (0u64..40).prop_map(Op::Remove),
            1 => Just(Op::TakeOdd),
        ]
    }

    proptest! {
        /// The list behaves exactly like the `VecDeque` it replaced, plus a
        /// linear removal by id, and its index stays consistent.
        #[test]
        fn behaves_like_a_deque(ops in proptest::collection::vec(op(), 0..200)) {
            let mut list = IdleList::default();
            let mut model: VecDeque<u64> = VecDeque::new();
            let mut next_id = 0;
            for op in ops {
                match op {
                    Op::Push => {
                        list.push_back(idle(next_id));
                        model.push_back(next_id);
                        next_id += 1;
                    }
                    Op::PopBack => prop_assert_eq!(list.pop_back().map(|i| i.id), model.pop_back()),
                    Op::PopFront => prop_assert_eq!(list.pop_front().map(|i| i.id), model.pop_front()),
                    Op::Remove(id) => {
                        let want = model.iter().position(|&m| m == id).and_then(|p| model.remove(p));
                        prop_assert_eq!(list.remove(id).map(|i| i.id), want);
                    }
                    Op::TakeOdd => {
                        let taken: Vec<u64> = list.take_where(|i| i.id % 2 == 1).iter().map(|i| i.id).collect();
                        let want: Vec<u64> = model.iter().copied().filter(|id| id % 2 == 1).collect();
                        model.retain(|id| id % 2 == 0);
                        prop_assert_eq!(taken, want);
                    }
                }
                prop_assert_eq!(list.len(), model.len());
                prop_assert_eq!(list.iter().map(|i| i.id).collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
                list.check().map_err(TestCaseError::fail)?;
            }
        }
    }
}
