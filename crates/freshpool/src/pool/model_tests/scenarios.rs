//! Fixed histories for the scenarios the issue names, so a regression is
//! reported by name.

use super::*;

#[test]
fn acquire_release_reuses_and_closes_cleanly() {
    use Op::*;
    let i0 = Ix(0);
    run(
        h1_setup(2, 4),
        &[
            Acquire,
            DialOk(i0),
            Wake(i0),
            Release(i0),
            Acquire,
            Release(i0),
        ],
    )
    .unwrap();
}

#[test]
fn fifo_waiters_get_released_connections_in_order() {
    use Op::*;
    let i0 = Ix(0);
    let mut m = Model::new(h1_setup(1, 4));
    for op in [Acquire, DialOk(i0), Wake(i0), Acquire, Acquire, Acquire] {
        m.step(op).unwrap();
    }
    assert_eq!(m.waiting.len(), 3);
    m.step(Release(i0)).unwrap();
    assert_eq!(m.answered.len(), 1);
    assert_eq!(m.answered[0].waiter_id, 2, "the oldest waiter is served");
    m.wind_down().unwrap();
}

/// A dial dropped unrun (its runtime shutting down) sends its waiters back
/// to ask again. Newcomers may fill the queue to `max_pending` before they
/// do: the waiters asking again were admitted already, so they keep their
/// places ahead of the newcomers instead of getting `PoolFull`.
#[test]
fn waiters_asking_again_keep_their_place_and_are_not_refused() {
    use Op::*;
    let i0 = Ix(0);
    let mut setup = h1_setup(1, 4);
    setup.limits.max_pending = 1;
    let mut m = Model::new(setup);
    // Waiter 1 with the origin's only dial; waiter 2 queued behind it.
    for op in [Acquire, Acquire, DialNeverRan(i0)] {
        m.step(op).unwrap();
    }
    let sent_back: Vec<u64> = m.answered.iter().map(|a| a.waiter_id).collect();
    assert_eq!(sent_back, [1, 2], "both sent back to ask again");
    // Newcomers: 3 gets the freed slot's dial, 4 fills the queue.
    for op in [Acquire, Acquire] {
        m.step(op).unwrap();
    }
    assert_eq!(m.waiting.len(), 2);
    assert_eq!(
        m.acquire_as(None),
        Some(1),
        "the queue is full for a newcomer"
    );
    // 1 and 2 ask again: admitted, at their old places.
    m.step(Wake(i0)).unwrap();
    m.step(Wake(i0)).unwrap();
    assert_eq!(m.waiting.len(), 4);
    // The one connection coming goes to waiter 1, the oldest.
    m.step(DialOk(i0)).unwrap();
    let served: Vec<u64> = m.answered.iter().map(|a| a.waiter_id).collect();
    assert_eq!(served, [1]);
    m.wind_down().unwrap();
}

/// `dial_covers` (is a connection on its way to this waiter, so that
/// `pool_timeout` must not cut its wait short?) counts only dials started
/// for waiters: a dedicated retry dial serves its own request, and a
/// waiter queued behind it gets `PoolTimeout` on time.
#[test]
fn a_dedicated_dial_does_not_cover_a_waiter() {
    use Op::*;
    let i0 = Ix(0);
    let mut m = Model::new(h1_setup(2, 4));
    // One connection busy; a dedicated retry dial takes the second slot.
    for op in [Acquire, DialOk(i0), Wake(i0), Dedicated] {
        m.step(op).unwrap();
    }
    assert_eq!(m.st.dialing, 1);
    m.step(Acquire).unwrap();
    let waiter = m.waiting.last().expect("queued behind the limit").waiter_id;
    assert!(!m.st.dial_covers(waiter), "nothing is dialed for it");
    // A waiter that has its own dial is covered.
    let mut m = Model::new(h1_setup(2, 4));
    m.step(Acquire).unwrap();
    let first = m.waiting[0].waiter_id;
    assert!(m.st.dial_covers(first));
    m.wind_down().unwrap();
}

#[test]
fn cancelled_waiter_with_a_dial_does_not_leak_the_connection() {
    use Op::*;
    let i0 = Ix(0);
    run(
        h1_setup(1, 1),
        &[
            Acquire,
            CancelWaiting(i0),
            DialOk(i0),
            Acquire,
            Wake(i0),
            Discard(i0),
            DriverEnd(i0, false),
        ],
    )
    .unwrap();
}

