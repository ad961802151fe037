//! The deploy user's access to nginx, when that user is not root (a cloud image's `admin`,
//! `ubuntu`, `ec2-user`): a switch renames a new include into the include's directory, and
//! `nginx -t` / `nginx -s reload` need root.
//!
//! So this step (before "nginx site", which writes the first include there):
//! - creates the include's directory owned by the deploy user (mode 0755: nginx, as root,
//!   reads it), or gives a directory under that user's home back to them; an include in a
//!   directory the user does not own elsewhere (Debian's root-owned `/etc/nginx/conf.d`) is
//!   left alone with a note naming the fix, since the deploy's own check refuses it;
//! - when `nginx.test` / `nginx.reload` run through `sudo`, writes a sudoers drop-in that
//!   allows the user exactly those argv (sudoers matches a command with arguments exactly),
//!   with the program's absolute path, as `/etc/sudoers.d/cutover-<user>` (0440), checked
//!   with `visudo -c -f` before it is put in place: a broken file in `sudoers.d` would break
//!   every `sudo` on the box, the one this run came in through included.
//!
//! The user-data does the same at first boot: `install -d -o USER`, and the drop-in staged
//! in `/etc/cutover/` and installed only once `visudo -c -f` accepts it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::cloud_init::{Instance, Part, View};
use super::services::deploy_user;
use super::{Options, StepDef, StepRun};
use crate::process::Cmd;

/// Step "nginx access".
pub const STEP: StepDef = StepDef {
    name: "nginx access",
    run: |opts, s, _| step(opts, s),
    cloud_init: Part::Writes(cloud_init),
};

/// Where the drop-in for `user` lives (sudo skips names with a `.` in `sudoers.d`).
pub fn sudoers_path(user: &str) -> PathBuf {
    PathBuf::from(format!("/etc/sudoers.d/cutover-{}", user.replace('.', "_")))
}

/// The sudoers drop-in letting `user` run exactly the `sudo` argv among `commands`, with
/// each program resolved by `resolve`; `Ok(None)` when none runs through sudo.
pub fn sudoers(
    user: &str,
    commands: &[&[String]],
    resolve: impl Fn(&str) -> Option<PathBuf>,
) -> anyhow::Result<Option<String>> {
    let mut allowed = Vec::new();
    for argv in commands {
        let Some(rest) = sudo_command(argv) else {
            continue;
        };
        let (program, args) = rest.split_first().context("`sudo` with no command")?;
        let path = if program.starts_with('/') {
            PathBuf::from(program)
        } else {
            resolve(program).with_context(|| {
                format!("`{program}` (in `{}`) is not installed", argv.join(" "))
            })?
        };
        let mut words = vec![path.display().to_string()];
        words.extend(args.iter().cloned());
        for word in &words {
            // Sudoers splits arguments on blanks and gives these characters meaning: such a
            // word cannot be allowed exactly, so none is allowed loosely.
            if word.is_empty()
                || word.contains(|c: char| c.is_whitespace() || "\\,:=()\"'#!*?[]%".contains(c))
            {
                anyhow::bail!(
                    "`{}`: the word {word:?} cannot be written exactly in a sudoers rule; \
                     use plain words in nginx.test / nginx.reload",
                    argv.join(" ")
                );
            }
        }
        let rule = words.join(" ");
        if !allowed.contains(&rule) {
            allowed.push(rule);
        }
    }
    if allowed.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "# Written by `cutover bootstrap`: {user} deploys and may test and reload nginx as\n\
         # root, exactly these commands (nginx.test and nginx.reload in cutover.yml).\n\
         {user} ALL=(root) NOPASSWD: {}\n",
        allowed.join(", ")
    )))
}

/// The command after `sudo` and its options (`-n`), when `argv` runs through sudo.
fn sudo_command(argv: &[String]) -> Option<&[String]> {
    let (first, rest) = argv.split_first()?;
    if first != "sudo" && first != "/usr/bin/sudo" {
        return None;
    }
    let start = rest.iter().position(|a| !a.starts_with('-'))?;
    Some(&rest[start..])
}

/// A user's uid, gid and home from a passwd file's text.
fn passwd_entry(passwd: &str, user: &str) -> Option<(u32, u32, PathBuf)> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 || fields[0] != user {
            return None;
        }
        Some((
            fields[2].parse().ok()?,
            fields[3].parse().ok()?,
            PathBuf::from(fields[5]),
        ))
    })
}

