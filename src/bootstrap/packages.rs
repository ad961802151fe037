//! Which packages give a box docker, compose and nginx, by distribution, and installing the
//! missing ones with apt or dnf.
//!
//! The distribution comes from `/etc/os-release` (`distro.rs`: `ID`, then `ID_LIKE`); a
//! `--cloud-init` user-data names its [`Distro`] instead. What is missing is decided by tool, not by package name: a box
//! with Docker's own `docker-ce` + `docker-compose-plugin` already has docker and compose,
//! and installing `docker.io` over them would conflict. Amazon Linux 2023 packages no
//! compose at all; the step says exactly how to add the official plugin binary instead of
//! downloading an unverified binary itself. With `nginx.tls` configured, certbot (the ACME
//! client the `tls` step runs) is one more tool, installed the same way; so is `nft` when the
//! project may switch by nftables (`nginx.switch: nft`, or `auto` with `switch_ports`):
//! minimal images lack it.

use std::path::Path;

use super::cloud_init::{Instance, Part, View};
use super::distro::{Distro, OsRelease};
use super::{sbin, Options, StepDef, StepRun};
use crate::process::Cmd;

/// Step "packages"; the user-data lists the image's packages (certbot is not among them:
/// the `tls` step has no part there).
pub const STEP: StepDef = StepDef {
    name: "packages",
    run: |opts, s, _| step(opts, s),
    cloud_init: Part::Writes(cloud_init),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Apt,
    Dnf,
}

/// The packages for each tool on one distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub manager: Manager,
    pub docker: &'static str,
    /// `None`: the distribution packages no compose (see [`COMPOSE_BY_HAND`]).
    pub compose: Option<&'static str>,
    pub nginx: &'static str,
}

/// The package of certbot, the same name on every distribution cutover plans for.
pub const CERTBOT: &str = "certbot";

/// The package of `nft`, the same name on every distribution cutover plans for.
pub const NFTABLES: &str = "nftables";

/// What to run on Amazon Linux 2023, which packages no docker compose: the official
/// plugin binary from Docker's GitHub releases, where `docker compose` looks for plugins.
pub const COMPOSE_BY_HAND: &str = "sudo mkdir -p /usr/local/lib/docker/cli-plugins && \
sudo curl -fsSL -o /usr/local/lib/docker/cli-plugins/docker-compose \
\"https://github.com/docker/compose/releases/latest/download/docker-compose-linux-$(uname -m)\" && \
sudo chmod 0755 /usr/local/lib/docker/cli-plugins/docker-compose && docker compose version";

/// The package plan for a box's distribution, or why there is none.
pub fn plan(os: &OsRelease) -> Result<Plan, String> {
    Distro::of(os).map(plan_for).ok_or_else(|| {
        format!(
            "no package plan for {} (ID={}): install docker, docker compose and nginx yourself, \
             then rerun with --no-install",
            if os.pretty_name.is_empty() {
                "this distribution"
            } else {
                &os.pretty_name
            },
            os.id
        )
    })
}

/// The packages that give `distro` docker, compose and nginx.
pub fn plan_for(distro: Distro) -> Plan {
    match distro {
        // Ubuntu >= 22.04 ships compose v2 as docker-compose-v2 (universe).
        Distro::Ubuntu => Plan {
            manager: Manager::Apt,
            docker: "docker.io",
            compose: Some("docker-compose-v2"),
            nginx: "nginx",
        },
        // Debian's docker-compose is v1 (1.29) up to bookworm and v2 from trixie; cutover
        // supports both.
        Distro::Debian => Plan {
            manager: Manager::Apt,
            docker: "docker.io",
            compose: Some("docker-compose"),
            nginx: "nginx",
        },
        Distro::Amzn => Plan {
            manager: Manager::Dnf,
            docker: "docker",
            compose: None,
            nginx: "nginx",
        },
        Distro::Fedora => Plan {
            manager: Manager::Dnf,
            docker: "moby-engine",
            compose: Some("docker-compose"),
            nginx: "nginx",
        },
    }
}

/// The install commands for `packages` (apt refreshes its lists first: a fresh EC2 image's
/// lists are stale or empty). No recommends: on Debian they add git, perl's needrestart and
/// more (~70 packages), minutes of unpacking on a small box, and nothing cutover uses.
pub fn install_commands(manager: Manager, packages: &[&str]) -> Vec<Cmd> {
    match manager {
        Manager::Apt => apt_commands(packages),
        Manager::Dnf => vec![Cmd::new("dnf", format!("install {}", packages.join(" ")))
            .args(["install", "-y", "-q"])
            .args(packages)],
    }
}

/// apt's update + install. docker.io only *recommends* apparmor, but on a kernel with AppArmor
/// enabled (Debian's, Ubuntu's) dockerd then refuses to start any container ("AppArmor
/// enabled on system but the docker-default profile could not be loaded"): seen on a fresh
/// Debian 12 box, so it is installed with docker.io.
fn apt_commands(packages: &[&str]) -> Vec<Cmd> {
    let mut packages = packages.to_vec();
    if packages.contains(&"docker.io") {
        packages.push("apparmor");
    }
    let summary = format!("install {}", packages.join(" "));
    vec![
        Cmd::new("apt-get", "refresh the apt package lists")
            .args(["update", "-q"])
            .plain_env("DEBIAN_FRONTEND", "noninteractive"),
        Cmd::new("apt-get", summary)
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&packages)
            .plain_env("DEBIAN_FRONTEND", "noninteractive"),
    ]
}

/// Which tools this box has: docker, compose (v2 plugin or v1), nginx.
#[derive(Debug, Clone, Copy)]
pub struct Present {
    pub docker: bool,
    pub compose: bool,
    pub nginx: bool,
}