#[test]
fn dial_failure_frees_the_slot_and_answers_the_waiter() {
    use Op::*;
    let i0 = Ix(0);
    let mut m = Model::new(h1_setup(1, 1));
    m.step(Acquire).unwrap();
    m.step(Acquire).unwrap();
    m.step(DialFail(i0)).unwrap();
    // The first waiter got the error; the second got its own dial.
    assert_eq!(m.answered.len(), 1);
    assert!(m.answered[0].result.is_err());
    assert_eq!(m.dials.len(), 1);
    m.wind_down().unwrap();
}

/// Library bug (reported): `connector.dial` drops the `SlotGuard` (so
/// `Origin::slot_freed` runs: `slots -= 1`, `service()`, `publish()`)
/// *before* `dial_for` calls `dial_done()`. Between the two critical
/// sections the state has `dialing > slots` (invariant 2 broken), which any
/// concurrent `Client::stats()` can observe: `slots - dialing` in
/// `Origin::publish` / `Origin::snapshot` panicked in debug builds (now
/// masked with `saturating_sub`), and `connecting` is reported while the
/// slot is already gone.
#[test]
fn dial_failure_never_shows_more_dials_than_slots() {
    let mut setup = h1_setup(2, 4);
    setup.strict_dial_fail = true;
    let i0 = Ix(0);
    run(setup, &[Op::Acquire, Op::DialFail(i0)]).unwrap();
}

/// Library bug (reported): a total slot freed by this origin can be taken
/// by another origin before this origin's `service()`; `may_dial` then sets
/// `starving` but nothing registers the origin in the budget's starving
/// list (only `checkout` does, via `relieve_total`), so when the other
/// origin frees its slot, `wake_starving` does not look here: the waiter
/// sits with a free slot until `pool_timeout` or some unrelated event.
#[test]
fn waiter_is_woken_when_total_capacity_returns_after_a_race() {
    use Op::*;
    let i0 = Ix(0);
    // One connection (limit 2 per host, 2 in total); a second request
    // waits... for the per-host slot held by a dial that fails while
    // another origin steals the freed total slot, then gives it back.
    let mut m = Model::new(h1_setup(1, 1));
    m.step(Acquire).unwrap(); // waiter 1 dials
    m.step(DialOk(i0)).unwrap(); // connection 1 idle -> waiter 1
    m.step(Wake(i0)).unwrap(); // leased
    m.step(Acquire).unwrap(); // waiter 2 waits (per-host full, not starving)
    m.step(Discard(i0)).unwrap(); // connection closes
    m.step(DriverEnd(i0, true)).unwrap(); // slot freed, another origin races
    m.step(ExternalGive).unwrap(); // ...and gives it back
}

/// Library bug (reported): connections go to the oldest waiter, not to the
/// waiter a dial was started for, but the `dialing` flag stays on the
/// waiter. Waiters 1 and 2 each start a dial; dial 2 lands first and serves
/// waiter 1; dial 1 then fails: `fail_waiter(1)` finds nobody, `dialing`
/// drops to 0, yet waiter 2 is still marked `dialing`, so `service()` never
/// dials for it and `acquire` (live 1 > dialing 0) queues newcomers behind
/// it without dials: they wait for `pool_timeout` with a slot free.
#[test]
fn failed_dial_for_a_served_waiter_leaves_the_next_waiter_without_a_dial() {
    use Op::*;
    run(
        h1_setup(2, 3),
        &[Acquire, Acquire, DialOk(Ix(1)), DialFail(Ix(0)), Acquire],
    )
    .unwrap();
}

/// Library bug (reported), without any race: an HTTPS origin whose first
/// dial is in flight queues two more requests; another origin uses the
/// rest of the total budget; the dial lands as HTTP/2 with one stream, so
/// `add_connection`'s `service()` wants a second connection, finds the
/// budget exhausted and sets `starving`, but nothing puts the origin on the
/// budget's starving list. When the other origin frees its slot,
/// `wake_starving` finds an empty list: the waiter waits for
/// `pool_timeout` although a slot and total capacity are free.
#[test]
fn origin_starving_after_service_is_woken_when_total_capacity_returns() {
    use Op::*;
    let setup = Setup {
        limits: Limits {
            per_host: 2,
            max_idle: 2,
            max_pending: 4,
        },
        total: 2,
        h2: true,
        h2_streams: 1,
        idle_ms: 1000,
        strict_dial_fail: false,
        strict: true,
    };
    run(
        setup,
        &[
            Acquire,
            Acquire,
            ExternalTake,
            Acquire,
            DialOk(Ix(0)),
            ExternalGive,
        ],
    )
    .unwrap();
}

