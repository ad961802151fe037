//! `cutover bootstrap`: the steps that make a fresh box ready for deploys, and the report
//! they produce.
//!
//! The steps are one list, [`STEPS`]: each [`StepDef`], in its step's file, names the step,
//! runs it (in every mode below) and gives its part of the `--cloud-init` user-data
//! (`cloud_init.rs` builds the document from the same list), or the reason it has none.
//! [`Options::new`] decides what a run uses where the flags and the config say nothing.
//!
//! Every step is idempotent: it looks at the box first and changes only what differs, so a
//! second run reports every step `ok` and a half-finished first run can simply be re-run
//! (the seed scripts' copy-pasted `dd … >> /etc/fstab` duplicated lines on every run).
//!
//! Where changes land is decided in one place, [`Target`], so no step can forget a mode:
//! - live: files under `/`, live-system commands (swapon, sysctl, systemctl, package
//!   installs, usermod, nginx reload) run; needs root;
//! - `--root DIR`: every file change lands under DIR (image building, tests); commands that
//!   only touch files (`fallocate`, `dd`, `mkswap`) run, live-system ones are listed as not
//!   run, so they can be replayed on the box;
//! - `--dry-run`: nothing changes; every change and command is listed as what would happen.
//!
//! Nothing here prints: the command layer (`cmd/bootstrap.rs`) turns the [`Report`] into
//! lines or JSON. Secret material (the box's age identity) never enters the report.

pub mod boot_secrets;
pub mod boot_switch;
pub mod cloud_init;
pub mod distro;
pub mod identity;
pub mod nginx_access;
pub mod nginx_site;
pub mod packages;
pub mod services;
pub mod state_dir;
pub mod swap;
pub mod sysctl;
pub mod tls;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::config::{Host, Loaded, Swap, Swappiness};
use crate::process::Cmd;
use crate::render::Renderer;

/// What the operator asked for on the command line; [`Options::new`] adds the rest.
#[derive(Debug, Clone)]
pub struct Asked {
    pub target: Target,
    /// `--swap`; `None`: the project's `host.swap`, else its default.
    pub swap: Option<Swap>,
    /// Not `--no-install`.
    pub install: bool,
    /// `--user`.
    pub user: Option<String>,
}

/// Everything a bootstrap run needs: what was asked, the project's settings and files, and
/// the box's defaults where neither says.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    pub swap: Swap,
    pub swappiness: Swappiness,
    pub install: bool,
    /// The deploy user (docker group member, owner of the box identity).
    pub user: Option<String>,
    /// The nginx files of the project; `None` without a cutover.yml.
    pub nginx: Option<nginx_site::Files>,
    /// Why there are no nginx files (shown as the skip reason).
    pub no_config_reason: String,
    /// The project's state dir and the project dir whose owner it gets; `None` without config.
    pub state_dir: Option<(PathBuf, PathBuf)>,
    /// Where the box's own age identity lives (live path; mapped under `--root`).
    pub identity: PathBuf,
    /// The project's HTTPS (`nginx.tls`); `None` without config or without `nginx.tls`.
    pub tls: Option<tls::Plan>,
    /// The project may switch by nftables (`nginx.switch: nft`, or `auto` with
    /// `nginx.switch_ports`): the packages step installs `nft`.
    pub nft: bool,
    /// With `nft`: the project's name and the ports its rule may map, which the "nft switch
    /// at boot" step writes as the root side's grant (`crate::switch_rule`).
    pub switch_grant: Option<(String, crate::switch_rule::Grant)>,
}

