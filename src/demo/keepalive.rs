//! Keep-alive HTTP/1.1 clients: what a switch costs a client that reuses its connection.
//!
//! Each client holds one connection through nginx and sends on it, in turn, `GET /` and
//! `POST /echo` (a body the app must send back whole), with no retry: a retried request
//! would hide exactly what is counted here. A failed request is classed by how it failed
//! (reset, closed without an answer, 5xx, timeout…) and timed from the start of the run;
//! the client then opens a new connection and goes on. An answer that says
//! `Connection: close` is not a failure: the client reconnects for the next request.
//!
//! Bounded: every client stops after `max_requests` or `max_time`, whichever comes first,
//! and every read and write has a timeout.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long a client waits for an answer before it counts a timeout.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest answer head we read.
const MAX_HEAD: usize = 16 * 1024;

/// What a run of keep-alive clients does.
#[derive(Debug, Clone)]
pub struct Options {
    /// nginx's port on 127.0.0.1.
    pub port: u16,
    /// The `Host` header (the site's server name).
    pub host: String,
    pub clients: usize,
    /// Every client stops after this many requests…
    pub max_requests: usize,
    /// …or after this long.
    pub max_time: Duration,
    /// Every `post_every`-th request of a client is a `POST /echo` (0: GETs only).
    pub post_every: usize,
    /// A client's pause between two requests.
    pub pause: Duration,
}

impl Options {
    /// `clients` clients through `port`, a POST every third request, 20 ms apart.
    pub fn new(port: u16, clients: usize, max_time: Duration) -> Options {
        Options {
            port,
            host: "localhost".into(),
            clients,
            max_requests: usize::MAX,
            max_time,
            post_every: 3,
            pause: Duration::from_millis(20),
        }
    }
}

/// How a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// The connection was reset (ECONNRESET, or EPIPE: writing after a reset).
    Reset,
    /// The peer closed the connection (EOF) before a whole answer.
    ClosedWithoutAnswer,
    /// An answer with a 5xx status.
    Status5xx,
    /// An answer with another status than 200.
    OtherStatus,
    /// A 200 whose body is not what the request asked for (a POST's echo).
    WrongAnswer,
    /// No answer within the timeout.
    Timeout,
    /// A new connection was refused.
    Refused,
    /// An answer that is not HTTP/1.1 as we read it.
    Malformed,
    /// Any other I/O error.
    Other,
}

impl FailKind {
    fn of_io(e: &io::Error) -> FailKind {
        match e.kind() {
            kind if super::is_reset(kind) => FailKind::Reset,
            io::ErrorKind::UnexpectedEof => FailKind::ClosedWithoutAnswer,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FailKind::Timeout,
            io::ErrorKind::ConnectionRefused => FailKind::Refused,
            io::ErrorKind::InvalidData => FailKind::Malformed,
            _ => FailKind::Other,
        }
    }
}

/// One failed request.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Since the start of the run.
    pub at_ms: u64,
    pub kind: FailKind,
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Whether it was sent on a connection that had already answered (reused).
    pub reused: bool,
    pub detail: String,
}

