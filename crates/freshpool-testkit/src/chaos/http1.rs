//! A tolerant, incremental HTTP/1 message-boundary tracker for the chaos
//! proxy.
//!
//! It does not validate anything; it only finds where requests/responses
//! start and end in a byte stream so faults can be applied "to the next
//! request/response". Heads are parsed for `Content-Length` and
//! `Transfer-Encoding: chunked`; responses to `HEAD`, 1xx, 204 and 304 have
//! no body; a response without length runs until the connection closes.
//! Anything that does not look like HTTP/1 (TLS records, the HTTP/2
//! preface `PRI * HTTP/2.0`, binary frames) switches the tracker to *opaque*
//! mode for good, where every chunk counts as one whole message.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Longest head we are willing to buffer before giving up (opaque).
const MAX_HEAD: usize = 64 * 1024;

/// A message boundary inside the chunk that was fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A message starts at this offset (0 if it started in an earlier chunk
    /// and was only recognised now).
    Start(usize),
    /// A message ends right before this offset.
    End(usize),
}

/// Which direction a tracker watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Request,
    Response,
}

#[derive(Debug)]
enum Chunk {
    Size(Vec<u8>),
    Data(u64),
    DataCrlf(u8),
    Trailer(usize),
}

#[derive(Debug)]
enum State {
    Head,
    Fixed(u64),
    Chunked(Chunk),
    UntilClose,
    Opaque,
}

enum Class {
    Valid,
    Invalid,
    Undecided,
}

/// Request methods seen on a connection whose responses are still pending
/// (`true` = `HEAD`), shared by the two trackers of one connection.
pub(crate) type PendingMethods = Mutex<VecDeque<bool>>;

/// Tracks message boundaries in one direction of one connection.
#[derive(Debug)]
pub(crate) struct Tracker {
    kind: Kind,
    state: State,
    head: Vec<u8>,
    started: bool,
    /// An interim (1xx) response head just ended: the next head is the
    /// same response's final one, not a new message (no `Start`). So a
    /// fault armed for "the next response" (a truncation, a half-close
    /// after it) applies to the response, not to its `100 Continue`.
    interim: bool,
}

impl Tracker {
    pub(crate) fn new(kind: Kind) -> Tracker {
        Tracker {
            kind,
            state: State::Head,
            head: Vec::new(),
            started: false,
            interim: false,
        }
    }

    /// `true` once the stream turned out not to be HTTP/1.
    pub(crate) fn is_opaque(&self) -> bool {
        matches!(self.state, State::Opaque)
    }

    fn classify(&self) -> Class {
        let h = &self.head;
        match self.kind {
            Kind::Request => {
                let token = h.iter().take_while(|b| b.is_ascii_uppercase()).count();
                if token > 16 {
                    Class::Invalid
                } else if token == h.len() {
                    Class::Undecided
                } else if token > 0 && h[token] == b' ' && &h[..token] != b"PRI" {
                    Class::Valid
                } else {
                    Class::Invalid
                }
            }
            Kind::Response => {
                const P: &[u8] = b"HTTP/";
                if h.len() >= P.len() {
                    if h.starts_with(P) {
                        Class::Valid
                    } else {
                        Class::Invalid
                    }
                } else if P.starts_with(h) {
                    Class::Undecided
                } else {
                    Class::Invalid
                }
            }
        }
    }

    /// Feeds the next chunk of the stream; returns the boundaries in it.
    pub(crate) fn feed(&mut self, data: &[u8], pending: &PendingMethods) -> Vec<Event> {
        let mut ev = Vec::new();
        let mut i = 0;
        let mut head_start = 0;
        while i < data.len() {
            match &mut self.state {
                State::Opaque => {
                    ev.push(Event::Start(i));
                    ev.push(Event::End(data.len()));
                    return ev;
                }
                State::Head => {
                    let b = data[i];
                    if self.head.is_empty() {
                        if self.kind == Kind::Request && (b == b'\r' || b == b'\n') {
                            i += 1; // stray CRLF between requests
                            continue;
                        }
                        head_start = i;
                    }
                    self.head.push(b);
                    i += 1;
                    if !self.started {
                        match self.classify() {
                            Class::Valid => {
                                self.started = true;
                                if !std::mem::take(&mut self.interim) {
                                    ev.push(Event::Start(head_start));
                                }
                            }
                            Class::Invalid => {
                                self.state = State::Opaque;
                                self.head.clear();
                                ev.push(Event::Start(head_start));
                                ev.push(Event::End(data.len()));
                                return ev;
                            }
                            Class::Undecided => {}
                        }
                    }
                    if self.head.ends_with(b"\r\n\r\n") {
                        let ended = self.head_complete(pending);
                        self.head.clear();
                        self.started = false;
                        if ended {
                            ev.push(Event::End(i));
                        }
                    } else if self.head.len() > MAX_HEAD {
                        self.state = State::Opaque;
                        self.head.clear();
                    }
                }
                State::Fixed(left) => {
                    let take = (*left).min((data.len() - i) as u64);
                    *left -= take;
                    i += take as usize;
                    if *left == 0 {
                        self.state = State::Head;
                        ev.push(Event::End(i));
                    }
                }
                State::UntilClose => i = data.len(),
                State::Chunked(chunk) => {
                    let b = data[i];
                    match chunk {
                        Chunk::Size(line) => {
                            i += 1;
                            if b == b'\n' {
                                let text = String::from_utf8_lossy(line);
                                let hex = text.split(';').next().unwrap_or("").trim();
                                let size = u64::from_str_radix(hex, 16).unwrap_or(0);
                                *chunk = if size == 0 {
                                    Chunk::Trailer(0)
                                } else {
                                    Chunk::Data(size)
                                };
                            } else if line.len() < 1024 {
                                line.push(b);
                            }
                        }
                        Chunk::Data(left) => {
                            let take = (*left).min((data.len() - i) as u64);
                            *left -= take;
                            i += take as usize;
                            if *left == 0 {
                                *chunk = Chunk::DataCrlf(2);
                            }
                        }
                        Chunk::DataCrlf(left) => {
                            i += 1;
                            *left -= 1;
                            if *left == 0 {
                                *chunk = Chunk::Size(Vec::new());
                            }
                        }
                        Chunk::Trailer(line_len) => {
                            i += 1;
                            if b == b'\n' {
                                if *line_len == 0 {
                                    self.state = State::Head;
                                    ev.push(Event::End(i));
                                } else {
                                    *line_len = 0;
                                }
                            } else if b != b'\r' {
                                *line_len += 1;
                            }
                        }
                    }
                }
            }
        }
        ev
    }

