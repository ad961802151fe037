//! The nft switch's narrow root path, for a deploy user who is not root (a cloud image's
//! `admin` on the README's `--host` path): changing nftables rules needs CAP_NET_ADMIN, so
//! such a user changes exactly one thing as root, their project's rule, through
//! `sudo -n /usr/local/lib/cutover-root/cutover switch-rule …`, which bootstrap allows.
//!
//! Both sides live here:
//! - the root side ([`serve`], `cutover switch-rule`): trusts nothing of its caller but a
//!   project name (validated as a config name: `[a-z0-9_-]`, ≤ 63, so the table name
//!   `cutover_<name>` cannot carry nft syntax) and two colors (a clap enum). The ports it may
//!   map come from the project's grant, `<switch dir>/<project>.grant`, which only bootstrap
//!   (as root) writes from cutover.yml: opened without following a symlink, it must be a
//!   regular file owned by root and writable by no one else, in a directory with the same
//!   checks, and hold four distinct unprivileged ports. A name without a grant (another
//!   project's, one never bootstrapped) is refused. The ruleset is rendered here
//!   (`crate::nft::ruleset`), applied and proven by its echo in one `nft -e -j -f` and saved
//!   for the boot unit. It runs `nft` with root's own PATH (sudo passes the caller's
//!   where sudoers has no `secure_path`), takes turns with other root sides of the project on
//!   the grant's flock and defers SIGTERM/SIGINT/SIGHUP, so the kernel's rule and the saved
//!   one never cross; a caller that gave up before the change (a relayed signal, sudo gone)
//!   gets nothing changed; `set` refuses a switch port something listens on.
//! - the caller side ([`via_sudo`]): the same argv bootstrap wrote into the sudoers rule
//!   ([`argv`] is the one source of both), its JSON [`Reply`] parsed or refused.
//!
//! Why the root side also serves reads (`switch-rule read`), rather than making the saved
//! rulesets readable: `nft -j list table` needs CAP_NET_ADMIN too, and `status` promises the
//! color *the kernel* routes to, not what a file last said (a rule flushed by hand, or by
//! `nftables.service`, must show as missing). The saved files stay root-only, 0600.
//!
//! The sudoers rule lists each argv exactly (no wildcard): seven commands per project, so
//! `sudo` itself refuses another project's name, an extra flag or an option clap would take
//! globally (`--host`, `-C`); the root side's checks are the second wall. `sudo`'s
//! `env_reset` also keeps the caller's environment (`CUTOVER_SWITCH_DIR`) away from it.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::config::{Color, Config};
use crate::nft::Mapping;
use crate::process::Cmd;

/// Where bootstrap installs the root-owned copy of cutover that sudo runs, in root's own
/// directory: never a binary the deploy user can replace (the one `--host` uploads and the
/// boot unit's `/usr/local/lib/cutover/cutover` are theirs).
pub const HELPER: &str = "/usr/local/lib/cutover-root/cutover";

/// Overrides [`HELPER`] on the caller's side (tests); sudo still decides what may run.
pub const HELPER_ENV: &str = "CUTOVER_SWITCH_HELPER";

/// The subcommand's name (the sudoers rule names it).
pub const SUBCOMMAND: &str = "switch-rule";

/// [`HELPER_ENV`] when set, else [`HELPER`].
pub fn helper() -> PathBuf {
    std::env::var_os(HELPER_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| HELPER.into(), PathBuf::from)
}

/// Which ports a project's rule may map: written by bootstrap from cutover.yml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// `nginx.switch_ports`: the primary and the backup.
    pub switch_ports: [u16; 2],
    /// `colors`: the port each color publishes on 127.0.0.1.
    pub blue: u16,
    pub green: u16,
}

impl Grant {
    /// The grant of a config with `nginx.switch_ports` (None without).
    pub fn of(config: &Config) -> Option<Grant> {
        let [primary, backup] = config.nginx.switch_ports?;
        Some(Grant {
            switch_ports: [primary.0, backup.0],
            blue: config.colors.port(Color::Blue),
            green: config.colors.port(Color::Green),
        })
    }

    pub fn port(&self, color: Color) -> u16 {
        match color {
            Color::Blue => self.blue,
            Color::Green => self.green,
        }
    }

