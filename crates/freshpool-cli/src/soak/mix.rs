//! The soak's request mix: which requests the loops send, and the tally of
//! how each ended.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshpool::Client;

/// A small deterministic generator (splitmix64): no extra dependency.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub(super) fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Class {
    Get,
    GetDropped,
    Put,
    PostKeyed,
    PostBare,
}

impl Class {
    pub(super) const ALL: [Class; 5] = [
        Class::Get,
        Class::GetDropped,
        Class::Put,
        Class::PostKeyed,
        Class::PostBare,
    ];
    pub(super) fn prefix(self) -> &'static str {
        match self {
            Class::Get => "get",
            Class::GetDropped => "getdrop",
            Class::Put => "put",
            Class::PostKeyed => "postkey",
            Class::PostBare => "post",
        }
    }
    pub(super) fn label(self) -> &'static str {
        match self {
            Class::Get => "GET (body read)",
            Class::GetDropped => "GET (body dropped)",
            Class::Put => "PUT",
            Class::PostKeyed => "POST + Idempotency-Key",
            Class::PostBare => "POST (no key)",
        }
    }
    pub(super) fn from_id(id: &str) -> Option<Class> {
        let prefix = id.split('-').next()?;
        Class::ALL.into_iter().find(|c| c.prefix() == prefix)
    }
}

#[derive(Default)]
pub(super) struct Tally {
    pub(super) sent: AtomicU64,
    pub(super) answered: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) hung: AtomicU64,
    pub(super) per_class: Mutex<BTreeMap<Class, [u64; 3]>>,
    pub(super) failures: Mutex<BTreeMap<String, u64>>,
    /// A sample message per failure kind, for the report.
    pub(super) examples: Mutex<BTreeMap<String, String>>,
}

impl Tally {
    fn class(&self, c: Class, slot: usize) {
        self.per_class
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(c)
            .or_default()[slot] += 1;
    }
    fn failure(&self, c: Class, what: String, message: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        self.class(c, 2);
        *self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(what.clone())
            .or_default() += 1;
        self.examples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(what)
            .or_insert(message);
    }
}

