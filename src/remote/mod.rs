//! `cutover --host [user@]host[:port] COMMAND`: run a box command on a box over SSH, from a
//! laptop or CI, with cutover installing itself there.
//!
//! One invocation is one SSH master connection ([`ssh`]), and `Remote::prepare` reads as
//! its steps: inspect the box and, unless this exact binary is already there, upload it
//! ([`install`]); with `--ship`, send the image's missing layers ([`ship`]); send the project
//! as one tar stream into a fresh release dir ([`sync`]); then run the same command with the
//! box's binary in that release. Its argv is re-emitted from the parsed command line
//! (`argv.rs`: without `--host`, `-C`, `--config`, `--identity`, which name local things), and
//! the box runs it as one shell line (`BoxLine`: its checks, then `exec [sudo -n] cutover
//! --on-box …`, every value quoted by `process::shell_quote`). Stdout and stderr stream back
//! as they come, so the `--json` document and the exit code (0/1/2/130) are the box's own.
//! Ctrl-C, SIGTERM and a dropped connection reach the remote cutover as control lines on its
//! stdin (`control.rs`, [`on_box`]), where they mean what they mean locally. The box's
//! deploy lock decides between racing CI jobs, as it does between local runs.
//!
//! Secrets are decrypted on the box with its own identity, unless an identity is given here
//! (`CUTOVER_AGE_KEY`, `--identity`/`CUTOVER_IDENTITY`): then its text travels as the first
//! bytes of the session's stdin, never in the remote command line, environment or a file.
//!
//! This module is the command layer for `--host`: it prints its own step lines to stderr.

mod argv;
mod control;
pub mod install;
pub mod on_box;
pub mod release;
pub mod ship;
mod ship_progress;
pub mod ship_tar;
mod signals;
pub mod ssh;
pub mod sync;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::cli::{Cli, Command};
use crate::config::Target;
use crate::context::Context;
use crate::report::duration;

use control::Control;
use signals::Signals;

/// `CUTOVER_SSH_CONFIG`: an ssh_config file for `ssh -F` (CI, tests); default: ssh's own.
const SSH_CONFIG_ENV: &str = "CUTOVER_SSH_CONFIG";

/// How a command relates to the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Works on local files or this machine only (init, secrets, demo, completions).
    LocalOnly,
    /// Reads the box's project as last synced (status, history, prune).
    BoxState,
    /// Needs this project on the box first; `promote`: the release becomes `current` once the
    /// command succeeded (false when the run must change nothing).
    /// `explicit_only`: `remote.host` alone does not send it (`render` is also a local tool).
    Synced {
        promote: bool,
        sudo: bool,
        explicit_only: bool,
    },
}

fn reach(command: &Command) -> Reach {
    match command {
        Command::Init(_)
        | Command::Secrets(_)
        | Command::Demo(_)
        | Command::Completions { .. }
        // The nft switch's root side acts on the machine it runs on (sudo's, never `--host`).
        | Command::SwitchRule(_) => Reach::LocalOnly,
        // User-data for a box that does not exist yet.
        Command::Bootstrap(a) if a.cloud_init => Reach::LocalOnly,
        // The built-in templates, written into this project.
        Command::Render(a) if a.templates.is_some() => Reach::LocalOnly,
        // `run` uses the project as last deployed: the serving color's compose file.
        Command::Status(_) | Command::History(_) | Command::Prune(_) | Command::Run(_) => {
            Reach::BoxState
        }
        // The box's nginx and flag; the synced config already there.
        Command::Maintenance(_) => Reach::BoxState,
        Command::Logs(_) | Command::Exec(_) => Reach::BoxState,
        Command::Deploy(a) => Reach::Synced {
            promote: !a.common.dry_run,
            sudo: false,
            explicit_only: false,
        },
        Command::Rollback(a) => Reach::Synced {
            promote: !a.common.dry_run,
            sudo: false,
            explicit_only: false,
        },
        Command::Render(a) => Reach::Synced {
            promote: !a.check && a.out.is_none(),
            sudo: false,
            explicit_only: true,
        },
        // Run as root through sudo: they never move `current` (that would take the project's
        // lock as root and leave its lock file to root); the next deploy does.
        Command::Bootstrap(_) => Reach::Synced {
            promote: false,
            sudo: true,
            explicit_only: false,
        },
        // Certbot and nginx on the box, as root, like bootstrap's own `tls` step.
        Command::Tls(crate::cli::TlsCommand::Issue(_)) => Reach::Synced {
            promote: false,
            sudo: true,
            explicit_only: false,
        },
    }
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Init(_) => "init",
        Command::Secrets(_) => "secrets",
        Command::Demo(_) => "demo",
        Command::Completions { .. } => "completions",
        Command::Status(_) => "status",
        Command::History(_) => "history",
        Command::Prune(_) => "prune",
        Command::Logs(_) => "logs",
        Command::Exec(_) => "exec",
        Command::Deploy(_) => "deploy",
        Command::Rollback(_) => "rollback",
        Command::Render(_) => "render",
        Command::Bootstrap(_) => "bootstrap",
        Command::Tls(_) => "tls",
        Command::Maintenance(_) => "maintenance",
        Command::Run(_) => "run",
        Command::SwitchRule(_) => "switch-rule",
    }
}

