//! One step of a history: what the pool does for each `Op`, replayed on
//! the state machine with the model's fake channels and budget.

use super::*;

impl Model {
    pub(super) fn step(&mut self, op: Op) -> Result<(), String> {
        self.log.push(format!("{op:?}"));
        match op {
            Op::Acquire => self.acquire(),
            Op::CancelWaiting(i) => {
                if !self.waiting.is_empty() {
                    let mut req = self.waiting.remove(i.index(self.waiting.len()));
                    self.log.push(format!("  cancel waiter {}", req.waiter_id));
                    self.waiter_guard_drop(req.waiter_id, &mut req.rx);
                }
            }
            Op::CancelAnswered(i) => {
                if !self.answered.is_empty() {
                    let a = self.answered.remove(i.index(self.answered.len()));
                    self.log
                        .push(format!("  drop answered waiter {}", a.waiter_id));
                    // WaiterGuard::drop with a value in the channel.
                    match a.result {
                        Ok(Handoff::Exclusive(idle)) => {
                            let surplus = self.st.offer_idle(idle, self.limits());
                            drop(surplus);
                        }
                        Ok(Handoff::Stream { conn_id, .. }) => {
                            self.st.untake_stream(conn_id);
                            self.service();
                        }
                        Ok(Handoff::AskAgain) | Err(_) => {}
                    }
                }
            }
            Op::Wake(i) => {
                if !self.answered.is_empty() {
                    let a = self.answered.remove(i.index(self.answered.len()));
                    match a.result {
                        Ok(Handoff::Exclusive(idle)) => self.leases_h1.push(idle),
                        Ok(Handoff::Stream { conn_id, .. }) => self.leases_h2.push(conn_id),
                        Ok(Handoff::AskAgain) if a.moved => self.acquire_moved(a.waiter_id)?,
                        Err(e) if a.moved && e.kind() == Kind::Closed => {
                            self.acquire_moved(a.waiter_id)?
                        }
                        Ok(Handoff::AskAgain) => self.acquire_again(a.waiter_id)?,
                        Err(e) if e.kind() == Kind::Closed => self.acquire_again(a.waiter_id)?,
                        Err(_) => {}
                    }
                }
            }
            Op::Release(i) => {
                if !self.leases_h1.is_empty() {
                    let mut idle = self.leases_h1.remove(i.index(self.leases_h1.len()));
                    let now = self.now;
                    idle.requests += 1;
                    idle.idle_since = now;
                    idle.expires_at = self.expiry(now);
                    let expired = idle.expires_at <= now;
                    if expired || idle.conn.is_closed() {
                        drop(idle);
                    } else {
                        let surplus = self.st.offer_idle(idle, self.limits());
                        drop(surplus);
                    }
                }
            }
            Op::Discard(i) => {
                if !self.leases_h1.is_empty() {
                    drop(self.leases_h1.remove(i.index(self.leases_h1.len())));
                }
            }
            Op::ReleaseStream(i) => {
                if !self.leases_h2.is_empty() {
                    let conn_id = self.leases_h2.remove(i.index(self.leases_h2.len()));
                    self.st.release_stream(conn_id, self.now);
                    // As `Origin::settle_streams` (no other origin starves
                    // in the model).
                    let keep = if self.st.live_waiters > 0 {
                        usize::MAX
                    } else {
                        self.setup.limits.max_idle
                    };
                    // Those kept are the `keep` that rested least.
                    let resting = |st: &St| {
                        let mut since: Vec<_> = st
                            .shared
                            .iter()
                            .filter(|s| {
                                s.in_flight == 0 && s.draining.is_none() && !s.sender.is_closed()
                            })
                            .map(|s| s.idle_since)
                            .collect();
                        since.sort_unstable_by(|a, b| b.cmp(a));
                        since
                    };
                    let mut expected = resting(&self.st);
                    expected.truncate(keep);
                    drop(self.st.drop_idle_shared(keep));
                    assert_eq!(resting(&self.st), expected, "max_idle {keep}");
                    self.service();
                }
            }
            Op::Dedicated => {
                if self.st.reserve_dedicated(self.setup.limits, &self.budget) {
                    let conn_id = self.next_conn;
                    self.next_conn += 1;
                    self.log.push(format!("  dedicated dial #{conn_id}"));
                    self.dials.push(Dial {
                        conn_id,
                        waiter_id: 0,
                        dedicated: Some(false),
                    });
                } else {
                    self.acquire();
                }
            }
            Op::DropDedicated(i) => {
                let mine: Vec<usize> = (0..self.dials.len())
                    .filter(|&k| self.dials[k].dedicated == Some(false))
                    .collect();
                if !mine.is_empty() {
                    let k = mine[i.index(mine.len())];
                    self.dials[k].dedicated = Some(true);
                }
            }
            Op::DialOk(i) => {
                if !self.dials.is_empty() {
                    let dial = self.dials.remove(i.index(self.dials.len()));
                    match dial.dedicated {
                        None => self.add_connection(dial.conn_id, false),
                        Some(gone) => self.dedicated_landed(dial.conn_id, gone),
                    }
                }
            }
            Op::DialOkDead(i) => {
                if !self.dials.is_empty() {
                    let dial = self.dials.remove(i.index(self.dials.len()));
                    if dial.dedicated.is_none() {
                        // The driver ends first: SlotGuard::drop claims the
                        // dial count and frees the slot in one step.
                        self.st.dial_done();
                        self.slot_freed(dial.conn_id, false);
                        self.add_connection_claimed(dial.conn_id, true, false);
                    } else {
                        self.dials.push(dial);
                    }
                }
            }
            Op::DialFail(i) => {
                if !self.dials.is_empty() {
                    let dial = self.dials.remove(i.index(self.dials.len()));
                    if dial.dedicated.is_some() {
                        // dial_dedicated's error path: the guard dropped in
                        // the failed dial already counted the dial done.
                        self.st.dial_done();
                        self.st.dedicated_done();
                        self.slot_freed(dial.conn_id, false);
                        self.service();
                        return self.collect().and_then(|()| self.invariants());
                    }
                    // Origin::dial_for's order: the dial's count, its
                    // waiter's answer (and its riders', `fail_dial`) and
                    // service() in one locked step; then the slot guard,
                    // which connector.dial keeps on failure, frees the slot.
                    self.st.dial_done();
                    self.st
                        .fail_dial(dial.waiter_id, Error::new(Kind::Connect, "refused"));
                    self.service();
                    if self.setup.strict_dial_fail {
                        self.st.check(self.limits())?;
                    }
                    self.slot_freed(dial.conn_id, false);
                }
            }
            Op::DialNeverRan(i) => {
                if !self.dials.is_empty() {
                    let dial = self.dials.remove(i.index(self.dials.len()));
                    self.budget.release();
                    let waiter = dial.dedicated.is_none().then_some(dial.waiter_id);
                    if dial.dedicated.is_some() {
                        // (Its `DedicatedGuard` drops with the unrun task.)
                        self.st.dedicated_done();
                    }
                    self.st
                        .dial_never_ran(waiter, true, self.setup.limits, &self.budget);
                    self.spawn_dials(Vec::new());
                    self.wake_starving();
                    if dial.dedicated == Some(false) {
                        self.acquire();
                    }
                }
            }
            Op::PeerClose(i) => {
                if !self.sockets.is_empty() {
                    let n = i.index(self.sockets.len());
                    let flag = self.sockets.values().nth(n).expect("in range");
                    flag.store(true, Ordering::SeqCst);
                }
            }
            Op::DriverEnd(i, race) => {
                let closed: Vec<u64> = self
                    .sockets
                    .iter()
                    .filter(|(_, f)| f.load(Ordering::SeqCst))
                    .map(|(id, _)| *id)
                    .collect();
                if !closed.is_empty() {
                    let id = closed[i.index(closed.len())];
                    self.sockets.remove(&id);
                    self.slot_freed(id, race);
                }
            }
            Op::Service => self.service(),
            Op::Advance(ms) => self.now = self.now.after(Duration::from_millis(u64::from(ms))),
            Op::Forget => {
                // (Answers not yet looked at may be there: an `AskAgain`
                // or an error holds no slot.)
                let leased = !self.leases_h1.is_empty() || !self.leases_h2.is_empty();
                if self.st.is_unused() && !leased {
                    self.log.push("  retired (forgotten)".into());
                    self.st.retired = true;
                    self.forgotten = true;
                }
            }
            Op::Evict => {
                let now = self.now;
                drop(
                    self.st
                        .idle
                        .take_where(|idle| now >= idle.expires_at || idle.conn.is_closed()),
                );
            }
            Op::Freeze => {
                // Origin::evict(now, Some(now)): every idle connection and
                // every HTTP/2 connection without streams is dropped.
                drop(self.st.idle.take_all());
                for sh in self.st.shared.iter_mut().filter(|sh| sh.in_flight == 0) {
                    sh.drain(crate::stats::CloseReason::FreezeEviction);
                }
                let gone: Vec<Arc<AtomicBool>> = self
                    .st
                    .shared
                    .iter()
                    .filter(|sh| sh.draining.is_some() && sh.in_flight == 0)
                    .map(|sh| sh.sender.closed.clone())
                    .collect();
                self.st
                    .shared
                    .retain(|sh| sh.draining.is_none() || sh.in_flight > 0);
                // Its last sender is gone: hyper closes the connection.
                for closed in gone {
                    closed.store(true, Ordering::SeqCst);
                }
            }
            Op::ExternalTake => {
                if self.budget.try_reserve() {
                    self.external += 1;
                }
            }
            Op::ExternalGive => {
                if self.external > 0 {
                    self.external -= 1;
                    self.budget.release();
                    self.wake_starving();
                }
            }
        }
        self.collect()?;
        self.invariants()
    }
}
