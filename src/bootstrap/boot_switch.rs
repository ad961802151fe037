//! Step "nft switch at boot": `nginx.switch: nft` keeps which color serves in the kernel's
//! rules, which a reboot empties. nginx's upstream names the switch's stable ports, so until
//! the rules are back every request would reach nothing: a oneshot unit restores every
//! project's saved ruleset (`crate::nft::saved_dir`, one `<project>.nft` each, written by
//! every switch) with `nft -f`, ordered `Before=nginx.service` and after `nftables.service`
//! (whose `flush ruleset` would delete them again).
//!
//! What it installs:
//! - `/usr/local/lib/cutover-root/restore-switch` (in a directory bootstrap keeps root's
//!   0755: the deploy user owns `/usr/local/lib/cutover`): a POSIX sh script: `nft -f` of each saved file,
//!   every file tried, exit 1 if any failed (its error in the journal, `journalctl -u
//!   cutover-switch`); stock parts only, no cutover binary at boot, so the user-data writes
//!   the same script and unit at first boot;
//! - `cutover-switch.service`, as root (changing rules needs CAP_NET_ADMIN), wanted by
//!   nginx.service and multi-user.target, and restarted or reloaded with nftables.service
//!   (`PartOf`, `ReloadPropagatedFrom`), whose `flush ruleset` would delete the tables.
//!
//! With a project in nft mode (`nginx.switch: nft`, or `auto` with `nginx.switch_ports`) it
//! also sets up the narrow root path (`crate::switch_rule`), since deploys then change the
//! rule and a deploy user who is not root cannot:
//! - the project's grant, `/var/lib/cutover/switch/<project>.grant` (0600, root, in the
//!   0700 directory): the ports its rule may map, from cutover.yml; the only ports the root
//!   side will ever map for that name;
//! - for a deploy user who is not root (`--user`, else `$SUDO_USER`): a root-owned copy of
//!   this binary at `/usr/local/lib/cutover-root/cutover` (0755; neither the one `--host`
//!   uploads nor the boot unit's `/usr/local/lib/cutover/cutover`: both are the deploy
//!   user's, who could replace them) and `/etc/sudoers.d/cutover-switch-<project>`
//!   (0440, checked by `visudo -c -f` first) allowing that user exactly the project's
//!   `switch-rule` argv. Re-run bootstrap after upgrading cutover to refresh the copy.
//!
//! Root's directories (`cutover-root`, the switch directory) are refused, never taken over,
//! when another user made them or could replace them (a parent not root's or writable by
//! others): what root runs or trusts from them would then be theirs. A grant sharing a port
//! with another project's grant, and a deploy user name sudoers would read as others (`ALL`,
//! `%group`), are refused too.
//!
//! The user-data has no cutover binary to copy: the first `cutover bootstrap` does this.
//!
//! A failed restore does not hold nginx back: the site of a project in reload mode (no
//! saved file) serves; a project in nft mode then answers 502 until `systemctl restart
//! cutover-switch` or its next deploy, which writes the rule again.

use std::path::Path;

use anyhow::Context as _;

use super::cloud_init::{Instance, Part, View};
use super::{Options, StepDef, StepRun};

/// Step "nft switch at boot".
pub const STEP: StepDef = StepDef {
    name: "nft switch at boot",
    run: |opts, s, _| step(opts, s),
    cloud_init: Part::Writes(cloud_init),
};

pub const UNIT: &str = "cutover-switch.service";
pub const UNIT_PATH: &str = "/etc/systemd/system/cutover-switch.service";
/// Root's own directory for what runs as root: never `/usr/local/lib/cutover`, which
/// "secrets at boot" gives to the deploy user (who could then replace what root runs).
pub const ROOT_DIR: &str = "/usr/local/lib/cutover-root";
pub const SCRIPT_PATH: &str = "/usr/local/lib/cutover-root/restore-switch";

