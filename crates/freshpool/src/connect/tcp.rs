//! TCP: name resolution, Happy Eyeballs across addresses and socket options.
//! (The I/O a connection is driven through is in `socket.rs`.)

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::task::{AbortHandle, JoinSet};

use super::ConnectDeadline;
use crate::error::{fmt_duration, Error, Kind};

/// Resolves a host name to socket addresses.
///
/// Implement it to plug in your own resolver (a cache, a service registry,
/// a test double). The default, [`SystemResolver`], runs `getaddrinfo` on
/// tokio's blocking pool so the async workers never stall on DNS. It is
/// asked for host names only: an IP literal (`http://127.0.0.1/`, a proxy
/// at `[::1]:3128`) is dialed as it is.
///
/// ```
/// use std::net::SocketAddr;
/// use freshpool::{Client, Resolve, ResolveFuture};
///
/// struct Fixed(SocketAddr);
/// impl Resolve for Fixed {
///     fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
///         let addr = self.0;
///         Box::pin(async move { Ok(vec![addr]) })
///     }
/// }
/// let client = Client::builder()
///     .resolver(Fixed("127.0.0.1:8080".parse().unwrap()))
///     .build()
///     .unwrap();
/// # drop(client);
/// ```
pub trait Resolve: Send + Sync + 'static {
    /// Returns the addresses to try, in preference order.
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture;

    /// What this resolver currently holds for `host:port`, without a
    /// lookup (it may start one in the background). The pool calls it at
    /// a checkout, at most every 50 ms per origin (it should be cheap, but
    /// need not be lock-free): when the generation moves, connections to
    /// addresses no longer listed are retired (idle ones closed, busy ones
    /// closed when their request is done). The default, `None`, means "no
    /// opinion": connections then follow DNS only through `max_lifetime`.
    /// [`crate::CachingResolver`] implements it. A resolver that held a
    /// view of a host and no longer does (a cache that let it go) is asked
    /// to `resolve` it once, in the background, to learn it again.
    ///
    /// ```
    /// use freshpool::{Resolve, SystemResolver};
    /// assert!(SystemResolver.current("localhost", 80).is_none());
    /// ```
    fn current(&self, host: &str, port: u16) -> Option<crate::resolve::Resolved> {
        let _ = (host, port);
        None
    }

    /// Like [`Resolve::resolve`], plus how long the answer may be cached
    /// (the DNS records' TTL) when the resolver knows it.
    /// [`crate::CachingResolver`] honours it. The default calls `resolve`
    /// and reports no TTL.
    ///
    /// ```
    /// use freshpool::{Resolve, SystemResolver};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (addrs, ttl) = SystemResolver.resolve_with_ttl("127.0.0.1", 80).await.unwrap();
    /// assert_eq!(addrs.len(), 1);
    /// assert_eq!(ttl, None);
    /// # }
    /// ```
    fn resolve_with_ttl(&self, host: &str, port: u16) -> ResolveTtlFuture {
        let lookup = self.resolve(host, port);
        Box::pin(async move { lookup.await.map(|addrs| (addrs, None)) })
    }
}

/// The future of [`Resolve::resolve_with_ttl`]: addresses and, if known,
/// how long they may be cached.
pub type ResolveTtlFuture =
    Pin<Box<dyn Future<Output = io::Result<(Vec<SocketAddr>, Option<Duration>)>> + Send>>;

