//! [`SettingsProxy`]: a TCP proxy for cleartext HTTP/2 that makes the
//! server change its mind about `MAX_CONCURRENT_STREAMS` mid-connection.
//!
//! RFC 9113 section 6.5.2 lets a server send a new SETTINGS frame at any
//! time, and real servers lower their stream limit under load. hyper's
//! server announces its limit once, so the proxy speaks for it: it forwards
//! whole frames both ways and, on [`SettingsProxy::announce_max_streams`],
//! writes a SETTINGS frame of its own to the client between two of the
//! server's frames. The client must acknowledge every SETTINGS frame, in
//! order; the proxy keeps the order of the frames it forwarded and its own,
//! and swallows the acknowledgements of its own (the server would treat an
//! acknowledgement of settings it never sent as a protocol error).
//!
//! Dropping the proxy stops the accept loop and every connection task.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

const FRAME_HEADER: usize = 9;
const TYPE_SETTINGS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// What a client sends before its first frame (RFC 9113 section 3.4).
const CLIENT_PREFACE_LEN: usize = 24;

/// A cleartext HTTP/2 proxy on `127.0.0.1` that can announce a new stream
/// limit to the client on the server's behalf. See the [module docs](self).
///
/// ```no_run
/// # async fn demo() {
/// use freshpool_testkit::{Protocol, ServerConfig, SettingsProxy, TestServer};
/// let server = TestServer::start(ServerConfig {
///     protocol: Protocol::Http2,
///     ..ServerConfig::default()
/// })
/// .await;
/// let proxy = SettingsProxy::start(server.addr()).await;
/// // point an HTTP/2 (prior knowledge) client at proxy.url("/"), then
/// proxy.announce_max_streams(1);
/// freshpool_testkit::eventually("the client took it", || proxy.settings_acked() == 1).await;
/// # }
/// ```
#[derive(Debug)]
pub struct SettingsProxy {
    addr: SocketAddr,
    announce: watch::Sender<u32>,
    acked: Arc<AtomicU64>,
    accept_task: AbortHandle,
}

impl SettingsProxy {
    /// Binds `127.0.0.1:0` and forwards every accepted connection to
    /// `upstream` (a new upstream connection each). Must be called inside
    /// a tokio runtime.
    pub async fn start(upstream: SocketAddr) -> SettingsProxy {
        let (listener, addr) = crate::bind_loopback().await;
        let announce = watch::channel(0).0;
        let acked = Arc::new(AtomicU64::new(0));
        let accept_task = tokio::spawn(accept_loop(
            listener,
            upstream,
            announce.clone(),
            acked.clone(),
        ))
        .abort_handle();
        SettingsProxy {
            addr,
            announce,
            acked,
            accept_task,
        }
    }

    /// `http://127.0.0.1:PORT/path` (a missing leading `/` is added).
    pub fn url(&self, path: &str) -> String {
        crate::loopback_url("http", "127.0.0.1", self.addr, path)
    }

    /// Sends every connection open now a SETTINGS frame with
    /// `MAX_CONCURRENT_STREAMS = n`, as if from the server (connections
    /// opened later get only the server's own settings).
    pub fn announce_max_streams(&self, n: u32) {
        self.announce.send_replace(n);
    }

    /// How many of the proxy's SETTINGS frames clients have acknowledged:
    /// once it counts one, that client applied the new limit.
    pub fn settings_acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }
}

impl Drop for SettingsProxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a `JoinSet`).
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    announce: watch::Sender<u32>,
    acked: Arc<AtomicU64>,
) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // e.g. EMFILE: back off briefly instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        // Subscribed at accept: only later announcements reach it.
        let announced = announce.subscribe();
        let acked = acked.clone();
        conns.spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (client_rd, client_wr) = client.into_split();
            let (server_rd, server_wr) = server.into_split();
            // Who sent each SETTINGS frame the client has yet to
            // acknowledge, in the order it got them: `true` for ours.
            let senders = Arc::new(Mutex::new(VecDeque::new()));
            let down = to_client(server_rd, client_wr, senders.clone(), announced);
            let up = to_server(client_rd, server_wr, senders, acked);
            // Either direction ending ends the connection.
            tokio::select! {
                _ = down => {}
                _ = up => {}
            }
        });
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
}

/// The length of the whole frame at the start of `buf`, once complete.
fn whole_frame(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..FRAME_HEADER)?;
    let len = FRAME_HEADER + u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    (buf.len() >= len).then_some(len)
}

fn is_settings(frame: &[u8], ack: bool) -> bool {
    frame[3] == TYPE_SETTINGS && (frame[4] & FLAG_ACK != 0) == ack
}

/// Server to client: whole frames, and the proxy's SETTINGS between them.
async fn to_client(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    senders: Arc<Mutex<VecDeque<bool>>>,
    mut announced: watch::Receiver<u32>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut announcing = true;
    loop {
        tokio::select! {
            read = from.read(&mut chunk) => {
                let n = read?;
                if n == 0 {
                    to.write_all(&buf).await?;
                    return to.shutdown().await;
                }
                buf.extend_from_slice(&chunk[..n]);
                let mut done = 0;
                while let Some(len) = whole_frame(&buf[done..]) {
                    if is_settings(&buf[done..], false) {
                        senders.lock().expect("lock").push_back(false);
                    }
                    done += len;
                }
                to.write_all(&buf[..done]).await?;
                buf.drain(..done);
            }
            changed = announced.changed(), if announcing => {
                if changed.is_err() {
                    // The proxy is being dropped.
                    announcing = false;
                    continue;
                }
                let n = *announced.borrow_and_update();
                let mut frame = vec![0, 0, 6, TYPE_SETTINGS, 0, 0, 0, 0, 0];
                frame.extend_from_slice(&SETTINGS_MAX_CONCURRENT_STREAMS.to_be_bytes());
                frame.extend_from_slice(&n.to_be_bytes());
                senders.lock().expect("lock").push_back(true);
                to.write_all(&frame).await?;
            }
        }
    }
}

/// Client to server: the preface, then whole frames, less the
/// acknowledgements of the proxy's SETTINGS.
async fn to_server(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    senders: Arc<Mutex<VecDeque<bool>>>,
    acked: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut preface_left = CLIENT_PREFACE_LEN;
    loop {
        let n = from.read(&mut chunk).await?;
        if n == 0 {
            to.write_all(&buf).await?;
            return to.shutdown().await;
        }
        let mut fresh = &chunk[..n];
        if preface_left > 0 {
            let take = preface_left.min(fresh.len());
            to.write_all(&fresh[..take]).await?;
            preface_left -= take;
            fresh = &fresh[take..];
        }
        buf.extend_from_slice(fresh);
        let mut out = Vec::new();
        let mut done = 0;
        while let Some(len) = whole_frame(&buf[done..]) {
            let frame = &buf[done..done + len];
            let ours =
                is_settings(frame, true) && senders.lock().expect("lock").pop_front() == Some(true);
            if ours {
                acked.fetch_add(1, Ordering::SeqCst);
            } else {
                out.extend_from_slice(frame);
            }
            done += len;
        }
        to.write_all(&out).await?;
        buf.drain(..done);
    }
}
