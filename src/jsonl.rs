//! Append-only JSON-lines logs (`history.jsonl`) that survive a torn tail.
//!
//! A crash or a full disk in the middle of an append leaves a last line without its `\n`.
//! Appending straight after it would glue the next entry onto the fragment, and the combined
//! line parses as neither, so one crash would also swallow the next deploy's record. Before
//! every append the tail is checked: a last line that is unterminated or does not parse is
//! copied aside to `<log>.torn-<unix time>` (kept for inspection, never deleted by cutover),
//! then cut off, so every complete entry survives and the new entry is a line of its own.
//! Readers skip an unterminated last line, recover an entry glued onto a fragment by an older
//! cutover, and fail on any other line that does not parse.
//!
//! [`read`] reads the whole log. [`read_last`] and [`find_last`] read it backwards from the end
//! in bounded chunks and parse only the lines they return or pass over, so `status` and
//! `history -n N` cost the same on a history of ten entries or of a million. Older lines are
//! not read, so not checked; a line they do read is judged exactly as [`read`] judges it.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::ops::ControlFlow;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::de::DeserializeOwned;

/// The mode of a log file: the history names images, users and failure reasons, which are
/// nobody else's business on a shared box.
pub const MODE: u32 = 0o600;

/// Appends `line` (one JSON value, without a newline) to the log at `path`, creating it with
/// [`MODE`] (and narrowing a wider mode left by an older cutover). Returns where a torn tail
/// was set aside, if there was one.
pub fn append(path: &Path, line: &str) -> anyhow::Result<Option<PathBuf>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(MODE)
        .open(path)
        .with_context(|| format!("could not open {}", path.display()))?;
    // One appender at a time, whoever holds the deploy lock: the torn-tail repair below
    // truncates, and a second appender (a deploy refused by that lock, recording why) must
    // never cut off the line the first one just wrote. Released when `file` closes.
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("could not lock {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("could not stat {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(MODE))
            .with_context(|| format!("could not restrict the mode of {}", path.display()))?;
    }
    let set_aside = set_aside_torn_tail(&mut file, path, meta.len())?;
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(b'\n');
    // One write of one line (O_APPEND): concurrent appenders cannot interleave within it.
    file.write_all(&bytes)
        .with_context(|| format!("could not append to {}", path.display()))?;
    Ok(set_aside)
}

/// The largest tail read to find the last line; history lines are a few hundred bytes.
const TAIL_WINDOW: u64 = 1 << 20;

/// Copies a torn last line aside and truncates the log before it. The copy is written
/// (atomically) before the cut, so a crash in between loses nothing.
fn set_aside_torn_tail(
    file: &mut std::fs::File,
    path: &Path,
    len: u64,
) -> anyhow::Result<Option<PathBuf>> {
    if len == 0 {
        return Ok(None);
    }
    let start = len.saturating_sub(TAIL_WINDOW);
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.read_to_end(&mut tail))
        .with_context(|| format!("could not read {}", path.display()))?;
    let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
    let line_start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last = &body[line_start..];
    let terminated = tail.ends_with(b"\n");
    let parses = serde_json::from_slice::<serde_json::Value>(last).is_ok();
    let blank = last.iter().all(u8::is_ascii_whitespace);
    if terminated && (parses || blank) {
        return Ok(None);
    }
    if line_start == 0 && start > 0 {
        anyhow::bail!(
            "{}: the last line is longer than {} bytes and is not a complete entry; move the file aside",
            path.display(),
            TAIL_WINDOW
        );
    }
    let aside = torn_path(path);
    crate::atomic::write(&aside, &tail[line_start..], MODE)
        .with_context(|| format!("could not set the torn tail of {} aside", path.display()))?;
    file.set_len(start + line_start as u64)
        .with_context(|| format!("could not cut the torn tail off {}", path.display()))?;
    Ok(Some(aside))
}