impl Options {
    /// The options of a run: `asked`, and with a cutover.yml (`project`, read from
    /// `config_path`) its `host:` settings, nginx files, state dir and TLS plan.
    pub fn new(
        asked: Asked,
        project: Option<&Loaded>,
        config_path: &Path,
        renderer: &Renderer,
    ) -> anyhow::Result<Options> {
        let host = host_settings(project);
        let nginx = match project {
            Some(loaded) => Some(nginx_site::Files::of(renderer, loaded, &asked.target)?),
            None => None,
        };
        let tls = match project {
            Some(loaded) => tls::Plan::of(loaded, renderer)?,
            None => None,
        };
        Ok(Options {
            swap: asked.swap.unwrap_or(host.swap),
            swappiness: host.swappiness,
            install: asked.install,
            user: asked.user,
            nginx,
            no_config_reason: format!(
                "no {}: run bootstrap in the project directory (or with -C DIR) to include it",
                config_path.display()
            ),
            state_dir: project.map(|l| (l.state_dir(), l.dir.clone())),
            identity: PathBuf::from(identity::DEFAULT_PATH),
            tls,
            nft: project.is_some_and(|loaded| wants_nft(&loaded.config)),
            switch_grant: project
                .filter(|loaded| wants_nft(&loaded.config))
                .and_then(|loaded| {
                    let grant = crate::switch_rule::Grant::of(&loaded.config)?;
                    Some((loaded.config.project.as_str().to_string(), grant))
                }),
            target: asked.target,
        })
    }
}

/// Whether the project may switch colors by nftables, so the box needs `nft`.
fn wants_nft(config: &crate::config::Config) -> bool {
    use crate::config::SwitchMode;
    match config.nginx.switch {
        SwitchMode::Nft => true,
        SwitchMode::Auto => config.nginx.switch_ports.is_some(),
        SwitchMode::Reload => false,
    }
}

/// The box settings of a run: the project's `host:`, else the defaults of a cutover.yml
/// without one (`--swap auto`'s table, swappiness 10), so a box bootstrapped before its
/// project arrives is the box that project would have made, and a rerun with it changes
/// nothing.
fn host_settings(project: Option<&Loaded>) -> Host {
    project
        .map(|loaded| loaded.config.host.clone())
        .unwrap_or_default()
}

/// Where changes land: see the module docs for the three modes.
#[derive(Debug, Clone)]
pub struct Target {
    pub root: Option<PathBuf>,
    pub dry_run: bool,
}

/// Where a run's changes land, decided from `--root` and `--dry-run` once; `--json` names it
/// (`"mode"`) with these words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// On this box, for real.
    #[serde(rename = "live")]
    Live,
    /// Files under `--root`; live-system commands are listed, not run.
    #[serde(rename = "root")]
    Root,
    /// On this box, as a plan: nothing changes.
    #[serde(rename = "dry-run")]
    DryRun,
    /// Under `--root`, as a plan.
    #[serde(rename = "root dry-run")]
    RootDryRun,
}

impl Target {
    /// Which of the four modes this target is.
    pub fn mode(&self) -> Mode {
        match (&self.root, self.dry_run) {
            (None, false) => Mode::Live,
            (Some(_), false) => Mode::Root,
            (None, true) => Mode::DryRun,
            (Some(_), true) => Mode::RootDryRun,
        }
    }

    /// The path a live-system path maps to: itself, or the same path under `--root`.
    pub fn path(&self, live: &Path) -> PathBuf {
        match &self.root {
            Some(root) => root.join(live.strip_prefix("/").unwrap_or(live)),
            None => live.to_path_buf(),
        }
    }

    /// Whether live-system commands run (not under `--root`, not in a dry run).
    pub fn live(&self) -> bool {
        self.root.is_none() && !self.dry_run
    }