/// The restore script: `$1` overrides the directory of saved rulesets (tests).
pub fn script() -> String {
    format!(
        "#!/bin/sh\n\
         # Written by `cutover bootstrap`: restores each project's nft switch (nginx.switch: nft)\n\
         # from the ruleset its last switch saved, before nginx serves. Each file replaces only\n\
         # its own project's table, atomically.\n\
         # It runs as root: only files that only root can write are trusted (a file another\n\
         # user planted, or a symlink, is skipped and fails the unit).\n\
         dir=\"${{1:-{}}}\"\n\
         trusted() {{ [ -O \"$1\" ] && [ -z \"$(find -H \"$1\" -maxdepth 0 -perm /022)\" ]; }}\n\
         if [ ! -d \"$dir\" ]; then exit 0; fi\n\
         if ! trusted \"$dir\"; then\n\
         \x20\x20echo \"cutover: $dir is not a directory only root can write: restoring nothing from it\" >&2\n\
         \x20\x20exit 1\n\
         fi\n\
         rc=0\n\
         for f in \"$dir\"/*.nft; do\n\
         \x20\x20[ -e \"$f\" ] || [ -L \"$f\" ] || continue\n\
         \x20\x20if [ -L \"$f\" ] || [ ! -f \"$f\" ] || ! trusted \"$f\"; then\n\
         \x20\x20\x20\x20echo \"cutover: skipped $f: not a regular file only root can write\" >&2\n\
         \x20\x20\x20\x20rc=1\n\
         \x20\x20\x20\x20continue\n\
         \x20\x20fi\n\
         \x20\x20if ! nft -f \"$f\"; then\n\
         \x20\x20\x20\x20echo \"cutover: could not restore the nft switch saved in $f\" >&2\n\
         \x20\x20\x20\x20rc=1\n\
         \x20\x20fi\n\
         done\n\
         exit $rc\n",
        crate::nft::SAVED_DIR
    )
}

/// The unit's text.
pub fn unit() -> String {
    format!(
        "# Written by `cutover bootstrap`. See README, \"Switching without a reload\".\n\
         [Unit]\n\
         Description=cutover: restore the nft switch rules before nginx serves\n\
         After=nftables.service local-fs.target\n\
         Before=nginx.service\n\
         # nftables.service's restart or reload runs `flush ruleset`: restore again after it.\n\
         PartOf=nftables.service\n\
         ReloadPropagatedFrom=nftables.service\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         Environment=PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         ExecStart={SCRIPT_PATH}\n\
         ExecReload={SCRIPT_PATH}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target nginx.service\n"
    )
}

fn cloud_init(_: &Instance<'_>, view: &mut View) {
    view.file(SCRIPT_PATH, "0755", script());
    view.file(UNIT_PATH, "0644", unit());
    view.run(&["systemctl", "daemon-reload"]);
    view.run(&["systemctl", "enable", UNIT]);
}

pub fn step(opts: &Options, step: &mut StepRun<'_>) -> anyhow::Result<()> {
    step.summary(format!("{UNIT} (as root) before nginx.service"));
    root_dir(step)?;
    root_path(opts, step)?;
    let mut changed = step.write_file(Path::new(SCRIPT_PATH), script().as_bytes(), 0o755)?;
    changed |= step.write_file(Path::new(UNIT_PATH), unit().as_bytes(), 0o644)?;
    if step.target.on_live_system() && !Path::new("/run/systemd/system").is_dir() {
        step.skip(format!(
            "this box does not run systemd: run {SCRIPT_PATH} before nginx starts"
        ));
        return Ok(());
    }
    if changed || !super::boot_secrets::unit_enabled(step, UNIT) {
        super::boot_secrets::enable_unit(step, UNIT)?;
    }
    Ok(())
}

/// [`ROOT_DIR`], root's and 0755: what root runs from it only root can replace.
fn root_dir(step: &mut StepRun<'_>) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    root_only_dir(step, Path::new(ROOT_DIR), 0o755)?;
    // A file another user owns (left in the directory by an earlier bootstrap that took the
    // directory over) or a hard link would survive a write of the same bytes: replace it.
    for file in [SCRIPT_PATH, crate::switch_rule::HELPER] {
        let path = step.target.path(Path::new(file));
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if meta.uid() != 0 || meta.nlink() != 1 || !meta.is_file() {
                step.change(format!(
                    "remove {} (uid {}, {} links: not root's own)",
                    path.display(),
                    meta.uid(),
                    meta.nlink()
                ));
                if !step.dry_run() {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("could not remove {}", path.display()))?;
                }
            }
        }
    }
    Ok(())
}