/// `history.jsonl` → `history.jsonl.torn-1767225600` (a counter is added on a clash).
fn torn_path(path: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let base = format!("{}.torn-{secs}", file_name(path));
    let mut candidate = path.with_file_name(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = path.with_file_name(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Torn tails set aside beside the log at `path`, oldest first.
pub fn torn_files(path: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.torn-", file_name(path));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Every entry of the log, oldest first; a missing log is empty. An unterminated last line
/// that does not parse (a torn tail not yet set aside) is skipped; an entry glued onto a torn
/// fragment (by a cutover that appended without checking the tail) is recovered from the
/// first `{` at which the rest parses; any other line that does not parse is an error naming
/// it, so a damaged log is never read as a shorter one.
pub fn read<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let Some(bytes) = read_all(path)? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let mut entries = Vec::with_capacity(lines.len());
    for (i, (number, line)) in lines.iter().enumerate() {
        match parse_line(line) {
            Ok(entry) => entries.push(entry),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => return Err(not_an_entry(path, number + 1, e)),
        }
    }
    Ok(entries)
}

/// The whole log; `None` when there is none.
fn read_all(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
    }
}

/// One line as an entry: the whole line, else (an entry glued onto a torn fragment by an older
/// cutover) the rest of the line from the first later `{` at which it parses.
fn parse_line<T: DeserializeOwned>(line: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(line).or_else(|e| {
        line.match_indices('{')
            .skip(1)
            .find_map(|(at, _)| serde_json::from_str(&line[at..]).ok())
            .ok_or(e)
    })
}

fn not_an_entry(path: &Path, number: usize, e: serde_json::Error) -> anyhow::Error {
    anyhow::Error::new(e).context(format!(
        "{}:{number} is not a cutover history entry (move the file aside to start a new history)",
        path.display()
    ))
}

/// How much of the log one step of a backward read takes: a hundred-odd history lines. A
/// longer line takes more steps and is never cut.
const CHUNK: usize = 64 * 1024;

/// The newest `n` entries of the log, oldest first: the end of what [`read`] returns, read
/// backwards from the end of the file so that time and memory follow `n`, not the length of
/// the log (`status` on a years-long history). Lines older than those are not read, so not
/// checked. A line that is read is judged as [`read`] judges it: a torn tail is skipped, a
/// glued entry recovered, and any other line that does not parse makes this [`read`]'s error
/// (naming the first bad line of the log by number, which only a full read can count).
pub fn read_last<T: DeserializeOwned>(path: &Path, n: usize) -> anyhow::Result<Vec<T>> {
    read_last_in(path, n, CHUNK)
}

fn read_last_in<T: DeserializeOwned>(
    path: &Path,
    n: usize,
    chunk: usize,
) -> anyhow::Result<Vec<T>> {
    let mut newest_first = Vec::new();
    if n == 0 {
        // Nothing to show, but a log that cannot be opened is still an error, as in `read`.
        BackLines::open(path, chunk)?;
        return Ok(newest_first);
    }
    let walk = walk_back(path, chunk, |entry| {
        newest_first.push(entry);
        if newest_first.len() < n {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    })?;
    if walk == Walk::Damaged {
        let mut all = read::<T>(path)?;
        return Ok(all.split_off(all.len().saturating_sub(n)));
    }
    newest_first.reverse();
    Ok(newest_first)
}

/// The newest entry that `wanted` accepts, reading back from the end only as far as that
/// entry (every line when none is accepted, in bounded memory). Lines are judged as in
/// [`read_last`].
pub fn find_last<T: DeserializeOwned>(
    path: &Path,
    wanted: impl FnMut(&T) -> bool,
) -> anyhow::Result<Option<T>> {
    find_last_in(path, wanted, CHUNK)
}

fn find_last_in<T: DeserializeOwned>(
    path: &Path,
    mut wanted: impl FnMut(&T) -> bool,
    chunk: usize,
) -> anyhow::Result<Option<T>> {
    let mut found = None;
    let walk = walk_back(path, chunk, |entry| {
        if wanted(&entry) {
            found = Some(entry);
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    if walk == Walk::Damaged {
        return Ok(read::<T>(path)?.into_iter().rev().find(|e| wanted(e)));
    }
    Ok(found)
}

/// How a backward walk ended.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// `take` asked to stop, or the start of the log was reached.
    Done,
    /// A line that does not parse and is not a torn tail: the caller gives [`read`]'s answer.
    Damaged,
}

/// Hands the log's entries to `take`, newest first, until it breaks. Lines are those of
/// [`read`] (`str::lines`, blank ones skipped; a `\r` before the `\n` is JSON whitespace, so
/// CRLF lines parse alike), and only the newest non-blank line may be a skipped torn tail.
fn walk_back<T: DeserializeOwned>(
    path: &Path,
    chunk: usize,
    mut take: impl FnMut(T) -> ControlFlow<()>,
) -> anyhow::Result<Walk> {
    let Some(mut lines) = BackLines::open(path, chunk)? else {
        return Ok(Walk::Done);
    };
    // `read` skips a last line that does not parse only when the file does not end in `\n`.
    let torn_tail_allowed = !lines.ends_with_newline()?;
    let mut newest = true;
    while let Some(bytes) = lines.next_line()? {
        // Lossy per line as `read` is for the whole file: a `\n` is never inside a UTF-8
        // sequence, so both see the same text.
        let line = String::from_utf8_lossy(&bytes);
        if line.trim().is_empty() {
            continue;
        }
        let torn_tail_here = std::mem::replace(&mut newest, false) && torn_tail_allowed;
        match parse_line(&line) {
            Ok(entry) => {
                if take(entry).is_break() {
                    return Ok(Walk::Done);
                }
            }
            Err(_) if torn_tail_here => {}
            Err(_) => return Ok(Walk::Damaged),
        }
    }
    Ok(Walk::Done)
}

/// The lines of a file, last first, read backwards in chunks: memory holds one chunk and the
/// line being assembled, whatever the file's length.
struct BackLines<'a> {
    file: std::fs::File,
    path: &'a Path,
    chunk: usize,
    /// The file's bytes before this offset have not been read yet.
    unread: u64,
    /// Bytes read and not handed out yet: the end of the line being assembled, plus complete
    /// lines before it once a chunk has been read.
    pending: Vec<u8>,
    /// The file's first line has been handed out.
    done: bool,
}

impl<'a> BackLines<'a> {
    /// `None` for a missing file, as [`read`] has it.
    fn open(path: &'a Path, chunk: usize) -> anyhow::Result<Option<Self>> {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
        };
        let meta = file
            .metadata()
            .with_context(|| format!("could not stat {}", path.display()))?;
        if meta.is_dir() {
            // `open` succeeds on a directory where `read`'s `fs::read` fails: fail alike.
            return Err(std::io::Error::from(std::io::ErrorKind::IsADirectory))
                .with_context(|| format!("could not read {}", path.display()));
        }
        let len = meta.len();
        Ok(Some(BackLines {
            file,
            path,
            chunk: chunk.max(1),
            unread: len,
            pending: Vec::new(),
            done: false,
        }))
    }

    fn ends_with_newline(&self) -> anyhow::Result<bool> {
        if self.unread == 0 {
            return Ok(false);
        }
        let mut last = [0u8];
        self.read_at(&mut last, self.unread - 1)?;
        Ok(last[0] == b'\n')
    }

    /// The line before the ones already handed out, without its `\n`; `None` past the first.
    fn next_line(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        loop {
            if let Some(at) = self.pending.iter().rposition(|&b| b == b'\n') {
                let line = self.pending.split_off(at + 1);
                self.pending.truncate(at);
                return Ok(Some(line));
            }
            if self.unread == 0 {
                if self.done {
                    return Ok(None);
                }
                self.done = true;
                return Ok(Some(std::mem::take(&mut self.pending)));
            }
            // No `\n` in `pending`: the line being assembled starts further back. Reading at
            // least as much as is pending doubles it each step, so a line longer than a chunk
            // costs its length to assemble, not its length squared over the chunk.
            let want = self.chunk.max(self.pending.len());
            let size = want.min(usize::try_from(self.unread).unwrap_or(usize::MAX));
            self.unread -= size as u64;
            let mut before = vec![0; size];
            self.read_at(&mut before, self.unread)?;
            before.extend_from_slice(&self.pending);
            self.pending = before;
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> anyhow::Result<()> {
        use std::os::unix::fs::FileExt as _;
        self.file
            .read_exact_at(buf, offset)
            .with_context(|| format!("could not read {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        read(path).unwrap()
    }

    #[test]
    fn a_torn_tail_is_set_aside_and_the_next_entry_is_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("history.jsonl");
        assert_eq!(append(&log, r#"{"n":1}"#).unwrap(), None);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(br#"{"time":"2026"#))
            .unwrap();
        let aside = append(&log, r#"{"n":2}"#).unwrap().expect("set aside");
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), r#"{"time":"2026"#);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n"
        );
        assert_eq!(torn_files(&log), vec![aside.clone()]);
        let mode = std::fs::metadata(&aside).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A terminated last line that does not parse counts as torn too (readers refuse it).
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(b"garbage\n"))
            .unwrap();
        let err = format!("{:#}", read::<serde_json::Value>(&log).unwrap_err());
        assert!(
            err.contains("history.jsonl:3 is not a cutover history entry"),
            "{err}"
        );
        append(&log, r#"{"n":3}"#).unwrap().expect("set aside");
        assert_eq!(lines(&log).len(), 3);
        assert_eq!(torn_files(&log).len(), 2);
    }

    #[test]
    fn a_fragment_alone_is_set_aside_and_a_wide_mode_is_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("history.jsonl");
        std::fs::write(&log, "{\"ti").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        append(&log, r#"{"n":1}"#).unwrap().expect("set aside");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "{\"n\":1}\n");
        let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    /// Every tail read of `content` (every `n`, chunk sizes from one byte to [`CHUNK`]) is the
    /// end of the full read, and `find_last` finds what a search of the full read finds.
    fn assert_tails_match_the_full_read(content: &[u8]) -> Vec<serde_json::Value> {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("history.jsonl");
        std::fs::write(&log, content).unwrap();
        let all = lines(&log);
        let text = String::from_utf8_lossy(content);
        for chunk in [1, 2, 3, 7, 16, 64, CHUNK] {
            for n in 0..=all.len() + 1 {
                let tail: Vec<serde_json::Value> = read_last_in(&log, n, chunk).unwrap();
                let want = &all[all.len().saturating_sub(n)..];
                assert_eq!(tail, want, "n {n}, chunk {chunk}, {text:?}");
            }
            let last = find_last_in(&log, |_: &serde_json::Value| true, chunk).unwrap();
            assert_eq!(last.as_ref(), all.last(), "chunk {chunk}, {text:?}");
            for k in 0..4 {
                let wanted = |v: &serde_json::Value| v["k"] == k;
                let found = find_last_in(&log, wanted, chunk).unwrap();
                assert_eq!(
                    found.as_ref(),
                    all.iter().rev().find(|v| wanted(v)),
                    "{text:?}"
                );
            }
        }
        assert_eq!(
            read_last::<serde_json::Value>(&log, 1).unwrap(),
            all[all.len().saturating_sub(1)..]
        );
        all
    }

    #[test]
    fn a_tail_read_is_the_end_of_the_full_read() {
        let cases: &[(&[u8], usize)] = &[
            (b"", 0),
            (b"\n\n  \n", 0),
            (b"{\"k\":1}", 1),
            (b"{\"k\":1}\n", 1),
            (
                b"{\"k\":1}\n{\"k\":2,\"s\":\"a\\nb\"}\n{\"k\":1,\"n\":3}\n{\"k\":3}\n",
                4,
            ),
            // CRLF and blank lines, as `str::lines` reads them.
            (b"\r\n{\"k\":1}\r\n\r\n{\"k\":2}\r\n  \r\n", 2),
            (b"{\"k\":1}\r", 1),
            // Torn tails: skipped, the complete entry before them is the last one.
            (b"{\"k\":1}\n{\"k\":2}\n{\"time\":\"20", 2),
            (b"{\"time\":\"20", 0),
            (b"{\"k\":1}\n{\"k\":2}\n{\"time\":\"20\n  ", 2),
            // Unterminated but complete: an entry. Unterminated whitespace after a complete line.
            (b"{\"k\":1}\n{\"k\":2}\n   ", 2),
            // Glued onto a fragment by an older cutover: recovered, also as the last line.
            (b"{\"k\":1}\n{\"time\":\"2026{\"k\":2,\"o\":{\"x\":1}}\n", 2),
            (b"{\"k\":1}\n{\"time\":\"2026{\"k\":2}", 2),
            // Not UTF-8 inside a string: replaced, as the full read replaces it.
            (
                b"{\"k\":1,\"s\":\"\xff\xfe\"}\n{\"k\":2,\"s\":\"\xe2\x82\"}\n",
                2,
            ),
        ];
        for (content, count) in cases {
            let all = assert_tails_match_the_full_read(content);
            assert_eq!(all.len(), *count, "{:?}", String::from_utf8_lossy(content));
        }
    }

    #[test]
    fn a_line_longer_than_a_chunk_is_read_whole() {
        let long = format!("{{\"k\":2,\"pad\":\"{}\"}}", "x".repeat(3 * CHUNK + 17));
        let content = format!("{{\"k\":1}}\n{long}\n{{\"k\":3}}\n{long}\n{{\"time\":\"2");
        let all = assert_tails_match_the_full_read(content.as_bytes());
        assert_eq!(all.len(), 4);
        assert_eq!(all[3]["pad"].as_str().unwrap().len(), 3 * CHUNK + 17);
    }

    #[test]
    fn a_damaged_line_a_tail_read_reaches_is_the_full_reads_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("history.jsonl");
        std::fs::write(&log, "{\"k\":1}\ngarbage\n{\"k\":2}\n{\"k\":3}\n").unwrap();
        let full = format!("{:#}", read::<serde_json::Value>(&log).unwrap_err());
        assert!(
            full.contains("history.jsonl:2 is not a cutover history entry"),
            "{full}"
        );
        // Lines older than the tail are not read, so not checked.
        let tail: Vec<serde_json::Value> = read_last(&log, 2).unwrap();
        assert_eq!(
            tail,
            [serde_json::json!({"k":2}), serde_json::json!({"k":3})]
        );
        let found = find_last(&log, |v: &serde_json::Value| v["k"] == 2).unwrap();
        assert_eq!(found, Some(serde_json::json!({"k":2})));
        // Reaching the bad line gives the full read's error, whatever the chunk size.
        for chunk in [1, 5, CHUNK] {
            let err = read_last_in::<serde_json::Value>(&log, 3, chunk).unwrap_err();
            assert_eq!(format!("{err:#}"), full);
            let err = find_last_in(&log, |v: &serde_json::Value| v["k"] == 1, chunk).unwrap_err();
            assert_eq!(format!("{err:#}"), full);
        }
        // A terminated last line that does not parse is no torn tail: an error, as in `read`.
        std::fs::write(&log, "{\"k\":1}\n{\"time\":\"20\n").unwrap();
        let full = format!("{:#}", read::<serde_json::Value>(&log).unwrap_err());
        let err = read_last::<serde_json::Value>(&log, 1).unwrap_err();
        assert_eq!(format!("{err:#}"), full);
        assert!(full.contains("history.jsonl:2 is not"), "{full}");
    }

    #[test]
    fn a_missing_log_has_no_tail_and_an_unreadable_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("history.jsonl");
        assert!(read_last::<serde_json::Value>(&log, 0).unwrap().is_empty());
        assert!(read_last::<serde_json::Value>(&log, 5).unwrap().is_empty());
        assert_eq!(find_last(&log, |_: &serde_json::Value| true).unwrap(), None);
        // A directory in its place: an error naming the path, for n = 0 too.
        std::fs::create_dir(&log).unwrap();
        for n in [0, 1] {
            let err = format!("{:#}", read_last::<serde_json::Value>(&log, n).unwrap_err());
            assert!(
                err.contains("could not read") && err.contains("history.jsonl"),
                "{err}"
            );
        }
    }

    #[test]
    fn an_entry_glued_onto_a_fragment_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("history.jsonl");
        std::fs::write(
            &log,
            "{\"n\":1}\n{\"time\":\"2026{\"n\":2,\"o\":{\"x\":1}}\n",
        )
        .unwrap();
        let got = lines(&log);
        assert_eq!(
            got,
            vec![
                serde_json::json!({"n":1}),
                serde_json::json!({"n":2,"o":{"x":1}})
            ]
        );
    }
}
