//! Deploy state on disk: `.cutover/state.json` (which image each color runs, which color is
//! active, a deploy in progress) and `.cutover/history.jsonl` (append-only log; read whole, or
//! from its end for the last entries, [`crate::jsonl`]).
//!
//! State is a record, not the truth: `status` and `deploy` cross-check it against the nginx
//! include and the running containers, so a `kill -9` between two writes is explainable.
//! Every write is atomic, and every file is the owner's only ([`FILE_MODE`]): the record names
//! images, users and failure reasons.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::config::Color;
mod step;

pub use step::{Step, StepTiming};

/// The mode of every file in the state directory.
pub const FILE_MODE: u32 = 0o600;

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
    /// Which color and image each worker last ran (`workers:`), by worker name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub workers: BTreeMap<String, WorkerRecord>,
}

/// Where one worker runs, as last recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub color: Color,
    pub image: String,
}

impl State {
    /// Images pruning must keep: what each color last ran and the rollback target.
    pub fn kept_images(&self) -> std::collections::BTreeSet<String> {
        self.images
            .values()
            .cloned()
            .chain(self.previous_image.clone())
            .chain(self.workers.values().map(|w| w.image.clone()))
            .collect()
    }

    /// Each worker's recorded image, for rendering its color.
    pub fn worker_images(&self) -> BTreeMap<String, BTreeMap<Color, String>> {
        self.workers
            .iter()
            .map(|(name, w)| (name.clone(), BTreeMap::from([(w.color, w.image.clone())])))
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

    /// The recorded state; a missing file is the state of a project never deployed. A file
    /// that does not parse is an error naming its line and column and how to recover.
    pub fn load(&self) -> anyhow::Result<State> {
        read_json(&self.state_file()).map(Option::unwrap_or_default)
    }

    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(state)?;
        bytes.push(b'\n');
        crate::atomic::write(&self.state_file(), &bytes, FILE_MODE)
    }

    /// Moves the in-progress record (if there is one) to `step`: what `status` tells of a
    /// run that was killed there.
    pub fn mark_step(&self, step: Step) -> anyhow::Result<()> {
        let mut record = self.load()?;
        match record.in_progress.as_mut() {
            Some(p) => p.step = step,
            None => return Ok(()),
        }
        self.save(&record)
    }

    /// Torn history tails set aside by [`StateDir::append_history`], oldest first.
    pub fn torn_history(&self) -> Vec<PathBuf> {
        crate::jsonl::torn_files(&self.history_file())
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

/// Why the deploy lock could not be taken. Callers branch on `Held` (exit with the holder)
/// and `Interrupted` (exit as an interrupted deploy).
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another deploy is running: {holder} (lock {path}); wait for it or pass --lock-wait")]
    Held { holder: String, path: PathBuf },
    #[error(
        "interrupted (SIGINT/SIGTERM) while waiting for the deploy lock {path}: nothing changed"
    )]
    Interrupted { path: PathBuf },
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
        self.lock_unless(wait, holder, &std::sync::atomic::AtomicBool::new(false))
    }

    /// [`StateDir::lock`], giving up with [`LockError::Interrupted`] as soon as `interrupted`
    /// is set: a SIGINT while `--lock-wait 10m` waits must not wait the ten minutes.
    pub fn lock_unless(
        &self,
        wait: std::time::Duration,
        holder: &Holder,
        interrupted: &std::sync::atomic::AtomicBool,
    ) -> Result<DeployLock, LockError> {
        use std::io::{Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.lock_file();
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Created 0750, as bootstrap creates it: the record names images, users and reasons.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o750)
            .create(&self.dir)
            .map_err(io)?;
        // No truncate on open: the file holds the current holder's description.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(io)?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                        return Err(LockError::Interrupted { path });
                    }
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

    /// Appends one entry to the history log (one JSON object per line). A torn last line
    /// left by a crash is set aside first ([`crate::jsonl`]); its new path is returned. The
    /// reason is stored as its first line only: the rest of a failure message is the app's
    /// log tail, which the terminal shows and the record must not keep.
    pub fn append_history(&self, entry: &HistoryEntry) -> anyhow::Result<Option<PathBuf>> {
        let mut entry = entry.clone();
        entry.reason = entry.reason.as_deref().map(one_line_reason);
        crate::jsonl::append(&self.history_file(), &serde_json::to_string(&entry)?)
    }

    /// Every history entry, oldest first. A line that does not parse (a torn tail) is skipped.
    pub fn history(&self) -> anyhow::Result<Vec<HistoryEntry>> {
        crate::jsonl::read(&self.history_file())
    }

    /// The newest `n` history entries, oldest first, read from the end of the log: the time
    /// and memory of `history -n N` follow N, not the length of the history.
    pub fn history_tail(&self, n: usize) -> anyhow::Result<Vec<HistoryEntry>> {
        crate::jsonl::read_last(&self.history_file(), n)
    }

    /// The newest history entry `wanted` accepts (`status`'s last deploy), read back from the
    /// end of the log only as far as that entry.
    pub fn last_history(
        &self,
        wanted: impl FnMut(&HistoryEntry) -> bool,
    ) -> anyhow::Result<Option<HistoryEntry>> {
        crate::jsonl::find_last(&self.history_file(), wanted)
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
    /// A compose deploy that switched: from its health gate passing to nginx answering from
    /// the new color, as `deploy --json` says; absent otherwise and in older entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_ms: Option<u64>,
    /// What happened to each worker (`workers:`); absent in entries before workers existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerOutcome>,
}