/// Regression (found by `origin_state_model`, fixed with a one-line guard
/// in `OriginState::offer_idle`): a connection handed to a waiter whose
/// request was dropped before it looked at it goes back through
/// `WaiterGuard::drop` -> `offer_idle`. If its socket closed meanwhile and
/// its driver already freed the slot, it used to be pooled as a zombie
/// (idle + shared + dialing > slots, counted against `max_idle`, and handed
/// to the next waiter as a dead connection).
#[test]
fn dead_connection_returned_by_a_cancelled_waiter_is_not_pooled() {
    use Op::*;
    let mut m = Model::new(h1_setup(2, 2));
    for op in [Acquire, DialOk(Ix(0)), Acquire, Wake(Ix(0)), DialOk(Ix(0))] {
        m.step(op).unwrap();
    }
    // Waiter 2 holds connection #2 unread; it dies and its driver ends.
    assert_eq!(m.answered.len(), 1);
    let conn = m.sockets.keys().copied().max().unwrap();
    m.sockets[&conn].store(true, Ordering::SeqCst);
    let i = m.sockets.keys().position(|k| *k == conn).unwrap();
    m.step(DriverEnd(Ix(i), false)).unwrap();
    // Now waiter 2's request is dropped: the dead connection must not be
    // pooled.
    m.step(CancelAnswered(Ix(0))).unwrap();
    assert!(m.st.idle.is_empty());
    m.wind_down().unwrap();
}

/// Regression (found by `tests/core.rs`,
/// `a_body_read_after_the_last_client_dropped_closes_its_connection`): a
/// connection returned after its pool was dropped came to rest in the
/// origin's idle list, where nothing would ever close it (its driver task
/// holds the origin). `Drop for PoolInner` now retires every origin, and a
/// retired origin hands back whatever is offered, to be closed.
#[test]
fn a_connection_returned_to_a_retired_origin_is_not_pooled() {
    use Op::*;
    let mut m = Model::new(h1_setup(2, 4));
    m.step(Acquire).unwrap();
    m.step(DialOk(Ix(0))).unwrap();
    m.step(Wake(Ix(0))).unwrap();
    assert_eq!(m.leases_h1.len(), 1);
    m.st.retired = true;
    m.step(Release(Ix(0))).unwrap();
    assert_eq!(
        m.st.idle.len(),
        0,
        "a connection came to rest in a retired origin"
    );
    m.wind_down().unwrap();
}

/// Regression (found by `tests/property.rs` over HTTP/2 and reproduced
/// here; fixed with a one-line guard in `OriginState::add_shared`): an
/// HTTP/2 connection that dies before `add_connection` takes the lock (its
/// driver already freed the slot) used to be added to `shared` for good: a
/// zombie that `should_coalesce` counted as spare streams, so later
/// requests queued without a dial and failed with `PoolTimeout`.
#[test]
fn http2_connection_dead_on_arrival_is_not_shared() {
    use Op::*;
    let mut m = Model::new(h2_setup(false));
    m.step(Acquire).unwrap();
    m.step(DialOkDead(Ix(0))).unwrap();
    assert!(m.st.shared.is_empty(), "a dead connection was shared");
    m.wind_down().unwrap();
}

/// Regression (found by `freshpool soak --http2` under CPU load: open
/// descriptors grew from 19 to 45 after a fault): once every HTTP/2
/// connection of an origin was gone (all reset at once), `should_coalesce`
/// assumed one stream per connection and dialed once per waiter, 32
/// connections where the server's 8-stream limit needed 4. The limit the
/// last connection announced now stands in until a new one lands.
#[test]
fn http2_reconnect_after_every_connection_died_dials_by_the_stream_limit() {
    use Op::*;
    let mut m = Model::new(h2_setup_for_8());
    m.step(Acquire).unwrap();
    m.step(DialOk(Ix(0))).unwrap(); // HTTP/2, 4 streams per connection
    m.step(Wake(Ix(0))).unwrap();
    m.step(ReleaseStream(Ix(0))).unwrap();
    m.step(PeerClose(Ix(0))).unwrap();
    m.step(DriverEnd(Ix(0), false)).unwrap();
    assert!(m.st.shared.is_empty() && m.dials.is_empty());
    for _ in 0..8 {
        m.step(Acquire).unwrap();
    }
    // Any capacity change (a stream released, a slot freed) runs service().
    m.step(Service).unwrap();
    assert_eq!(m.dials.len(), 2, "8 waiters at 4 streams per connection");
    m.step(DialOk(Ix(0))).unwrap();
    m.step(DialOk(Ix(0))).unwrap();
    assert_eq!(m.answered.len(), 8, "the two connections serve all 8");
    m.wind_down().unwrap();
}

