//! Where a command runs: the project directory, the config file, the identity and how much to
//! say, decided once from the global flags. Every command layer (`cmd/`, `remote/`) takes it;
//! it sits below them so neither imports upward into `lib.rs`.

use std::path::PathBuf;

use crate::cli::Cli;
use crate::report::Verbosity;

/// What every command needs to know about where it runs.
#[derive(Debug, Clone)]
pub struct Context {
    /// The project directory (`-C DIR`, else the config file's directory, else `.`).
    pub dir: PathBuf,
    /// The config file (`--config FILE`, else `<dir>/cutover.yml`).
    pub config_path: PathBuf,
    /// `--identity FILE` / `CUTOVER_IDENTITY`.
    pub identity: Option<PathBuf>,
    pub verbosity: Verbosity,
}

impl Context {
    pub fn from_cli(cli: &Cli) -> anyhow::Result<Self> {
        let cwd = std::env::current_dir()?;
        let dir = match &cli.directory {
            Some(d) => cwd.join(d),
            None => cwd,
        };
        let config_path = match &cli.config {
            Some(path) => dir.join(path),
            None => dir.join("cutover.yml"),
        };
        // A config elsewhere makes its directory the project directory, unless -C says otherwise.
        let dir = match (&cli.directory, &cli.config) {
            (None, Some(_)) => config_path.parent().map(PathBuf::from).unwrap_or(dir),
            _ => dir,
        };
        Ok(Context {
            dir,
            config_path,
            identity: cli.identity.clone(),
            verbosity: Verbosity::from_flags(cli.quiet, cli.verbose),
        })
    }
}

impl Context {
    pub fn quiet(&self) -> bool {
        self.verbosity == Verbosity::Quiet
    }
}