/// The future a [`Resolve`] implementation returns.
pub type ResolveFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// The operating system's resolver (`getaddrinfo`), off the async workers.
///
/// ```
/// use freshpool::{Resolve, SystemResolver};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let addrs = SystemResolver.resolve("127.0.0.1", 80).await.unwrap();
/// assert_eq!(addrs[0].port(), 80);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl SystemResolver {
    /// The one every client without a resolver of its own uses: one
    /// resolver (one address) so that such clients sharing a pool share
    /// connections (see `DialSettings::resolver`).
    pub(crate) fn shared() -> Arc<dyn Resolve> {
        static SHARED: std::sync::OnceLock<Arc<dyn Resolve>> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| Arc::new(SystemResolver)).clone()
    }
}

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Box::pin(async move { Ok(vec![SocketAddr::new(ip, port)]) });
        }
        let lookup = {
            let host = host.to_owned();
            move || -> ResolveTtlFuture {
                Box::pin(async move {
                    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                        .await?
                        .collect();
                    Ok((interleave_families(addrs), None))
                })
            }
        };
        // One lookup per name at a time, as a task of its own, on a runtime
        // that runs it to its end (`resolve/flight.rs`). `getaddrinfo`
        // cannot be cancelled: a dial cut off by `connect_timeout` left its
        // blocking thread running, and with DNS not answering each new
        // dial started one more, up to a lookup per dial per
        // `connect_timeout`, until tokio's blocking pool was full and
        // every host's lookups queued behind them. (A current-thread
        // runtime runs tasks only inside `block_on`: looked up in place.)
        let answer = match tokio::runtime::Handle::try_current() {
            Ok(runtime)
                if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                system_flights().join(&runtime, host, port, lookup)
            }
            _ => lookup(),
        };
        Box::pin(async move { answer.await.map(|(addrs, _)| addrs) })
    }
}

/// The system resolver's lookups in flight, process-wide (it has no state
/// of its own: every client without a resolver shares it).
fn system_flights() -> &'static crate::resolve::flight::Flights {
    static FLIGHTS: std::sync::OnceLock<crate::resolve::flight::Flights> =
        std::sync::OnceLock::new();
    FLIGHTS.get_or_init(Default::default)
}

/// RFC 8305 section 4: alternate address families so one broken family does
/// not delay the other by a whole list of timeouts, starting with the
/// family of the resolver's first answer (its preference: RFC 6724 order,
/// or `gai.conf`), as Go does.
pub(crate) fn interleave_families(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let (v6, v4): (Vec<_>, Vec<_>) = addrs.into_iter().partition(SocketAddr::is_ipv6);
    let (mut a, mut b) = if first_v6 {
        (v6.into_iter(), v4.into_iter())
    } else {
        (v4.into_iter(), v6.into_iter())
    };
    let mut out = Vec::new();
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// Socket settings applied to every connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TcpSettings {
    pub nodelay: bool,
    pub keepalive: Option<Duration>,
    /// `TCP_USER_TIMEOUT` (validated: set only where the kernel has it).
    pub user_timeout: Option<Duration>,
    /// What is left of `connect_timeout` (the lookup may have used some).
    pub deadline: ConnectDeadline,
}

/// How long to wait for one address before also trying the next
/// (RFC 8305's "Connection Attempt Delay", recommended 250 ms).
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Connects to the first address that answers, racing attempts RFC 8305
/// style; `connect_timeout` bounds the whole attempt, and the error lists
/// every address tried.
pub(crate) async fn connect(
    target: &str,
    addrs: Vec<SocketAddr>,
    settings: TcpSettings,
) -> Result<TcpStream, Error> {
    if addrs.is_empty() {
        return Err(Error::new(
            Kind::Connect,
            format!("{target} resolved to no addresses"),
        ));
    }
    let mut progress = Progress::default();
    let attempt = race(addrs.clone(), &mut progress);
    let (peer, stream) = match tokio::time::timeout_at(settings.deadline.at, attempt).await {
        Ok(Ok(won)) => won,
        Ok(Err(())) => return Err(progress.failed(target, &addrs)),
        Err(_) => {
            return Err(Error::new(
                Kind::ConnectTimeout,
                format!(
                    "connect to {target} timed out after {} (connect_timeout, name lookup included; addresses: {})",
                    fmt_duration(settings.deadline.limit),
                    progress.describe(&addrs)
                ),
            ));
        }
    };
    // (Named with the host and the address: a server that resets at once
    // makes `setsockopt` fail on some systems, EINVAL on macOS.)
    // (The address the race won with: `peer_addr` fails on a socket its
    // peer reset, the very case.)
    let option_failed = |option: &str, e: io::Error| {
        Error::new(
            Kind::Connect,
            format!("connect to {target} ({peer}): setting {option} failed"),
        )
        .with_source(e)
    };
    stream
        .set_nodelay(settings.nodelay)
        .map_err(|e| option_failed("TCP_NODELAY", e))?;
    if let Some(idle) = settings.keepalive {
        let ka = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle);
        socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&ka)
            .map_err(|e| option_failed("SO_KEEPALIVE", e))?;
    }
    if let Some(limit) = settings.user_timeout {
        set_user_timeout(&stream, limit).map_err(|e| option_failed("TCP_USER_TIMEOUT", e))?;
    }
    Ok(stream)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_user_timeout(stream: &TcpStream, limit: Duration) -> io::Result<()> {
    socket2::SockRef::from(stream).set_tcp_user_timeout(Some(limit))
}

