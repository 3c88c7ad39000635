//! What the model checks: the invariants after every step (see the module
//! above), and at the end that winding everything down leaks no slot.

use super::*;

impl Model {
    pub(super) fn invariants(&mut self) -> Result<(), String> {
        let limits = self.limits();
        self.st.check(limits)?;
        // A forgotten origin stays empty: no dial, no waiter, nothing at
        // rest (so the pool may drop it from its map while one is lent).
        let st = &self.st;
        if self.forgotten
            && (st.slots > 0 || st.live_waiters > 0 || !st.idle.is_empty() || !st.shared.is_empty())
        {
            return Err(format!(
                "a forgotten origin gained something: slots {} waiters {} idle {} shared {}",
                st.slots,
                st.live_waiters,
                st.idle.len(),
                st.shared.len()
            ));
        }
        let open = self.budget.open.load(Ordering::SeqCst);
        if open > self.budget.limit {
            return Err(format!("budget {open} > total limit {}", self.budget.limit));
        }
        if open != self.st.slots + self.external {
            return Err(format!(
                "budget {open} != slots {} + other origins {}",
                self.st.slots, self.external
            ));
        }
        if self.st.dialing != self.dials.len() {
            return Err(format!(
                "dialing {} != dials in flight {}",
                self.st.dialing,
                self.dials.len()
            ));
        }
        if self.st.slots != self.dials.len() + self.sockets.len() {
            return Err(format!(
                "slots {} != dials {} + sockets {} (a slot without an owner)",
                self.st.slots,
                self.dials.len(),
                self.sockets.len()
            ));
        }
        // Every waiter marked `dialing` has a dial in flight that will
        // answer it (a connection goes to the oldest, so any dial will do).
        let flagged = self
            .st
            .waiters
            .iter()
            .filter(|w| w.dialing && !w.tx.is_closed())
            .count();
        if flagged > self.st.dialing {
            if self.setup.strict {
                return Err(format!(
                    "{flagged} live waiters are marked dialing but only {} dials are in flight",
                    self.st.dialing
                ));
            }
            if !self.tainted {
                self.log
                    .push("  (known bug reached: stale dialing flag)".into());
            }
            self.tainted = true;
        }
        if self.tainted {
            return Ok(());
        }
        // No starvation.
        let undialed = self
            .st
            .waiters
            .iter()
            .any(|w| !w.dialing && !w.tx.is_closed());
        let slot_free = self.st.slots < limits.per_host && open < self.budget.limit;
        let coming = match self.st.protocol {
            Protocol::Http1 => false,
            // The streams free and those the dials in flight bring carry
            // every waiter (a newcomer beyond them dials: `acquire`), or a
            // closing connection's end will run `service()`.
            Protocol::Http2 => {
                self.st.free_streams() + self.st.dialing * self.st.streams_per_new_conn()
                    >= self.st.live_waiters
                    || self.sockets.values().any(|f| f.load(Ordering::SeqCst))
            }
            // One dial in flight will serve every waiter; a shared
            // connection with a free stream will be handed out by service.
            Protocol::Unknown => {
                self.st.dialing > 0
                    || self.st.shared.iter().any(|s| {
                        // A closed one counts too: `should_coalesce`
                        // counts its spare streams until its driver
                        // ends, and that end calls `service()`.
                        s.draining.is_none() && s.in_flight < s.sender.max
                    })
                    // A closed connection whose driver has not ended yet:
                    // that end calls `slot_freed` -> `service()`.
                    || self.sockets.values().any(|f| f.load(Ordering::SeqCst))
            }
        };
        if undialed && slot_free && !coming && self.st.starving && self.registered == 0 {
            // Known bug: `service()` set `starving`, but only `checkout`
            // registers an origin for `wake_starving`.
            if self.setup.strict {
                return Err(format!(
                    "starvation: total capacity came back but the origin was never registered \
                     for wake_starving (starving set by service(); slots {}/{}, budget {}/{})",
                    self.st.slots, limits.per_host, open, self.budget.limit
                ));
            }
            self.log
                .push("  (known bug reached: unregistered starving origin)".into());
            self.tainted = true;
            return Ok(());
        }
        if undialed && slot_free && !coming {
            return Err(format!(
                "starvation: a live waiter has no dial while a slot is free \
                 (slots {}/{}, budget {}/{}, dialing {}, starving {}, registered {})",
                self.st.slots,
                limits.per_host,
                open,
                self.budget.limit,
                self.st.dialing,
                self.st.starving,
                self.registered
            ));
        }
        Ok(())
    }

    /// Cancels, releases and closes everything; then nothing may be left.
    pub(super) fn wind_down(&mut self) -> Result<(), String> {
        self.log.push("-- wind down --".into());
        for _ in 0..1000 {
            for mut req in std::mem::take(&mut self.waiting) {
                self.waiter_guard_drop(req.waiter_id, &mut req.rx);
            }
            for a in std::mem::take(&mut self.answered) {
                match a.result {
                    Ok(Handoff::Exclusive(idle)) => drop(idle),
                    Ok(Handoff::Stream { conn_id, .. }) => self.leases_h2.push(conn_id),
                    Ok(Handoff::AskAgain) | Err(_) => {}
                }
            }
            self.leases_h1.clear();
            for conn_id in std::mem::take(&mut self.leases_h2) {
                self.st.release_stream(conn_id, self.now);
            }
            while let Some(dial) = self.dials.pop() {
                self.slot_freed(dial.conn_id, false);
                self.st.dial_done();
                if dial.dedicated.is_none() {
                    self.st
                        .fail_waiter(dial.waiter_id, Error::new(Kind::Connect, "refused"));
                } else {
                    self.st.dedicated_done();
                }
                self.service();
            }
            for flag in self.sockets.values() {
                flag.store(true, Ordering::SeqCst);
            }
            let ids: Vec<u64> = self.sockets.keys().copied().collect();
            for id in ids {
                self.sockets.remove(&id);
                self.slot_freed(id, false);
            }
            while self.external > 0 {
                self.external -= 1;
                self.budget.release();
                self.wake_starving();
            }
            self.collect()?;
            self.invariants()?;
            if self.waiting.is_empty()
                && self.answered.is_empty()
                && self.dials.is_empty()
                && self.sockets.is_empty()
                && self.leases_h2.is_empty()
            {
                break;
            }
        }
        let open = self.budget.open.load(Ordering::SeqCst);
        if self.st.slots != 0 || self.st.dialing != 0 || open != 0 {
            return Err(format!(
                "leak after closing everything: slots {}, dialing {}, budget {open}",
                self.st.slots, self.st.dialing
            ));
        }
        if self.st.live_waiters != 0 || !self.st.idle.is_empty() || !self.st.shared.is_empty() {
            return Err(format!(
                "left over: live_waiters {}, idle {}, shared {}",
                self.st.live_waiters,
                self.st.idle.len(),
                self.st.shared.len()
            ));
        }
        let _ = self.start;
        Ok(())
    }
}
