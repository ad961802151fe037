//! Step "secrets at boot": after a reboot the tmpfs holding `app.secrets_delivery: files`
//! values is empty, so a boot unit writes them again, from the ciphertext each service was
//! deployed from (`secrets::deployed`) with the box's identity, before Docker restarts the
//! containers.
//!
//! What it installs:
//! - `/etc/tmpfiles.d/cutover.conf`: `/run/cutover/secrets` (0700, the deploy user's), made
//!   at every boot on the /run tmpfs, so deploys need no root to write their files there;
//! - `/usr/local/lib/cutover/cutover`: a copy of this binary (root's, 0755): `--host`
//!   installs versioned binaries in the user's home and prunes old ones, so the unit needs a
//!   path that stays;
//! - `cutover-secrets.service`: a oneshot, as the deploy user, ordered `Before=docker.service`
//!   and wanted by it, running `cutover --identity <box identity> secrets restore --all`.
//!
//! The copy is refreshed by every files-mode deploy on the box whose binary differs from it
//! ([`refresh_binary`]): a `--host` upgrade installs a newer cutover in the user's home, and
//! a boot restore by the old copy would then refuse a cutover.yml with a field it does not
//! know. The directory and copy belong to the deploy user, so a deploy that does not run as
//! root can replace the copy (by rename); that grants nothing, since the unit runs it as that
//! same user.
//!
//! If the unit fails (a key that no longer decrypts, a damaged file), its error is in the
//! journal (`journalctl -u cutover-secrets`; project and key names only, never a value) and
//! Docker still starts: the containers of other projects are not hostage to it. The
//! containers whose files are missing do not start, because cutover mounts each file with the
//! long syntax, and Docker refuses a bind mount whose source is missing instead of creating
//! an empty directory there. So nothing starts with empty secrets, and fixing the cause and
//! running `systemctl restart cutover-secrets` then `cutover deploy` brings them back.

use std::path::Path;

use anyhow::Context as _;

use super::cloud_init::Part;
use super::{Options, StepDef, StepRun};
use crate::process::Cmd;

/// Step "secrets at boot".
pub const STEP: StepDef = StepDef {
    name: "secrets at boot",
    run: |opts, s, _| step(opts, s),
    cloud_init: Part::Without(
        "the boot unit runs the cutover binary, which is not on the box at first boot: \
         `cutover bootstrap` run on the box (or with --host) installs it",
    ),
};

pub const UNIT: &str = "cutover-secrets.service";
pub const UNIT_PATH: &str = "/etc/systemd/system/cutover-secrets.service";
pub const TMPFILES_PATH: &str = "/etc/tmpfiles.d/cutover.conf";
pub const BINARY_PATH: &str = "/usr/local/lib/cutover/cutover";

/// Overrides where a deploy looks for the boot unit's copy of cutover to keep it current
/// (a box bootstrapped under `--root`; the tests, which must not touch the host's).
pub const BINARY_ENV: &str = "CUTOVER_BOOT_BINARY";

/// The boot unit's copy a deploy keeps current: [`BINARY_ENV`] when set, else
/// [`BINARY_PATH`].
pub fn binary_copy() -> std::path::PathBuf {
    std::env::var_os(BINARY_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| BINARY_PATH.into(), std::path::PathBuf::from)
}

/// The tmpfiles.d lines: `/run/cutover/secrets` owned by `user`.
pub fn tmpfiles(user: &str) -> String {
    format!(
        "# Written by `cutover bootstrap`: where app.secrets_delivery: files keeps decrypted\n\
         # values, on the /run tmpfs (never a disk), made again at every boot.\n\
         d /run/cutover 0755 root root -\n\
         d {} 0700 {user} {user} -\n",
        crate::secrets::files::SYSTEM_ROOT
    )
}

/// The copy's directory and the copy to `user`, so deploys as `user` can refresh the copy.
fn give_copy_to(step: &mut StepRun<'_>, user: &str) -> anyhow::Result<()> {
    if user == "root" || step.dry_run() {
        return Ok(());
    }
    let passwd_path = step.target.path(Path::new("/etc/passwd"));
    let passwd = std::fs::read_to_string(&passwd_path).unwrap_or_default();
    let Some((uid, gid)) = super::identity::passwd_ids(&passwd, user) else {
        step.note(format!(
            "{user} is not in {}: {BINARY_PATH} stays root's, so deploys as {user} cannot \
             refresh it after an upgrade (run `cutover bootstrap` again)",
            passwd_path.display()
        ));
        return Ok(());
    };
    let binary = step.target.path(Path::new(BINARY_PATH));
    for path in [crate::atomic::temp_dir_of(&binary).to_path_buf(), binary] {
        let meta = std::fs::metadata(&path)
            .with_context(|| format!("could not read {}", path.display()))?;
        if std::os::unix::fs::MetadataExt::uid(&meta) != uid {
            step.change(format!(
                "chown {user} {} (deploys refresh the boot unit's cutover)",
                path.display()
            ));
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .with_context(|| format!("could not chown {} to {user}", path.display()))?;
        }
    }
    Ok(())
}

/// What a deploy did about the boot unit's copy of cutover ([`BINARY_PATH`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryRefresh {
    /// No boot unit's copy here (not a bootstrapped box): nothing to keep current.
    NoCopy,
    /// The copy is this binary already.
    Current,
    /// The copy was replaced by this binary.
    Refreshed,
    /// The copy differs and could not be replaced; why.
    Failed(String),
}