/// Starts `concurrency` request loops against the proxy at `port` until
/// `deadline`; each counts what it sends and how it ended in `tally`.
pub(super) fn spawn_loops(
    client: &Client,
    tally: &Arc<Tally>,
    seed: u64,
    concurrency: usize,
    port: u16,
    deadline: Instant,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next_id = Arc::new(AtomicU64::new(1));
    (0..concurrency)
        .map(|w| {
            let client = client.clone();
            let tally = tally.clone();
            let next_id = next_id.clone();
            let stop = stop.clone();
            let base = format!("http://127.0.0.1:{port}/");
            let mut rng = Rng(seed.wrapping_add(w as u64 * 7919));
            tokio::spawn(async move {
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    let class = match rng.below(10) {
                        0..=3 => Class::Get,
                        4 => Class::GetDropped,
                        5 | 6 => Class::Put,
                        7 => Class::PostKeyed,
                        _ => Class::PostBare,
                    };
                    let id = format!(
                        "{}-{}",
                        class.prefix(),
                        next_id.fetch_add(1, Ordering::Relaxed)
                    );
                    one_request(&client, &tally, &mut rng, &base, class, id).await;
                    // A request refused at once (no I/O, so no await that
                    // yields) would otherwise loop on this worker until the
                    // deadline, starving every other task on it, Ctrl-C's
                    // included.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect()
}

/// The failure kind of an answer that is not the request's own.
pub(crate) const WRONG_ANSWER: &str = "WRONG ANSWER (another request's?)";

/// What an answer must carry (see `one_request`).
enum Expected {
    Body(String),
    Len(usize),
}

impl Expected {
    /// How `got` differs from what was expected, if it does.
    fn mismatch(&self, got: &[u8]) -> Option<String> {
        match self {
            Expected::Body(want) if got != want.as_bytes() => Some(format!(
                "echoed {:?}, not its own payload",
                String::from_utf8_lossy(&got[..got.len().min(60)])
            )),
            Expected::Len(n) if got.len() != *n => {
                Some(format!("{} bytes, not the {n} asked for", got.len()))
            }
            _ => None,
        }
    }
}

/// Sends one request of `class` and counts it.
async fn one_request(
    client: &Client,
    tally: &Tally,
    rng: &mut Rng,
    base: &str,
    class: Class,
    id: String,
) {
    let body = format!("payload of {id}");
    // What its answer must carry, where the request says: `/echo` its own
    // payload, `/bytes/N` N bytes. Another request's answer read on this
    // one (a connection reused with a response still on it) is a wrong
    // answer, never a success.
    let (path, expected) = match (class, rng.below(4)) {
        (Class::Get, 0) => (format!("delay/{}", rng.below(20)), None),
        (Class::Get, 1) => {
            let n = rng.below(32 * 1024);
            (format!("bytes/{n}"), Some(Expected::Len(n as usize)))
        }
        (Class::GetDropped, _) => (format!("stream/{}", 8 * 1024 + rng.below(64 * 1024)), None),
        (Class::Get, _) => (String::new(), None),
        _ => ("echo".to_string(), Some(Expected::Body(body.clone()))),
    };
    let uri = format!("{base}{path}");
    let builder = http::Request::builder().header("x-request-id", &id);
    let request = match class {
        Class::Get | Class::GetDropped => builder.method("GET").uri(&uri).body(String::new()),
        Class::Put => builder.method("PUT").uri(&uri).body(body),
        Class::PostKeyed => builder
            .method("POST")
            .uri(&uri)
            .header("idempotency-key", &id)
            .body(body),
        Class::PostBare => builder.method("POST").uri(&uri).body(body),
    };
    tally.sent.fetch_add(1, Ordering::SeqCst);
    tally.class(class, 0);
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            tally.failure(class, "building the request".into(), e.to_string());
            return;
        }
    };
    // A guard far beyond every configured timeout: firing means the request
    // hung (lost), which the pass criteria forbid.
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        let response = client.request(request).await?;
        let status = response.status();
        if class == Class::GetDropped {
            drop(response);
            return Ok::<_, freshpool::Error>((status, None));
        }
        let got = response.into_body().bytes().await?;
        // (A status other than 2xx is its own failure, below.)
        let wrong = expected
            .as_ref()
            .filter(|_| status.is_success())
            .and_then(|e| e.mismatch(&got));
        Ok((status, wrong))
    })
    .await;
    match outcome {
        Ok(Ok((_, Some(wrong)))) => {
            tally.failure(class, WRONG_ANSWER.into(), format!("{id}: {wrong}"))
        }
        // The soak's own server answers these paths with 200: any other
        // status came from something else (a proxy, a broken server).
        Ok(Ok((status, None))) if !status.is_success() => tally.failure(
            class,
            format!("HTTP {}", status.as_u16()),
            format!("{id} answered {status}"),
        ),
        Ok(Ok(_)) => {
            tally.answered.fetch_add(1, Ordering::SeqCst);
            tally.class(class, 1);
        }
        Ok(Err(e)) => tally.failure(class, format!("{:?}", e.kind()), e.to_string()),
        Err(_) => {
            tally.hung.fetch_add(1, Ordering::SeqCst);
            tally.failure(class, "HUNG (no answer in 60 s)".into(), id);
        }
    }
}

#[cfg(test)]
mod tests {
    /// An answer that is not its request's own (another request's echo,
    /// or the wrong length) is told apart from a right one.
    #[test]
    fn a_wrong_answer_is_told_apart() {
        let echo = Expected::Body("payload of 7-1".into());
        assert!(echo.mismatch(b"payload of 7-1").is_none());
        assert!(echo.mismatch(b"payload of 7-2").is_some());
        let bytes = Expected::Len(3);
        assert!(bytes.mismatch(b"abc").is_none());
        assert!(bytes.mismatch(b"ok").is_some());
    }

    use super::*;

    #[test]
    fn request_ids_map_back_to_their_class() {
        for c in Class::ALL {
            assert_eq!(Class::from_id(&format!("{}-17", c.prefix())), Some(c));
        }
    }
}
