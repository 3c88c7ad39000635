//! One origin's idle HTTP/1 connections: the newest is reused first (LIFO,
//! keeping warm connections warm and letting cold ones age out), the oldest
//! is evicted first, and any one can be removed by id when its socket
//! closes.
//!
//! Why not a plain `VecDeque` of records: a closing socket must leave the
//! list, and finding it in a deque is a linear scan plus a shift of the
//! records behind it. When a server restart or NAT flush closes all n idle
//! connections at once, that is O(n²) under the origin's lock. Here the
//! records live in a `HashMap` by connection id, and a `VecDeque` keeps the
//! order as (sequence number, id) pairs. Removing by id drops the record
//! and leaves its pair behind as a tombstone, skipped when met and swept
//! out once tombstones outnumber live entries, so every operation is O(1)
//! amortized. (A `BTreeMap` for the order did the same in O(log n), at
//! ~200 instructions per checkout+return more.)
//!
//! The newest entry is kept apart, in a slot of its own: a busy origin
//! returns a connection and takes it again (LIFO), and that round trip
//! then neither hashes nor touches the deque's and the map's memory
//! (~180 instructions, and three cache lines per checkout of an origin that
//! is not in cache: see BENCHMARKS.md, scaling curves).

use super::state::Idle;
use super::{IdHash, Stamp};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

/// Idle connections in the order they were returned.
///
/// Invariant: every record `records[id] == (s, _)` has exactly one pair
/// `(s, id)` in `order`; any other pair in `order` is a tombstone (its id
/// has no record, or a record with another sequence number). Sequence
/// numbers grow from front to back, and `newest`'s is above them all; its
/// connection has no record.
/// (`repr(C)`: the fields a take-and-return of the newest touches first.)
#[repr(C)]
pub(crate) struct IdleList<C> {
    /// The last entry pushed and still here (with its sequence number).
    newest: Option<(u64, Idle<C>)>,
    next_seq: u64,
    /// No entry expires before this (a lower bound: lowered on push,
    /// recomputed by `take_where`), so the periodic sweep can skip an
    /// origin without looking at its connections.
    earliest_expiry: Stamp,
    /// Connection id -> (its sequence number, the record). (Its length is
    /// read on every return.)
    records: HashMap<u64, (u64, Idle<C>), IdHash>,
    /// (push sequence number, connection id); back = newest.
    order: VecDeque<(u64, u64)>,
}

impl<C> Default for IdleList<C> {
    fn default() -> Self {
        IdleList {
            newest: None,
            order: VecDeque::new(),
            records: HashMap::default(),
            next_seq: 0,
            earliest_expiry: Stamp::NEVER,
        }
    }
}

impl<C> IdleList<C> {
    pub(crate) fn len(&self) -> usize {
        self.records.len() + usize::from(self.newest.is_some())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the newest entry; the one it replaces as newest joins the rest.
    pub(crate) fn push_back(&mut self, idle: Idle<C>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.earliest_expiry = self.earliest_expiry.min(idle.expires_at);
        if let Some((older_seq, older)) = self.newest.replace((seq, idle)) {
            self.order.push_back((older_seq, older.id));
            self.records.insert(older.id, (older_seq, older));
        }
    }

    /// Takes the newest entry (reuse).
    pub(crate) fn pop_back(&mut self) -> Option<Idle<C>> {
        if let Some((_, idle)) = self.newest.take() {
            return Some(idle);
        }
        while let Some(pair) = self.order.pop_back() {
            if let Some(idle) = self.take_live(pair) {
                return Some(idle);
            }
        }
        None
    }

    /// Takes the oldest entry (eviction).
    pub(crate) fn pop_front(&mut self) -> Option<Idle<C>> {
        while let Some(pair) = self.order.pop_front() {
            if let Some(idle) = self.take_live(pair) {
                return Some(idle);
            }
        }
        self.newest.take().map(|(_, idle)| idle)
    }

    /// The record a pair taken off `order` stands for (None: a tombstone).
    fn take_live(&mut self, (seq, id): (u64, u64)) -> Option<Idle<C>> {
        let taken = match self.records.entry(id) {
            Entry::Occupied(e) if e.get().0 == seq => Some(e.remove().1),
            _ => None,
        };
        self.sweep_if_mostly_tombstones();
        taken
    }

    /// Takes the entry of connection `id`, if it is idle here. Its pair
    /// stays in `order` as a tombstone.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Idle<C>> {
        if self.newest.as_ref().is_some_and(|(_, n)| n.id == id) {
            return self.newest.take().map(|(_, idle)| idle);
        }
        let (_, idle) = self.records.remove(&id)?;
        self.sweep_if_mostly_tombstones();
        Some(idle)
    }

    /// Keeps `order.len() <= 2 * len() + 32`: the O(n) sweep runs only
    /// after ~n records left, so it costs O(1) per removal.
    fn sweep_if_mostly_tombstones(&mut self) {
        if self.order.len() > 2 * self.records.len() + 32 {
            let records = &self.records;
            self.order
                .retain(|(seq, id)| records.get(id).is_some_and(|r| r.0 == *seq));
        }
    }

