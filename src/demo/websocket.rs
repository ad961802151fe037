//! WebSocket clients: what a switch and the old color's stop do to long-lived connections.
//!
//! [`Sockets::open`] opens `count` WebSockets to the demo app's `/ws` through nginx at one
//! point in time; each then sends a short text every `message_every` and checks its echo,
//! and records how it ended and when: still open when the run ends, a close frame (with its
//! code, and whether the TCP connection then ended with a FIN or a reset), a reset, or an EOF
//! with no close frame. A close frame is answered with one, as RFC 6455 asks.
//!
//! The handshake uses RFC 6455's example key, whose accept value is a constant: the client
//! checks the server's answer without a SHA-1 of its own (the key's nonce guards against
//! caching proxies, which is no concern on loopback).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// RFC 6455 §1.3's example key and the accept value it must get back.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// How often a socket looks at the stop flag while it waits for a frame.
const POLL: Duration = Duration::from_millis(100);
/// After a close frame, how long we wait for the server's end of the TCP connection.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// What to open.
#[derive(Debug, Clone)]
pub struct Options {
    pub port: u16,
    pub host: String,
    pub path: String,
    pub count: usize,
    /// Each socket ends (as `Open`) after this long at most.
    pub max_time: Duration,
    /// The pause between a socket's messages.
    pub message_every: Duration,
}

impl Options {
    pub fn new(port: u16, count: usize, max_time: Duration) -> Options {
        Options {
            port,
            host: "localhost".into(),
            path: "/ws".into(),
            count,
            max_time,
            message_every: Duration::from_millis(500),
        }
    }
}

/// How the TCP connection ended after a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpEnd {
    /// EOF: a clean close.
    Fin,
    Reset,
    /// Neither within the wait after the close frame.
    StillOpen,
}

/// How a socket ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum End {
    /// Still open (the run ended first).
    Open,
    /// The server sent a close frame.
    CloseFrame { code: Option<u16>, tcp: TcpEnd },
    /// The connection was reset with no close frame before.
    Reset,
    /// EOF with no close frame.
    Eof,
    /// The handshake failed (no 101, a wrong accept value, refused…).
    Handshake { error: String },
    /// A frame the client cannot read, or a write that failed otherwise.
    Broken { error: String },
}

/// One socket's life.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `X-Color` of the handshake's answer: the color the socket reached.
    pub color: Option<String>,
    pub end: End,
    /// When it ended, since [`Sockets::open`] was called (`None` while open).
    pub ended_ms: Option<u64>,
    pub echoes: usize,
    /// Echoes that were not the message sent.
    pub wrong_echoes: usize,
}

/// A set of open sockets, each on its own thread.
pub struct Sockets {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Sockets {
    /// Opens `options.count` sockets and returns once every handshake has been answered (or
    /// has failed).
    pub fn open(options: Options) -> Sockets {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let outcomes = Arc::new(Mutex::new(vec![
            Outcome {
                color: None,
                end: End::Open,
                ended_ms: None,
                echoes: 0,
                wrong_echoes: 0,
            };
            options.count
        ]));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handles = (0..options.count)
            .map(|i| {
                let (options, stop, outcomes) = (options.clone(), stop.clone(), outcomes.clone());
                let ready = ready_tx.clone();
                std::thread::spawn(move || socket(i, &options, started, &stop, &outcomes, ready))
            })
            .collect();
        drop(ready_tx);
        // Every thread sends once, after its handshake; a thread that panicked drops its end.
        for _ in 0..options.count {
            if ready_rx.recv().is_err() {
                break;
            }
        }
        Sockets {
            stop,
            outcomes,
            handles,
        }
    }