    /// The mapping that leads the primary port to `primary`, the backup to `backup`.
    pub fn mapping(&self, primary: Color, backup: Color) -> Mapping {
        Mapping {
            primary: self.switch_ports[0],
            primary_to: self.port(primary),
            backup: self.switch_ports[1],
            backup_to: self.port(backup),
        }
    }

    /// Four distinct unprivileged ports, or why not.
    pub fn check(&self) -> Result<(), String> {
        let ports = [
            self.switch_ports[0],
            self.switch_ports[1],
            self.blue,
            self.green,
        ];
        if let Some(p) = ports.iter().find(|p| **p < 1024) {
            return Err(format!(
                "port {p} is below 1024 (expected unprivileged ports only)"
            ));
        }
        for (i, p) in ports.iter().enumerate() {
            if ports[..i].contains(p) {
                return Err(format!(
                    "port {p} appears twice (expected four distinct ports)"
                ));
            }
        }
        Ok(())
    }
}

/// The grant file of `project` in the switch directory `dir`.
pub fn grant_path(dir: &Path, project: &str) -> PathBuf {
    dir.join(format!("{project}.grant"))
}

/// The grant file's text.
pub fn grant_text(grant: &Grant) -> String {
    let mut text = serde_json::to_string_pretty(grant).expect("a grant serializes");
    text.push('\n');
    text
}

/// What the root side is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Set { primary: Color, backup: Color },
    Remove,
}

/// The arguments after the helper's path: the same in the sudoers rule and in the call.
pub fn argv(project: &str, action: Action) -> Vec<String> {
    let mut out = vec![SUBCOMMAND.to_string()];
    match action {
        Action::Read => out.extend(["read".into(), project.into()]),
        Action::Remove => out.extend(["remove".into(), project.into()]),
        Action::Set { primary, backup } => out.extend([
            "set".into(),
            project.into(),
            primary.as_str().into(),
            backup.as_str().into(),
        ]),
    }
    out
}

/// Every action a deploy may ask for: the sudoers rule lists exactly these.
pub fn every_action() -> Vec<Action> {
    let mut all = vec![Action::Read, Action::Remove];
    for primary in Color::ALL {
        for backup in Color::ALL {
            all.push(Action::Set { primary, backup });
        }
    }
    all
}

/// The sudoers drop-in letting `user` run exactly `project`'s switch-rule commands as root.
pub fn sudoers(user: &str, project: &str, helper: &Path) -> String {
    let commands: Vec<String> = every_action()
        .into_iter()
        .map(|a| format!("{} {}", helper.display(), argv(project, a).join(" ")))
        .collect();
    format!(
        "# Written by `cutover bootstrap`: {user} deploys project {project} with nginx.switch:\n\
         # nft and may change its nftables rule as root, through exactly these commands (the\n\
         # ports come from the root-owned grant, never from the caller).\n\
         {user} ALL=(root) NOPASSWD: {}\n",
        commands.join(", ")
    )
}

/// Where the sudoers drop-in of `project` lives (a name with a `.` would be skipped by sudo;
/// project names have none).
pub fn sudoers_path(project: &str) -> PathBuf {
    PathBuf::from(format!("/etc/sudoers.d/cutover-switch-{project}"))
}

/// The root side's answer, on stdout as one JSON document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub project: String,
    /// The grant the root side used.
    pub grant: Grant,
    /// The rule in the kernel after the action (None: no table).
    pub mapping: Option<Mapping>,
    /// A table that exists but no longer maps both ports (edited by hand), in words.
    pub unmapped: Option<String>,
}

