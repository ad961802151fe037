//! `remote:` in cutover.yml: where `cutover --host` finds the box and puts the project there
//! (issue #12, see `src/remote/`). Read on the machine that runs `cutover --host`; the box's
//! synced copy ignores it (the box does not SSH to itself).

use serde::{Deserialize, Serialize};

use super::Name;

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// `[user@]host[:port]` (or a `Host` alias from ~/.ssh/config); `--host` and
    /// `CUTOVER_HOST` take precedence.
    #[serde(default)]
    pub host: Option<String>,
    /// The project directory on the box; `~/` is the SSH user's home.
    /// [default: `~/cutover/<project>`]
    #[serde(default)]
    pub dir: Option<String>,
}

/// `ship:` — how `cutover --host` gets a deploy's image onto the box.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Ship {
    /// `docker save` here, only the layers the box lacks, over the SSH connection.
    Ssh,
}

impl Remote {
    pub fn is_unset(&self) -> bool {
        self == &Remote::default()
    }

    /// `remote.dir`, else `~/cutover/<project>`.
    pub fn dir_or_default(&self, project: &Name) -> String {
        self.dir
            .clone()
            .unwrap_or_else(|| format!("~/cutover/{}", project.as_str()))
    }
}