/// `live` (mapped into the target) as a directory only root can change: each existing
/// ancestor root's and writable by no one else (a sticky one aside: `/tmp` under `--root`),
/// else someone could rename the directory away and put their own in its place; the
/// directory itself created with `mode` (whatever the umask), or, when it exists, a real
/// directory root created: one someone else made (before this bootstrap, in a parent they
/// could write then) may hold what they left, so it is refused, not taken over.
fn root_only_dir(step: &mut StepRun<'_>, live: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    let dir = step.target.path(live);
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        let sticky = meta.mode() & 0o1000 != 0;
        if meta.uid() != 0 || (meta.mode() & 0o022 != 0 && !sticky) {
            anyhow::bail!(
                "{} (a parent of {}) is uid {}'s, mode {:o}: expected root's and writable by \
                 root only, or another user could replace what root runs or reads from {}; \
                 `chown root: {0}` and `chmod go-w {0}`, then run bootstrap again",
                ancestor.display(),
                dir.display(),
                meta.uid(),
                meta.mode() & 0o7777,
                dir.display(),
            );
        }
    }
    match std::fs::symlink_metadata(&dir) {
        Err(_) => {
            step.change(format!(
                "create {} (mode {mode:04o}, root's)",
                dir.display()
            ));
            if !step.dry_run() {
                if let Some(parent) = dir.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o755)
                        .create(parent)
                        .with_context(|| format!("could not create {}", parent.display()))?;
                }
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .with_context(|| format!("could not create {}", dir.display()))?;
            }
        }
        Ok(meta) if !meta.is_dir() => anyhow::bail!(
            "{} is not a directory (a symlink?): expected a directory only root can write; \
             remove it and run bootstrap again",
            dir.display()
        ),
        Ok(meta) if meta.uid() != 0 => anyhow::bail!(
            "{} belongs to uid {}, not root: someone else created it, so what it holds cannot \
             be trusted to run or be read as root; remove it (`rm -r {0}`) and run bootstrap \
             again",
            dir.display(),
            meta.uid()
        ),
        Ok(_) => {}
    }
    if dir.is_dir() {
        step.ensure_mode(&dir, mode, false)?;
    }
    Ok(())
}

/// The grant of the project, and for a deploy user who is not root the helper and the
/// sudoers rule (see the module docs).
fn root_path(opts: &Options, step: &mut StepRun<'_>) -> anyhow::Result<()> {
    use crate::switch_rule as sr;
    let Some((project, grant)) = &opts.switch_grant else {
        return Ok(());
    };
    grant
        .check()
        .map_err(|e| anyhow::anyhow!("nginx.switch_ports and colors of project {project}: {e}"))?;
    let dir = Path::new(crate::nft::SAVED_DIR);
    root_only_dir(step, dir, 0o700)?;
    no_port_of_another_grant(&step.target.path(dir), project, grant)?;
    step.write_file(
        &sr::grant_path(dir, project),
        sr::grant_text(grant).as_bytes(),
        0o600,
    )?;
    let Some(user) = super::services::deploy_user(opts.user.as_deref()) else {
        return Ok(());
    };
    sudoers_user_name(&user)?;
    let exe = std::env::current_exe().context("find this cutover binary to install")?;
    let bytes = std::fs::read(&exe).with_context(|| format!("could not read {}", exe.display()))?;
    step.write_file(Path::new(sr::HELPER), &bytes, 0o755)?;
    let text = sr::sudoers(&user, project, Path::new(sr::HELPER));
    let path = sr::sudoers_path(project);
    if path == super::nginx_access::sudoers_path(&user) {
        // Each run would overwrite the other's rules (deploys would lose nginx's reload).
        anyhow::bail!(
            "{} would hold both {user}'s nginx rules and project {project}'s switch rules (the \
             user name {user} reads as `switch-` and a project name): deploy as another user \
             or rename the project",
            path.display()
        );
    }
    if std::fs::read(step.target.path(&path)).ok().as_deref() != Some(text.as_bytes()) {
        super::nginx_access::validate(&text).with_context(|| {
            format!("the sudoers drop-in for {user}'s nft switch did not pass `visudo -c`; nothing was written")
        })?;
    }
    step.write_file(&path, text.as_bytes(), 0o440)?;
    Ok(())
}

