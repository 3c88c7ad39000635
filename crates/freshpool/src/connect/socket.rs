//! The I/O a connection is driven through: [`TcpIo`] over the socket the
//! pool keeps a `Weak` to (to peek at an idle connection, to shut one
//! down), and the count of reads that tells whether a server began to
//! answer ([`ReadWatch`], [`Counted`] above TLS).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

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
        alert: Arc<AlertSeen>,
    }
}

impl<T> Counted<T> {
    pub(crate) fn new(inner: T, socket: Arc<Socket>, alert: Arc<AlertSeen>) -> Counted<T> {
        Counted {
            inner,
            socket,
            alert,
        }
    }
}

/// The TLS alert that ended an HTTP/1 connection's reads, kept for the
/// pool beyond the connection's end. Under TLS 1.3 a server refuses the
/// client's certificate with an alert after the client's handshake:
/// hyper may read it before it writes the first request, which then
/// comes back unsent, as "channel closed", the alert lost with the
/// connection's task. (Noted as the read fails, before hyper sees the
/// error: before the request comes back.)
#[derive(Default)]
pub(crate) struct AlertSeen(std::sync::atomic::AtomicU16);

impl AlertSeen {
    fn note(&self, err: &io::Error) {
        if let Some(rustls::Error::AlertReceived(alert)) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            let seen = 0x100 | u16::from(u8::from(*alert));
            self.0.store(seen, std::sync::atomic::Ordering::Release);
        }
    }

    /// The alert, if one ended the reads.
    pub(crate) fn get(&self) -> Option<rustls::AlertDescription> {
        let seen = self.0.load(std::sync::atomic::Ordering::Acquire);
        (seen != 0).then(|| rustls::AlertDescription::from((seen & 0xff) as u8))
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
        if let Poll::Ready(Err(e)) = &polled {
            this.alert.note(e);
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
                // (Bytes came, so the error is the closure's own: a short
                // read. No need to ask its kind.)
                Err(_) if read > 0 => return Poll::Ready(Ok(())),
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
