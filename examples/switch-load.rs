//! The load bench/keepalive.sh puts on a switch: keep-alive HTTP/1.1 clients (GETs and POSTs)
//! and WebSockets through nginx, from cutover's own clients (`cutover::demo::keepalive`,
//! `cutover::demo::websocket`), until SIGTERM/SIGINT or `--seconds`; then one JSON document
//! on `--out`: what the clients saw, failures with their time since `started_unix`, and how
//! each WebSocket ended.
//!
//!   cargo run --release --example switch-load -- --port P [--host H] [--clients N]
//!       [--sockets M] [--seconds S] --out FILE

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cutover::demo::{keepalive, websocket};

struct Args {
    port: u16,
    host: String,
    clients: usize,
    sockets: usize,
    seconds: u64,
    out: String,
}

fn parse(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        host: "localhost".into(),
        clients: 100,
        sockets: 0,
        seconds: 600,
        out: String::new(),
    };
    while let Some(flag) = words.next() {
        let value = words.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} {value}: not a number"))
        };
        match flag.as_str() {
            "--port" => args.port = u16::try_from(number()?).map_err(|_| "--port: too big")?,
            "--host" => args.host = value,
            "--clients" => args.clients = number()? as usize,
            "--sockets" => args.sockets = number()? as usize,
            "--seconds" => args.seconds = number()?,
            "--out" => args.out = value,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.port == 0 || args.out.is_empty() {
        return Err("--port and --out are required".into());
    }
    Ok(args)
}

fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("switch-load: {e}");
            std::process::exit(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("switch-load: cannot install a signal handler: {e}");
            std::process::exit(1);
        }
    }
    let limit = Duration::from_secs(args.seconds);
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let started = Instant::now();
    let sockets = (args.sockets > 0).then(|| {
        websocket::Sockets::open(websocket::Options {
            host: args.host.clone(),
            ..websocket::Options::new(args.port, args.sockets, limit)
        })
    });
    let load = keepalive::KeepAlive::start(keepalive::Options {
        host: args.host.clone(),
        ..keepalive::Options::new(args.port, args.clients, limit)
    });
    eprintln!("switch-load: running");
    while !stop.load(Ordering::SeqCst) && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let tally = load.finish();
    let outcomes = sockets.map(websocket::Sockets::finish).unwrap_or_default();
    let doc = serde_json::json!({
        "started_unix": started_unix,
        "seconds": started.elapsed().as_secs_f64(),
        "keepalive": tally,
        "websockets": {
            "summary": websocket::summary(&outcomes),
            "outcomes": outcomes,
        },
    });
    if let Err(e) = std::fs::write(&args.out, doc.to_string()) {
        eprintln!("switch-load: cannot write {}: {e}", args.out);
        std::process::exit(1);
    }
}
