//! `freshpool probe`: how a server treats connections, measured step by step
//! on raw sockets (tokio `TcpStream`, tokio-rustls, hyper `client::conn`),
//! and the freshpool settings that match it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::timeout;

use crate::load::{parse_duration, parse_url};

mod advice;
mod tls;

/// Arguments of `freshpool probe`.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// URL to probe (http:// or https://).
    pub url: String,
    /// Longest idle pause to try when looking for the server's idle
    /// timeout (500ms to 1h).
    #[arg(long, default_value = "30s", value_parser = parse_max_wait)]
    pub max_wait: Duration,
    /// Accept any server certificate (testing only).
    #[arg(long)]
    pub insecure: bool,
    /// Also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "PEM")]
    pub cacert: Option<PathBuf>,
}

/// `--max-wait`: from the first pause tried (500 ms) to an hour. (0 ran one
/// reuse with no pause and reported "no idle close within 0 s".)
fn parse_max_wait(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !(Duration::from_millis(500)..=Duration::from_secs(3600)).contains(&d) {
        return Err(format!("'{s}' is outside 500ms to 1h"));
    }
    Ok(d)
}

/// Limit of each network step (resolve, connect, handshake, request).
const STEP: Duration = Duration::from_secs(10);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Target {
    url: String,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    authority: String,
    path: String,
}

/// What one dial measured.
struct Dialed {
    addr: SocketAddr,
    dns: Duration,
    connect: Duration,
    tls: Option<(Duration, String)>,
    h2: bool,
}

impl Target {
    fn new(args: &ProbeArgs, alpn: &[&[u8]]) -> Result<Target, String> {
        let uri = parse_url(&args.url)?;
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        // Without credentials: they are no part of `Host` or `:authority`
        // (RFC 9110 section 7.2) and must not go on the wire there.
        let authority = uri
            .authority()
            .and_then(|a| a.as_str().rsplit('@').next())
            .unwrap_or_default()
            .to_string();
        let path = uri.path_and_query().map_or("/".into(), |p| p.to_string());
        Ok(Target {
            url: format!("{}://{authority}{path}", uri.scheme_str().unwrap_or("http")),
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
            tls: if https {
                Some(tls::tls_config(args, alpn)?)
            } else {
                None
            },
            authority,
            path,
            host,
        })
    }

    async fn dial(&self) -> Result<(Box<dyn Io>, Dialed), String> {
        let t = Instant::now();
        let addrs: Vec<SocketAddr> = timeout(
            STEP,
            tokio::net::lookup_host((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| format!("resolving {} timed out", self.host))?
        .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
        .collect();
        let dns = t.elapsed();
        let mut last = format!("no address for {}", self.host);
        for addr in addrs {
            let t = Instant::now();
            let tcp = match timeout(STEP, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => {
                    last = format!("cannot connect to {addr}: {e}");
                    continue;
                }
                Err(_) => {
                    last = format!("connecting to {addr} timed out after {STEP:?}");
                    continue;
                }
            };
            let connect = t.elapsed();
            let _ = tcp.set_nodelay(true);
            let Some(config) = &self.tls else {
                return Ok((
                    Box::new(tcp),
                    Dialed {
                        addr,
                        dns,
                        connect,
                        tls: None,
                        h2: false,
                    },
                ));
            };
            let t = Instant::now();
            let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| format!("invalid TLS name {}: {e}", self.host))?;
            let stream = timeout(
                STEP,
                tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp),
            )
            .await
            .map_err(|_| format!("TLS handshake with {addr} timed out"))?
            .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
            let (_, session) = stream.get_ref();
            let h2 = session.alpn_protocol() == Some(b"h2");
            let alpn = session
                .alpn_protocol()
                .map_or("none".into(), |p| String::from_utf8_lossy(p).into_owned());
            let version = session
                .protocol_version()
                .map_or("?".into(), |v| format!("{v:?}"));
            let tls = Some((t.elapsed(), format!("{version}, ALPN {alpn}")));
            return Ok((
                Box::new(stream),
                Dialed {
                    addr,
                    dns,
                    connect,
                    tls,
                    h2,
                },
            ));
        }
        Err(last)
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// One live connection: its sender, and a signal when the server closed it.
struct Live {
    sender: Sender,
    closed: oneshot::Receiver<Instant>,
    idle_since: Instant,
}

/// A response, as far as the probe cares.
struct Answer {
    status: http::StatusCode,
    /// The response's HTTP version: an HTTP/1.0 server keeps a connection
    /// only when it says `Connection: keep-alive`.
    version: http::Version,
    first_byte: Duration,
    connection_close: bool,
    connection_keep_alive: bool,
    keep_alive: Option<String>,
}

impl Answer {
    /// Whether the server keeps the connection after this response
    /// (RFC 9112 section 9.3: HTTP/1.1 unless it says `close`; HTTP/1.0
    /// only if it says `keep-alive`).
    fn keeps(&self) -> bool {
        match self.version {
            http::Version::HTTP_10 | http::Version::HTTP_09 => {
                self.connection_keep_alive && !self.connection_close
            }
            _ => !self.connection_close,
        }
    }
}

async fn open(target: &Target) -> Result<(Live, Dialed), String> {
    let (io, dialed) = target.dial().await?;
    let io = TokioIo::new(io);
    let (tx, closed) = oneshot::channel();
    let sender = if dialed.h2 {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
            let _ = tx.send(Instant::now());
        });
        Sender::H2(send)
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP/1.1 handshake failed: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
            let _ = tx.send(Instant::now());
        });
        Sender::H1(send)
    };
    Ok((
        Live {
            sender,
            closed,
            idle_since: Instant::now(),
        },
        dialed,
    ))
}