impl Present {
    pub fn probe() -> Present {
        let docker = crate::process::which("docker").is_some();
        let compose = crate::process::which("docker-compose").is_some()
            || (docker && crate::docker::compose::plugin_answers());
        let nginx = crate::process::which("nginx").is_some() || sbin("nginx").is_absolute();
        Present {
            docker,
            compose,
            nginx,
        }
    }
}

/// Whether `nft` is installed (on PATH or in an sbin dir: a sudo user's PATH often lacks it).
fn nft_present() -> bool {
    sbin("nft").is_absolute() || crate::process::which("nft").is_some()
}

/// Whether certbot is installed (on PATH or in an sbin dir).
fn certbot_present() -> bool {
    crate::process::which("certbot").is_some() || sbin("certbot").is_absolute()
}

fn cloud_init(instance: &Instance<'_>, view: &mut View) {
    let plan = plan_for(instance.os);
    let packages = [
        Some(plan.docker),
        plan.compose,
        Some(plan.nginx),
        instance.opts.nft.then_some(NFTABLES),
    ];
    view.packages
        .extend(packages.into_iter().flatten().map(str::to_string));
    if plan.compose.is_none() {
        view.note(format!(
            "{} packages no docker compose; once booted: {COMPOSE_BY_HAND}",
            instance.os.id()
        ));
    }
}

pub fn step(opts: &Options, step: &mut StepRun<'_>) -> anyhow::Result<()> {
    if !opts.install {
        step.skip("--no-install");
        return Ok(());
    }
    // Under --root, the tree's own os-release when it has one (an image being built), else
    // this box's.
    let os = step
        .target
        .root
        .as_deref()
        .and_then(OsRelease::read)
        .or_else(|| OsRelease::read(Path::new("/")));
    let Some(os) = os else {
        anyhow::bail!(
            "no /etc/os-release: cannot tell apt from dnf; install docker, compose and nginx \
             yourself and rerun with --no-install"
        );
    };
    let plan = plan(&os).map_err(anyhow::Error::msg)?;
    let wants_certbot = opts.tls.is_some();
    let everything: Vec<&str> = [
        Some(plan.docker),
        plan.compose,
        Some(plan.nginx),
        wants_certbot.then_some(CERTBOT),
        opts.nft.then_some(NFTABLES),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !step.target.on_live_system() {
        for cmd in install_commands(plan.manager, &everything) {
            step.live_command(&cmd)?;
        }
        if plan.compose.is_none() {
            step.note(format!(
                "{} packages no docker compose; then: {COMPOSE_BY_HAND}",
                os.pretty_name
            ));
        }
        step.skip(format!(
            "live-system command (--root, {}): listed below",
            os.pretty_name
        ));
        return Ok(());
    }
    let present = Present::probe();
    let mut missing = Vec::new();
    if !present.docker {
        missing.push(plan.docker);
    }
    if !present.compose {
        missing.extend(plan.compose);
    }
    if !present.nginx {
        missing.push(plan.nginx);
    }
    if wants_certbot && !certbot_present() {
        missing.push(CERTBOT);
    }
    if opts.nft && !nft_present() {
        missing.push(NFTABLES);
    }
    step.summary(format!(
        "docker, compose, nginx{}{} on {}",
        if wants_certbot {
            ", certbot (nginx.tls)"
        } else {
            ""
        },
        if opts.nft { ", nft (nginx.switch)" } else { "" },
        os.pretty_name
    ));
    if !missing.is_empty() {
        for cmd in install_commands(plan.manager, &missing) {
            step.live_command(&cmd)?;
        }
    }
    if plan.compose.is_none() {
        let has_compose = if step.dry_run() || missing.is_empty() {
            present.compose
        } else {
            Present::probe().compose
        };
        if !has_compose {
            step.note(format!(
                "{} packages no docker compose: install the official plugin by hand: {COMPOSE_BY_HAND}",
                os.pretty_name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UBUNTU: &str = "PRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nID=ubuntu\nID_LIKE=debian\n";
    const DEBIAN: &str =
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\n";
    const AL2023: &str = "NAME=\"Amazon Linux\"\nVERSION=\"2023\"\nID=\"amzn\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"2023\"\nPRETTY_NAME=\"Amazon Linux 2023.6.20241212\"\n";

    #[test]
    fn picks_packages_per_distribution() {
        let ubuntu = plan(&OsRelease::parse(UBUNTU)).unwrap();
        assert_eq!(
            (ubuntu.manager, ubuntu.compose),
            (Manager::Apt, Some("docker-compose-v2"))
        );
        let debian = plan(&OsRelease::parse(DEBIAN)).unwrap();
        assert_eq!(debian.compose, Some("docker-compose"));
        let al = plan(&OsRelease::parse(AL2023)).unwrap();
        assert_eq!(
            (al.manager, al.docker, al.compose),
            (Manager::Dnf, "docker", None)
        );
        let err = plan(&OsRelease::parse("ID=arch\nPRETTY_NAME=\"Arch Linux\"\n")).unwrap_err();
        assert!(
            err.contains("Arch Linux") && err.contains("--no-install"),
            "{err}"
        );
    }

    #[test]
    fn apt_refreshes_lists_before_installing() {
        let cmds = install_commands(Manager::Apt, &["docker.io", "nginx"]);
        let shown: Vec<String> = cmds.iter().map(|c| c.display()).collect();
        assert_eq!(
            shown,
            [
                "apt-get update -q",
                "apt-get install -y -q --no-install-recommends docker.io nginx apparmor"
            ]
        );
    }
}
