//! Lookups with nothing to fall back on (a host never answered, or whose
//! answer is too old to stand in), shared by every dial that waits for
//! them: one lookup per host at a time, run as a task of its own.
//!
//! Why: such a lookup used to run inside the dial that needed it. A burst
//! of dials to a cold host started one lookup each (64 `getaddrinfo`
//! calls, each a blocking thread, for one name), and a dial cut off by
//! `connect_timeout` dropped its lookup with it, unstored: with DNS slower
//! than `connect_timeout` (a Kubernetes pod's `ndots:5` search list) every
//! request failed for as long as DNS stayed slow, although each lookup
//! would have answered. Go's resolver shares lookups the same way
//! (`singleflight`).
//!
//! Only on a multi-thread runtime, which runs its tasks as long as it
//! lives: a current-thread runtime runs them only inside `block_on`, and
//! a lookup parked there would hold every other runtime's dials waiting.
//! Dials on one look up in place, as before.
//!
//! Lock domain: the flights' map only (never held with the cache's
//! `entries`: the lookup stores its answer there before it lands here).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::catch_panic::CatchPanic;
use crate::connect::ResolveTtlFuture;
use crate::error::SharedError;

/// What a lookup came to, for every dial that waited for it.
/// (An error as its kind, for the `io::Error` each waiter gets, and the
/// error itself, shared.)
type Landed = Result<(Vec<SocketAddr>, Option<Duration>), (io::ErrorKind, SharedError)>;

type Map = HashMap<(String, u16), Flight>;

/// How long a lookup holds later dials of its host to itself. Past it, one
/// that has not answered may hang (a custom resolver waiting on something
/// lost, an NSS module that never returns), and the next dial starts
/// another: a lookup that never ended held its host for good, every dial
/// joining it and cut off by `connect_timeout`. The one given up on is not
/// cancelled (a blocking `getaddrinfo` cannot be, and a slow lookup, glibc
/// giving up after 5 s per server and attempt, should still land: its
/// answer is stored as it comes). (As the cache's `REFRESH_PATIENCE` for a
/// refresh; shorter under unit tests.)
pub(super) const PATIENCE: Duration = if cfg!(test) {
    Duration::from_millis(500)
} else {
    Duration::from_secs(10)
};

/// The most lookups of one host that run at once: the ones given up on and
/// the newest. With that many hung (a resolver that hangs at every call),
/// later dials wait for the newest, rather than start lookups (and, for
/// `getaddrinfo`, threads) without end.
const MOST_RUNNING: usize = 2;

/// The lookups of one host: the newest (what later dials join), since when
/// it runs, and how many run (it and those it took over from).
struct Flight {
    landing: watch::Receiver<Option<Landed>>,
    started: std::time::Instant,
    running: usize,
}

impl Flight {
    /// Whether a dial joins the newest lookup rather than start one: it
    /// has not answered (an answer already out is no lookup to wait for),
    /// and it is young, or no more may run.
    fn joinable(&self) -> bool {
        // (`has_changed` fails once the lookup's task ended without an
        // answer: its runtime shut down.)
        self.landing.borrow().is_none()
            && self.landing.has_changed().is_ok()
            && (self.started.elapsed() < PATIENCE || self.running >= MOST_RUNNING)
    }
}

/// The lookups in flight, by lower-case host and port.
#[derive(Default)]
pub(crate) struct Flights(Arc<Mutex<Map>>);

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the lookup of `host:port` in flight, or starts `lookup()`
    /// as one on `runtime` (it then runs to its end, whoever waits).
    pub(crate) fn join(
        &self,
        runtime: &tokio::runtime::Handle,
        host: &str,
        port: u16,
        lookup: impl FnOnce() -> ResolveTtlFuture,
    ) -> ResolveTtlFuture {
        let key = (host.to_ascii_lowercase(), port);
        let mut landing = {
            let mut flights = self.lock();
            let flight = flights.get_mut(&key);
            match flight {
                Some(flight) if flight.joinable() => flight.landing.clone(),
                flight => {
                    let (tx, rx) = watch::channel(None);
                    match flight {
                        // (The ones given up on run on: their answers are
                        // stored as they land, and their waiters get them.)
                        Some(flight) => {
                            flight.landing = rx.clone();
                            flight.started = std::time::Instant::now();
                            flight.running += 1;
                        }
                        None => {
                            let flight = Flight {
                                landing: rx.clone(),
                                started: std::time::Instant::now(),
                                running: 1,
                            };
                            flights.insert(key.clone(), flight);
                        }
                    }
                    // (Before the lookup starts: dropped unfinished with its
                    // runtime, or as a panic of the resolver unwinds, the
                    // lookup still counts out, and its waiters get an
                    // error.)
                    let grounded = Grounded {
                        flights: self.0.clone(),
                        key,
                    };
                    drop(flights);
                    let lookup = lookup();
                    // Its patience counts from now, once `lookup()` made
                    // the lookup: one that joined an inner flight of its own
                    // (a `CachingResolver` over the system resolver, whose
                    // lookups share a map too) must not be given up on
                    // before that one is, or the one started in its place
                    // joined the same hung inner lookup, and with two
                    // running, every dial joined it for good.
                    if let Some(flight) = self.lock().get_mut(&grounded.key) {
                        if flight.landing.same_channel(&rx) {
                            flight.started = std::time::Instant::now();
                        }
                    }
                    let asked = host.to_owned();
                    runtime.spawn(async move {
                        let _grounded = grounded;
                        // (A resolver's panic is its lookup's failure: as
                        // a dying task it told every waiter "its runtime
                        // shut down".)
                        let landed = match CatchPanic::new(lookup).await {
                            Ok(answer) => answer,
                            Err(panic) => Err(io::Error::other(format!(
                                "the resolver panicked looking up {asked}: {panic}"
                            ))),
                        };
                        let landed = landed.map_err(|e| (e.kind(), SharedError::new(e)));
                        tx.send_replace(Some(landed));
                    });
                    rx
                }
            }
        };
        let host = host.to_owned();
        Box::pin(async move {
            match landing.wait_for(Option::is_some).await {
                Ok(landed) => match landed.as_ref() {
                    Some(Ok(answer)) => Ok(answer.clone()),
                    Some(Err((kind, e))) => Err(io::Error::new(*kind, e.clone())),
                    None => unreachable!("waited for an answer"),
                },
                Err(_) => Err(io::Error::other(format!(
                    "the lookup of {host} ended without an answer (its runtime shut down)"
                ))),
            }
        })
    }

    #[cfg(test)]
    pub(super) fn in_flight(&self) -> usize {
        self.lock().len()
    }
}

/// Counts a lookup out when its task ends, however it ends; the host's
/// entry goes with its last.
struct Grounded {
    flights: Arc<Mutex<Map>>,
    key: (String, u16),
}

impl Drop for Grounded {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = flights.get_mut(&self.key) {
            flight.running -= 1;
            if flight.running == 0 {
                flights.remove(&self.key);
            }
        }
    }
}