/// Makes the boot unit's copy `copy` the same as the binary running, `running`, when a copy
/// exists and differs: replaced atomically (a boot never runs half a binary).
pub fn refresh_binary(copy: &Path, running: &Path) -> BinaryRefresh {
    let Ok(old) = std::fs::read(copy) else {
        return BinaryRefresh::NoCopy;
    };
    let new = match std::fs::read(running) {
        Ok(new) => new,
        Err(e) => {
            return BinaryRefresh::Failed(format!("could not read {}: {e}", running.display()))
        }
    };
    if old == new {
        return BinaryRefresh::Current;
    }
    match crate::atomic::write(copy, &new, 0o755) {
        Ok(()) => BinaryRefresh::Refreshed,
        Err(e) => BinaryRefresh::Failed(format!("{e:#}")),
    }
}

/// `text` as systemd reads it back verbatim: in `User=` and `ExecStart=` systemd expands
/// `%` specifiers (`%h`, `%u`, …), so an identity at `/srv/50%keys/box.txt` would otherwise
/// name another file; `%%` is a literal `%`.
fn escape_specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

/// The unit's text.
pub fn unit(user: &str, identity: &Path) -> String {
    format!(
        "# Written by `cutover bootstrap`. See README, \"Where secret values live\".\n\
         [Unit]\n\
         Description=cutover: secret files on tmpfs for the containers Docker restarts\n\
         After=systemd-tmpfiles-setup.service local-fs.target\n\
         Before=docker.service\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         User={user}\n\
         ExecStart={BINARY_PATH} --identity {} secrets restore --all\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target docker.service\n",
        escape_specifiers(&identity.display().to_string()),
        user = escape_specifiers(user),
    )
}

pub fn step(opts: &Options, step: &mut StepRun<'_>) -> anyhow::Result<()> {
    let user = super::services::deploy_user(opts.user.as_deref()).unwrap_or("root".into());
    step.summary(format!("{UNIT} (as {user}) before docker.service"));
    let identity = opts
        .identity
        .to_str()
        .context("the identity path is not UTF-8")?;
    if identity.contains(char::is_whitespace) {
        anyhow::bail!(
            "the box identity path {identity} has whitespace: a unit's ExecStart would split it"
        );
    }
    let exe = std::env::current_exe().context("could not find the running cutover binary")?;
    let bytes = std::fs::read(&exe).with_context(|| format!("could not read {}", exe.display()))?;
    let mut changed = step.write_file(Path::new(BINARY_PATH), &bytes, 0o755)?;
    give_copy_to(step, &user)?;
    changed |= step.write_file(Path::new(TMPFILES_PATH), tmpfiles(&user).as_bytes(), 0o644)?;
    changed |= step.write_file(
        Path::new(UNIT_PATH),
        unit(&user, &opts.identity).as_bytes(),
        0o644,
    )?;
    let systemd = Path::new("/run/systemd/system").is_dir();
    if step.target.on_live_system() && !systemd {
        step.skip("this box does not run systemd: run `cutover secrets restore --all` before docker starts");
        return Ok(());
    }
    if changed
        || !unit_enabled(step, UNIT)
        || !Path::new(crate::secrets::files::SYSTEM_ROOT).is_dir()
    {
        step.live_command(
            &Cmd::new("systemd-tmpfiles", "create /run/cutover/secrets")
                .args(["--create", TMPFILES_PATH]),
        )?;
        enable_unit(step, UNIT)?;
    }
    Ok(())
}

/// Whether `unit` is enabled on the live system (never, under `--root` or a dry run).
pub fn unit_enabled(step: &StepRun<'_>, unit: &str) -> bool {
    step.target.on_live_system()
        && Cmd::new("systemctl", "is the unit enabled")
            .args(["is-enabled", "--quiet", unit])
            .run()
            .is_ok()
}

/// `systemctl daemon-reload` and `enable unit`, as the step's live commands.
pub fn enable_unit(step: &mut StepRun<'_>, unit: &str) -> anyhow::Result<()> {
    step.live_command(&Cmd::new("systemctl", "reload the units").arg("daemon-reload"))?;
    step.live_command(&Cmd::new("systemctl", format!("enable {unit}")).args(["enable", unit]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// systemd expands `%` in ExecStart: the unit must name the identity file as it is.
    #[test]
    fn an_identity_path_with_percent_is_escaped_for_systemd() {
        let text = unit("deploy", Path::new("/srv/50%h/box.txt"));
        let exec = text.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
        assert_eq!(
            exec,
            format!("ExecStart={BINARY_PATH} --identity /srv/50%%h/box.txt secrets restore --all")
        );
        assert!(text.contains("User=deploy\n"));
        assert!(!unit("deploy", Path::new("/srv/plain/box.txt")).contains('%'));
    }

    /// An upgrade's binary replaces the boot unit's older copy; then nothing changes; no
    /// copy, nothing is made.
    #[test]
    fn a_deploy_refreshes_an_outdated_boot_copy_atomically() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("lib/cutover");
        let running = dir.path().join("cutover-new");
        std::fs::write(&running, b"new binary").unwrap();
        assert_eq!(refresh_binary(&copy, &running), BinaryRefresh::NoCopy);
        assert!(!copy.exists());
        std::fs::create_dir(dir.path().join("lib")).unwrap();
        std::fs::write(&copy, b"old binary").unwrap();
        assert_eq!(refresh_binary(&copy, &running), BinaryRefresh::Refreshed);
        assert_eq!(std::fs::read(&copy).unwrap(), b"new binary");
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(refresh_binary(&copy, &running), BinaryRefresh::Current);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("lib")).unwrap().collect();
        assert_eq!(left.len(), 1, "a temp file was left beside the copy");
    }
}