/// A server that lowers its stream limit (RFC 9113 section 6.5.2; the
/// pool follows the live limit since session 16). What one new dial
/// carries was read from the live limits only: lowered to 1, the pool
/// dialed once per waiter at the next `service()`. New connections
/// announce the server's own limit (4 here): 8 waiters need 2 dials.
#[test]
fn a_lowered_stream_limit_does_not_make_the_pool_dial_per_waiter() {
    use Op::*;
    let mut m = Model::new(h2_setup_for_8());
    m.step(Acquire).unwrap();
    m.step(DialOk(Ix(0))).unwrap(); // HTTP/2, 4 streams per connection
    m.step(Wake(Ix(0))).unwrap(); // one stream in flight
    m.st.shared[0].sender.max = 1; // the server lowers its limit
    for _ in 0..8 {
        m.step(Acquire).unwrap();
    }
    m.step(Service).unwrap();
    assert_eq!(
        m.dials.len(),
        2,
        "8 waiters at 4 streams per new connection"
    );
    m.step(DialOk(Ix(0))).unwrap();
    m.step(DialOk(Ix(0))).unwrap();
    assert_eq!(m.answered.len(), 8, "the two new connections serve all 8");
    m.wind_down().unwrap();
}

/// Waiters that rode on one HTTP/2 dial all get its error when it fails
/// and nothing else can serve them (`fail_dial`); before the protocol is
/// known (HTTPS before ALPN) they get dials of their own instead.
#[test]
fn a_failed_shared_dial_answers_its_riders_or_gives_them_dials() {
    use Op::*;
    for http2_only in [true, false] {
        let mut m = Model::new(Setup {
            limits: Limits {
                per_host: 4,
                max_idle: 4,
                max_pending: 8,
            },
            total: 4,
            ..h2_setup(true)
        });
        m.st.http2_only = http2_only;
        for _ in 0..3 {
            m.step(Acquire).unwrap();
        }
        assert_eq!(m.dials.len(), 1, "one dial for all three");
        m.step(DialFail(Ix(0))).unwrap();
        if http2_only {
            assert_eq!(m.answered.len(), 3, "all three get its error");
            assert!(m.answered.iter().all(|a| a.result.is_err()));
            assert!(m.dials.is_empty());
        } else {
            assert_eq!(m.answered.len(), 1, "only its own waiter");
            assert_eq!(m.dials.len(), 2, "a dial each for the other two");
        }
        m.wind_down().unwrap();
    }
    // One connection per host: the other two no longer ride on one dial,
    // so the one behind the second's dial is not covered by it (its
    // `pool_timeout` must not keep moving, one handshake timeout after
    // another).
    let mut m = Model::new(Setup {
        limits: Limits {
            per_host: 1,
            max_idle: 1,
            max_pending: 8,
        },
        total: 4,
        ..h2_setup(true)
    });
    for _ in 0..3 {
        m.step(Acquire).unwrap();
    }
    m.step(DialFail(Ix(0))).unwrap();
    assert_eq!(m.dials.len(), 1, "one slot: one dial, for the second");
    let (second, third) = (m.dials[0].waiter_id, m.dials[0].waiter_id + 1);
    assert!(m.st.dial_covers(second));
    assert!(!m.st.dial_covers(third));
    m.wind_down().unwrap();
}

/// Over HTTP/2, a failed dial's error goes only to the waiters that the
/// free streams and the other dials in flight do not carry: five waiters
/// behind two dials of four streams, the first dial fails: its own waiter
/// gets the error, the second dial serves the other four. (The three
/// oldest got it too, the second dial's load not counted. A review found
/// it.)
#[test]
fn a_failed_http2_dial_spares_the_waiters_another_dial_carries() {
    use Op::*;
    let mut m = Model::new(h2_setup_for_8());
    m.step(Acquire).unwrap();
    m.step(DialOk(Ix(0))).unwrap(); // HTTP/2, 4 streams: one in use
    for _ in 0..3 {
        m.step(Acquire).unwrap(); // the other three
    }
    for _ in 0..5 {
        m.step(Acquire).unwrap(); // a dial for four, a second for the fifth
    }
    assert_eq!(m.dials.len(), 2, "{}", m.log.join("\n"));
    let streams = m.answered.len();
    m.step(DialFail(Ix(0))).unwrap();
    let failed = m.answered[streams..]
        .iter()
        .filter(|a| a.result.is_err())
        .count();
    assert_eq!(
        failed,
        1,
        "only the failed dial's own waiter\n{}",
        m.log.join("\n")
    );
    m.step(DialOk(Ix(0))).unwrap();
    let served = m.answered[streams..]
        .iter()
        .filter(|a| a.result.is_ok())
        .count();
    assert_eq!(
        served,
        4,
        "the second dial serves the other four\n{}",
        m.log.join("\n")
    );
    m.wind_down().unwrap();
}