    /// Oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Idle<C>> {
        let rest = self.order.iter().filter_map(|(seq, id)| {
            self.records
                .get(id)
                .filter(|(s, _)| s == seq)
                .map(|(_, idle)| idle)
        });
        rest.chain(self.newest.as_ref().map(|(_, idle)| idle))
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
        self.earliest_expiry = self
            .iter()
            .map(|idle| idle.expires_at)
            .min()
            .unwrap_or(Stamp::NEVER);
        taken
    }

    /// Whether some entry may have expired by `now` (false: none has).
    pub(crate) fn may_have_expired(&self, now: Stamp) -> bool {
        now >= self.earliest_expiry
    }

    /// Takes everything, oldest first.
    #[cfg(test)]
    pub(crate) fn take_all(&mut self) -> Vec<Idle<C>> {
        self.take_where(|_| true)
    }

    #[cfg(test)]
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut live = 0;
        let mut last_seq = None;
        for (seq, id) in &self.order {
            if last_seq.is_some_and(|l| l >= *seq) {
                return Err(format!("idle list: sequence {seq} out of order"));
            }
            last_seq = Some(*seq);
            if let Some((s, idle)) = self.records.get(id) {
                if s == seq {
                    if idle.id != *id {
                        return Err(format!("idle list: connection {id} mis-indexed"));
                    }
                    live += 1;
                }
            }
        }
        if let Some((seq, newest)) = &self.newest {
            if last_seq.is_some_and(|l| l >= *seq) {
                return Err(format!("idle list: newest {seq} not after the rest"));
            }
            if self.records.contains_key(&newest.id) {
                return Err(format!("idle list: newest {} also a record", newest.id));
            }
        }
        if live != self.records.len() {
            return Err(format!(
                "idle list: {live} live in order but {} records",
                self.records.len()
            ));
        }
        if self.order.len() > 2 * self.records.len() + 32 {
            return Err(format!(
                "idle list: {} tombstones for {} records were never swept",
                self.order.len() - live,
                live
            ));
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
        let now = Stamp::from_nanos(1);
        Idle::new(IdleRecord {
            id,
            conn: (),
            created: now,
            idle_since: now,
            expires_at: Stamp::NEVER,
            requests: 0,
        })
    }

    /// The order `repr(C)` promises: what taking and returning the newest
    /// touches, then the deque only older entries use.
    #[test]
    fn the_newest_slot_and_counts_come_before_the_order() {
        use std::mem::offset_of;
        type List = IdleList<crate::pool::H1Conn>;
        let order = offset_of!(List, order);
        assert_eq!(offset_of!(List, newest), 0);
        for at in [
            offset_of!(List, next_seq),
            offset_of!(List, earliest_expiry),
            offset_of!(List, records),
        ] {
            assert!(at < order);
        }
    }

    #[test]
    fn the_sweep_hint_never_hides_an_expired_entry() {
        let t0 = Stamp::from_nanos(1);
        let at = |ms| t0.after(std::time::Duration::from_millis(ms));
        let mut list = IdleList::default();
        assert!(
            !list.may_have_expired(at(1_000_000)),
            "empty: nothing to sweep"
        );
        for (id, expiry) in [(1, Some(300)), (2, None), (3, Some(100)), (4, Some(200))] {
            let mut i = idle(id);
            i.expires_at = expiry.map_or(Stamp::NEVER, at);
            list.push_back(i);
        }
        assert!(!list.may_have_expired(at(99)));
        assert!(list.may_have_expired(at(100)));
        let gone = list.take_where(|i| at(150) >= i.expires_at);
        assert_eq!(gone.iter().map(|i| i.id).collect::<Vec<_>>(), [3]);
        // Recomputed from what is left: the next expiry is 200.
        assert!(!list.may_have_expired(at(199)));
        assert!(list.may_have_expired(at(200)));
        // Taking the 200 one out by id leaves a stale (lower) bound: a
        // wasted scan at worst, never a missed expiry.
        assert_eq!(list.remove(4).map(|i| i.id), Some(4));
        assert!(list.may_have_expired(at(250)));
        assert!(list.take_where(|i| at(250) >= i.expires_at).is_empty());
        assert!(!list.may_have_expired(at(299)));
        assert!(list.may_have_expired(at(300)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push,
        PopBack,
        PopFront,
        /// Any id, idle here or not.
        Remove(u64),
        /// One that is idle here (what a closing socket does).
        RemoveIdle(prop::sample::Index),
        /// Several pushes: enough live entries to cross the sweep threshold.
        PushMany(u8),
        /// Removed by id, then back as the newest: its old pair must stay
        /// a tombstone.
        RemoveAndPush(prop::sample::Index),
        TakeOdd,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Push),
            2 => Just(Op::PopBack),
            1 => Just(Op::PopFront),
            1 => (0u64..400).prop_map(Op::Remove),
            3 => any::<prop::sample::Index>().prop_map(Op::RemoveIdle),
            1 => (1u8..60).prop_map(Op::PushMany),
            1 => any::<prop::sample::Index>().prop_map(Op::RemoveAndPush),
            1 => Just(Op::TakeOdd),
        ]
    }

    proptest! {
        /// The list behaves exactly like a `VecDeque` with a linear removal
        /// by id, and its tombstones stay consistent and bounded.
        #[test]
        fn behaves_like_a_deque(ops in proptest::collection::vec(op(), 0..300)) {
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
                    Op::PushMany(n) => {
                        for _ in 0..n {
                            list.push_back(idle(next_id));
                            model.push_back(next_id);
                            next_id += 1;
                        }
                    }
                    Op::Remove(id) => {
                        let want = model.iter().position(|&m| m == id).and_then(|p| model.remove(p));
                        prop_assert_eq!(list.remove(id).map(|i| i.id), want);
                    }
                    Op::RemoveIdle(i) => {
                        if !model.is_empty() {
                            let id = model.remove(i.index(model.len())).expect("in range");
                            prop_assert_eq!(list.remove(id).map(|i| i.id), Some(id));
                        }
                    }
                    Op::RemoveAndPush(i) => {
                        if !model.is_empty() {
                            let id = model.remove(i.index(model.len())).expect("in range");
                            prop_assert_eq!(list.remove(id).map(|i| i.id), Some(id));
                            list.push_back(idle(id));
                            model.push_back(id);
                        }
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