impl Live {
    async fn request(&mut self, target: &Target) -> Result<Answer, String> {
        let started = Instant::now();
        let work = async {
            let resp = match &mut self.sender {
                Sender::H1(s) => {
                    s.ready().await.map_err(|e| e.to_string())?;
                    let req = http::Request::get(&target.path)
                        .header(http::header::HOST, &target.authority)
                        .body(Empty::new())
                        .map_err(|e| e.to_string())?;
                    s.send_request(req).await.map_err(|e| e.to_string())?
                }
                Sender::H2(s) => {
                    s.ready().await.map_err(|e| e.to_string())?;
                    let req = http::Request::get(&target.url)
                        .body(Empty::new())
                        .map_err(|e| e.to_string())?;
                    s.send_request(req).await.map_err(|e| e.to_string())?
                }
            };
            let first_byte = started.elapsed();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            // (Every Connection line: hyper reads them all.)
            let says = |token: &str| {
                resp.headers()
                    .get_all("connection")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .any(|t| t.trim().eq_ignore_ascii_case(token))
            };
            let answer = Answer {
                status: resp.status(),
                version: resp.version(),
                first_byte,
                connection_close: says("close"),
                connection_keep_alive: says("keep-alive"),
                keep_alive: header("keep-alive"),
            };
            resp.into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<Answer, String>(answer)
        };
        let answer = timeout(STEP, work)
            .await
            .map_err(|_| TIMED_OUT.to_string())??;
        self.idle_since = Instant::now();
        Ok(answer)
    }
}

/// A request's error when it had no answer within [`STEP`].
const TIMED_OUT: &str = "request timed out";

/// Outcome of idling a connection, then reusing it.
enum Reuse {
    Alive,
    /// The server closed it while idle, after this long.
    ClosedAt(Duration),
    /// The reuse failed without a close being seen first.
    Failed,
    /// The reuse had no answer within [`STEP`]: failed, or a slow server.
    Unanswered,
    /// The connection ended right as the previous exchange finished (an h2
    /// GOAWAY racing the last request): this pause measured nothing.
    Gone,
}

/// A close seen this soon after the idle period began belongs to the
/// previous exchange, not to the idle timer being measured.
const CLOSE_BELONGS_TO_LAST_EXCHANGE: Duration = Duration::from_millis(20);

async fn idle_then_reuse(live: &mut Live, target: &Target, pause: Duration) -> Reuse {
    let since = live.idle_since;
    tokio::select! {
        biased;
        closed = &mut live.closed => {
            let after = closed.map_or(since.elapsed(), |t| t.saturating_duration_since(since));
            return if after < CLOSE_BELONGS_TO_LAST_EXCHANGE {
                Reuse::Gone
            } else {
                Reuse::ClosedAt(after)
            };
        }
        _ = tokio::time::sleep_until((since + pause).into()) => {}
    }
    match live.request(target).await {
        Ok(_) => Reuse::Alive,
        Err(e) if e == TIMED_OUT => Reuse::Unanswered,
        Err(_) => match live
            .closed
            .try_recv()
            .map(|t| t.saturating_duration_since(since))
        {
            Ok(after) if after < CLOSE_BELONGS_TO_LAST_EXCHANGE => Reuse::Gone,
            Ok(after) if after <= pause => Reuse::ClosedAt(after),
            _ => Reuse::Failed,
        },
    }
}