fn step(opts: &Options, step: &mut StepRun<'_>) -> anyhow::Result<()> {
    let Some(files) = &opts.nginx else {
        step.skip(opts.no_config_reason.clone());
        return Ok(());
    };
    let Some(user) = deploy_user(opts.user.as_deref()) else {
        step.skip("deploys run as root, which switches the include and reloads nginx itself");
        return Ok(());
    };
    let Some(dir) = files.include_path.parent().filter(|d| d.is_absolute()) else {
        step.skip("nginx.include is not an absolute path");
        return Ok(());
    };
    step.summary(format!("{user} switches {}", files.include_path.display()));
    let passwd =
        std::fs::read_to_string(step.target.path(Path::new("/etc/passwd"))).unwrap_or_default();
    let entry = passwd_entry(&passwd, &user);
    if entry.is_none() && step.target.live() {
        anyhow::bail!("there is no user {user} on this box (--user, else $SUDO_USER)");
    }
    include_dir(step, &user, entry.as_ref(), dir)?;

    let commands = [files.test.as_slice(), files.reload.as_slice()];
    // Not installed yet (a dry run on a fresh box, `--no-install`): where the package puts
    // it, said in a note.
    let missing = std::cell::RefCell::new(Vec::new());
    let resolve = |program: &str| {
        let found = super::sbin(program);
        found
            .is_absolute()
            .then_some(found)
            .or_else(|| crate::process::which(program))
            .or_else(|| {
                missing.borrow_mut().push(program.to_string());
                Some(Path::new("/usr/sbin").join(program))
            })
    };
    let rules = sudoers(&user, &commands, resolve)?;
    let mut missing = missing.into_inner();
    missing.dedup();
    for program in missing {
        step.note(format!(
            "{program} is not installed yet: the sudoers rule names /usr/sbin/{program}, where \
             its package puts it"
        ));
    }
    let Some(text) = rules else {
        return Ok(());
    };
    let path = sudoers_path(&user);
    let current = std::fs::read(step.target.path(&path)).ok();
    if current.as_deref() == Some(text.as_bytes()) {
        return Ok(());
    }
    validate(&text).with_context(|| {
        format!("the sudoers drop-in for {user} did not pass `visudo -c`; nothing was written")
    })?;
    step.write_file(&path, text.as_bytes(), 0o440)?;
    Ok(())
}

/// The include's directory: created owned by the user, or given back to them under their
/// home; elsewhere and not theirs, a note with the fix.
fn include_dir(
    step: &mut StepRun<'_>,
    user: &str,
    entry: Option<&(u32, u32, PathBuf)>,
    dir: &Path,
) -> anyhow::Result<()> {
    let path = step.target.path(dir);
    let Ok(meta) = std::fs::metadata(&path) else {
        step.change(format!(
            "create {} (mode 0755, owner {user})",
            path.display()
        ));
        if step.dry_run() {
            return Ok(());
        }
        std::fs::create_dir_all(&path)
            .with_context(|| format!("could not create {}", path.display()))?;
        return chown(step, &path, user, entry);
    };
    let Some((uid, _, home)) = entry else {
        return Ok(());
    };
    if meta.uid() == *uid {
        return Ok(());
    }
    if dir.starts_with(home) && home != Path::new("/") {
        step.change(format!(
            "chown {user} {} (it is under {user}'s home)",
            path.display()
        ));
        if step.dry_run() {
            return Ok(());
        }
        return chown(step, &path, user, entry);
    }
    step.note(format!(
        "nginx.include is in {}, which {user} cannot write: deploys as {user} will be refused. \
         Use `include: {}/nginx/<project>.inc` with `test: [sudo, -n, nginx, -t]` and \
         `reload: [sudo, -n, nginx, -s, reload]` (what `cutover init --user {user}` writes), \
         then rerun bootstrap",
        dir.display(),
        home.display()
    ));
    Ok(())
}

fn chown(
    step: &mut StepRun<'_>,
    path: &Path,
    user: &str,
    entry: Option<&(u32, u32, PathBuf)>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("could not chmod {}", path.display()))?;
    match entry {
        Some((uid, gid, _)) => std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
            .with_context(|| format!("could not chown {}", path.display())),
        // Under --root, a user the tree's passwd lacks: the command to run on the box.
        None => {
            let cmd = Cmd::new("chown", format!("give {} to {user}", path.display()))
                .args([user, &path.display().to_string()]);
            step.live_command(&cmd)?;
            Ok(())
        }
    }
}