/// Runs the command on the box when `--host`, `CUTOVER_HOST` or `remote.host` asks for it;
/// `None` means "run it here". A synced copy on the box ignores `remote.host`.
pub fn run_if_remote(cli: &Cli, ctx: &Context) -> anyhow::Result<Option<ExitCode>> {
    if cli.on_box || cli.on_box_child {
        return Ok(None);
    }
    let reach = reach(&cli.command);
    if reach == Reach::LocalOnly {
        // Only the flag itself is a mistake: CUTOVER_HOST set for a whole CI job must not
        // break its local `cutover secrets …` steps.
        // Up to `--`: what follows is another program's arguments, not ours.
        let flag_given = std::env::args_os()
            .take_while(|a| a != "--")
            .any(|a| a == "--host" || a.to_str().is_some_and(|a| a.starts_with("--host=")));
        if let Some(target) = cli.host.as_ref().filter(|_| flag_given) {
            eprintln!(
                "error: `cutover {}` works on this machine's files; run it without --host {target} \
                 (it ignores CUTOVER_HOST and remote.host)",
                command_name(&cli.command)
            );
            return Ok(Some(ExitCode::from(2)));
        }
        return Ok(None);
    }
    let explicit_only = matches!(
        reach,
        Reach::Synced {
            explicit_only: true,
            ..
        }
    );
    let loaded = match (&cli.host, ctx.dir.join(sync::SYNC_MARKER).exists()) {
        (None, _) if explicit_only => return Ok(None),
        (None, true) => return Ok(None),
        (None, false) => match crate::config::load(&ctx.config_path, &ctx.dir) {
            // Not ours to report: the local run says what is wrong with the config.
            Err(_) => return Ok(None),
            Ok(loaded) if loaded.config.remote.host.is_none() => return Ok(None),
            Ok(loaded) => loaded,
        },
        (Some(_), _) => crate::config::load(&ctx.config_path, &ctx.dir)?,
    };
    let target = match &cli.host {
        Some(target) => target.clone(),
        None => loaded
            .config
            .remote
            .host
            .clone()
            .context("no box named: --host, CUTOVER_HOST or remote.host")?,
    };
    let argv = argv::box_argv(cli)?;
    let identity = identity_text(ctx)?;
    let ship = ship_image(&cli.command, &loaded.config);
    let remote = Remote {
        command: command_name(&cli.command),
        ship,
        target,
        reach,
        quiet: ctx.quiet(),
        loaded,
        argv,
        identity,
    };
    remote.run().map(Some)
}

/// The identity to send, when one is given here; else the box uses its own.
fn identity_text(ctx: &Context) -> anyhow::Result<Option<zeroize::Zeroizing<String>>> {
    if let Some(path) = &ctx.identity {
        // Same checks as a local run (exists, parses, not readable by others).
        crate::secrets::Identities::from_file(path)?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        return Ok(Some(zeroize::Zeroizing::new(text)));
    }
    match std::env::var_os(crate::secrets::keys::AGE_KEY_ENV).filter(|v| !v.is_empty()) {
        Some(key) => {
            let key = key.into_string().map_err(|_| {
                anyhow::anyhow!("{} is not valid UTF-8", crate::secrets::keys::AGE_KEY_ENV)
            })?;
            Ok(Some(zeroize::Zeroizing::new(key)))
        }
        None => Ok(None),
    }
}

/// The image `--ship` / `ship: ssh` sends before a deploy, if any.
fn ship_image(command: &Command, config: &crate::config::Config) -> Option<String> {
    match command {
        Command::Deploy(a) if a.ship || config.ship == Some(crate::config::Ship::Ssh) => {
            a.image.clone()
        }
        _ => None,
    }
}