/// Idles `live` for `pause` and reuses it, opening a fresh connection first
/// when the last one is dead, and again (a bounded number of times) when the
/// connection turns out to have ended with the previous exchange; `Gone`
/// when it did so three times (callers treat it like `Failed`).
async fn measure(
    live: &mut Live,
    dead: &mut bool,
    target: &Target,
    pause: Duration,
) -> Result<Reuse, String> {
    for _ in 0..3 {
        if *dead {
            *live = open(target).await?.0;
            live.request(target).await?;
            *dead = false;
        }
        match idle_then_reuse(live, target, pause).await {
            Reuse::Gone => *dead = true,
            failed @ (Reuse::Failed | Reuse::Unanswered) => {
                *dead = true;
                return Ok(failed);
            }
            other => return Ok(other),
        }
    }
    // The server closes after every response without saying so (an
    // HTTP/1.0 server, or one that ignores keep-alive): there is no reuse
    // to measure, which the callers' no-reuse look reports.
    Ok(Reuse::Gone)
}

/// What the idle search found.
enum Idle {
    /// A FIN (or GOAWAY + FIN) was seen after this much idleness.
    Observed(Duration),
    /// Reuse worked after `lo` and failed after `hi`.
    Between(Duration, Duration),
    /// Reuse still worked after the longest pause tried.
    Beyond(Duration),
    /// Reuse failed even after a pause of this much (the shortest tried):
    /// the server, or something on the way, ignores a second request on a
    /// connection without closing it.
    NoReuse(Duration),
    /// Not measured (the server does not keep connections).
    Skipped,
}

async fn find_idle_timeout(
    target: &Target,
    max_wait: Duration,
    mut live: Live,
) -> Result<Idle, String> {
    let mut pauses = Vec::new();
    let mut p = Duration::from_millis(500);
    while p < max_wait {
        pauses.push(p);
        p *= 2;
    }
    pauses.push(max_wait);
    let mut lo = Duration::ZERO;
    let mut hi = None;
    let mut dead = false;
    for pause in pauses {
        match measure(&mut live, &mut dead, target, pause).await? {
            Reuse::Alive => lo = pause,
            Reuse::ClosedAt(t) => return Ok(Idle::Observed(t)),
            Reuse::Failed | Reuse::Unanswered | Reuse::Gone => {
                hi = Some(pause);
                break;
            }
        }
    }
    let Some(mut hi) = hi else {
        return Ok(Idle::Beyond(lo));
    };
    // Failed at the first pause: one look right after the response tells
    // "times out sooner" from "never reuses" (bisecting towards zero took
    // ~90 s and then reported an idle timeout of 1 ms). Unanswered counts
    // as no reuse: the connection's first request was answered within
    // STEP, and the same server ignoring one 20 ms later is not slow but
    // not serving a second request (bisecting from zero, eight 10 s steps,
    // ended at "1 ms" again).
    if lo.is_zero() {
        match measure(&mut live, &mut dead, target, NO_REUSE_PAUSE).await? {
            Reuse::Alive => lo = NO_REUSE_PAUSE,
            Reuse::ClosedAt(t) => return Ok(Idle::Observed(t)),
            Reuse::Failed | Reuse::Gone | Reuse::Unanswered => {
                return Ok(Idle::NoReuse(NO_REUSE_PAUSE))
            }
        }
    }
    // Bisect on fresh connections until the bracket is within ~10%.
    for _ in 0..8 {
        if (hi - lo).as_secs_f64() <= 0.1 * hi.as_secs_f64() {
            break;
        }
        let mid = (lo + hi) / 2;
        match measure(&mut live, &mut dead, target, mid).await? {
            Reuse::Alive => lo = mid,
            Reuse::ClosedAt(t) => return Ok(Idle::Observed(t)),
            Reuse::Failed | Reuse::Unanswered | Reuse::Gone => hi = mid,
        }
    }
    Ok(Idle::Between(lo, hi))
}

/// The pause of the look that tells whether a connection is reused at all.
const NO_REUSE_PAUSE: Duration = Duration::from_millis(20);

/// Reads the server's first SETTINGS frame on a raw HTTP/2 connection and
/// returns `SETTINGS_MAX_CONCURRENT_STREAMS` (`None`: not advertised).
async fn h2_max_streams(target: &Target) -> Result<Option<u32>, String> {
    let (mut io, dialed) = target.dial().await?;
    if !dialed.h2 {
        return Err("the second connection did not negotiate HTTP/2".into());
    }
    let work = async {
        io.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await?;
        io.flush().await?;
        for _ in 0..16 {
            let mut head = [0u8; 9];
            io.read_exact(&mut head).await?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len.min(1 << 16)];
            io.read_exact(&mut payload).await?;
            if head[3] == 0x4 && head[4] & 0x1 == 0 {
                let streams = payload
                    .chunks_exact(6)
                    .find(|s| u16::from_be_bytes([s[0], s[1]]) == 0x3)
                    .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
                return Ok(streams);
            }
        }
        Err(std::io::Error::other("no SETTINGS frame"))
    };
    timeout(STEP, work)
        .await
        .map_err(|_| "reading SETTINGS timed out".to_string())?
        .map_err(|e| format!("reading SETTINGS failed: {e}"))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Runs `freshpool probe`.