/// The root side: checks, then does `action` for `project` with the ports of its grant.
pub fn serve(project: &str, action: Action) -> anyhow::Result<Reply> {
    if !rustix::process::geteuid().is_root() {
        anyhow::bail!(
            "`cutover {SUBCOMMAND}` changes nftables rules and runs as root: through `sudo -n \
             {HELPER} {SUBCOMMAND} …`, as `cutover bootstrap` allows the deploy user"
        );
    }
    // sudo keeps the caller's PATH where sudoers sets no `secure_path` (not every distro's
    // default does): the `nft` this runs as root must be root's, never one the caller put first.
    std::env::set_var("PATH", ROOT_PATH);
    // A caller that gives up (its timeout kills sudo, which relays SIGTERM or SIGHUP) must
    // not stop this between the kernel's change and its save: the signals are noted and
    // ignored; this ends on its own (after the lock: within the other root side's `nft` timeout).
    let deferred = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, deferred.clone())
            .context("defer the signals that would stop a switch half done")?;
    }
    // sudo, whose death (the caller's timeout SIGKILLs it; this root process outlives it)
    // reparents this one: see `gave_up`.
    let parent = rustix::process::getppid();
    let gave_up = || {
        if deferred.load(std::sync::atomic::Ordering::SeqCst)
            || rustix::process::getppid() != parent
        {
            // A caller that gave up goes on as if nothing changed (it undoes, or reports):
            // a change made now, after its undo perhaps, would contradict it.
            anyhow::bail!(
                "the caller gave up (sudo ended, or relayed a signal) before project {project}'s \
                 rule was changed: nothing done"
            );
        }
        Ok(())
    };
    let name =
        crate::config::Name::parse(project).map_err(|e| anyhow::anyhow!("project name: {e}"))?;
    let project = name.as_str();
    let dir = crate::nft::saved_dir();
    let (grant_file, grant) = open_grant(&dir, project)?;
    // One root side per project at a time (two deploys, or a caller's undo started while the
    // call it gave up on still runs): the kernel's rule and the saved file are then written in
    // the same order, never crossed so that the boot restores a color the kernel left.
    rustix::fs::flock(&grant_file, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("lock {}", grant_path(&dir, project).display()))?;
    let [primary, backup] = grant.switch_ports;
    let (mapping, unmapped) = match action {
        Action::Read => match crate::nft::read(project, primary, backup) {
            Ok(m) => (m, None),
            Err(e) => match e.downcast_ref::<crate::nft::Unmapped>() {
                Some(u) => (None, Some(u.to_string())),
                None => return Err(e),
            },
        },
        Action::Set { primary, backup } => {
            // The engine checks this too, but the caller may be the deploy user at a shell:
            // a switch port something listens on (a database a root-bootstrapped grant
            // happens to name) would hand this box's own clients of it to the app.
            let taken = crate::host::listening_on_any(&grant.switch_ports)
                .context("check that nothing listens on the grant's switch ports")?;
            if let Some(which) = taken.which() {
                anyhow::bail!(
                    "something listens on {which}, a switch port of {}: the rule would \
                     send this box's own connections to it on 127.0.0.1 to project \
                     {project}'s app instead; refusing (expected switch ports nothing \
                     listens on: change nginx.switch_ports and run `cutover bootstrap` again)",
                    grant_path(&dir, project).display()
                );
            }
            let m = grant.mapping(primary, backup);
            gave_up()?;
            crate::nft::switch(project, &m, &dir)?;
            (Some(m), None)
        }
        Action::Remove => {
            gave_up()?;
            crate::nft::remove(project, &dir)?;
            (None, None)
        }
    };
    Ok(Reply {
        project: project.to_string(),
        grant,
        mapping,
        unmapped,
    })
}

/// The PATH the root side runs `nft` with: root's directories only (not `/usr/local`, which
/// some distros let the `staff` group write).
pub const ROOT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// The grant of `project`, trusted only when only root could have written it.
pub fn read_grant(dir: &Path, project: &str) -> anyhow::Result<Grant> {
    open_grant(dir, project).map(|(_, grant)| grant)
}

/// [`read_grant`], with the open grant file (the root side locks it).
fn open_grant(dir: &Path, project: &str) -> anyhow::Result<(std::fs::File, Grant)> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let trusted = |meta: &std::fs::Metadata| meta.uid() == 0 && meta.mode() & 0o022 == 0;
    let dmeta = std::fs::symlink_metadata(dir).with_context(|| {
        format!(
            "no switch directory {}: run `cutover bootstrap` with nginx.switch: nft",
            dir.display()
        )
    })?;
    if !dmeta.is_dir() || !trusted(&dmeta) {
        anyhow::bail!(
            "{} is not a directory only root can write (a symlink, or mode {:o}, uid {}): \
             refusing its grants",
            dir.display(),
            dmeta.mode() & 0o7777,
            dmeta.uid()
        );
    }
    let path = grant_path(dir, project);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "project {project} has no switch grant on this box ({} is missing): `cutover \
                     bootstrap` writes it, as root, from a cutover.yml with nginx.switch_ports",
                    path.display()
                )
            } else {
                anyhow::anyhow!("open {} (a symlink is refused): {e}", path.display())
            }
        })?;
    let meta = file
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?;
    if !meta.is_file() || !trusted(&meta) {
        anyhow::bail!(
            "{} is not a regular file only root can write (mode {:o}, uid {}): refusing it",
            path.display(),
            meta.mode() & 0o7777,
            meta.uid()
        );
    }
    let mut text = String::new();
    file.by_ref()
        .take(4096)
        .read_to_string(&mut text)
        .with_context(|| format!("read {}", path.display()))?;
    let grant: Grant = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a switch grant (expected {{\"switch_ports\": [P, B], \"blue\": N, \"green\": N}})",
            path.display()
        )
    })?;
    grant
        .check()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((file, grant))
}