/// One worker's part of a deploy, as recorded in history and `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerOutcome {
    pub name: String,
    /// The color it ran on before (None: it did not run).
    pub from: Option<Color>,
    pub to: Color,
    pub image: String,
    pub result: RunResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub ms: u64,
}

/// The first line of a failure message, at most 500 characters: history's `reason`, and a
/// failed deploy document's.
pub fn one_line_reason(reason: &str) -> String {
    let first = reason.lines().next().unwrap_or_default().trim_end();
    match first.char_indices().nth(500) {
        Some((cut, _)) => format!("{}…", &first[..cut]),
        None => first.to_string(),
    }
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
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            let p = path.display();
            let text = e.to_string();
            // serde_json ends its message with " at line L column C", said here up front.
            let what = text
                .rsplit_once(" at line ")
                .map_or(text.as_str(), |(w, _)| w);
            anyhow::anyhow!(
                "{p}:{}:{}: the deploy record is damaged ({what}). It is a record, not the truth: \
                 move it aside (`mv {p} {p}.bad`) and run `cutover deploy`, which rebuilds it \
                 from what it observes (the nginx include and the running containers); the \
                 rollback target it held is lost (`cutover deploy --image REF` deploys any image)",
                e.line(),
                e.column().max(1)
            )
        }),
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
            switch_ms: None,
            workers: Vec::new(),
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
    fn history_keeps_the_first_line_of_a_reason_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
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
            result: RunResult::Failed,
            reason: Some("deploy failed: it exited\nlast log lines:\n    password=x".into()),
            steps: Vec::new(),
            total_ms: 1,
            switch_ms: None,
            workers: Vec::new(),
        };
        sd.append_history(&entry).unwrap();
        let got = sd.history().unwrap();
        assert_eq!(got[0].reason.as_deref(), Some("deploy failed: it exited"));
        sd.save(&State::default()).unwrap();
        for path in [sd.history_file(), sd.state_file()] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, FILE_MODE, "{}", path.display());
        }
    }

    #[test]
    fn damaged_state_names_line_column_and_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        std::fs::write(sd.state_file(), "{\n  \"active\": blu\n}\n").unwrap();
        let err = sd.load().unwrap_err().to_string();
        let want = format!(
            "{}:2:13: the deploy record is damaged",
            sd.state_file().display()
        );
        assert!(err.starts_with(&want), "{err}");
        assert!(err.contains("rebuilds it from what it observes"), "{err}");
    }

    #[test]
    fn the_tail_of_the_history_is_the_end_of_the_whole_history() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        assert_eq!(sd.last_history(|_| true).unwrap(), None);
        // Every format ever written, then a torn tail a crash left.
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/history/v0.1.jsonl");
        let mut text = std::fs::read_to_string(fixture).unwrap();
        text.push_str("{\"time\": \"2026-11-22T");
        std::fs::write(sd.history_file(), text).unwrap();
        let all = sd.history().unwrap();
        assert_eq!(all.len(), 7);
        for n in 0..=all.len() + 1 {
            let want = &all[all.len().saturating_sub(n)..];
            assert_eq!(sd.history_tail(n).unwrap(), want, "n {n}");
        }
        assert_eq!(sd.last_history(|_| true).unwrap().as_ref(), all.last());
        let compose = sd
            .last_history(|e| e.engine == EngineKind::Compose)
            .unwrap()
            .unwrap();
        assert_eq!(compose, all[4]);
        assert_eq!(compose.action, Action::Rollback);
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
