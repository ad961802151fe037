//! A keep-alive load through nginx: a few persistent HTTP/1.1 connections, each reused for
//! `GET /` in a loop (bounded: a pause between requests, a deadline), counting every
//! request that got no full answer. `cutover::demo::Load` opens one connection per request,
//! which cannot see what a reload does to an idle keep-alive connection.
//!
//! A failure is a request written on a connection that then gave no complete answer (reset,
//! EOF), or an answer that is not 200. An answer carrying `Connection: close` (nginx's
//! `keepalive_requests`) is counted ok and the client reconnects; a connection that cannot be
//! opened at all is a failure too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Tally {
    pub sent: usize,
    pub ok: usize,
    pub failed: usize,
    /// Connections opened (one per client, plus one per `Connection: close`).
    pub connections: usize,
    pub failures: Vec<String>,
}

pub struct KeepAlive {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    handles: Vec<std::thread::JoinHandle<Tally>>,
}

impl KeepAlive {
    /// `clients` persistent connections to 127.0.0.1:`port`, each sending until finished or
    /// `max` passes.
    pub fn start(port: u16, clients: usize, max: Duration) -> KeepAlive {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let handles = (0..clients)
            .map(|_| {
                let (stop, ok) = (stop.clone(), ok.clone());
                std::thread::spawn(move || client(port, max, &stop, &ok))
            })
            .collect();
        KeepAlive { stop, ok, handles }
    }

    /// Good answers so far.
    pub fn answered(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    pub fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Tally::default();
        for h in self.handles.drain(..) {
            let t = h.join().expect("keep-alive client panicked");
            total.sent += t.sent;
            total.ok += t.ok;
            total.failed += t.failed;
            total.connections += t.connections;
            total.failures.extend(t.failures.into_iter().take(10));
        }
        total
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn client(port: u16, max: Duration, stop: &AtomicBool, ok: &AtomicUsize) -> Tally {
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < max {
        if conn.is_none() {
            tally.connections += 1;
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    conn = Some(BufReader::new(s));
                }
                Err(e) => {
                    tally.sent += 1;
                    tally.failed += 1;
                    tally.failures.push(format!("connect: {e}"));
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let reader = conn.as_mut().unwrap();
        tally.sent += 1;
        match one_request(reader) {
            Ok((200, close)) => {
                tally.ok += 1;
                ok.fetch_add(1, Ordering::SeqCst);
                if close {
                    conn = None;
                }
            }
            Ok((code, _)) => {
                tally.failed += 1;
                tally.failures.push(format!("HTTP {code}"));
                conn = None;
            }
            Err(e) => {
                tally.failed += 1;
                tally.failures.push(format!(
                    "request {} on a reused connection: {e}",
                    tally.sent
                ));
                conn = None;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tally
}

/// One `GET /` on the connection: the status and whether the server closes it after.
fn one_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool)> {
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("EOF before the status line"));
    }
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("EOF inside the headers"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((header, ""));
        let (name, value) = (name.to_ascii_lowercase(), value.trim().to_ascii_lowercase());
        match name.as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => close = value == "close",
            _ => {}
        }
    }
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0; length.unwrap_or(0)];
        reader.read_exact(&mut body)?;
    }
    Ok((code, close))
}