/// Refuses a grant sharing a port with another project's: the root side maps a grant's ports
/// for whoever may run that project's rule, so two rules would DNAT the same port (which one
/// the kernel applies first is not defined) and one project's deploys would steer, or take,
/// the other's traffic. A grant left by a renamed project is named, to remove.
fn no_port_of_another_grant(
    dir: &Path,
    project: &str,
    grant: &crate::switch_rule::Grant,
) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let ports =
        |g: &crate::switch_rule::Grant| [g.switch_ports[0], g.switch_ports[1], g.blue, g.green];
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(other) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".grant"))
        else {
            continue;
        };
        if other == project {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("could not read {}", path.display()))?;
        let theirs: crate::switch_rule::Grant = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a switch grant (remove it if project {other} is gone)",
                path.display()
            )
        })?;
        if let Some(p) = ports(grant)
            .into_iter()
            .find(|p| ports(&theirs).contains(p))
        {
            anyhow::bail!(
                "port {p} of project {project}'s nginx.switch_ports and colors is also in \
                 project {other}'s grant ({}): two projects' nft rules would map the same port; \
                 give {project} other ports or, if project {other} is gone, delete its rule, \
                 grant and sudoers drop-in: `{} switch-rule remove {other}`, then `rm {} \
                 /etc/sudoers.d/cutover-switch-{other}`",
                path.display(),
                crate::switch_rule::HELPER,
                path.display()
            );
        }
    }
    Ok(())
}

/// A user name sudoers reads as that one user: `ALL`, `%group`, `#uid`, `+netgroup`, or a
/// space or `,` would make the drop-in grant the rule to others (visudo accepts them all).
fn sudoers_user_name(user: &str) -> anyhow::Result<()> {
    let ok = user != "ALL"
        && user
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        anyhow::bail!(
            "deploy user {user:?} (--user, else $SUDO_USER): expected a user name of letters, \
             digits, `_`, `-` and `.` (not ALL), which sudoers reads as exactly that user"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_user_name_sudoers_would_read_as_others_is_refused() {
        for ok in ["admin", "ec2-user", "ubuntu", "a.b", "_svc"] {
            assert!(sudoers_user_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ALL", "%sudo", "#0", "+ops", "a b", "a,b", "a\nALL", "", "-x", "é",
        ] {
            let e = sudoers_user_name(bad).unwrap_err().to_string();
            assert!(e.contains("expected a user name of letters"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_grant_sharing_a_port_with_another_projects_is_refused_naming_it() {
        use crate::switch_rule::{grant_path, grant_text, Grant};
        let tmp = tempfile::tempdir().unwrap();
        let mine = Grant {
            switch_ports: [9100, 9101],
            blue: 9011,
            green: 9012,
        };
        let theirs = Grant {
            switch_ports: [9200, 9201],
            blue: 9021,
            green: 9022,
        };
        std::fs::write(grant_path(tmp.path(), "web"), grant_text(&mine)).unwrap();
        std::fs::write(grant_path(tmp.path(), "shop"), grant_text(&theirs)).unwrap();
        assert!(no_port_of_another_grant(tmp.path(), "web", &mine).is_ok());
        let clash = Grant {
            green: 9200,
            ..mine
        };
        let e = no_port_of_another_grant(tmp.path(), "web", &clash)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("port 9200 of project web's") && e.contains("project shop's grant"),
            "{e}"
        );
        assert!(e.contains("switch-rule remove shop"), "{e}");
    }

    #[test]
    fn the_unit_restores_before_nginx_and_after_nftables_flushes() {
        let text = unit();
        assert!(text.contains("\nBefore=nginx.service\n"), "{text}");
        assert!(text.contains("After=nftables.service"), "{text}");
        assert!(
            text.contains(&format!("ExecStart={SCRIPT_PATH}\n")),
            "{text}"
        );
        // A restart or reload of nftables.service (its `flush ruleset`) restores them again.
        assert!(
            text.contains("\nPartOf=nftables.service\nReloadPropagatedFrom=nftables.service\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("ExecReload={SCRIPT_PATH}\n")),
            "{text}"
        );
        assert!(
            text.contains("WantedBy=multi-user.target nginx.service"),
            "{text}"
        );
        // systemd expands `%` and `$` in ExecStart: the unit has neither, the script does.
        assert!(!text.contains('%') && !text.contains('$'), "{text}");
        assert!(script().contains(&format!("dir=\"${{1:-{}}}\"", crate::nft::SAVED_DIR)));
    }
}
