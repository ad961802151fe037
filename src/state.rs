//! Deploy state on disk: `.cutover/state.json` (which image each color runs, which color is
//! active, a deploy in progress) and `.cutover/history.jsonl` (append-only log).
//!
//! State is a record, not the truth: `status` and `deploy` cross-check it against the nginx
//! include and the running containers, so a `kill -9` between two writes is explainable.
//! Every write is atomic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::config::Color;
pub use crate::engine::step::{Step, StepTiming};

/// What cutover last recorded about the two colors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The color nginx was last switched to.
    #[serde(default)]
    pub active: Option<Color>,
    /// The image each color last ran.
    #[serde(default)]
    pub images: BTreeMap<Color, String>,
    /// The image that served before the last successful deploy (what `rollback` deploys).
    #[serde(default)]
    pub previous_image: Option<String>,
    /// Set while a deploy runs; left behind by a killed deploy.
    #[serde(default)]
    pub in_progress: Option<InProgress>,
}

impl State {
    /// Images pruning must keep: what each color last ran and the rollback target.
    pub fn kept_images(&self) -> std::collections::BTreeSet<String> {
        self.images
            .values()
            .cloned()
            .chain(self.previous_image.clone())
            .collect()
    }
}

/// A deploy that started and has not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InProgress {
    pub pid: u32,
    pub started: String,
    pub image: String,
    pub from: Option<Color>,
    pub to: Color,
    /// The last step reached, e.g. `health`, `switch`.
    pub step: Step,
}

/// Where the state files live.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn history_file(&self) -> PathBuf {
        self.dir.join("history.jsonl")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// The recorded state; a missing file is the state of a project never deployed.
    pub fn load(&self) -> anyhow::Result<State> {
        read_json(&self.state_file()).map(Option::unwrap_or_default)
    }

    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(state)?;
        bytes.push(b'\n');
        crate::atomic::write(&self.state_file(), &bytes, 0o644)
    }
}

/// Who holds the deploy lock, written into the lock file so a waiting deploy can name it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub user: String,
    pub started: String,
    pub action: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} by {} (pid {}, started {})",
            self.action, self.user, self.pid, self.started
        )
    }
}

/// Why the deploy lock could not be taken. Callers branch on `Held` (exit with the holder).
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another deploy is running: {holder} (lock {path}); wait for it or pass --lock-wait")]
    Held { holder: String, path: PathBuf },
    #[error("could not use the lock file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The held deploy lock; released when dropped (or when the process dies: it is an flock).
#[derive(Debug)]
pub struct DeployLock {
    _file: std::fs::File,
}

impl StateDir {
    /// Takes the exclusive deploy lock, waiting up to `wait` for another holder.
    pub fn lock(
        &self,
        wait: std::time::Duration,
        holder: &Holder,
    ) -> Result<DeployLock, LockError> {
        use std::io::{Seek, Write};
        let path = self.lock_file();
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        // No truncate on open: the file holds the current holder's description.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if std::time::Instant::now() >= deadline {
                        let text = std::fs::read_to_string(&path).unwrap_or_default();
                        let holder = serde_json::from_str::<Holder>(&text)
                            .map(|h| h.to_string())
                            .unwrap_or_else(|_| "unknown holder".to_string());
                        return Err(LockError::Held { holder, path });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        let text = serde_json::to_string(holder).unwrap_or_default();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(text.as_bytes()))
            .map_err(io)?;
        Ok(DeployLock { _file: file })
    }

    /// Appends one entry to the history log (one JSON object per line).
    pub fn append_history(&self, entry: &HistoryEntry) -> anyhow::Result<()> {
        use std::io::Write;
        let path = self.history_file();
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("could not create {}", self.dir.display()))?;
        let mut line = serde_json::to_string(entry)?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("could not open {}", path.display()))?;
        // One write of one line: concurrent appenders cannot interleave within it.
        file.write_all(line.as_bytes())
            .with_context(|| format!("could not append to {}", path.display()))
    }

    /// Every history entry, oldest first. A torn last line (a crash mid-append) is skipped;
    /// any other line that does not parse is an error naming it.
    pub fn history(&self) -> anyhow::Result<Vec<HistoryEntry>> {
        let path = self.history_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
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
            match serde_json::from_str(line) {
                Ok(entry) => entries.push(entry),
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "{}:{} is not a cutover history entry",
                            path.display(),
                            number + 1
                        )
                    })
                }
            }
        }
        Ok(entries)
    }
}

