//! The control lines of a `--host` session, one type for both ends: the caller
//! (`remote/mod.rs`) writes them to the session's stdin, the box's relay (`on_box.rs`) reads
//! them there and writes its own to the worker's stdin, and the worker reads those.
//!
//! | line | [`Control`] | who sends it |
//! | --- | --- | --- |
//! | `key <N>` + N bytes | `Identity { len }` | the caller, then the relay: first, only with `--age-key-stdin` |
//! | `ping` | `Heartbeat` | the caller, every `on_box::HEARTBEAT` |
//! | `int` / `term` | `Signal(..)` | the caller (its SIGINT / SIGTERM, SIGHUP), the relay |
//!
//! Decoding fails closed: a line that is not exactly one of these is an error, never taken
//! for the nearest one (`INT`, ` int`, `key +5`, a line cut short or run long). The error
//! never quotes the line: were the framing ever broken, it could be the identity.

use std::io::{BufRead, Read, Write as _};

use anyhow::{bail, Context as _};
use zeroize::Zeroizing;

use crate::process::Streaming;

/// An identity longer than this is not an age identity (a few hundred bytes each).
pub const MAX_IDENTITY: usize = 64 * 1024;

/// A line longer than this is none of ours (`key 65536` is the longest).
const MAX_LINE: u64 = 64;

/// A signal the caller forwards to the box's worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `int`: SIGINT, a Ctrl-C.
    Interrupt,
    /// `term`: SIGTERM, also the caller's SIGHUP and a dropped connection.
    Terminate,
}

impl Signal {
    /// The signal the worker raises in itself.
    pub fn number(self) -> i32 {
        match self {
            Signal::Interrupt => signal_hook::consts::SIGINT,
            Signal::Terminate => signal_hook::consts::SIGTERM,
        }
    }
}

/// One control line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `key <N>`: the next N bytes on the stream are the age identity.
    Identity { len: usize },
    /// `ping`: the caller is still there.
    Heartbeat,
    /// `int` / `term`.
    Signal(Signal),
}

impl Control {
    /// The line, newline included.
    pub fn encode(self) -> String {
        match self {
            Control::Identity { len } => format!("key {len}\n"),
            Control::Heartbeat => "ping\n".into(),
            Control::Signal(Signal::Interrupt) => "int\n".into(),
            Control::Signal(Signal::Terminate) => "term\n".into(),
        }
    }

    /// One line, with or without its `\n`.
    pub fn decode(line: &[u8]) -> anyhow::Result<Control> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        match line {
            b"ping" => return Ok(Control::Heartbeat),
            b"int" => return Ok(Control::Signal(Signal::Interrupt)),
            b"term" => return Ok(Control::Signal(Signal::Terminate)),
            _ => {}
        }
        let Some(digits) = line.strip_prefix(b"key ") else {
            bail!("an unknown control line ({} bytes)", line.len());
        };
        // Digits only: `usize::from_str` would also take `+5`.
        if digits.is_empty() || digits.len() > 6 || !digits.iter().all(u8::is_ascii_digit) {
            bail!("a `key <N>` line whose length is not a number");
        }
        let len: usize = std::str::from_utf8(digits)?.parse()?;
        if len > MAX_IDENTITY {
            bail!("an identity of {len} bytes is not plausible");
        }
        Ok(Control::Identity { len })
    }
}

/// Reads the next control line; `None` when the stream has ended (EOF, or a read error: the
/// other end is gone).
pub fn read(input: &mut impl BufRead) -> Option<anyhow::Result<Control>> {
    let mut line = Vec::new();
    let n = Read::take(&mut *input, MAX_LINE)
        .read_until(b'\n', &mut line)
        .ok()?;
    if n == 0 {
        return None;
    }
    if !line.ends_with(b"\n") && n as u64 == MAX_LINE {
        // Skip to its end, so its tail is not read as a line of its own.
        let _ = input.skip_until(b'\n');
        return Some(Err(anyhow::anyhow!("a control line over {MAX_LINE} bytes")));
    }
    Some(Control::decode(&line))
}

/// Writes a control line (or an identity frame) to `child`'s stdin. A failed write is
/// ignored: the child is gone, and its exit status says why.
pub fn send(child: &mut Streaming, bytes: &[u8]) {
    if let Some(stdin) = child.stdin() {
        let _ = stdin.write_all(bytes).and_then(|()| stdin.flush());
    }
}

/// The identity as it travels: its `key <N>` line, then its bytes.
pub fn identity_frame(key: &str) -> Zeroizing<Vec<u8>> {
    let mut framed = Zeroizing::new(Control::Identity { len: key.len() }.encode().into_bytes());
    framed.extend_from_slice(key.as_bytes());
    framed
}

