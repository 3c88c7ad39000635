//! Handing a prepared request to the leased connection's hyper sender, and
//! reading back whether it was written.
//!
//! hyper offers two calls. `try_send_request` hands an unwritten request
//! back in its error; `send_request` drops it and says only
//! [`hyper::Error::is_canceled`]. Where the send loop keeps its own copy for
//! a retry it has no use for the request coming back, and the lighter call
//! is cheaper on the hot path: its reply, `Result<Response, hyper::Error>`,
//! is about half the size of one that can carry a 232-byte request, and
//! every hop of the reply (hyper's dispatcher, its oneshot, each future
//! layer up to the send loop) copies it. Where no copy is kept (a request
//! on a new HTTP/1 connection, or a body that cannot be replayed) the
//! returned request is the only way to send it again, so that path keeps
//! `try_send_request`.
//!
//! What makes `is_canceled` mean "never written" (hyper 1.x, pinned by
//! tests/hyper_contract.rs): hyper raises `Canceled` only for a request it never
//! started (the connection was not ready, or it closed with the request
//! still queued: the same places `try_send_request` returns it); a request
//! that failed after being written gets the I/O or parse error instead.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::RequestBody;

/// A dispatched request that got no response.
pub(super) struct SendError {
    pub error: hyper::Error,
    /// hyper proved the request was never written.
    pub unsent: bool,
    /// The unwritten request, where hyper handed it back (only on the
    /// `try_send_request` path). Boxed: this is the rare path and the
    /// request would double the size of every reply.
    pub returned: Option<Box<Request<RequestBody>>>,
}

pub(super) type Sent = Result<Response<Incoming>, SendError>;

pin_project_lite::pin_project! {
    /// The four sender futures (HTTP/1 or HTTP/2, with or without the
    /// request handed back) as one type, without boxing.
    #[project = SendingProj]
    pub(super) enum Sending<H1, H1Try, H2, H2Try> {
        H1 { #[pin] f: H1 },
        H1Try { #[pin] f: H1Try },
        H2 { #[pin] f: H2 },
        H2Try { #[pin] f: H2Try },
    }
}

/// What hyper's `send_request` resolves to.
pub(super) type Plain = hyper::Result<Response<Incoming>>;
/// What hyper's `try_send_request` resolves to.
pub(super) type Returning =
    Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<RequestBody>>>;

impl<H1, H1Try, H2, H2Try> Future for Sending<H1, H1Try, H2, H2Try>
where
    H1: Future<Output = Plain>,
    H1Try: Future<Output = Returning>,
    H2: Future<Output = Plain>,
    H2Try: Future<Output = Returning>,
{
    type Output = Sent;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Sent> {
        match self.project() {
            SendingProj::H1 { f } => f.poll(cx).map(plain),
            SendingProj::H1Try { f } => f.poll(cx).map(returning),
            SendingProj::H2 { f } => f.poll(cx).map(plain),
            SendingProj::H2Try { f } => f.poll(cx).map(returning),
        }
    }
}

fn plain(result: Plain) -> Sent {
    result.map_err(|error| SendError {
        unsent: error.is_canceled(),
        error,
        returned: None,
    })
}

fn returning(result: Returning) -> Sent {
    result.map_err(|mut e| {
        let returned = e.take_message().map(Box::new);
        SendError {
            unsent: returned.is_some(),
            error: e.into_error(),
            returned,
        }
    })
}
