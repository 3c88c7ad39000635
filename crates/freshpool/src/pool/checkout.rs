//! Taking a connection: idle (validated), an HTTP/2 stream, a dial, or a
//! FIFO wait bounded by `pool_timeout`.

use super::*;

impl Pool {
    /// Takes a connection for `uri`, waiting (FIFO, bounded by
    /// `pool_timeout`) when the origin is at its limit.
    pub(crate) async fn checkout(
        &self,
        uri: &http::Uri,
        security: &Arc<SecurityContext>,
        connector: &Arc<Connector>,
        caller: &'static Location<'static>,
    ) -> Result<Lease, Error> {
        let view = PoolKey::view(uri, security.id)?;
        let origin = self.origin(view, security, connector);
        origin.follow_dns();
        self.ensure_heartbeat();
        let started = Instant::now();
        self.check_freeze(started);
        let cfg = &self.inner.config;
        loop {
            let now = Instant::now();
            let mut expired = Vec::new();
            let acquired = {
                let mut g = origin.lock();
                let acquired =
                    g.state
                        .acquire(now, origin.limits, &*origin.budget, caller, &mut expired);
                match acquired {
                    Acquire::Idle(idle) => {
                        let lease_id = origin.register_lease(&mut g, caller);
                        Ok((LeaseKind::H1(idle), lease_id))
                    }
                    Acquire::Stream { conn_id, sender } => {
                        let lease_id = origin.register_lease(&mut g, caller);
                        Ok((
                            LeaseKind::H2 {
                                conn_id,
                                sender: sender.sender,
                            },
                            lease_id,
                        ))
                    }
                    other => Err(other),
                }
            };
            for idle in expired {
                origin.counters.closed(origin.close_reason(&idle, now));
            }
            match acquired {
                Ok((kind, lease_id)) => {
                    let mut lease = Lease {
                        origin: origin.clone(),
                        kind: Some(kind),
                        lease_id,
                        reused: true,
                        keep_alive_hint: None,
                        reusable: true,
                    };
                    // Anything taken from the idle list may have died while
                    // it rested (even one never used: it was dialed for a
                    // waiter that another connection served), so it counts as
                    // reused for the retry rule; stats count only real reuse.
                    let mut never_used = false;
                    if let Some(LeaseKind::H1(idle)) = &lease.kind {
                        never_used = idle.fresh;
                        if !self.still_fresh(&origin, idle, now) {
                            lease.reusable = false;
                            lease.discard();
                            continue;
                        }
                    }
                    if !never_used {
                        origin.counters.reused.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(lease);
                }
                Err(Acquire::Full { waiting }) => {
                    return Err(Error::new(
                        Kind::PoolFull,
                        format!(
                            "{waiting} requests already wait for a connection to {} (max_pending {}, limit {})",
                            origin.label, cfg.max_pending, cfg.max_connections_per_host
                        ),
                    ))
                }
                Err(Acquire::Wait { waiter_id, rx, dial }) => {
                    let starving = !dial && origin.lock().state.starving;
                    if dial {
                        origin.spawn_dials(vec![waiter_id]);
                    } else if starving {
                        self.relieve_total(&origin);
                    }
                    let mut guard = WaiterGuard {
                        origin: origin.clone(),
                        rx: Some(rx),
                    };
                    let rx = guard.rx.as_mut().expect("just set");
                    let remaining = cfg.pool_timeout.saturating_sub(started.elapsed());
                    let outcome = tokio::time::timeout(remaining, rx).await;
                    match outcome {
                        Ok(Ok(result)) => {
                            guard.rx = None;
                            let handoff = result?;
                            let waited = started.elapsed();
                            origin.counters.waited(waited);
                            let (kind, reused) = match handoff {
                                Handoff::Exclusive(idle) => {
                                    let reused = !idle.fresh;
                                    (LeaseKind::H1(idle), reused)
                                }
                                Handoff::Stream { conn_id, sender } => {
                                    (LeaseKind::H2 { conn_id, sender: sender.sender }, true)
                                }
                            };
                            let lease_id = origin.register_lease(&mut origin.lock(), caller);
                            if reused {
                                origin.counters.reused.fetch_add(1, Ordering::Relaxed);
                            }
                            return Ok(Lease {
                                origin: origin.clone(),
                                kind: Some(kind),
                                lease_id,
                                reused,
                                keep_alive_hint: None,
                                reusable: true,
                            });
                        }
                        Ok(Err(_)) => {
                            // Sender dropped without an answer: ask again.
                            guard.rx = None;
                            origin.lock().state.cancel_waiter();
                            continue;
                        }
                        Err(_) => {
                            // Report before leaving the queue: "waiting"
                            // counts this request too.
                            origin.counters.pool_timeout();
                            let report = origin.starvation_report(cfg.pool_timeout);
                            drop(guard);
                            warn_starvation(&origin.label, &report);
                            return Err(Error::new(Kind::PoolTimeout, report));
                        }
                    }
                }
                Err(Acquire::Idle(_) | Acquire::Stream { .. }) => unreachable!("handled above"),
            }
        }
    }

    /// Like [`Pool::checkout`], but for a retry after a stale connection
    /// failed: the request gets a newly dialed HTTP/1 connection, never
    /// another idle one that may have died the same way. Falls back to a
    /// normal checkout when no slot is free (or the origin multiplexes).
    pub(crate) async fn checkout_dedicated(
        &self,
        uri: &http::Uri,
        security: &Arc<SecurityContext>,
        connector: &Arc<Connector>,
        caller: &'static Location<'static>,
    ) -> Result<Lease, Error> {
        let view = PoolKey::view(uri, security.id)?;
        let origin = self.origin(view, security, connector);
        let reserved = origin
            .lock()
            .state
            .reserve_dedicated(origin.limits, &*origin.budget);
        if !reserved {
            return self.checkout(uri, security, connector, caller).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn(origin.clone().dial_dedicated(tx))),
            Err(_) => return Err(Error::new(Kind::Closed, "no async runtime")),
        }
        match rx.await {
            Ok(Ok(Handoff::Exclusive(idle))) => {
                let lease_id = origin.register_lease(&mut origin.lock(), caller);
                Ok(Lease {
                    origin: origin.clone(),
                    kind: Some(LeaseKind::H1(idle)),
                    lease_id,
                    reused: false,
                    keep_alive_hint: None,
                    reusable: true,
                })
            }
            Ok(Err(err)) => Err(err),
            Ok(Ok(Handoff::Stream { .. })) | Err(_) => {
                self.checkout(uri, security, connector, caller).await
            }
        }
    }