/// What the clients saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    pub clients: usize,
    pub sent: usize,
    pub answered: usize,
    pub posts_sent: usize,
    pub posts_answered: usize,
    pub failed: usize,
    pub failed_by_kind: BTreeMap<FailKind, usize>,
    /// Requests sent on a connection that had answered before.
    pub reused: usize,
    /// Connections opened (one per client, plus one after each failure or close).
    pub connections: usize,
    /// Answers per `X-Color`, to show the switch.
    pub by_color: BTreeMap<String, usize>,
    /// Every failure, in the order the clients hit them (a client's own order).
    pub failures: Vec<Failure>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.clients += other.clients;
        self.sent += other.sent;
        self.answered += other.answered;
        self.posts_sent += other.posts_sent;
        self.posts_answered += other.posts_answered;
        self.failed += other.failed;
        self.reused += other.reused;
        self.connections += other.connections;
        for (k, v) in other.failed_by_kind {
            *self.failed_by_kind.entry(k).or_default() += v;
        }
        for (k, v) in other.by_color {
            *self.by_color.entry(k).or_default() += v;
        }
        self.failures.extend(other.failures);
    }

    /// Failures of `kind`.
    pub fn count(&self, kind: FailKind) -> usize {
        self.failed_by_kind.get(&kind).copied().unwrap_or(0)
    }

    /// `reset 3, closed_without_answer 1` (or `none`).
    pub fn kinds_line(&self) -> String {
        if self.failed_by_kind.is_empty() {
            return "none".into();
        }
        self.failed_by_kind
            .iter()
            .map(|(k, v)| {
                let name = serde_json::to_value(k)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                format!("{name} {v}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A running set of keep-alive clients.
pub struct KeepAlive {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    handles: Vec<std::thread::JoinHandle<Tally>>,
}

impl KeepAlive {
    /// Starts `options.clients` clients, each on its own thread.
    pub fn start(options: Options) -> KeepAlive {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let handles = (0..options.clients)
            .map(|n| {
                let (options, stop, answered) = (options.clone(), stop.clone(), answered.clone());
                std::thread::spawn(move || client(n, &options, started, &stop, &answered))
            })
            .collect();
        KeepAlive {
            stop,
            answered,
            handles,
        }
    }

    /// Answered requests so far, over every client.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Stops every client (after its request in flight) and adds up what they saw.
    pub fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut tally = Tally::default();
        for handle in self.handles.drain(..) {
            if let Ok(t) = handle.join() {
                tally.add(t);
            }
        }
        tally.failures.sort_by_key(|f| (f.at_ms, f.kind, f.method));
        tally
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One client's connection and what it has buffered past the last answer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    answers: usize,
}

fn client(
    n: usize,
    options: &Options,
    started: Instant,
    stop: &AtomicBool,
    answered: &AtomicUsize,
) -> Tally {
    let mut tally = Tally {
        clients: 1,
        ..Tally::default()
    };
    let mut conn: Option<Conn> = None;
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst)
        && started.elapsed() < options.max_time
        && i < options.max_requests
    {
        i += 1;
        let post = options.post_every > 0 && i.is_multiple_of(options.post_every);
        let body = format!("post {i} from client {n}");
        let at_ms = started.elapsed().as_millis() as u64;
        if conn.is_none() {
            match TcpStream::connect(("127.0.0.1", options.port)) {
                Ok(stream) => {
                    let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
                    let _ = stream.set_write_timeout(Some(ANSWER_TIMEOUT));
                    let _ = stream.set_nodelay(true);
                    tally.connections += 1;
                    conn = Some(Conn {
                        stream,
                        buf: Vec::new(),
                        answers: 0,
                    });
                }
                Err(e) => {
                    tally.sent += 1;
                    tally.posts_sent += usize::from(post);
                    fail(
                        &mut tally,
                        at_ms,
                        FailKind::of_io(&e),
                        post,
                        false,
                        e.to_string(),
                    );
                    std::thread::sleep(options.pause);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let reused = c.answers > 0;
        tally.sent += 1;
        tally.posts_sent += usize::from(post);
        tally.reused += usize::from(reused);
        let request = if post {
            format!(
                "POST /echo HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                options.host,
                body.len()
            )
        } else {
            format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", options.host)
        };
        let result = c
            .stream
            .write_all(request.as_bytes())
            .and_then(|()| read_answer(&mut c.stream, &mut c.buf));
        match result {
            Err(e) => {
                let detail = format!("{e} (after {} answers on this connection)", c.answers);
                conn = None;
                fail(&mut tally, at_ms, FailKind::of_io(&e), post, reused, detail);
            }
            Ok(answer) => {
                c.answers += 1;
                let close = answer.head.close;
                let verdict = match answer.head.code {
                    200 if post && answer.body != body.as_bytes() => Err(FailKind::WrongAnswer),
                    200 => Ok(()),
                    500..=599 => Err(FailKind::Status5xx),
                    _ => Err(FailKind::OtherStatus),
                };
                match verdict {
                    Ok(()) => {
                        tally.answered += 1;
                        tally.posts_answered += usize::from(post);
                        answered.fetch_add(1, Ordering::SeqCst);
                        let color = answer.head.color.unwrap_or_else(|| "-".into());
                        *tally.by_color.entry(color).or_default() += 1;
                    }
                    Err(kind) => {
                        let detail = format!(
                            "HTTP {}: {}",
                            answer.head.code,
                            String::from_utf8_lossy(&answer.body)
                                .chars()
                                .take(80)
                                .collect::<String>()
                        );
                        fail(&mut tally, at_ms, kind, post, reused, detail);
                    }
                }
                if close {
                    conn = None;
                }
            }
        }
        std::thread::sleep(options.pause);
    }
    tally
}

fn fail(tally: &mut Tally, at_ms: u64, kind: FailKind, post: bool, reused: bool, detail: String) {
    tally.failed += 1;
    *tally.failed_by_kind.entry(kind).or_default() += 1;
    tally.failures.push(Failure {
        at_ms,
        kind,
        method: if post { "POST" } else { "GET" },
        reused,
        detail,
    });
}

/// An answer's head, as far as the clients need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerHead {
    pub code: u16,
    pub content_length: usize,
    /// `Connection: close`, or HTTP/1.0 without keep-alive.
    pub close: bool,
    /// `X-Color`, when sent.
    pub color: Option<String>,
}

/// Parses an answer head from the front of `buf`: `Ok(None)` until the blank line is there,
/// else the head and where its body starts. Without `Content-Length` the body is empty (the
/// demo app and nginx always send one for these requests).
pub fn parse_answer_head(buf: &[u8]) -> Result<Option<(AnswerHead, usize)>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "answer head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut words = status.splitn(3, ' ');
    let version = words.next().unwrap_or_default();
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(format!("not an HTTP/1.x status line: {status:?}"));
    }
    let code = words
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("no status code in {status:?}"))?;
    let mut head = AnswerHead {
        code,
        content_length: 0,
        close: version == "HTTP/1.0",
        color: None,
    };
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header line without a colon: {line:?}"))?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                head.content_length = value
                    .parse()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?;
            }
            "connection" => {
                let has = |t: &str| value.split(',').any(|v| v.trim().eq_ignore_ascii_case(t));
                head.close = has("close") || (version == "HTTP/1.0" && !has("keep-alive"));
            }
            "x-color" => head.color = Some(value.to_string()),
            "transfer-encoding" => return Err("chunked answers are not read here".into()),
            _ => {}
        }
    }
    Ok(Some((head, end + 4)))
}