    /// Whether the live system's state (`/proc/swaps`, installed tools, services) is the
    /// state that matters: true unless `--root` points elsewhere.
    pub fn on_live_system(&self) -> bool {
        self.root.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Already as wanted; nothing changed.
    Ok,
    /// Something changed (or, in a dry run, would change).
    Changed,
    /// Not applicable or not asked for; `reason` says why.
    Skipped,
    /// The step failed; the run stopped here.
    Failed,
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub status: Status,
    /// One line: what the step found or did, or why it was skipped.
    pub summary: String,
    /// Each change made (or, in a dry run, that would be made), including commands run.
    pub changes: Vec<String>,
    /// Live-system commands not run because of `--root` (to replay on the box).
    pub not_run: Vec<String>,
    /// Things the operator should know or do by hand.
    pub notes: Vec<String>,
    /// The error chain when the step failed (never holds secret material).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the step took (an apt install is minutes on a small box; the rest, seconds).
    pub seconds: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub root: Option<PathBuf>,
    pub dry_run: bool,
    pub steps: Vec<Step>,
    /// The box identity's public key (an age recipient: safe to print and commit).
    pub recipient: Option<String>,
    pub identity_path: Option<PathBuf>,
}

impl Report {
    pub fn failed(&self) -> Option<&Step> {
        self.steps.iter().find(|s| s.status == Status::Failed)
    }

    pub fn changed(&self) -> bool {
        self.steps.iter().any(|s| s.status == Status::Changed)
    }

    pub fn not_run(&self) -> impl Iterator<Item = &String> {
        self.steps.iter().flat_map(|s| &s.not_run)
    }
}

/// A step in progress: records changes and routes commands by mode.
pub struct StepRun<'a> {
    pub target: &'a Target,
    step: Step,
}

impl<'a> StepRun<'a> {
    fn new(target: &'a Target, name: &'static str) -> Self {
        StepRun {
            target,
            step: Step {
                name,
                status: Status::Ok,
                summary: String::new(),
                changes: Vec::new(),
                not_run: Vec::new(),
                notes: Vec::new(),
                error: None,
                seconds: 0.0,
            },
        }
    }

    pub fn summary(&mut self, text: impl Into<String>) {
        self.step.summary = text.into();
    }

    pub fn change(&mut self, what: impl Into<String>) {
        self.step.changes.push(what.into());
        self.step.status = Status::Changed;
    }

    pub fn note(&mut self, what: impl Into<String>) {
        self.step.notes.push(what.into());
    }

    pub fn skip(&mut self, reason: impl Into<String>) {
        self.step.status = Status::Skipped;
        self.step.summary = reason.into();
    }

    pub fn dry_run(&self) -> bool {
        self.target.dry_run
    }

    /// A live-system command: runs live, is listed under `--root`, is a planned change in a
    /// dry run. Returns the output when it ran.
    pub fn live_command(&mut self, cmd: &Cmd) -> anyhow::Result<Option<crate::process::Output>> {
        if self.target.root.is_some() {
            self.step.not_run.push(cmd.display());
            return Ok(None);
        }
        self.change(format!("run `{}`", cmd.display()));
        if self.target.dry_run {
            return Ok(None);
        }
        Ok(Some(cmd.run()?))
    }

    /// A command that only writes files we own (mkswap on the swap file): runs unless dry.
    pub fn file_command(&mut self, cmd: &Cmd) -> anyhow::Result<()> {
        self.change(format!("run `{}`", cmd.display()));
        if !self.target.dry_run {
            cmd.run()?;
        }
        Ok(())
    }