/// `h2_setup` with room for 8 connections (and 16 queued requests).
fn h2_setup_for_8() -> Setup {
    Setup {
        limits: Limits {
            per_host: 8,
            max_idle: 8,
            max_pending: 16,
        },
        total: 8,
        ..h2_setup(true)
    }
}

fn h2_setup(strict: bool) -> Setup {
    Setup {
        limits: Limits {
            per_host: 1,
            max_idle: 1,
            max_pending: 4,
        },
        total: 4,
        h2: true,
        h2_streams: 4,
        idle_ms: 1000,
        strict_dial_fail: false,
        strict,
    }
}

/// Library bug (reported; same root cause as
/// `failed_dial_for_a_served_waiter_leaves_the_next_waiter_without_a_dial`):
/// the waiter whose dial delivered a connection that was already dead keeps
/// its `dialing` flag with no dial in flight, so `service()` never dials
/// for it, and `acquire` (live 1 > dialing 0) queues every newcomer behind
/// it without a dial. Under continuous load (always one waiter) nothing
/// calls `service()` again: every request ends in `PoolTimeout`.
#[test]
fn dead_on_arrival_connection_leaves_its_waiter_without_a_dial() {
    use Op::*;
    for setup in [h2_setup(true), h1_setup(1, 4)] {
        let mut m = Model::new(Setup {
            strict: true,
            ..setup
        });
        m.step(Acquire).unwrap();
        m.step(DialOkDead(Ix(0))).unwrap();
        m.step(Acquire).unwrap();
        assert_eq!(m.dials.len(), 1, "somebody must be dialing: {setup:?}");
    }
}

/// A waiter served otherwise passes its dial's mark on, except while a
/// dedicated retry dial is in flight: `dialing` counts that dial, so a
/// passed mark looked covered, and when a slot freed the next waiter got no
/// dial until the retry's landed. (A review of the hand-over found it.)
#[test]
fn no_mark_is_passed_on_while_a_dedicated_dial_is_in_flight() {
    use Op::*;
    let i0 = Ix(0);
    let mut m = Model::new(h1_setup(2, 4));
    // A retry's dedicated dial, then R2 with a dial of its own, then R3
    // queued behind the limit with none.
    for op in [Dedicated, Acquire, Acquire] {
        m.step(op).unwrap();
    }
    let r3 = m.waiting.last().expect("R3 queued").waiter_id;
    assert_eq!((m.st.dialing, m.st.dedicated), (2, 1));
    // R2's dial lands and serves R2; its connection then closes on return.
    m.step(DialOk(Ix(1))).unwrap();
    for op in [Wake(i0), Discard(i0), DriverEnd(i0, false)] {
        m.step(op).unwrap();
    }
    assert!(
        m.dials
            .iter()
            .any(|d| d.dedicated.is_none() && d.waiter_id == r3),
        "R3 has a dial of its own: {}",
        m.log.join("\n")
    );
    m.wind_down().unwrap();
}

/// Requests riding on an HTTP/2 dial in flight (or on the first dial,
/// before the protocol is known) have a connection on its way: they are
/// not queued, and `max_pending` does not refuse them. It counted every
/// waiter beyond the dials as queued, so a cold burst of more than
/// `max_pending` + 1 requests to a new HTTP/2 origin failed its tail with
/// `PoolFull` while the origin had no connection at all. (A review found
/// it.)
#[test]
fn riders_on_an_http2_dial_are_not_refused_as_pool_full() {
    use Op::*;
    let setup = Setup {
        limits: Limits {
            per_host: 8,
            max_idle: 8,
            max_pending: 2,
        },
        total: 8,
        ..h2_setup(true)
    };
    let mut m = Model::new(setup);
    for _ in 0..4 {
        m.step(Acquire).unwrap();
    }
    let refused = |m: &Model| m.log.iter().any(|l| l.contains("full"));
    assert!(!refused(&m), "{}", m.log.join("\n"));
    assert_eq!((m.waiting.len(), m.dials.len()), (4, 1));
    // Once HTTP/2 (4 streams per connection), a second dial in flight
    // carries four more: 8 waiters, none refused.
    m.step(DialOk(Ix(0))).unwrap();
    for _ in 0..4 {
        m.step(Acquire).unwrap();
    }
    assert!(!refused(&m), "{}", m.log.join("\n"));
    assert_eq!(m.dials.len(), 1, "{}", m.log.join("\n"));
    // Beyond what the dials in flight carry, newcomers dial while the
    // per-host limit has room (a newcomer waited for the dials in flight
    // to land, and past `max_pending` was refused with 6 slots free) ...
    m.step(Acquire).unwrap();
    assert!(!refused(&m), "{}", m.log.join("\n"));
    assert_eq!(m.dials.len(), 2, "{}", m.log.join("\n"));
    m.wind_down().unwrap();
}