    /// Every socket's outcome so far.
    pub fn snapshot(&self) -> Vec<Outcome> {
        self.outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many are open now.
    pub fn open_now(&self) -> usize {
        self.snapshot()
            .iter()
            .filter(|o| o.end == End::Open)
            .count()
    }

    /// Waits (at most `limit`) until no socket is open; true if none is.
    pub fn wait_all_ended(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.open_now() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.open_now() == 0
    }

    /// Closes what is still open (close frame 1000; recorded as `Open`) and returns every
    /// outcome.
    pub fn finish(mut self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
        self.snapshot()
    }
}

impl Drop for Sockets {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Counts of outcomes: `close 1001 fin: 50` and the like, for a test's output.
pub fn summary(outcomes: &[Outcome]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for o in outcomes {
        let key = match &o.end {
            End::Open => "open".to_string(),
            End::CloseFrame { code, tcp } => format!(
                "close {} then {tcp:?}",
                code.map_or("(no code)".into(), |c| c.to_string())
            ),
            End::Reset => "reset".into(),
            End::Eof => "eof without close frame".into(),
            End::Handshake { error } => format!("handshake failed: {error}"),
            End::Broken { error } => format!("broken: {error}"),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

fn socket(
    i: usize,
    options: &Options,
    started: Instant,
    stop: &AtomicBool,
    outcomes: &Mutex<Vec<Outcome>>,
    ready: std::sync::mpsc::Sender<()>,
) {
    let set = |f: &dyn Fn(&mut Outcome)| {
        let mut all = outcomes.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut all[i]);
    };
    let end = |end: End| {
        let ms = started.elapsed().as_millis() as u64;
        set(&|o: &mut Outcome| {
            o.end = end.clone();
            o.ended_ms = Some(ms);
        });
    };
    let (mut stream, mut buf, color) = match handshake(options) {
        Ok(open) => open,
        Err(e) => {
            end(End::Handshake {
                error: e.to_string(),
            });
            let _ = ready.send(());
            return;
        }
    };
    set(&|o: &mut Outcome| o.color = color.clone());
    let _ = ready.send(());
    let mut sent = 0usize;
    let mut expected = std::collections::VecDeque::new();
    let mut next_message = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        if stop.load(Ordering::SeqCst) || started.elapsed() >= options.max_time {
            // Ours to close: say so, read to the server's close and EOF, bounded.
            let _ = stream.write_all(&encode_client_frame(OP_CLOSE, &1000u16.to_be_bytes()));
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = drain_to_eof(&mut stream);
            return;
        }
        if Instant::now() >= next_message {
            sent += 1;
            let text = format!("message {sent} from socket {i}");
            if let Err(e) = stream.write_all(&encode_client_frame(OP_TEXT, text.as_bytes())) {
                end(io_end(&e));
                return;
            }
            expected.push_back(text);
            next_message = Instant::now() + options.message_every;
        }
        loop {
            match parse_server_frame(&buf) {
                Ok(None) => break,
                Err(e) => {
                    end(End::Broken { error: e });
                    return;
                }
                Ok(Some((frame, used))) => {
                    buf.drain(..used);
                    match frame.opcode {
                        OP_CLOSE => {
                            let code = (frame.payload.len() >= 2)
                                .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                            let reply = code.map(u16::to_be_bytes).unwrap_or_default();
                            let _ = stream.write_all(&encode_client_frame(OP_CLOSE, &reply));
                            let tcp = drain_to_eof(&mut stream);
                            end(End::CloseFrame { code, tcp });
                            return;
                        }
                        OP_PING => {
                            let _ = stream.write_all(&encode_client_frame(OP_PONG, &frame.payload));
                        }
                        OP_TEXT => {
                            let right = expected.pop_front().as_deref().map(str::as_bytes)
                                == Some(frame.payload.as_slice());
                            set(&|o: &mut Outcome| {
                                o.echoes += 1;
                                o.wrong_echoes += usize::from(!right);
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                end(End::Eof);
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                end(io_end(&e));
                return;
            }
        }
    }
}

fn io_end(e: &io::Error) -> End {
    match e.kind() {
        kind if super::is_reset(kind) => End::Reset,
        _ => End::Broken {
            error: e.to_string(),
        },
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Reads (and drops) what the server still sends until EOF, a reset, or [`CLOSE_WAIT`].
fn drain_to_eof(stream: &mut TcpStream) -> TcpEnd {
    let deadline = Instant::now() + CLOSE_WAIT;
    let mut chunk = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => return TcpEnd::Fin,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return TcpEnd::Reset,
        }
    }
    TcpEnd::StillOpen
}

/// Connects and upgrades: the stream, bytes read past the handshake, the answer's `X-Color`.
fn handshake(options: &Options) -> io::Result<(TcpStream, Vec<u8>, Option<String>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", options.port))?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        options.path, options.host
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buf.len() > 16 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "handshake answer too long",
            ));
        }
        match stream.read(&mut chunk)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let color =
        check_handshake_answer(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    buf.drain(..end + 4);
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok((stream, buf, color))
}

/// Checks a handshake answer's head: 101, the upgrade to websocket, the accept value for
/// [`KEY`]. Returns its `X-Color`.
pub fn check_handshake_answer(head: &str) -> Result<Option<String>, String> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("101") {
        return Err(format!("answered {status:?}, not 101"));
    }
    let headers: Vec<(String, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim()))
        .collect();
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    if !get("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err("101 without Upgrade: websocket".into());
    }
    if get("sec-websocket-accept") != Some(ACCEPT) {
        return Err(format!(
            "Sec-WebSocket-Accept {:?}, expected {ACCEPT}",
            get("sec-websocket-accept")
        ));
    }
    Ok(get("x-color").map(str::to_string))
}

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Parses one server frame from the front of `buf` (servers never mask; this client reads
/// no fragmented messages, which the demo app never sends).
pub fn parse_server_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b1 & 0x80 != 0 {
        return Err("a masked frame from the server".into());
    }
    if b0 & 0x80 == 0 {
        return Err("a fragmented frame from the server".into());
    }
    let (len, at) = match b1 & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(b);
            if len > 1 << 20 {
                return Err(format!("a {len}-byte frame"));
            }
            (len as usize, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    Ok(Some((
        Frame {
            opcode: b0 & 0x0F,
            payload: buf[at..at + len].to_vec(),
        },
        at + len,
    )))
}

/// A final client frame, masked with a fresh key (RFC 6455 §5.3).
pub fn encode_client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_masked(opcode, payload, rand::random())
}

fn encode_masked(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_as_rfc_6455s_example() {
        // §5.7: a masked "Hello".
        assert_eq!(
            encode_masked(OP_TEXT, b"Hello", [0x37, 0xfa, 0x21, 0x3d]),
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        let long = encode_masked(OP_TEXT, &[0; 300], [0; 4]);
        assert_eq!(&long[..4], &[0x81, 0x80 | 126, 1, 44]);
        assert_eq!(long.len(), 4 + 4 + 300);
    }

    #[test]
    fn reads_server_frames_whole_or_not_yet() {
        let hello = [0x81, 0x05, b'H', b'e', b'l', b'l', b'o'];
        for cut in 0..hello.len() {
            assert_eq!(parse_server_frame(&hello[..cut]), Ok(None), "{cut}");
        }
        let (frame, used) = parse_server_frame(&hello).unwrap().unwrap();
        assert_eq!(
            (frame.opcode, frame.payload.as_slice(), used),
            (OP_TEXT, &b"Hello"[..], 7)
        );
        let close = [0x88, 0x02, 0x03, 0xe9];
        let (frame, _) = parse_server_frame(&close).unwrap().unwrap();
        assert_eq!(
            (frame.opcode, frame.payload.as_slice()),
            (OP_CLOSE, &[0x03, 0xe9][..])
        );
        let mut long = vec![0x82, 126, 1, 0];
        long.extend_from_slice(&[7; 256]);
        assert_eq!(parse_server_frame(&long).unwrap().unwrap().1, 260);
    }

    #[test]
    fn refuses_frames_a_server_may_not_send() {
        assert!(parse_server_frame(&[0x81, 0x85, 0, 0, 0, 0, 1, 2, 3, 4, 5]).is_err());
        assert!(parse_server_frame(&[0x01, 0x01, b'x']).is_err());
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(parse_server_frame(&huge).is_err());
    }

    #[test]
    fn checks_the_handshake_answer() {
        let good = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\nX-Color: green"
        );
        assert_eq!(check_handshake_answer(&good), Ok(Some("green".into())));
        let e = check_handshake_answer("HTTP/1.1 200 OK\r\nContent-Length: 0").unwrap_err();
        assert!(e.contains("not 101"), "{e}");
        let e = check_handshake_answer(&good.replace(ACCEPT, "xyz=")).unwrap_err();
        assert!(e.contains("Sec-WebSocket-Accept"), "{e}");
        let e = check_handshake_answer(&good.replace("Upgrade: websocket\r\n", "")).unwrap_err();
        assert!(e.contains("Upgrade"), "{e}");
    }

    #[test]
    fn summary_names_each_ending() {
        let o = |end: End| Outcome {
            color: None,
            end,
            ended_ms: None,
            echoes: 0,
            wrong_echoes: 0,
        };
        let counts = summary(&[
            o(End::CloseFrame {
                code: Some(1001),
                tcp: TcpEnd::Fin,
            }),
            o(End::CloseFrame {
                code: Some(1001),
                tcp: TcpEnd::Fin,
            }),
            o(End::Reset),
            o(End::Open),
        ]);
        assert_eq!(counts["close 1001 then Fin"], 2);
        assert_eq!((counts["reset"], counts["open"]), (1, 1));
    }
}