    /// Whether an idle HTTP/1 connection may carry a request: not idle
    /// across a freeze, and (past `validate_after_idle`) its socket is
    /// quiet: no FIN, no reset, no stray bytes.
    pub(super) fn still_fresh(&self, origin: &Origin, idle: &Idle<H1Conn>, now: Instant) -> bool {
        let budget = &self.inner.budget;
        let freeze_at = budget.freeze_at.load(Ordering::Acquire);
        if freeze_at != 0 && budget.nanos(idle.idle_since) <= freeze_at {
            origin.counters.closed(CloseReason::FreezeEviction);
            return false;
        }
        if now.saturating_duration_since(idle.idle_since) >= self.inner.config.validate_after_idle
            && tcp::peek(&idle.conn.socket) != tcp::Peek::Quiet
        {
            origin.counters.closed(CloseReason::StaleDetected);
            return false;
        }
        true
    }

    /// Total capacity is exhausted while this origin waits: close one idle
    /// connection of another origin so the budget can move here.
    pub(super) fn relieve_total(&self, starving: &Arc<Origin>) {
        lock(&self.inner.budget.starving).push_back(Arc::downgrade(starving));
        for other in self.origins().iter().filter(|o| !Arc::ptr_eq(o, starving)) {
            let victim = other.lock().state.idle.pop_front();
            if let Some(victim) = victim {
                other.counters.closed(CloseReason::Surplus);
                drop(victim);
                return;
            }
        }
    }
}

/// Logs a starvation report at most once per 10 s per process, so a
/// starving service does not also drown its logs.
fn warn_starvation(origin: &str, report: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let now = epoch.elapsed().as_secs() + 1;
    let last = LAST.load(Ordering::Relaxed);
    if (last == 0 || now >= last + 10)
        && LAST
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(origin, "{report}");
    }
}
