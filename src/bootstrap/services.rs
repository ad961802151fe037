//! The docker and nginx services (enabled at boot and running) and the deploy user's
//! membership of the `docker` group.
//!
//! Both are live-system state that no file under `--root` can express portably, so under
//! `--root` they are listed as commands to run. The deploy user comes from `--user`, else
//! `$SUDO_USER` (whoever ran `sudo cutover bootstrap`); root itself needs no group. The
//! user-data runs the same `systemctl enable --now` and `usermod` (its user: `--user`, else
//! the image's login user).

use std::path::Path;

use super::cloud_init::{Instance, Part, View};
use super::{sbin, Options, StepDef, StepRun};
use crate::process::Cmd;

/// Step "services".
pub const SERVICES: StepDef = StepDef {
    name: "services",
    run: |opts, step, _| services_step(opts, step),
    cloud_init: Part::Writes(cloud_init_services),
};

/// Step "docker group".
pub const DOCKER_GROUP: StepDef = StepDef {
    name: "docker group",
    run: |opts, step, _| docker_group_step(opts, step),
    cloud_init: Part::Writes(cloud_init_docker_group),
};

const UNITS: [&str; 2] = ["docker", "nginx"];

fn has_systemd() -> bool {
    // The documented test for "booted with systemd" (sd_booted(3)).
    Path::new("/run/systemd/system").is_dir()
}

fn enable_command(units: &[&str]) -> Cmd {
    Cmd::new(
        "systemctl",
        format!("enable and start {}", units.join(" and ")),
    )
    .args(["enable", "--now"])
    .args(units)
}

/// Step "services": docker and nginx enabled at boot and running now.
pub fn services_step(_opts: &Options, step: &mut StepRun<'_>) -> anyhow::Result<()> {
    step.summary(format!("{} enabled and running", UNITS.join(", ")));
    if !step.target.on_live_system() {
        step.live_command(&enable_command(&UNITS))?;
        step.skip("live-system command (--root): listed below");
        return Ok(());
    }
    if !has_systemd() || crate::process::which("systemctl").is_none() {
        step.skip("this box does not run systemd: start docker and nginx your own way");
        return Ok(());
    }
    let mut todo = Vec::new();
    for unit in UNITS {
        let check = |verb: &str| {
            Cmd::new("systemctl", format!("check whether {unit} is {verb}"))
                .args([verb, "--quiet", unit])
                .run()
                .is_ok()
        };
        if !(check("is-enabled") && check("is-active")) {
            todo.push(unit);
        }
    }
    if !todo.is_empty() {
        step.live_command(&enable_command(&todo))?;
    }
    Ok(())
}

/// The deploy user: `--user`, else `$SUDO_USER`; never root.
pub fn deploy_user(explicit: Option<&str>) -> Option<String> {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var("SUDO_USER").ok())
        .filter(|u| !u.is_empty() && u != "root")
}

/// Whether `group`'s line in an `/etc/group` text lists `user`.
pub fn group_has_member(group_file: &str, group: &str, user: &str) -> Option<bool> {
    group_file.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == group).then(|| {
            fields
                .nth(2)
                .unwrap_or("")
                .split(',')
                .any(|m| m.trim() == user)
        })
    })
}

fn cloud_init_services(_: &Instance<'_>, view: &mut View) {
    let mut argv = vec!["systemctl", "enable", "--now"];
    argv.extend(UNITS);
    view.run(&argv);
}

fn cloud_init_docker_group(instance: &Instance<'_>, view: &mut View) {
    view.run(&["usermod", "-aG", "docker", &instance.user]);
}

/// Step "docker group": the deploy user may talk to the docker daemon without sudo.
pub fn docker_group_step(opts: &Options, step: &mut StepRun<'_>) -> anyhow::Result<()> {
    let Some(user) = deploy_user(opts.user.as_deref()) else {
        step.skip("no deploy user (pass --user NAME, or run through sudo as that user)");
        return Ok(());
    };
    step.summary(format!("{user} is in the docker group"));
    let usermod = Cmd::new(sbin("usermod"), format!("add {user} to the docker group"))
        .args(["-aG", "docker", &user]);
    let group_path = step.target.path(Path::new("/etc/group"));
    let groups = std::fs::read_to_string(&group_path).unwrap_or_default();
    let member = group_has_member(&groups, "docker", &user);
    if member == Some(true) {
        return Ok(());
    }
    if !step.target.on_live_system() {
        step.live_command(&usermod)?;
        step.skip("live-system command (--root): listed below");
        return Ok(());
    }
    if member.is_none() && !step.dry_run() {
        anyhow::bail!(
            "there is no docker group in /etc/group (is docker installed? rerun without --no-install)"
        );
    }
    step.live_command(&usermod)?;
    step.note(format!(
        "{user} gets the docker group at the next login (or run `newgrp docker`)"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_group_membership() {
        let groups = "root:x:0:\ndocker:x:998:alice,bob\nsudo:x:27:carol\n";
        assert_eq!(group_has_member(groups, "docker", "bob"), Some(true));
        assert_eq!(group_has_member(groups, "docker", "carol"), Some(false));
        assert_eq!(group_has_member("root:x:0:\n", "docker", "bob"), None);
    }

    #[test]
    fn root_is_never_the_deploy_user() {
        assert_eq!(deploy_user(Some("root")), None);
        assert_eq!(deploy_user(Some("ubuntu")).as_deref(), Some("ubuntu"));
    }
}