/// One deploy attempt, as recorded in `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub time: String,
    pub user: String,
    /// Entries written before the swarm engine existed have no field and are compose deploys.
    #[serde(default)]
    pub engine: EngineKind,
    pub action: Action,
    pub image: String,
    /// The image that ran before (swarm: the service's previous image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    pub from: Option<Color>,
    /// The color deployed to; swarm has no colors, so its entries have none.
    #[serde(default)]
    pub to: Option<Color>,
    pub result: RunResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub steps: Vec<StepTiming>,
    pub total_ms: u64,
}

/// Implements `Display` with the serialized name, padded like a `str` (the history table).
macro_rules! named {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

/// Which engine ran a deploy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Blue/green behind nginx.
    #[default]
    Compose,
    /// A swarm rolling update.
    Swarm,
}
named!(EngineKind { Compose => "compose", Swarm => "swarm" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Deploy,
    Rollback,
}
named!(Action { Deploy => "deploy", Rollback => "rollback" });

/// How a deploy attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    Ok,
    Failed,
    Interrupted,
}
named!(RunResult { Ok => "ok", Failed => "failed", Interrupted => "interrupted" });

/// The user running cutover, for history and lock holders; over SSH (`cutover --host`, or a
/// login) also the client's address, so a CI job losing the lock learns which machine holds it.
pub fn current_user() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", process_uid()));
    let client = std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|c| c.split_whitespace().next().map(str::to_string));
    match client {
        Some(ip) => format!("{user} via ssh from {ip}"),
        None => user,
    }
}

fn process_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// Now, as RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not valid cutover state", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(action: &str) -> Holder {
        Holder {
            pid: 42,
            user: "ci".into(),
            started: "2026-01-01T00:00:00Z".into(),
            action: action.into(),
        }
    }

    #[test]
    fn second_lock_fails_naming_the_holder_then_succeeds_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        let first = sd
            .lock(std::time::Duration::ZERO, &holder("deploy app:v2"))
            .unwrap();
        let err = sd
            .lock(
                std::time::Duration::from_millis(150),
                &holder("deploy app:v3"),
            )
            .unwrap_err();
        assert!(matches!(err, LockError::Held { .. }));
        assert!(
            err.to_string().contains("deploy app:v2 by ci (pid 42"),
            "{err}"
        );
        drop(first);
        sd.lock(std::time::Duration::ZERO, &holder("deploy app:v3"))
            .unwrap();
    }

    #[test]
    fn history_appends_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        let entry = HistoryEntry {
            time: now_rfc3339(),
            user: "ci".into(),
            engine: EngineKind::Compose,
            action: Action::Deploy,
            image: "app:v1".into(),
            from_image: None,
            from: None,
            to: Some(Color::Blue),
            result: RunResult::Ok,
            reason: None,
            steps: vec![StepTiming {
                step: Step::Up,
                ms: 12,
            }],
            total_ms: 12,
        };
        sd.append_history(&entry).unwrap();
        sd.append_history(&entry).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(sd.history_file())
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"time\": \"tor"))
            .unwrap();
        assert_eq!(sd.history().unwrap(), vec![entry.clone(), entry]);
    }

    #[test]
    fn a_bad_line_before_the_last_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        std::fs::write(sd.history_file(), "{\"nope\": 1}\n\n").unwrap();
        let err = format!("{:#}", sd.history().unwrap_err());
        assert!(
            err.contains("history.jsonl:1 is not a cutover history entry"),
            "{err}"
        );
    }

    #[test]
    fn history_written_before_engines_reads_as_compose() {
        let line = r#"{"time":"t","user":"u","action":"deploy","image":"a:1","from":null,"to":"blue","result":"ok","steps":[],"total_ms":1}"#;
        let entry: HistoryEntry = serde_json::from_str(line).unwrap();
        assert_eq!(entry.engine, EngineKind::Compose);
        assert_eq!(entry.to, Some(Color::Blue));
    }

    #[test]
    fn missing_state_is_default_and_roundtrips() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path().join(".cutover"));
        assert_eq!(sd.load().unwrap(), State::default());
        let state = State {
            active: Some(Color::Green),
            images: [(Color::Green, "app:v2".to_string())].into(),
            ..State::default()
        };
        sd.save(&state).unwrap();
        assert_eq!(sd.load().unwrap(), state);
    }
}