/// How long the root side may take: a sudo, a process start, one nft transaction.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The caller's side: `sudo -n <helper> switch-rule …`, its reply parsed (fail closed).
pub fn via_sudo(project: &str, action: Action) -> anyhow::Result<Reply> {
    let helper = helper();
    let cmd = Cmd::new(
        "sudo",
        format!("change project {project}'s nft switch rule as root"),
    )
    .arg("-n")
    .arg(&helper)
    .args(argv(project, action))
    .timeout(TIMEOUT);
    let out = cmd.run()?;
    let reply: Reply = serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "`{}` printed something that is not its JSON reply",
            cmd.display()
        )
    })?;
    if reply.project != project {
        anyhow::bail!(
            "`{}` answered for project {}, not {project}",
            cmd.display(),
            reply.project
        );
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sudoers_rule_lists_exactly_the_argv_the_caller_runs() {
        let text = sudoers("admin", "web", Path::new(HELPER));
        let rule = text.lines().find(|l| l.starts_with("admin ")).unwrap();
        assert!(!rule.contains('*'), "{rule}");
        let cmds: Vec<&str> = rule
            .trim_start_matches("admin ALL=(root) NOPASSWD: ")
            .split(", ")
            .collect();
        assert_eq!(cmds.len(), 6, "{rule}");
        for a in every_action() {
            let want = format!("{HELPER} {}", argv("web", a).join(" "));
            assert!(cmds.contains(&want.as_str()), "{want} not in {rule}");
        }
        assert!(
            cmds.contains(&"/usr/local/lib/cutover-root/cutover switch-rule set web green blue")
        );
    }

    #[test]
    fn a_grant_maps_only_its_own_ports_and_refuses_absurd_ones() {
        let g = Grant {
            switch_ports: [9100, 9101],
            blue: 9011,
            green: 9012,
        };
        assert_eq!(g.check(), Ok(()));
        let m = g.mapping(Color::Green, Color::Blue);
        assert_eq!(
            (m.primary, m.primary_to, m.backup, m.backup_to),
            (9100, 9012, 9101, 9011)
        );
        let low = Grant { blue: 22, ..g };
        assert!(low.check().unwrap_err().contains("port 22 is below 1024"));
        let twice = Grant { green: 9100, ..g };
        assert!(twice
            .check()
            .unwrap_err()
            .contains("port 9100 appears twice"));
        assert!(serde_json::from_str::<Grant>(
            r#"{"switch_ports":[9100,9101],"blue":9011,"green":70000}"#
        )
        .is_err());
        assert_eq!(serde_json::from_str::<Grant>(&grant_text(&g)).unwrap(), g);
    }

    #[test]
    fn a_grant_only_root_could_write_is_the_only_one_read() {
        use std::os::unix::fs::PermissionsExt as _;
        // The tests run as root (the suite's rule); as another user every file is refused.
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("switch");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let g = Grant {
            switch_ports: [9100, 9101],
            blue: 9011,
            green: 9012,
        };
        std::fs::write(grant_path(&dir, "web"), grant_text(&g)).unwrap();
        std::fs::set_permissions(
            grant_path(&dir, "web"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert_eq!(read_grant(&dir, "web").unwrap(), g);
        let e = read_grant(&dir, "other").unwrap_err().to_string();
        assert!(e.contains("project other has no switch grant"), "{e}");
        std::os::unix::fs::symlink(grant_path(&dir, "web"), grant_path(&dir, "link")).unwrap();
        let e = read_grant(&dir, "link").unwrap_err().to_string();
        assert!(e.contains("a symlink is refused"), "{e}");
        std::fs::set_permissions(
            grant_path(&dir, "web"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let e = read_grant(&dir, "web").unwrap_err().to_string();
        assert!(
            e.contains("not a regular file only root can write (mode 666"),
            "{e}"
        );
    }
}