    /// Parses the completed head and sets the body state. Returns `true` if
    /// the message has no body (it ends with the head).
    fn head_complete(&mut self, pending: &PendingMethods) -> bool {
        let text = String::from_utf8_lossy(&self.head).into_owned();
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or("");
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let name = name.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked |= value.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        let body_state = if chunked {
            State::Chunked(Chunk::Size(Vec::new()))
        } else {
            match content_length {
                Some(0) => State::Head,
                Some(n) => State::Fixed(n),
                None => State::Head,
            }
        };
        match self.kind {
            Kind::Request => {
                let is_head = start.starts_with("HEAD ");
                if let Ok(mut q) = pending.lock() {
                    q.push_back(is_head);
                }
                self.state = body_state;
            }
            Kind::Response => {
                let status: u16 = start
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(200);
                if status == 101 {
                    self.state = State::Opaque;
                    return true;
                }
                if (100..200).contains(&status) {
                    // Interim: the final head follows, in the same message.
                    self.state = State::Head;
                    self.interim = true;
                    return false;
                }
                let was_head = pending
                    .lock()
                    .ok()
                    .and_then(|mut q| q.pop_front())
                    .unwrap_or(false);
                self.state = if was_head || status == 204 || status == 304 {
                    State::Head
                } else if chunked || content_length.is_some() {
                    body_state
                } else {
                    State::UntilClose
                };
            }
        }
        matches!(self.state, State::Head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses() {
        let pending = PendingMethods::default();
        let mut req = Tracker::new(Kind::Request);
        let r =
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /echo HTTP/1.1\r\ncontent-length: 3\r\n\r\nab";
        let ev = req.feed(r, &pending);
        assert_eq!(ev, vec![Event::Start(0), Event::End(27), Event::Start(27)]);
        assert_eq!(req.feed(b"c", &pending), vec![Event::End(1)]);

        let mut resp = Tracker::new(Kind::Response);
        let s = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let ev = resp.feed(s, &pending);
        let first_end = s.len() - b"HTTP/1.1 204 No Content\r\n\r\n".len();
        assert_eq!(
            ev,
            vec![
                Event::Start(0),
                Event::End(first_end),
                Event::Start(first_end),
                Event::End(s.len())
            ]
        );
    }

    /// A `100 Continue` and the final response that follows it are one
    /// message: one `Start`, one `End` (after the final one's body). It was
    /// two, so a half-close armed for the next response came right after
    /// the `100 Continue`, and the real answer never came.
    #[test]
    fn an_interim_response_is_part_of_its_final_one() {
        let pending = PendingMethods::default();
        pending.lock().unwrap().push_back(false);
        let mut resp = Tracker::new(Kind::Response);
        let s = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(
            resp.feed(s, &pending),
            vec![Event::Start(0), Event::End(s.len())]
        );
        // The next response starts a new message.
        pending.lock().unwrap().push_back(false);
        let next = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            resp.feed(next, &pending),
            vec![Event::Start(0), Event::End(next.len())]
        );
    }

    #[test]
    fn h2_and_tls_are_opaque() {
        let pending = PendingMethods::default();
        let mut req = Tracker::new(Kind::Request);
        req.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &pending);
        assert!(req.is_opaque());
        let mut tls = Tracker::new(Kind::Request);
        tls.feed(&[0x16, 0x03, 0x01], &pending);
        assert!(tls.is_opaque());
    }
}