struct Remote {
    /// The command's name, for messages.
    command: &'static str,
    ship: Option<String>,
    target: Target,
    reach: Reach,
    quiet: bool,
    loaded: crate::config::Loaded,
    argv: Vec<String>,
    identity: Option<zeroize::Zeroizing<String>>,
}

impl Remote {
    fn step(&self, step: &str, took: Duration, detail: &str) {
        if !self.quiet {
            eprintln!("  ✓ {step:<12} {:>7}  {detail}", duration(took));
        }
    }

    fn run(self) -> anyhow::Result<ExitCode> {
        // From here on a Ctrl-C or SIGTERM is ours to handle: before the box runs anything it
        // just stops (nothing changed there: an upload or sync cut short is discarded).
        let signals = Signals::install()?;
        let ssh_config = std::env::var_os(SSH_CONFIG_ENV).map(std::path::PathBuf::from);
        let mut session = ssh::Session::new(self.target.clone(), ssh_config)?;
        let command_line = match self.prepare(&mut session, &signals) {
            Ok(_) | Err(_) if signals.any() => {
                eprintln!(
                    "interrupted before cutover ran on {}: nothing changed there",
                    self.target
                );
                return Ok(ExitCode::from(130));
            }
            result => result?,
        };
        let code = self.stream(&session, &command_line, &signals)?;
        session.close();
        Ok(code)
    }

    /// Connects, installs the binary if needed, ships the image and syncs the project as this
    /// command needs; returns the command line that runs this invocation on the box.
    fn prepare(&self, session: &mut ssh::Session, signals: &Signals) -> anyhow::Result<String> {
        let probe = self.install(session)?;
        let config = &self.loaded.config;
        let root = box_path(&config.remote.dir_or_default(&config.project), &probe.home)?;
        if self.switches_nginx() {
            check_include_writable(session, &config.nginx.include)?;
        }
        if let Some(image) = &self.ship {
            self.send_image(session, signals, image, &root)?;
        }
        let mut line = BoxLine::default();
        let project_dir = match self.reach {
            Reach::Synced { promote, .. } => {
                if promote {
                    line.promote = true;
                }
                self.sync(session, &root)?
            }
            _ => {
                let current = format!("{root}/current");
                line.check(
                    Check::Exists(current.clone()),
                    self.nothing_deployed(&current),
                );
                current
            }
        };
        if matches!(self.reach, Reach::Synced { sudo: true, .. })
            && session_user_is_not_root(session)?
        {
            line.check(Check::HasSudo, self.no_sudo());
            line.sudo = true;
        }
        line.words = vec![probe.binary.clone(), "--on-box".into()];
        if line.promote {
            line.words.push("--on-box-promote".into());
        }
        if self.identity.is_some() {
            line.words.push("--age-key-stdin".into());
        }
        line.words.extend(["-C".into(), project_dir]);
        line.words.extend(self.argv.iter().cloned());
        Ok(line.render())
    }

    /// Whether the box command switches the include as the SSH user (a deploy or rollback),
    /// so an include that user cannot write is refused before anything is shipped or synced.
    fn switches_nginx(&self) -> bool {
        matches!(self.command, "deploy" | "rollback")
            && matches!(self.reach, Reach::Synced { sudo: false, .. })
    }

    /// Connects (the first command opens the master connection) and uploads this binary
    /// unless the box has it already.
    fn install(&self, session: &mut ssh::Session) -> anyhow::Result<install::Probe> {
        let started = Instant::now();
        let (local, probe) = install::probe(session)?;
        let connected = format!("{} (one SSH connection)", self.target);
        self.step("connect", started.elapsed(), &connected);
        if probe.was_installed {
            let detail = format!("{} (already installed)", probe.binary);
            self.step("binary", Duration::ZERO, &detail);
            return Ok(probe);
        }
        let t = Instant::now();
        install::upload(session, &local, &probe)?;
        let detail = format!(
            "uploaded cutover {} ({:.1} MB, sha256 verified) to {}",
            env!("CARGO_PKG_VERSION"),
            local.size() as f64 / 1e6,
            probe.binary
        );
        self.step("install", t.elapsed(), &detail);
        Ok(probe)
    }

    /// `--ship`: the image's layers the box lacks, loaded there before the deploy.
    fn send_image(
        &self,
        session: &mut ssh::Session,
        signals: &Signals,
        image: &str,
        root: &str,
    ) -> anyhow::Result<()> {
        let t = Instant::now();
        let dry_run = matches!(self.reach, Reach::Synced { promote: false, .. });
        let state = &self.loaded.config.state_dir;
        let stop = || signals.any();
        let line = ship_progress::run(session, image, root, state, dry_run, self.quiet, &stop)?;
        self.step("ship", t.elapsed(), &line);
        Ok(())
    }