    /// Writes `contents` to the live path `live` (mapped under `--root`) when it differs,
    /// and fixes its mode; returns whether anything changed.
    pub fn write_file(&mut self, live: &Path, contents: &[u8], mode: u32) -> anyhow::Result<bool> {
        let path = self.target.path(live);
        let current = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
        };
        if current.as_deref() == Some(contents) {
            return self.ensure_mode(&path, mode, false);
        }
        let verb = if current.is_some() {
            "update"
        } else {
            "create"
        };
        self.change(format!("{verb} {} (mode {mode:04o})", path.display()));
        if !self.target.dry_run {
            crate::atomic::write(&path, contents, mode)?;
        }
        Ok(true)
    }

    /// Sets `path`'s permission bits to `mode` when they differ (or, with `only_looser`,
    /// only when they grant more than `mode`); returns whether anything changed.
    pub fn ensure_mode(
        &mut self,
        path: &Path,
        mode: u32,
        only_looser: bool,
    ) -> anyhow::Result<bool> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("could not read the metadata of {}", path.display()))?;
        let current = meta.permissions().mode() & 0o7777;
        let wrong = if only_looser {
            current & !mode != 0
        } else {
            current != mode
        };
        if !wrong {
            return Ok(false);
        }
        self.change(format!(
            "chmod {mode:04o} {} (was {current:04o})",
            path.display()
        ));
        if !self.target.dry_run {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("could not chmod {}", path.display()))?;
        }
        Ok(true)
    }

    fn finish(mut self, result: anyhow::Result<()>) -> Step {
        if let Err(err) = result {
            self.step.status = Status::Failed;
            self.step.error = Some(format!("{err:#}"));
        }
        if self.step.summary.is_empty() {
            self.step.summary = match self.step.status {
                Status::Ok => "already as wanted".into(),
                Status::Changed if self.target.dry_run => "would change".into(),
                Status::Changed => "changed".into(),
                Status::Failed => "failed (the error follows)".into(),
                Status::Skipped => "skipped".into(),
            };
        }
        self.step
    }
}

/// Why a run cannot start. The command layer prints it; nothing has changed yet.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "bootstrap changes system files and services and must run as root (it is running as uid {0}); \
         rerun with sudo, or use --dry-run to see the plan or --root DIR to write the files under DIR"
    )]
    NotRoot(u32),
}

/// The effective uid of this process, from `/proc/self/status` (no libc binding needed).
pub fn effective_uid() -> anyhow::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("could not read /proc/self/status to learn the effective uid")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .context("no effective uid in /proc/self/status")
}

/// Refuses a live run by a non-root user before anything changes.
pub fn check_privileges(target: &Target) -> anyhow::Result<()> {
    if target.root.is_some() || target.dry_run {
        return Ok(());
    }
    let uid = effective_uid()?;
    if uid != 0 {
        return Err(Refused::NotRoot(uid).into());
    }
    Ok(())
}