/// (Unreachable: `config::validate` refuses the setting here.)
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_user_timeout(_stream: &TcpStream, _limit: Duration) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "tcp_user_timeout is supported on Linux and Android only",
    ))
}

/// Attempts of one dial in flight at once. RFC 8305 starts the next
/// address every `ATTEMPT_DELAY` and leaves the limit open; without one, a
/// name whose addresses all swallow SYNs (a dead pool behind a firewall)
/// held a socket per address until `connect_timeout`, and 64 dials to one
/// such origin thousands (Go keeps two per dial). At the limit the next
/// address waits until the oldest attempt is `GIVE_UP_AFTER` old, and
/// that one is given up for it: every address is still tried.
const MAX_ATTEMPTS_IN_FLIGHT: usize = 4;

/// How long an attempt has before the limit gives it up for the next
/// address: past Linux's first SYN retransmission (1 s), so an address
/// whose first SYN was lost still gets its second.
const GIVE_UP_AFTER: Duration = Duration::from_secs(2);

async fn race(
    addrs: Vec<SocketAddr>,
    progress: &mut Progress,
) -> Result<(SocketAddr, TcpStream), ()> {
    let mut pending = addrs.into_iter();
    let mut attempts = JoinSet::new();
    // Oldest first: (address, when it started, its task).
    let mut in_flight: VecDeque<(SocketAddr, Instant, AbortHandle)> = VecDeque::new();
    let start_next = |attempts: &mut JoinSet<_>,
                      in_flight: &mut VecDeque<(SocketAddr, Instant, AbortHandle)>,
                      pending: &mut std::vec::IntoIter<SocketAddr>,
                      progress: &mut Progress| {
        if pending.len() == 0 {
            return false;
        }
        if in_flight.len() >= MAX_ATTEMPTS_IN_FLIGHT {
            if in_flight
                .front()
                .is_some_and(|(_, since, _)| since.elapsed() < GIVE_UP_AFTER)
            {
                // (The next tick asks again.)
                return true;
            }
            if let Some((oldest, since, task)) = in_flight.pop_front() {
                task.abort();
                let why = format!(
                    "no answer within {}, given up for the next address",
                    fmt_duration(since.elapsed())
                );
                progress
                    .failures
                    .push((oldest, io::Error::new(io::ErrorKind::TimedOut, why)));
            }
        }
        let Some(addr) = pending.next() else {
            return false;
        };
        progress.started += 1;
        // (A panic inside, caught with its address: tokio's "IO is
        // disabled" on a runtime built without `enable_io`. Joined as a
        // task's panic it had no address, read as "no answer", and left
        // the other addresses untried.)
        let task = attempts.spawn(async move {
            let connected = crate::catch_panic::CatchPanic::new(TcpStream::connect(addr))
                .await
                .unwrap_or_else(|panic| Err(io::Error::other(panic)));
            (addr, connected)
        });
        in_flight.push_back((addr, Instant::now(), task));
        true
    };
    start_next(&mut attempts, &mut in_flight, &mut pending, progress);
    loop {
        let delay = tokio::time::sleep(ATTEMPT_DELAY);
        tokio::select! {
            joined = attempts.join_next() => match joined {
                Some(Ok((addr, Ok(stream)))) => return Ok((addr, stream)),
                Some(Ok((addr, Err(e)))) => {
                    if let Some(i) = in_flight.iter().position(|(a, ..)| *a == addr) {
                        in_flight.remove(i);
                    }
                    progress.failures.push((addr, e));
                    if !start_next(&mut attempts, &mut in_flight, &mut pending, progress)
                        && attempts.is_empty()
                    {
                        return Err(());
                    }
                }
                // Given up above (its failure is recorded there).
                Some(Err(join)) if join.is_cancelled() => {
                    if pending.len() == 0 && attempts.is_empty() {
                        return Err(());
                    }
                }
                // (Not reached: attempts catch their panics, above.)
                Some(Err(join)) => {
                    progress.failures.push(("0.0.0.0:0".parse().expect("literal"), io::Error::other(join)));
                }
                None => return Err(()),
            },
            _ = delay => { start_next(&mut attempts, &mut in_flight, &mut pending, progress); }
        }
    }
}

