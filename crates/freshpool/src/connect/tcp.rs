//! TCP: name resolution, Happy Eyeballs across addresses, socket options, and
//! an I/O type that lets the pool peek at an idle socket.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::ConnectDeadline;
use crate::error::{fmt_duration, Error, Kind};

/// Resolves a host name to socket addresses.
///
/// Implement it to plug in your own resolver (a cache, a service registry,
/// a test double). The default, [`SystemResolver`], runs `getaddrinfo` on
/// tokio's blocking pool so the async workers never stall on DNS.
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
        let host = host.to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            Ok(interleave_families(addrs))
        })
    }
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
    let stream = match tokio::time::timeout_at(settings.deadline.at, attempt).await {
        Ok(Ok(stream)) => stream,
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
    stream
        .set_nodelay(settings.nodelay)
        .map_err(|e| Error::new(Kind::Connect, "setting TCP_NODELAY failed").with_source(e))?;
    if let Some(idle) = settings.keepalive {
        let ka = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle);
        socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&ka)
            .map_err(|e| Error::new(Kind::Connect, "setting SO_KEEPALIVE failed").with_source(e))?;
    }
    Ok(stream)
}

async fn race(addrs: Vec<SocketAddr>, progress: &mut Progress) -> Result<TcpStream, ()> {
    let mut pending = addrs.into_iter();
    let mut attempts = JoinSet::new();
    let start_next = |attempts: &mut JoinSet<_>,
                      pending: &mut std::vec::IntoIter<SocketAddr>,
                      progress: &mut Progress| {
        if let Some(addr) = pending.next() {
            progress.started += 1;
            attempts.spawn(async move { (addr, TcpStream::connect(addr).await) });
            true
        } else {
            false
        }
    };
    start_next(&mut attempts, &mut pending, progress);
    loop {
        let delay = tokio::time::sleep(ATTEMPT_DELAY);
        tokio::select! {
            joined = attempts.join_next() => match joined {
                Some(Ok((_, Ok(stream)))) => return Ok(stream),
                Some(Ok((addr, Err(e)))) => {
                    progress.failures.push((addr, e));
                    if !start_next(&mut attempts, &mut pending, progress) && attempts.is_empty() {
                        return Err(());
                    }
                }
                Some(Err(join)) => {
                    progress.failures.push(("0.0.0.0:0".parse().expect("literal"), io::Error::other(join)));
                }
                None => return Err(()),
            },
            _ = delay => { start_next(&mut attempts, &mut pending, progress); }
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

/// A TCP stream the pool can peek at while hyper owns it.
///
/// hyper and rustls read and write through this handle; the pool keeps a
/// [`Weak`] to the same socket so it can check an idle connection with one
/// non-blocking `recv(MSG_PEEK)` before reuse. The `Weak` never keeps a
/// closed connection's socket alive.
pub(crate) struct TcpIo {
    socket: Arc<Socket>,
    /// Count the reads that bring bytes (see [`ReadWatch`]): off under TLS,
    /// whose records are not all an answer (a close_notify, a session
    /// ticket); `Counted` counts above it instead.
    count_reads: bool,
}

/// A connection's socket, and how many reads brought the HTTP/1 layer
/// bytes (see [`ReadWatch`]). Written by the connection's task alone.
pub(crate) struct Socket {
    stream: TcpStream,
    reads: std::sync::atomic::AtomicU32,
}

impl std::ops::Deref for Socket {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.stream
    }
}

impl Socket {
    /// A read brought bytes. (Only the connection's task writes: a load
    /// and a store.)
    fn note_read(&self) {
        let reads = &self.reads;
        reads.store(
            reads
                .load(std::sync::atomic::Ordering::Relaxed)
                .wrapping_add(1),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

impl TcpIo {
    pub(crate) fn new(stream: TcpStream) -> (TcpIo, Weak<Socket>) {
        let socket = Arc::new(Socket {
            stream,
            reads: std::sync::atomic::AtomicU32::new(0),
        });
        let weak = Arc::downgrade(&socket);
        let io = TcpIo {
            socket,
            count_reads: true,
        };
        (io, weak)
    }

    /// For TLS over it: its reads are not counted here, and `Counted`
    /// above TLS gets what to count them on.
    pub(crate) fn under_tls(&mut self) -> Arc<Socket> {
        self.count_reads = false;
        self.socket.clone()
    }
}

pin_project_lite::pin_project! {
    /// An HTTP/1 connection's I/O over TLS, counting the reads that bring
    /// plaintext on its socket (see [`ReadWatch`]).
    pub(crate) struct Counted<T> {
        #[pin]
        inner: T,
        socket: Arc<Socket>,
    }
}

impl<T> Counted<T> {
    pub(crate) fn new(inner: T, socket: Arc<Socket>) -> Counted<T> {
        Counted { inner, socket }
    }
}

impl<T: AsyncRead> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.socket.note_read();
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Whether anything was read on a connection since the watch began: for a
/// request whose body was held back, whether the server began to answer
/// before the connection failed (then it is no longer safe to send the
/// request again: `retry::decide`). Holds the socket while it watches
/// (only such requests take one), so a connection that ended meanwhile
/// still tells.
pub(crate) struct ReadWatch(Arc<Socket>, u32);

impl ReadWatch {
    pub(crate) fn start(socket: &Weak<Socket>) -> Option<ReadWatch> {
        let socket = socket.upgrade()?;
        let reads = socket.reads.load(std::sync::atomic::Ordering::Relaxed);
        Some(ReadWatch(socket, reads))
    }

    pub(crate) fn read_since(&self) -> bool {
        self.0.reads.load(std::sync::atomic::Ordering::Relaxed) != self.1
    }
}

impl AsyncRead for TcpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.socket.poll_read_ready(cx))?;
            let want = buf.remaining();
            let mut read = 0;
            // One recv() into the uninitialized tail (no memset of hyper's
            // whole read buffer), straight on the socket: `try_read_buf`
            // would wrap it in a second `try_io`, a second readiness check
            // inside this one (callgrind, a GET: 20,808 -> 20,768
            // instructions). A short read clears readiness like tokio's own
            // `TcpStream::poll_read`, saving a recv() == EAGAIN.
            let stream: &TcpStream = &self.socket.stream;
            let result = stream.try_io(tokio::io::Interest::READABLE, || {
                // SAFETY: `recv` only writes to the unfilled part, and the
                // `read` bytes it wrote are marked initialized and filled.
                unsafe {
                    read = socket2::SockRef::from(stream).recv(buf.unfilled_mut())?;
                    buf.assume_init(read);
                }
                buf.advance(read);
                if read > 0 && read < want {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            });
            if read > 0 && self.count_reads {
                self.socket.note_read();
            }
            match result {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && read > 0 => {
                    return Poll::Ready(Ok(()))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for TcpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.socket.poll_write_ready(cx))?;
            match self.socket.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.socket.poll_write_ready(cx))?;
            match self.socket.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = socket2::SockRef::from(&self.socket.stream).shutdown(std::net::Shutdown::Write);
        Poll::Ready(Ok(()))
    }
}

/// Shuts a connection's socket down both ways, so that its driver task
/// ends (and frees its slot) even while hyper still has bytes queued for a
/// peer that no longer reads: dropping the sender alone would not stop
/// that write.
pub(crate) fn shut_down(socket: &Weak<Socket>) {
    if let Some(socket) = socket.upgrade() {
        let _ = socket2::SockRef::from(&socket.stream).shutdown(std::net::Shutdown::Both);
    }
}

/// What a non-blocking look at an idle socket found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peek {
    /// Nothing to read and no error: as alive as we can tell without a round trip.
    Quiet,
    /// The peer closed (FIN), reset, or the socket is gone.
    Closed,
    /// Bytes arrived on a connection with no request outstanding.
    Unexpected,
}

/// One `recv(MSG_PEEK | MSG_DONTWAIT)`; never blocks, never consumes.
pub(crate) fn peek(socket: &Weak<Socket>) -> Peek {
    let Some(socket) = socket.upgrade() else {
        return Peek::Closed;
    };
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(&socket.stream).peek(&mut byte) {
        Ok(0) => Peek::Closed,
        Ok(_) => Peek::Unexpected,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Peek::Quiet,
        Err(_) => Peek::Closed,
    }
}

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