/// One bootstrap step, whole: the live run and `--cloud-init` both read it from [`STEPS`].
pub struct StepDef {
    /// Its name in the report and in `--json` (scripts read it: never renamed).
    pub name: &'static str,
    /// Runs it live, under `--root` or as a dry run ([`StepRun`] routes each change by
    /// mode); a step may add a fact to the report (the identity step: the public key).
    pub run: fn(&Options, &mut StepRun<'_>, &mut Report) -> anyhow::Result<()>,
    /// What it puts in the `--cloud-init` user-data, or why nothing.
    pub cloud_init: cloud_init::Part,
}

/// Every step, in the order they run, are reported and write their part of the user-data.
/// A new step is a file with its [`StepDef`] and a line here.
pub const STEPS: &[StepDef] = &[
    swap::FILE,
    swap::SWAPON,
    swap::FSTAB,
    sysctl::STEP,
    packages::STEP,
    services::SERVICES,
    services::DOCKER_GROUP,
    nginx_access::STEP,
    nginx_site::STEP,
    tls::STEP,
    state_dir::STEP,
    identity::STEP,
    boot_secrets::STEP,
    boot_switch::STEP,
];

/// Runs every step in order; a failed step stops the run and is the last step reported.
pub fn run(opts: &Options) -> Report {
    let target = &opts.target;
    let mut report = Report {
        mode: target.mode(),
        root: target.root.clone(),
        dry_run: target.dry_run,
        steps: Vec::new(),
        recipient: None,
        identity_path: None,
    };
    for def in STEPS {
        let started = std::time::Instant::now();
        let mut step = StepRun::new(target, def.name);
        let result = (def.run)(opts, &mut step, &mut report);
        let mut step = step.finish(result);
        step.seconds = started.elapsed().as_secs_f64();
        let failed = step.status == Status::Failed;
        report.steps.push(step);
        if failed {
            break;
        }
    }
    report
}

/// Runs one step on its own (`cutover tls issue`), as [`run`] would run it.
pub fn run_step(
    target: &Target,
    name: &'static str,
    f: impl FnOnce(&mut StepRun<'_>) -> anyhow::Result<()>,
) -> Step {
    let started = std::time::Instant::now();
    let mut step = StepRun::new(target, name);
    let result = f(&mut step);
    let mut step = step.finish(result);
    step.seconds = started.elapsed().as_secs_f64();
    step
}

/// Finds a system binary that may live in an sbin directory missing from a user's PATH.
/// Found on PATH it stays a bare name, so listed commands read as typed.
pub fn sbin(program: &str) -> PathBuf {
    crate::process::which(program)
        .map(|_| PathBuf::from(program))
        .or_else(|| {
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(program))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn nft_is_wanted_by_nft_and_by_auto_with_switch_ports_only() {
        let config = |nginx: &str| {
            let text = format!(
                "project: shop\napp: {{ name: web, image: example/web, port: 3000, memory: 64M }}\n\
                 colors: {{ blue: 8081, green: 8082 }}\nnginx: {nginx}\n"
            );
            crate::config::Config::from_yaml(&text, Path::new("cutover.yml")).unwrap()
        };
        let ports = "switch_ports: [9101, 9102]";
        assert!(wants_nft(&config(&format!("{{ switch: nft, {ports} }}"))));
        assert!(wants_nft(&config(&format!("{{ switch: auto, {ports} }}"))));
        assert!(!wants_nft(&config("{ switch: auto }")));
        assert!(!wants_nft(&config(&format!(
            "{{ switch: reload, {ports} }}"
        ))));
        assert!(!wants_nft(&config("{}")));
    }

    #[test]
    fn target_maps_live_paths_under_root() {
        let t = Target {
            root: Some("/tmp/r".into()),
            dry_run: false,
        };
        assert_eq!(
            t.path(Path::new("/etc/fstab")),
            Path::new("/tmp/r/etc/fstab")
        );
        let live = Target {
            root: None,
            dry_run: false,
        };
        assert_eq!(live.path(Path::new("/etc/fstab")), Path::new("/etc/fstab"));
    }

    #[test]
    fn the_box_gets_the_projects_host_settings_else_a_cutover_yml_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cutover.yml");
        let renderer = Renderer::new(dir.path()).unwrap();
        let asked = |swap| Asked {
            target: Target {
                root: None,
                dry_run: true,
            },
            swap,
            install: true,
            user: None,
        };
        let bare = Options::new(asked(None), None, &config, &renderer).unwrap();
        assert_eq!((bare.swap, bare.swappiness), (Swap::Auto, Swappiness(10)));
        assert!(bare.nginx.is_none() && bare.state_dir.is_none() && bare.tls.is_none());

        std::fs::write(
            &config,
            "project: app\napp: { name: web, image: example/web, port: 3000, memory: 128M }\n\
             colors: { blue: 9001, green: 9002 }\nhost: { swap: 1G, swappiness: 5 }\n",
        )
        .unwrap();
        let loaded = crate::config::load(&config, dir.path()).unwrap();
        let project = Options::new(asked(None), Some(&loaded), &config, &renderer).unwrap();
        assert_eq!(
            (project.swap, project.swappiness),
            (Swap::parse("1G").unwrap(), Swappiness(5))
        );
        assert!(project.nginx.is_some() && project.state_dir.is_some());
        // --swap wins over host.swap; swappiness has no flag.
        let flag = Options::new(asked(Some(Swap::Auto)), Some(&loaded), &config, &renderer);
        let flag = flag.unwrap();
        assert_eq!((flag.swap, flag.swappiness), (Swap::Auto, Swappiness(5)));
    }

    #[test]
    fn effective_uid_matches_proc() {
        let uid = effective_uid().unwrap();
        let meta = std::fs::metadata("/proc/self").unwrap();
        assert_eq!(uid, meta.uid());
    }
}