/// What a race learned, kept outside it so a timeout (which drops the
/// race) still reports why each address failed.
#[derive(Default)]
struct Progress {
    /// Attempts started, in `addrs` order.
    started: usize,
    failures: Vec<(SocketAddr, io::Error)>,
}

impl Progress {
    /// The error once every address failed. The first address's failure
    /// is its `source()` (code matches on `io::ErrorKind`); the message
    /// lists every address's.
    fn failed(mut self, target: &str, addrs: &[SocketAddr]) -> Error {
        let first = addrs
            .iter()
            .find_map(|a| self.failures.iter().position(|(f, _)| f == a));
        match first {
            // One address: its failure, once, as the cause.
            Some(i) if addrs.len() == 1 => {
                let (addr, cause) = self.failures.swap_remove(i);
                Error::new(
                    Kind::Connect,
                    format!("connect to {target} ({addr}) failed"),
                )
                .with_source(cause)
            }
            Some(i) => {
                let message = format!("connect to {target} failed; tried {}", self.describe(addrs));
                let (_, cause) = self.failures.swap_remove(i);
                Error::new(Kind::Connect, message).with_source(cause)
            }
            None => Error::new(
                Kind::Connect,
                format!("connect to {target} failed; tried {}", self.describe(addrs)),
            ),
        }
    }

    /// Each address with what became of it: its error, "no answer" (in
    /// flight when the race ended) or "not tried".
    fn describe(&self, addrs: &[SocketAddr]) -> String {
        let list: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(
                |(i, addr)| match self.failures.iter().find(|(a, _)| a == addr) {
                    Some((_, e)) => format!("{addr} ({e})"),
                    None if i < self.started => format!("{addr} (no answer)"),
                    None => format!("{addr} (not tried)"),
                },
            )
            .collect();
        list.join(", ")
    }
}

pub(crate) use super::socket::{
    peek, shut_down, AlertSeen, Counted, Peek, ReadWatch, Socket, TcpIo,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_alternate() {
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        let out = interleave_families(vec![v6, v6, v4, v4]);
        assert_eq!(out, vec![v6, v4, v6, v4]);
    }

    #[tokio::test]
    async fn refused_address_is_listed_in_the_error() {
        // Bound and never listening: refused, and no test beside this one
        // can take the port meanwhile (one bound and let go could be).
        let held =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        held.bind(&any.into()).unwrap();
        let port = held.local_addr().unwrap().as_socket().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let settings = TcpSettings {
            nodelay: true,
            keepalive: None,
            user_timeout: None,
            deadline: ConnectDeadline::start(Duration::from_secs(2)),
        };
        let err = connect("test", vec![addr], settings).await.unwrap_err();
        assert_eq!(err.kind(), Kind::Connect);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        // The cause stays an `io::Error` for code that matches on its kind
        // (it was only text in the message), and is told once.
        let cause = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .expect("an io::Error source");
        assert_eq!(cause.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(err.to_string().matches("refused").count(), 1, "{err}");
    }

    #[tokio::test]
    async fn peek_sees_fin() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_io, weak) = TcpIo::new(client);
        assert_eq!(peek(&weak), Peek::Quiet);
        drop(server);
        let mut seen = Peek::Quiet;
        for _ in 0..100 {
            seen = peek(&weak);
            if seen != Peek::Quiet {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(seen, Peek::Closed);
    }
}
