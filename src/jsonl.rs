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

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
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
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let mut entries = Vec::with_capacity(lines.len());
    for (i, (number, line)) in lines.iter().enumerate() {
        let parsed = serde_json::from_str(line).or_else(|e| {
            line.match_indices('{')
                .skip(1)
                .find_map(|(at, _)| serde_json::from_str(&line[at..]).ok())
                .ok_or(e)
        });
        match parsed {
            Ok(entry) => entries.push(entry),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "{}:{} is not a cutover history entry (move the file aside to start a new history)",
                        path.display(),
                        number + 1
                    )
                })
            }
        }
    }
    Ok(entries)
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