/// An answer read whole.
struct Answer {
    head: AnswerHead,
    body: Vec<u8>,
}

/// Reads one answer (head and `Content-Length` body) from `stream`, keeping any bytes past
/// it in `buf`. EOF before a whole answer is `UnexpectedEof`.
fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Answer> {
    let mut chunk = [0u8; 4096];
    let (head, start) = loop {
        match parse_answer_head(buf) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) if buf.len() > MAX_HEAD => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "answer head too long",
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        read_more(stream, buf, &mut chunk)?;
    };
    while buf.len() < start + head.content_length {
        read_more(stream, buf, &mut chunk)?;
    }
    let body = buf[start..start + head.content_length].to_vec();
    buf.drain(..start + head.content_length);
    Ok(Answer { head, body })
}

fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8]) -> io::Result<()> {
    match stream.read(chunk)? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("closed after {} bytes of the answer", buf.len()),
        )),
        n => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_answer_head_and_where_its_body_starts() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Color: blue\r\nConnection: keep-alive\r\n\r\nhello";
        let (head, start) = parse_answer_head(raw).unwrap().unwrap();
        assert_eq!(
            head,
            AnswerHead {
                code: 200,
                content_length: 5,
                close: false,
                color: Some("blue".into())
            }
        );
        assert_eq!(&raw[start..], b"hello");
        for cut in 0..start {
            assert_eq!(parse_answer_head(&raw[..cut]), Ok(None), "{cut}");
        }
    }

    #[test]
    fn connection_close_and_http_1_0() {
        let head = |raw: &[u8]| parse_answer_head(raw).unwrap().unwrap().0;
        assert!(head(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n").close);
        assert_eq!(head(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").code, 502);
        assert!(head(b"HTTP/1.0 200 OK\r\n\r\n").close);
        assert!(!head(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n").close);
        assert_eq!(head(b"HTTP/1.1 200 OK\r\n\r\n").content_length, 0);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for raw in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                parse_answer_head(raw).is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn io_errors_are_classed_by_what_the_client_saw() {
        let kind = |k: io::ErrorKind| FailKind::of_io(&io::Error::from(k));
        assert_eq!(kind(io::ErrorKind::ConnectionReset), FailKind::Reset);
        assert_eq!(kind(io::ErrorKind::BrokenPipe), FailKind::Reset);
        assert_eq!(
            kind(io::ErrorKind::UnexpectedEof),
            FailKind::ClosedWithoutAnswer
        );
        assert_eq!(kind(io::ErrorKind::WouldBlock), FailKind::Timeout);
        assert_eq!(kind(io::ErrorKind::ConnectionRefused), FailKind::Refused);
    }

    #[test]
    fn tallies_add_up_and_name_their_kinds() {
        let mut a = Tally::default();
        fail(&mut a, 5, FailKind::Reset, false, true, String::new());
        let mut b = Tally::default();
        fail(&mut b, 9, FailKind::Reset, true, true, String::new());
        fail(
            &mut b,
            9,
            FailKind::ClosedWithoutAnswer,
            true,
            true,
            String::new(),
        );
        a.add(b);
        assert_eq!((a.failed, a.count(FailKind::Reset)), (3, 2));
        assert_eq!(a.kinds_line(), "reset 2, closed_without_answer 1");
        assert_eq!(Tally::default().kinds_line(), "none");
    }

    /// A real exchange on loopback: keep-alive, a POST echoed, a close, a reconnect.
    #[test]
    fn a_client_reuses_its_connection_and_reconnects_after_close() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            // First connection: two answers, the second saying close. Second: one answer.
            for answers in [2, 1] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = Vec::new();
                for n in 0..answers {
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let k = s.read(&mut chunk).unwrap();
                        buf.extend_from_slice(&chunk[..k]);
                    }
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let end = text.find("\r\n\r\n").unwrap() + 4;
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + len {
                        let k = s.read(&mut chunk).unwrap();
                        buf.extend_from_slice(&chunk[..k]);
                    }
                    let body = String::from_utf8_lossy(&buf[end..end + len]).into_owned();
                    buf.drain(..end + len);
                    let body = if body.is_empty() { "root".into() } else { body };
                    let close = if answers == 2 && n == 1 {
                        "close"
                    } else {
                        "keep-alive"
                    };
                    write!(
                        s,
                        "HTTP/1.1 200 OK\r\nX-Color: blue\r\nContent-Length: {}\r\nConnection: {close}\r\n\r\n{body}",
                        body.len()
                    )
                    .unwrap();
                }
            }
        });
        let options = Options {
            max_requests: 3,
            post_every: 2,
            pause: Duration::ZERO,
            ..Options::new(port, 1, Duration::from_secs(20))
        };
        let tally = KeepAlive::start(options).finish_when_done();
        server.join().unwrap();
        assert_eq!(tally.failed, 0, "{:?}", tally.failures);
        assert_eq!((tally.sent, tally.answered), (3, 3));
        assert_eq!((tally.posts_sent, tally.posts_answered), (1, 1));
        assert_eq!((tally.connections, tally.reused), (2, 1));
        assert_eq!(tally.by_color.get("blue"), Some(&3));
    }

    impl KeepAlive {
        /// Waits for every client to reach its bound, then adds up.
        fn finish_when_done(mut self) -> Tally {
            let mut tally = Tally::default();
            for handle in self.handles.drain(..) {
                tally.add(handle.join().unwrap());
            }
            tally
        }
    }
}
