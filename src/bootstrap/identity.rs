//! The box's own age identity, which decrypts `secrets/*.env.age` at deploy time.
//!
//! Each box gets its own X25519 key, made on the box, so no private key is ever copied
//! around; the project adds the box's public key to `secrets/recipients.txt` and rekeys.
//! As in str4d/rage: the file is created with mode 0600 and create-new semantics (written to
//! a temp file, then hard-linked into place, which fails instead of replacing an existing
//! file), it is never overwritten (a new key would lock the box out of every secret
//! encrypted to the old one), and the secret key never leaves this module except into that
//! file: errors and reports carry only the path and the public key.
//!
//! The key is generated with the `age` crate directly, in the `age-keygen` file format, so
//! the `age` CLI and `cutover secrets` read it alike. The user-data has no cutover binary:
//! it installs `age` and runs `age-keygen` with the same guarantees (0600, never
//! overwritten), where the image packages age (apt); elsewhere it says how to do it later.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};

use super::cloud_init::{Instance, Part, View};
use super::packages::Manager;
use super::{Options, StepDef, StepRun};
use crate::process::shell_quote;

/// Step "identity": the report carries the file's path and public key.
pub const STEP: StepDef = StepDef {
    name: "identity",
    run: |opts, s, report| {
        let (path, recipient) = step(opts, s)?;
        report.identity_path = Some(path);
        report.recipient = recipient;
        Ok(())
    },
    cloud_init: Part::Writes(cloud_init),
};

/// Where the box identity lives by default (under `--root` when given).
pub const DEFAULT_PATH: &str = crate::secrets::keys::BOX_IDENTITY_PATH;

/// The public key (age recipient) of the identity file at `path`.
pub fn read_recipient(path: &Path) -> anyhow::Result<String> {
    let text = SecretString::from(
        std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?,
    );
    let key = text
        .expose_secret()
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .with_context(|| {
            format!(
                "{}: no AGE-SECRET-KEY-… line (not an age identity file?)",
                path.display()
            )
        })?;
    // age's parse error text never contains the key; ours does not either.
    let identity = age::x25519::Identity::from_str(key).map_err(|_| {
        anyhow::anyhow!(
            "{}: the AGE-SECRET-KEY-… line is not a valid key",
            path.display()
        )
    })?;
    Ok(identity.to_public().to_string())
}

/// Creates a new identity at `path` (mode 0600), failing if any file is already there.
/// Returns its public key.
pub fn create(path: &Path) -> anyhow::Result<String> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let contents = SecretString::from(format!(
        "# created: {created}\n# public key: {recipient}\n# The box identity for cutover deploys: never copy it off this box.\n{}\n",
        identity.to_string().expose_secret()
    ));
    let mut tmp = tempfile::Builder::new()
        .prefix(".cutover-identity")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("could not create a temp file in {}", dir.display()))?;
    tmp.write_all(contents.expose_secret().as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("could not write a temp file in {}", dir.display()))?;
    // link(2) never replaces: the create-new guarantee, with the content already complete.
    std::fs::hard_link(tmp.path(), path).with_context(|| {
        format!(
            "could not create {} (it is never overwritten)",
            path.display()
        )
    })?;
    Ok(recipient)
}

/// uid and gid of `user` in a passwd file's text.
pub fn passwd_ids(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// The shell command, run in the project on a machine that can already decrypt its
/// secrets, that makes the box a recipient: append its key, then rekey every file.
pub fn add_recipient_command(recipient: &str, label: &str) -> String {
    format!(
        "printf '%s\\n' '# {label} (cutover bootstrap)' '{recipient}' >> secrets/recipients.txt && cutover secrets rekey"
    )
}

/// `age` in the packages and the `age-keygen` command, or how to make the identity later.
fn cloud_init(instance: &Instance<'_>, view: &mut View) {
    if super::packages::plan_for(instance.os).manager != Manager::Apt {
        view.note(format!(
            "{} packages no age: create the box identity with `sudo cutover bootstrap --no-install` once cutover is on the box",
            instance.os.id()
        ));
        return;
    }
    view.packages.push("age".into());
    let identity = instance.opts.identity.display().to_string();
    let dir = instance
        .opts
        .identity
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "/".into());
    // age-keygen -o opens with O_EXCL and mode 0600: never overwrites.
    view.sh(format!(
        "install -d -m 0755 {dir} && if [ ! -e {identity} ]; then (umask 077 && age-keygen -o {identity}) && chown {user}: {identity}; fi && age-keygen -y {identity}",
        dir = shell_quote(&dir),
        identity = shell_quote(&identity),
        user = shell_quote(&instance.user),
    ));
    view.note(format!(
        "box identity: {identity}; read its public key with `sudo age-keygen -y {identity}` and add it with: {}",
        add_recipient_command("<that key>", "<this box>")
    ));
}

/// Step "identity": returns the file's path and, unless a dry run will create it, its
/// public key.
pub fn step(opts: &Options, step: &mut StepRun<'_>) -> anyhow::Result<(PathBuf, Option<String>)> {
    let path = step.target.path(&opts.identity);
    if path.exists() {
        // Looser than 0600 is refused at deploy time; tightening is not overwriting.
        step.ensure_mode(&path, 0o600, true)?;
        let recipient = read_recipient(&path)?;
        step.summary(format!("{} exists (never overwritten)", path.display()));
        return Ok((path, Some(recipient)));
    }
    step.summary(format!("{} (new age identity)", path.display()));
    step.change(format!(
        "create {} (new age X25519 identity, mode 0600)",
        path.display()
    ));
    if step.dry_run() {
        return Ok((path, None));
    }
    let recipient = create(&path)?;
    let user = super::services::deploy_user(opts.user.as_deref());
    if let Some(user) = user {
        // Deploys run as the deploy user, who must be able to read the key.
        let passwd_path = step.target.path(Path::new("/etc/passwd"));
        let passwd = std::fs::read_to_string(&passwd_path).unwrap_or_default();
        match passwd_ids(&passwd, &user) {
            Some((uid, gid)) => {
                step.change(format!("chown {user} {}", path.display()));
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .with_context(|| format!("could not chown {} to {user}", path.display()))?;
            }
            None => step.note(format!(
                "{user} is not in {}: {} stays owned by root",
                passwd_path.display(),
                path.display()
            )),
        }
    }
    Ok((path, Some(recipient)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_0600_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/cutover/identity.txt");
        let recipient = create(&path).unwrap();
        assert!(recipient.starts_with("age1"), "{recipient}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_recipient(&path).unwrap(), recipient);
        let before = std::fs::read(&path).unwrap();
        let err = create(&path).unwrap_err();
        assert!(format!("{err:#}").contains("never overwritten"), "{err:#}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // No temp files left beside it.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn errors_never_show_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.txt");
        std::fs::write(&path, "AGE-SECRET-KEY-1NOTAVALIDKEYATALL\n").unwrap();
        let err = format!("{:#}", read_recipient(&path).unwrap_err());
        assert!(!err.contains("NOTAVALID"), "{err}");
    }

    #[test]
    fn finds_ids_in_passwd() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000::/home/ubuntu:/bin/bash\n";
        assert_eq!(passwd_ids(passwd, "ubuntu"), Some((1000, 1000)));
        assert_eq!(passwd_ids(passwd, "nobody"), None);
    }
}