/// Reads an identity framed by [`identity_frame`], which must come first on `input`.
pub fn read_identity(input: &mut impl BufRead) -> anyhow::Result<Zeroizing<String>> {
    let len = match read(input) {
        Some(Ok(Control::Identity { len })) => len,
        Some(Ok(other)) => bail!(
            "--age-key-stdin: expected a `key <N>` line on stdin, got {:?}",
            other.encode().trim_end()
        ),
        Some(Err(e)) => {
            return Err(e.context("--age-key-stdin: expected a `key <N>` line on stdin"))
        }
        None => bail!("--age-key-stdin: stdin ended before the `key <N>` line"),
    };
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    input
        .read_exact(&mut bytes)
        .context("stdin ended inside the age identity")?;
    let text = std::str::from_utf8(&bytes).context("the age identity on stdin is not UTF-8")?;
    Ok(Zeroizing::new(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Control; 6] = [
        Control::Identity { len: 0 },
        Control::Identity { len: 419 },
        Control::Identity { len: MAX_IDENTITY },
        Control::Heartbeat,
        Control::Signal(Signal::Interrupt),
        Control::Signal(Signal::Terminate),
    ];

    #[test]
    fn every_line_decodes_to_what_was_encoded() {
        for control in ALL {
            let line = control.encode();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert_eq!(Control::decode(line.as_bytes()).unwrap(), control);
            let bare = line.trim_end_matches('\n');
            assert_eq!(Control::decode(bare.as_bytes()).unwrap(), control);
        }
        assert_eq!(Signal::Interrupt.number(), signal_hook::consts::SIGINT);
        assert_eq!(Signal::Terminate.number(), signal_hook::consts::SIGTERM);
    }

    #[test]
    fn a_garbled_line_is_an_error_never_the_nearest_control() {
        let garbled: &[&[u8]] = &[
            b"",
            b"\n",
            b"pong\n",
            b"INT\n",
            b" int\n",
            b"int \n",
            b"int\r\n",
            b"in\n",
            b"terminate\n",
            b"int\nterm\n",
            b"key\n",
            b"key \n",
            b"key +5\n",
            b"key -1\n",
            b"key 5x\n",
            b"key  5\n",
            b"key 65537\n",
            b"key 99999999999999999999999\n",
            b"\xffint\n",
        ];
        for line in garbled {
            let decoded = Control::decode(line);
            assert!(decoded.is_err(), "{line:?} decoded as {decoded:?}");
        }
    }

    #[test]
    fn the_error_never_quotes_the_line() {
        let secret = b"AGE-SECRET-KEY-1QQQQQQQQQQQQQQQ\n";
        let err = format!("{:#}", Control::decode(secret).unwrap_err());
        assert!(!err.contains("AGE-SECRET"), "{err}");
        let err = format!("{:#}", read_identity(&mut &secret[..]).unwrap_err());
        assert!(err.contains("expected a `key <N>` line"), "{err}");
        assert!(!err.contains("AGE-SECRET"), "{err}");
    }

    #[test]
    fn a_stream_reads_as_its_lines_then_ends() {
        let mut stream = identity_frame("AB\nCD").to_vec();
        for control in [Control::Heartbeat, Control::Signal(Signal::Interrupt)] {
            stream.extend_from_slice(control.encode().as_bytes());
        }
        stream.extend_from_slice(b"garbage\n");
        // Too long to be a line of ours; its tail must not count as `term`.
        stream.extend_from_slice(&[b'x'; 100]);
        stream.extend_from_slice(b"term\n");
        stream.extend_from_slice(Control::Signal(Signal::Terminate).encode().as_bytes());
        let mut input = &stream[..];
        assert_eq!(read_identity(&mut input).unwrap().as_str(), "AB\nCD");
        assert_eq!(read(&mut input).unwrap().unwrap(), Control::Heartbeat);
        let int = Control::Signal(Signal::Interrupt);
        assert_eq!(read(&mut input).unwrap().unwrap(), int);
        assert!(read(&mut input).unwrap().is_err());
        assert!(read(&mut input).unwrap().is_err());
        let term = Control::Signal(Signal::Terminate);
        assert_eq!(read(&mut input).unwrap().unwrap(), term);
        assert!(read(&mut input).is_none());
    }

    #[test]
    fn an_identity_cut_short_or_without_its_header_is_refused() {
        assert!(read_identity(&mut &b"key 5\nAB"[..]).is_err());
        assert!(read_identity(&mut &b"ping\nkey 2\nAB"[..]).is_err());
        assert!(read_identity(&mut &b""[..]).is_err());
        let huge = format!("key {}\n", MAX_IDENTITY + 1);
        assert!(read_identity(&mut huge.as_bytes()).is_err());
    }
}