pub async fn run(args: ProbeArgs) -> Result<(), String> {
    let target = Target::new(&args, &[b"h2", b"http/1.1"])?;
    println!("probe {}", target.url);
    let (mut live, dialed) = open(&target).await?;
    let answer = live
        .request(&target)
        .await
        .map_err(|e| format!("request to {} failed: {e}", target.url))?;
    println!("  address       {}", dialed.addr);
    println!("  dns           {}", ms(dialed.dns));
    println!("  connect       {}", ms(dialed.connect));
    if let Some((took, what)) = &dialed.tls {
        println!("  tls           {} ({what})", ms(*took));
    }
    println!(
        "  first byte    {} (status {})",
        ms(answer.first_byte),
        answer.status
    );
    let version = if dialed.h2 {
        "HTTP/2"
    } else if answer.version == http::Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    println!(
        "  http version  {version}{}",
        if dialed.tls.is_none() {
            " (cleartext: h2c not probed)"
        } else {
            ""
        }
    );
    let hint = answer
        .keep_alive
        .as_deref()
        .and_then(freshpool::parse_keep_alive);
    let keeps = dialed.h2 || answer.keeps();
    let hint_text = answer
        .keep_alive
        .as_deref()
        .map_or("no Keep-Alive hint".into(), |h| format!("Keep-Alive: {h}"));
    println!(
        "  keep-alive    {} ({hint_text})",
        if keeps {
            "yes"
        } else if answer.connection_close {
            "no: Connection: close"
        } else {
            "no: HTTP/1.0 without Connection: keep-alive"
        }
    );
    let idle = if keeps {
        println!(
            "  (looking for the idle timeout: pauses up to {:?}...)",
            args.max_wait
        );
        find_idle_timeout(&target, args.max_wait, live).await?
    } else {
        Idle::Skipped
    };
    let observed = match idle {
        Idle::Observed(t) => {
            println!(
                "  idle timeout  {:.3} s (the server closed the idle connection)",
                t.as_secs_f64()
            );
            Some(t)
        }
        Idle::Between(lo, hi) => {
            let est = (lo + hi) / 2;
            println!(
                "  idle timeout  {:.3} s (reuse worked after {:.2} s, failed after {:.2} s)",
                est.as_secs_f64(),
                lo.as_secs_f64(),
                hi.as_secs_f64()
            );
            Some(est)
        }
        Idle::Beyond(lo) => {
            println!(
                "  idle timeout  none seen (reuse still worked after {:.1} s)",
                lo.as_secs_f64()
            );
            None
        }
        Idle::NoReuse(after) => {
            println!(
                "  idle timeout  none: reusing the connection failed even {} ms after a response",
                after.as_millis()
            );
            None
        }
        Idle::Skipped => None,
    };
    let streams = if dialed.h2 {
        Some(h2_max_streams(&target).await)
    } else {
        None
    };
    match &streams {
        Some(Ok(Some(n))) => println!("  h2 max concurrent streams  {n}"),
        Some(Ok(None)) => println!("  h2 max concurrent streams  not advertised (unlimited)"),
        Some(Err(e)) => println!("  h2 max concurrent streams  unknown ({e})"),
        None => {}
    }
    let streams = match streams {
        None => advice::Streams::Http1,
        Some(Ok(n)) => advice::Streams::Http2(n),
        Some(Err(_)) => advice::Streams::Http2Unknown,
    };
    print!(
        "{}",
        advice::recommend(keeps, hint, observed, &idle, streams, args.max_wait)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_go_nowhere_on_the_wire() {
        let args = ProbeArgs {
            url: "http://user:secret@127.0.0.1:8080/x?y=1".into(),
            max_wait: Duration::from_secs(1),
            insecure: false,
            cacert: None,
        };
        let target = Target::new(&args, &[]).unwrap();
        assert_eq!(target.authority, "127.0.0.1:8080");
        assert_eq!(target.url, "http://127.0.0.1:8080/x?y=1");
        assert_eq!((target.host.as_str(), target.port), ("127.0.0.1", 8080));
    }
}
