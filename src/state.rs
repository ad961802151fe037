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

/// A deploy that started and has not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InProgress {
    pub pid: u32,
    pub started: String,
    pub image: String,
    pub from: Option<Color>,
    pub to: Color,
    /// The last step reached, e.g. "health", "switch".
    pub step: String,
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