/// ... and at the per-host limit, `max_pending` holds beyond what the
/// dials in flight carry.
#[test]
fn past_the_dials_in_flight_at_the_limit_max_pending_holds_over_http2() {
    use Op::*;
    let setup = Setup {
        limits: Limits {
            per_host: 2,
            max_idle: 2,
            max_pending: 2,
        },
        total: 8,
        ..h2_setup(true)
    };
    let mut m = Model::new(setup);
    m.step(Acquire).unwrap();
    m.step(DialOk(Ix(0))).unwrap(); // HTTP/2, 4 streams, one in use
    for _ in 0..3 {
        m.step(Acquire).unwrap(); // its other three
    }
    let refused = |m: &Model| m.log.iter().any(|l| l.contains("full"));
    for _ in 0..4 {
        m.step(Acquire).unwrap(); // one dials, four ride on it
    }
    assert_eq!(m.dials.len(), 1, "{}", m.log.join("\n"));
    assert!(!refused(&m), "{}", m.log.join("\n"));
    for _ in 0..3 {
        m.step(Acquire).unwrap(); // no room: two queue, the third is refused
    }
    assert!(refused(&m), "{}", m.log.join("\n"));
    m.wind_down().unwrap();
}

/// ... but only as many as one connection carries: before the protocol
/// is known, riders beyond the stream cap (256) are queued, and
/// `max_pending` holds beyond them. Every rider went uncounted: a server
/// that stalled the first dial's handshake gathered any number of
/// requests, and `max_pending` never answered. (A review found it.)
#[test]
fn riders_on_the_first_dial_are_bounded_by_one_connections_streams() {
    use Op::*;
    let setup = Setup {
        limits: Limits {
            per_host: 8,
            max_idle: 8,
            max_pending: 2,
        },
        total: 8,
        ..h2_setup(true)
    };
    let mut m = Model::new(setup);
    let refused = |m: &Model| m.log.iter().any(|l| l.contains("full"));
    let cap = crate::connect::DEFAULT_MAX_STREAMS as usize;
    for _ in 0..cap + 2 {
        m.step(Acquire).unwrap();
    }
    assert!(!refused(&m), "the cap's riders and max_pending wait");
    assert_eq!(m.dials.len(), 1);
    m.step(Acquire).unwrap();
    assert!(refused(&m), "beyond them, PoolFull");
    m.wind_down().unwrap();
}

/// A newcomer is not yet a waiter when `acquire` asks whether the dials in
/// flight carry the queue: with one stream per connection, a dial for the
/// one waiter was taken as room for the newcomer too, which then waited
/// for that dial to land before it got its own. (A review found it.)
#[test]
fn a_newcomer_counts_itself_before_riding_on_a_dial() {
    use Op::*;
    let mut m = Model::new(Setup {
        h2_streams: 1,
        ..h2_setup_for_8()
    });
    m.step(Acquire).unwrap();
    m.step(DialOk(Ix(0))).unwrap(); // HTTP/2, 1 stream per connection
    m.step(Wake(Ix(0))).unwrap(); // its stream in flight
    m.step(Acquire).unwrap();
    m.step(Acquire).unwrap();
    assert_eq!(m.dials.len(), 2, "{}", m.log.join("\n"));
    m.wind_down().unwrap();
}

/// A stale mark (its waiter's dial went to another, then failed) is found
/// by comparing marks with the dials that serve the queue. `dialing`
/// counts a dedicated retry dial too, which serves only its own request:
/// with one in flight the stale mark looked covered, and the waiter holding
/// it got no dial with a slot free until the retry's dial ended. (A review
/// found it.)
#[test]
fn a_dedicated_dial_does_not_hide_a_stale_mark() {
    use Op::*;
    let mut m = Model::new(h1_setup(3, 4));
    // A retry's dedicated dial; then A and B, each with a dial.
    for op in [Dedicated, Acquire, Acquire] {
        m.step(op).unwrap();
    }
    let b = m.waiting.last().expect("B queued").waiter_id;
    // B's dial lands and serves A (first in line); A's dial then fails.
    m.step(DialOk(Ix(2))).unwrap();
    m.step(DialFail(Ix(1))).unwrap();
    assert!(
        m.dials
            .iter()
            .any(|d| d.dedicated.is_none() && d.waiter_id == b),
        "B has a dial of its own: {}",
        m.log.join("\n")
    );
    m.wind_down().unwrap();
}

