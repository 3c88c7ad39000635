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

use crate::connect::ResolveTtlFuture;
use crate::error::SharedError;

/// What a lookup came to, for every dial that waited for it.
/// (An error as its kind, for the `io::Error` each waiter gets, and the
/// error itself, shared.)
type Landed = Result<(Vec<SocketAddr>, Option<Duration>), (io::ErrorKind, SharedError)>;

type Map = HashMap<(String, u16), Flight>;

/// How long a lookup holds later dials of its host to itself: past it, one
/// that has not answered may hang (a custom resolver waiting on something
/// lost, an NSS module that never returns), and the next dial starts
/// another. Without it, a lookup that never ended held its host for good:
/// every dial joined it and was cut off by `connect_timeout`. The one given
/// up on is not cancelled: a slow lookup (glibc gives up after 5 s per
/// server and attempt) still lands, and its answer is stored for the next
/// dials. At most one such lookup per host runs beside the current one, so
/// a resolver that hangs at every call does not pile up tasks. (As the
/// cache's `REFRESH_PATIENCE` for a refresh; shorter under unit tests.)
pub(super) const PATIENCE: Duration = if cfg!(test) {
    Duration::from_millis(500)
} else {
    Duration::from_secs(10)
};

/// One lookup in flight: what it lands as, since when it runs, and what
/// the lookup it took over from lands as (see [`PATIENCE`]).
struct Flight {
    landing: watch::Receiver<Option<Landed>>,
    started: std::time::Instant,
    superseded: Option<watch::Receiver<Option<Landed>>>,
}

impl Flight {
    /// Whether later dials join it: it is young, or the lookup it took
    /// over from still runs (no third lookup of one host).
    fn joinable(&self) -> bool {
        // (Closed once a lookup's task ended, its sender gone.)
        self.started.elapsed() < PATIENCE
            || (self.superseded.as_ref()).is_some_and(|old| !old.is_closed())
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
            let current = flights.get(&key).map(|f| (f.joinable(), f.landing.clone()));
            match current {
                Some((true, landing)) => landing,
                current => {
                    let (tx, rx) = watch::channel(None);
                    let flight = Flight {
                        landing: rx.clone(),
                        started: std::time::Instant::now(),
                        // (The one given up on runs on: its answer is
                        // stored as it lands, and its waiters get it.)
                        superseded: current.map(|(_, old)| old),
                    };
                    flights.insert(key.clone(), flight);
                    // (Before the lookup starts: dropped unfinished with its
                    // runtime, or as a panic of the resolver unwinds, the
                    // flight still leaves the map, and its waiters get an
                    // error.)
                    let grounded = Grounded {
                        flights: self.0.clone(),
                        key,
                        mine: rx.clone(),
                    };
                    drop(flights);
                    let lookup = lookup();
                    runtime.spawn(async move {
                        let _grounded = grounded;
                        let landed = lookup.await.map_err(|e| (e.kind(), SharedError::new(e)));
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

/// Takes a flight out of the map when its task ends, however it ends.
struct Grounded {
    flights: Arc<Mutex<Map>>,
    key: (String, u16),
    mine: watch::Receiver<Option<Landed>>,
}

impl Drop for Grounded {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights
            .get(&self.key)
            .is_some_and(|flight| flight.landing.same_channel(&self.mine))
        {
            flights.remove(&self.key);
        }
    }
}
