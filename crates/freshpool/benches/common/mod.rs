//! What the benchmarks' hand-held hyper client shares.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// Reads a whole hyper body into `Bytes` the way `freshpool::Body::bytes`
/// does (one frame is returned as is; several are joined), so that the
/// hand-held baseline and the pool do the same work for a body and the
/// comparison measures the pool alone. (`collect().to_bytes()`, the usual
/// hyper idiom, costs ~560 instructions more per small response.)
pub async fn read_bytes<B>(mut body: B) -> Bytes
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.expect("body").into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        match (&first, &mut joined) {
            (None, _) => first = Some(data),
            (Some(head), None) => {
                let mut all = BytesMut::with_capacity(head.len() + data.len());
                all.extend_from_slice(head);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
            (Some(_), Some(all)) => all.extend_from_slice(&data),
        }
    }
    match (joined, first) {
        (Some(all), _) => all.freeze(),
        (None, first) => first.unwrap_or_default(),
    }
}