/// A server that raises its stream limit frees streams that no event
/// hands out until the sweep. A newcomer took one of them ahead of the
/// requests already queued; now those are served first. (A review found
/// it.)
#[test]
fn a_newcomer_does_not_take_a_raised_stream_ahead_of_the_queue() {
    use Op::*;
    let mut m = Model::new(Setup {
        h2_streams: 1,
        ..h2_setup(true)
    });
    m.step(Acquire).unwrap();
    m.step(DialOk(Ix(0))).unwrap(); // HTTP/2, 1 stream, the only slot
    m.step(Wake(Ix(0))).unwrap(); // its stream in flight
    m.step(Acquire).unwrap();
    m.step(Acquire).unwrap();
    assert_eq!(m.waiting.len(), 2, "{}", m.log.join("\n"));
    m.st.shared[0].sender.max = 3; // the server raises its limit
    m.step(Acquire).unwrap();
    let log = m.log.join("\n");
    assert!(
        !log.lines().last().unwrap_or("").contains("stream on"),
        "the newcomer took a stream ahead of two waiters:\n{log}"
    );
    assert_eq!(m.waiting.len(), 1, "the two older ones served:\n{log}");
    m.wind_down().unwrap();
}

/// `max_idle_per_host` over HTTP/2 keeps the idle connections that rested
/// least, whatever their order in the list: of rests since 200, 200 and
/// 100 (a coarse clock stamps alike), with one to keep, one of the 200s
/// stays. (The first two in list order went, and the longest-rested one
/// stayed.)
#[test]
fn the_idle_http2_connections_kept_are_those_that_rested_least() {
    let mut st = St::new(Protocol::Http2);
    let at = |ms: u64| Stamp::from_nanos(ms * 1_000_000);
    for (id, rested_since) in [(1, 200), (2, 200), (3, 100)] {
        st.shared.push(Shared {
            id,
            sender: FakeH2 {
                closed: Arc::new(AtomicBool::new(false)),
                max: 1,
                reads_open: None,
            },
            in_flight: 0,
            created: at(0),
            draining: None,
            streams: 1,
            idle_since: at(rested_since),
            quiet_abandon: None,
            hold: None,
        });
    }
    let gone = st.drop_idle_shared(1);
    use crate::stats::CloseReason::Surplus;
    assert_eq!(gone, [Surplus, Surplus]);
    let kept: Vec<u64> = st.shared.iter().map(|s| s.id).collect();
    assert!(kept == [1] || kept == [2], "{kept:?}");
}

/// Regression (a review, session 32): a connection that closed while
/// `drop_idle_shared` looked (its sender's `is_closed` is set from other
/// threads) made it index past its list of rests, a panic under the
/// origin's lock in a lease's drop. It read `is_closed` twice: once to
/// count the rests, once to list them. Here the only idle connection
/// closes after its first read, with none to keep (`close_idle`).
#[test]
fn a_connection_closing_while_idle_ones_are_dropped_is_no_panic() {
    let mut st = St::new(Protocol::Http2);
    st.shared.push(Shared {
        id: 1,
        sender: FakeH2 {
            closed: Arc::new(AtomicBool::new(false)),
            max: 1,
            reads_open: Some(Arc::new(AtomicUsize::new(1))),
        },
        in_flight: 0,
        created: Stamp::from_nanos(0),
        draining: None,
        streams: 1,
        idle_since: Stamp::from_nanos(1),
        quiet_abandon: None,
        hold: None,
    });
    // Closed by the time it would go: left for `slot_freed`, which counts
    // it as the server's close.
    assert!(st.drop_idle_shared(0).is_empty());
    assert_eq!(st.shared.len(), 1);
}