    /// Sends the project into a new release under `root`; returns the release's path.
    fn sync(&self, session: &mut ssh::Session, root: &str) -> anyhow::Result<String> {
        let t = Instant::now();
        let marker = serde_json::json!({
            "from": crate::state::current_user(),
            "at": crate::state::now_rfc3339(),
            "cutover": env!("CARGO_PKG_VERSION"),
        })
        .to_string();
        let archive = sync::pack(&self.loaded.dir, &self.loaded.path, &marker)?;
        let root = crate::process::shell_quote(root);
        let state_dir = &self.loaded.config.state_dir;
        let script = sync::unpack_script(&root, &release_stamp(), state_dir);
        let out = session.exec_ok(&script, "sync the project to the box", Some(archive.tar))?;
        let release = out
            .stdout
            .lines()
            .last()
            .filter(|l| l.starts_with('/'))
            .with_context(|| {
                format!(
                    "the box did not report the synced release dir: {:?}",
                    out.stdout
                )
            })?
            .to_string();
        let detail = format!("{} files to {release}", archive.files);
        self.step("sync", t.elapsed(), &detail);
        Ok(release)
    }

    fn nothing_deployed(&self, current: &str) -> String {
        format!(
            "error: nothing has been deployed to {} yet ({current} does not exist); run \
             `cutover --host {} deploy` first",
            self.target, self.target
        )
    }

    fn no_sudo(&self) -> String {
        format!(
            "error: `cutover {}` needs root on the box and {} has no sudo; connect as root \
             (--host root@{}) or install sudo with NOPASSWD for this user",
            self.command, self.target, self.target.host
        )
    }

    /// Runs the box command with its output streamed, forwarding our signals on its stdin.
    fn stream(
        &self,
        session: &ssh::Session,
        command_line: &str,
        signals: &Signals,
    ) -> anyhow::Result<ExitCode> {
        let mut child = session.start_streaming(command_line, "run cutover on the box")?;
        if let Some(key) = &self.identity {
            // Should the box side be gone already, its exit status says why.
            control::send(&mut child, &control::identity_frame(key));
        }
        let mut forwarded = false;
        let mut last_ping = Instant::now();
        let code = loop {
            if let Some(code) = child.try_wait()? {
                break code;
            }
            if last_ping.elapsed() >= on_box::HEARTBEAT {
                last_ping = Instant::now();
                control::send(&mut child, Control::Heartbeat.encode().as_bytes());
            }
            for signal in signals.take() {
                forwarded = true;
                control::send(&mut child, Control::Signal(signal).encode().as_bytes());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        child.close_stdin();
        match code.code() {
            Some(255) | None if forwarded => Ok(ExitCode::from(130)),
            Some(255) | None => Err(anyhow::anyhow!(session.describe_lost())),
            Some(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1))),
        }
    }
}

/// What the box checks before it runs cutover; the values are quoted here, once.
enum Check {
    /// This path exists.
    Exists(String),
    /// `sudo` is on PATH.
    HasSudo,
}

impl Check {
    fn shell(&self) -> String {
        match self {
            Check::Exists(path) => format!("[ -e {} ]", crate::process::shell_quote(path)),
            Check::HasSudo => "command -v sudo >/dev/null 2>&1".into(),
        }
    }
}

/// The one shell line that runs cutover on the box: its checks (each failing with its
/// message, exit 1), then `exec [sudo -n] <words>`.
#[derive(Default)]
struct BoxLine {
    checks: Vec<(Check, String)>,
    sudo: bool,
    /// The release becomes `current` once the command succeeds (`--on-box-promote`).
    promote: bool,
    words: Vec<String>,
}

impl BoxLine {
    fn check(&mut self, check: Check, message: String) {
        self.checks.push((check, message));
    }

    fn render(&self) -> String {
        let q = crate::process::shell_quote;
        let mut line = String::new();
        for (check, message) in &self.checks {
            line.push_str(&format!(
                "if ! {}; then printf '%s\\n' {} >&2; exit 1; fi; ",
                check.shell(),
                q(message)
            ));
        }
        line.push_str(if self.sudo { "exec sudo -n " } else { "exec " });
        let words: Vec<String> = self.words.iter().map(|w| q(w)).collect();
        line.push_str(&words.join(" "));
        line
    }
}