/// `visudo -c -f` on the text, in a private temp file: sudo's own parser decides.
pub(super) fn validate(text: &str) -> anyhow::Result<()> {
    let file = tempfile::Builder::new()
        .prefix("cutover-sudoers")
        .tempfile()
        .context("could not create a temp file for visudo")?;
    std::fs::write(file.path(), text)
        .with_context(|| format!("could not write {}", file.path().display()))?;
    let visudo = super::sbin("visudo");
    if crate::process::which("visudo").is_none() && !visudo.is_absolute() {
        anyhow::bail!("visudo is not installed (Debian: apt-get install sudo)");
    }
    Cmd::new(visudo, "check the sudoers drop-in")
        .args(["-c", "-q", "-f"])
        .arg(file.path())
        .run()?;
    Ok(())
}

/// The directory for the image's user, and the drop-in staged, checked, then installed.
/// Without a config, or with root's include and commands, a note says what deploys as the
/// image's user would need.
fn cloud_init(instance: &Instance<'_>, view: &mut View) {
    let user = &instance.user;
    let Some(files) = &instance.opts.nginx else {
        view.note("no cutover.yml: no include directory or sudoers rule for the deploy user");
        return;
    };
    let Some(dir) = files.include_path.parent().filter(|d| d.is_absolute()) else {
        view.note("nginx.include is not an absolute path: no include directory made");
        return;
    };
    let in_home = dir.starts_with("/home");
    if in_home && user != "root" {
        let dir = dir.display().to_string();
        view.run(&["install", "-d", "-m", "0755", "-o", user, "-g", user, &dir]);
    }
    let commands = [files.test.as_slice(), files.reload.as_slice()];
    // At first boot nginx is where the image's package puts it.
    let resolve = |program: &str| Some(Path::new("/usr/sbin").join(program));
    let text = match sudoers(user, &commands, resolve) {
        Ok(Some(text)) if user != "root" => text,
        Ok(_) if in_home || user == "root" => return,
        Ok(_) => {
            view.note(format!(
                "nginx.include is in {} and nginx runs without sudo: deploys must run as root; \
                 for deploys as {user}, `cutover init --user {user}` writes the config",
                dir.display()
            ));
            return;
        }
        Err(err) => {
            view.note(format!("no sudoers rule for {user}: {err:#}"));
            return;
        }
    };
    let staged = format!("/etc/cutover/sudoers-cutover-{}", user.replace('.', "_"));
    view.file(staged.clone(), "0440", text);
    view.sh(format!(
        "visudo -c -q -f {staged} && install -m 0440 -o root -g root {staged} {}",
        sudoers_path(user).display()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn the_drop_in_allows_exactly_the_sudo_commands() {
        let test = argv(&["sudo", "-n", "nginx", "-t"]);
        let reload = argv(&["sudo", "-n", "nginx", "-s", "reload"]);
        let nginx = |p: &str| Some(Path::new("/usr/sbin").join(p));
        let text = sudoers("admin", &[&test, &reload], nginx).unwrap().unwrap();
        assert!(
            text.ends_with(
                "admin ALL=(root) NOPASSWD: /usr/sbin/nginx -t, /usr/sbin/nginx -s reload\n"
            ),
            "{text}"
        );
        // Without sudo, no drop-in.
        let plain = argv(&["nginx", "-t"]);
        assert!(sudoers("admin", &[&plain], nginx).unwrap().is_none());
        // A word sudoers would read loosely is refused, never widened.
        let wild = argv(&["sudo", "-n", "nginx", "-c", "/etc/*.conf"]);
        let err = sudoers("admin", &[&wild], nginx).unwrap_err().to_string();
        assert!(err.contains("cannot be written exactly"), "{err}");
    }

    #[test]
    fn reads_passwd_entries() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1001::/home/admin:/bin/sh\n";
        assert_eq!(
            passwd_entry(passwd, "admin"),
            Some((1000, 1001, PathBuf::from("/home/admin")))
        );
        assert_eq!(passwd_entry(passwd, "ubuntu"), None);
    }

    #[test]
    fn dotted_users_get_a_file_sudo_reads() {
        assert_eq!(
            sudoers_path("first.last"),
            Path::new("/etc/sudoers.d/cutover-first_last")
        );
    }
}
