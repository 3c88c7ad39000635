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

/// The longest a shared lookup runs: then it ends with a `TimedOut` error
/// for its waiters, and the next dial starts another. Without it, a lookup
/// that never ended (a custom resolver waiting on something lost, an NSS
/// module that never returns) held its host for good: every dial joined it
/// and was cut off by `connect_timeout`, and the flight left the map only
/// when its task ended. Longer than a slow resolver answers (glibc: 5 s per
/// server and attempt, two attempts, up to three servers), so a slow
/// answer still lands and is stored for the next dials. (Shorter under
/// unit tests.)
pub(super) const LOOKUP_LIMIT: Duration = if cfg!(test) {
    Duration::from_millis(500)
} else {
    Duration::from_secs(30)
};

/// One lookup in flight: what it lands as.
struct Flight {
    landing: watch::Receiver<Option<Landed>>,
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
            match flights.get(&key) {
                Some(flight) => flight.landing.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    let flight = Flight {
                        landing: rx.clone(),
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
                    let named = host.to_owned();
                    runtime.spawn(async move {
                        let _grounded = grounded;
                        let landed = match tokio::time::timeout(LOOKUP_LIMIT, lookup).await {
                            Ok(answer) => answer.map_err(|e| (e.kind(), SharedError::new(e))),
                            Err(_) => {
                                let e = io::Error::new(
                                    io::ErrorKind::TimedOut,
                                    format!(
                                        "the resolver gave no answer for {named} in {}",
                                        crate::error::fmt_duration(LOOKUP_LIMIT)
                                    ),
                                );
                                Err((e.kind(), SharedError::new(e)))
                            }
                        };
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