/// True unless the SSH user is root (bootstrap then runs through `sudo -n`).
/// Refuses, before anything is shipped or synced, an include whose directory the SSH user
/// cannot create files in: the box's own check (`Nginx::check_writable`, access(2)) would
/// refuse the deploy only after the image and the project had been sent. `test -w`/`-x` are
/// access(2) too; a directory that does not exist yet is left to the box, as there.
fn check_include_writable(
    session: &mut ssh::Session,
    include: &std::path::Path,
) -> anyhow::Result<()> {
    let Some(dir) = include.parent().filter(|d| d.is_absolute()) else {
        return Ok(());
    };
    let Some(dir_text) = dir.to_str() else {
        return Ok(());
    };
    let script = format!(
        "d={}; if [ -d \"$d\" ] && ! {{ [ -w \"$d\" ] && [ -x \"$d\" ]; }}; then echo \"unwritable $(id -u)\"; fi",
        crate::process::shell_quote(dir_text)
    );
    let out = session.exec_ok(&script, "check the include's directory on the box", None)?;
    let Some(uid) = out.stdout.trim().strip_prefix("unwritable ") else {
        return Ok(());
    };
    let uid = uid.trim().parse().unwrap_or(u32::MAX);
    bail!(
        "{}\n(refused before anything was shipped or synced: nothing changed on the box)",
        crate::nginx::unwritable_include(include, uid, dir, "not writable by the SSH user")
    )
}

fn session_user_is_not_root(session: &mut ssh::Session) -> anyhow::Result<bool> {
    let out = session.exec_ok("id -u", "ask the box who we are (id -u)", None)?;
    match out.stdout.trim() {
        "0" => Ok(false),
        uid if uid.parse::<u32>().is_ok() => Ok(true),
        other => bail!("`id -u` on the box printed {other:?}, expected a number"),
    }
}

/// `remote.dir` as an absolute path on the box: `~/x` and relative paths are under `home`.
fn box_path(dir: &str, home: &str) -> anyhow::Result<String> {
    if dir.contains(['\n', '\0']) || dir.trim().is_empty() {
        bail!("remote.dir {dir:?} is not a usable path");
    }
    let home = home.trim_end_matches('/');
    let path = if let Some(rest) = dir.strip_prefix("~/") {
        format!("{home}/{rest}")
    } else if dir == "~" {
        home.to_string()
    } else if dir.starts_with('/') {
        dir.to_string()
    } else {
        format!("{home}/{dir}")
    };
    Ok(path.trim_end_matches('/').to_string())
}

/// Sortable, unique per invocation: `<unix seconds>.<nanos>-<pid>`.
fn release_stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{:010}.{:09}-{}",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a rendered line in `sh`: (exit code, stdout, stderr).
    fn run_line(line: &BoxLine) -> (Option<i32>, String, String) {
        let out = crate::process::Cmd::new("sh", "run the line")
            .args(["-c", &line.render()])
            .run_unchecked()
            .unwrap();
        (out.code, out.stdout, out.stderr)
    }

    #[test]
    fn the_box_line_quotes_every_value() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("it's $HOME `id`");
        std::fs::create_dir(&odd).unwrap();
        let odd = odd.display().to_string();
        let mut line = BoxLine::default();
        line.check(Check::Exists(odd.clone()), "unused".into());
        line.words = [
            "printf",
            "%s|",
            "-C",
            &odd,
            "a b",
            "--message=-C $(id)",
            "\\n",
        ]
        .map(String::from)
        .to_vec();
        let (code, stdout, _) = run_line(&line);
        assert_eq!(code, Some(0));
        assert_eq!(stdout, format!("-C|{odd}|a b|--message=-C $(id)|\\n|"));
        // A failing check prints its message as it is, and nothing runs.
        let message = "error: it's not there; `cutover --host a@b deploy` $(id) \\n first";
        let gone = dir.path().join("gone 'x'").display().to_string();
        line.check(Check::Exists(gone), message.into());
        let (code, stdout, stderr) = run_line(&line);
        assert_eq!((code, stdout.as_str()), (Some(1), ""));
        assert_eq!(stderr, format!("{message}\n"));
    }

    #[test]
    fn box_paths_expand_home() {
        assert_eq!(
            box_path("~/cutover/app", "/home/d").unwrap(),
            "/home/d/cutover/app"
        );
        assert_eq!(box_path("apps/x/", "/home/d/").unwrap(), "/home/d/apps/x");
        assert_eq!(box_path("/srv/app", "/home/d").unwrap(), "/srv/app");
        assert!(box_path("", "/home/d").is_err());
    }
}
