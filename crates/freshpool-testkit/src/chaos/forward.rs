//! The forwarding phase of a proxied connection: two copy directions run
//! concurrently, applying the fault flags between reads.

use std::sync::atomic::Ordering;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::http1::{Event, Kind, PendingMethods, Tracker};
use super::{far_future, idle_deadline, is_idle, ConnCtl, Shared, BUF_SIZE};

/// How the forwarding phase of a connection ended.
pub(super) enum Outcome {
    /// Both directions reached EOF.
    Done,
    /// An I/O error or a truncation: close both sides.
    Close,
    /// Killed by `kill_all_silently`; `in_flight`: a request had been
    /// forwarded whose response had not started (a real NAT would reset the
    /// flow at the client's next retransmit or ACK, so reset at once).
    Killed { in_flight: bool },
    /// Idle for too long.
    IdleClose,
    /// Answer the client with these bytes, then close.
    Garbage(Vec<u8>),
    /// The write side towards the client was shut down.
    HalfClosed,
}

/// Result of one copy direction.
enum Pump {
    Eof,
    End(Outcome),
}

pub(super) async fn forward(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    shared: &Shared,
    ctl: &ConnCtl,
    settings: &mut watch::Receiver<u64>,
) -> Outcome {
    let pending = PendingMethods::default();
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let c2u = client_to_upstream(&mut cr, &mut uw, shared, ctl, &pending);
    let u2c = upstream_to_client(&mut ur, &mut cw, shared, ctl, &pending);
    tokio::pin!(c2u, u2c);
    let (mut c_done, mut u_done) = (false, false);
    loop {
        let deadline = idle_deadline(shared, ctl);
        // Biased, the kill first: a kill that came before the client's next
        // bytes must win over forwarding them. (Unbiased, a proxy task that
        // was scheduled late, with both ready, forwarded a request sent
        // after `kill_all_silently` about half the time: a flaky test under
        // load.)
        tokio::select! {
            biased;
            _ = ctl.kill.notified() => {
                let in_flight = !pending.lock().expect("lock").is_empty();
                return Outcome::Killed { in_flight };
            }
            r = &mut c2u, if !c_done => match r {
                Pump::Eof => c_done = true,
                Pump::End(o) => return o,
            },
            r = &mut u2c, if !u_done => match r {
                Pump::Eof => u_done = true,
                Pump::End(o) => return o,
            },
            Ok(()) = settings.changed() => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                if is_idle(shared, ctl) {
                    return Outcome::IdleClose;
                }
            }
        }
        if c_done && u_done {
            return Outcome::Done;
        }
    }
}

async fn client_to_upstream<R, W>(
    cr: &mut R,
    uw: &mut W,
    shared: &Shared,
    ctl: &ConnCtl,
    pending: &PendingMethods,
) -> Pump
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_SIZE];
    let mut tracker = Tracker::new(Kind::Request);
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) => {
                if !shared.blackholed_for(ctl) {
                    let _ = uw.shutdown().await;
                }
                return Pump::Eof;
            }
            Ok(n) => n,
            Err(_) => return Pump::End(Outcome::Close),
        };
        ctl.activity.touch();
        if shared.blackholed_for(ctl) {
            continue;
        }
        let chunk = &buf[..n];
        for ev in tracker.feed(chunk, pending) {
            if let Event::Start(off) = ev {
                let garbage = shared.garbage_next.lock().expect("lock").take();
                if let Some(garbage) = garbage {
                    let _ = uw.write_all(&chunk[..off]).await;
                    return Pump::End(Outcome::Garbage(garbage));
                }
                if !tracker.is_opaque() {
                    shared.counters.requests.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        if uw.write_all(chunk).await.is_err() {
            return Pump::End(Outcome::Close);
        }
    }
}

async fn upstream_to_client<R, W>(
    ur: &mut R,
    cw: &mut W,
    shared: &Shared,
    ctl: &ConnCtl,
    pending: &PendingMethods,
) -> Pump
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_SIZE];
    let mut tracker = Tracker::new(Kind::Response);
    // Bytes still allowed through before a truncation closes the connection.
    let mut truncating: Option<usize> = None;
    let mut half_close_armed = false;
    'read: loop {
        let n = match ur.read(&mut buf).await {
            Ok(0) => {
                if !shared.blackholed_for(ctl) {
                    let _ = cw.shutdown().await;
                }
                return Pump::Eof;
            }
            Ok(n) => n,
            Err(_) => return Pump::End(Outcome::Close),
        };
        ctl.activity.touch();
        if shared.blackholed_for(ctl) {
            continue;
        }
        let chunk = &buf[..n];
        if let Some(left) = truncating {
            let k = left.min(n);
            let _ = cw.write_all(&chunk[..k]).await;
            if k == left {
                return Pump::End(Outcome::Close);
            }
            truncating = Some(left - k);
            continue;
        }
        for ev in tracker.feed(chunk, pending) {
            match ev {
                Event::Start(off) => {
                    let keep = shared.truncate_next.lock().expect("lock").take();
                    if let Some(keep) = keep {
                        let end = off.saturating_add(keep);
                        let _ = cw.write_all(&chunk[..end.min(n)]).await;
                        if end <= n {
                            return Pump::End(Outcome::Close);
                        }
                        truncating = Some(end - n);
                        continue 'read;
                    }
                    if !half_close_armed && shared.half_close_next.swap(false, Ordering::SeqCst) {
                        half_close_armed = true;
                    }
                }
                Event::End(end) if half_close_armed => {
                    let _ = cw.write_all(&chunk[..end]).await;
                    let _ = cw.shutdown().await;
                    return Pump::End(Outcome::HalfClosed);
                }
                Event::End(_) => {}
            }
        }
        if cw.write_all(chunk).await.is_err() {
            return Pump::End(Outcome::Close);
        }
    }
}