/// A relief for another origin takes a resting HTTP/2 connection that
/// still takes streams, not one already going (draining, or closed by its
/// server): that frees its slot anyway, and was counted as a relief that
/// freed nothing more, closed as `surplus`.
#[test]
fn a_relief_takes_no_http2_connection_already_going() {
    let mut st = St::new(Protocol::Http2);
    let conn = |id, closed: bool, draining| Shared {
        id,
        sender: FakeH2 {
            closed: Arc::new(AtomicBool::new(closed)),
            max: 1,
            reads_open: None,
        },
        in_flight: 0,
        created: Stamp::from_nanos(0),
        draining,
        streams: 1,
        idle_since: Stamp::from_nanos(1),
        quiet_abandon: None,
        hold: None,
    };
    st.shared
        .push(conn(1, false, Some(crate::stats::CloseReason::Lifetime)));
    st.shared.push(conn(2, true, None));
    assert!(st.take_resting().is_none());
    st.shared.push(conn(3, false, None));
    match st.take_resting() {
        Some(super::super::state::Resting::Shared(s)) => assert_eq!(s.id, 3),
        _ => panic!("the one that takes streams"),
    }
}

/// An HTTP/2 connection whose server lowered its stream limit to 0 (no
/// stream in flight) goes while requests wait, so that its slot can dial
/// one that serves them; with nobody waiting it may rest. (Kept as a rest
/// for the waiters, it held its slot until `idle_timeout`.)
#[test]
fn a_connection_allowed_no_stream_goes_while_requests_wait() {
    let mut st = St::new(Protocol::Http2);
    st.shared.push(Shared {
        id: 1,
        sender: FakeH2 {
            closed: Arc::new(AtomicBool::new(false)),
            max: 0,
            reads_open: None,
        },
        in_flight: 0,
        created: Stamp::from_nanos(0),
        draining: None,
        streams: 3,
        idle_since: Stamp::from_nanos(1),
        quiet_abandon: None,
        hold: None,
    });
    assert!(st.drop_idle_shared(usize::MAX).is_empty(), "nobody waits");
    st.live_waiters = 1;
    use crate::stats::CloseReason::Surplus;
    assert_eq!(st.drop_idle_shared(usize::MAX), [Surplus]);
    assert!(st.shared.is_empty());
    st.live_waiters = 0;
}

/// ... but not one that landed allowing none (its server's first SETTINGS
/// said 0): dropped, it would be dialed again for the waiters and dropped
/// again, a reconnect loop for as long as they wait (a review found it).
/// A landing's waiter still waits, and the slot stays held, as before.
#[test]
fn a_connection_that_landed_allowing_no_stream_is_not_dialed_again() {
    use Op::*;
    let mut m = Model::new(Setup {
        h2_streams: 0,
        ..h2_setup(true)
    });
    m.step(Acquire).unwrap();
    m.step(DialOk(Ix(0))).unwrap();
    assert_eq!(m.st.shared.len(), 1, "{}", m.log.join("\n"));
    m.step(Service).unwrap();
    drop(m.st.drop_idle_shared(usize::MAX));
    m.step(Service).unwrap();
    assert_eq!(m.st.shared.len(), 1, "kept: {}", m.log.join("\n"));
    assert!(m.dials.is_empty(), "no dial again: {}", m.log.join("\n"));
}

/// A waiter marked for a dial whose request left without its
/// `cancel_waiter` yet (its guard closes the channel first, unlocked) is
/// swept out by another's cancel (the queue's compaction): its mark passes
/// on to the oldest waiter without one, which the dial then covers. (It
/// was lost: that waiter looked uncovered, got a dial of its own, or timed
/// out with "no connection on its way" as the dial landed. A review found
/// it.)
#[test]
fn a_compacted_waiters_dial_mark_passes_on() {
    let mut st = St::new(Protocol::Http1);
    let limits = Limits {
        per_host: 1,
        max_idle: 1,
        max_pending: 100,
    };
    let budget = FakeBudget {
        open: AtomicUsize::new(0),
        limit: 100,
    };
    let mut waiting = Vec::new();
    for _ in 0..40 {
        let got = st.acquire(
            Stamp::from_nanos(1),
            limits,
            &budget,
            std::panic::Location::caller(),
            &mut Vec::new(),
            None,
        );
        match got {
            Acquire::Wait {
                waiter_id,
                rx,
                dial,
            } => waiting.push((waiter_id, rx, dial)),
            _ => panic!("each waits"),
        }
    }
    assert!(waiting[0].2 && !waiting[1].2, "one dial, for the first");
    let mut waiting = waiting.into_iter();
    // The first leaves: its channel closed, its cancel still to come.
    let (_, rx, _) = waiting.next().unwrap();
    drop(rx);
    // 29 others leave properly: the 29th's cancel compacts the queue.
    for (id, rx, _) in waiting.by_ref().take(29) {
        drop(rx);
        st.cancel_waiter(id);
    }
    let (next, _rx, _) = waiting.next().unwrap();
    assert!(
        st.dial_covers(next),
        "the first's dial now covers waiter {next}"
    );
}
