//! Hostile inputs to `secrets::files` (issue #24): planted symlinks, pre-created directories
//! of another owner, a full tmpfs. Each test states what a user relying on "no value ever on
//! a disk, nobody but root reads it" would expect.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use cutover::secrets::files::{require_memory_backed, ProjectDirs};
use secrecy::SecretString;

fn shm() -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir_in("/dev/shm").ok()?;
    require_memory_backed(dir.path()).ok()?;
    Some(dir)
}

/// Every regular file under `dir` (symlinks not followed) whose content contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            found.extend(files_containing(&e.path(), needle));
        } else if ft.is_file()
            && fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains(needle)
        {
            found.push(e.path().display().to_string());
        }
    }
    found
}

/// The root is on a tmpfs, but `<root>/<project>` is a symlink to a directory on a disk: the
/// statfs check looks at the root only, so the values land on the disk.
#[test]
fn a_project_dir_symlinked_to_a_disk_is_refused() {
    let Some(root) = shm() else { return };
    let disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    if require_memory_backed(disk.path()).is_ok() {
        return; // the checkout is on a tmpfs: nothing to prove
    }
    std::os::unix::fs::symlink(disk.path(), root.path().join("p")).unwrap();
    let dirs = ProjectDirs::new(root.path(), "p");
    let value = SecretString::from("h24-on-disk-value");
    let written = dirs.write("web-blue", [("K", &value)]);
    let leaked = files_containing(disk.path(), "h24-on-disk-value");
    assert!(
        written.is_err() && leaked.is_empty(),
        "a secret was written through a symlink onto a disk: {leaked:?} (write returned {:?})",
        written.map_err(|e| format!("{e:#}"))
    );
}

/// A failed write (here: the tmpfs is full) must not leave the keys already written behind in
/// a `.<service>.new-<pid>` directory that no later run (another pid) ever removes.
#[test]
fn a_failed_write_leaves_no_plaintext_behind() {
    let mnt = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "h24tmpfs"])
        .arg(mnt.path())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("cannot mount a tmpfs (not root?): skipped");
        return;
    }
    let result = std::panic::catch_unwind(|| {
        let dirs = ProjectDirs::new(mnt.path(), "p");
        let small = SecretString::from("h24-first-key-value");
        let huge = SecretString::from("x".repeat(256 * 1024));
        let err = dirs
            .write("web-blue", [("A", &small), ("B", &huge)])
            .expect_err("256 KiB cannot fit a 64 KiB tmpfs");
        let left = files_containing(mnt.path(), "h24-first-key-value");
        assert!(
            left.is_empty(),
            "after `{err:#}` the first key's value is still on the tmpfs: {left:?}"
        );
    });
    let _ = Command::new("umount").arg(mnt.path()).status();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// A pre-created root and project directory owned by another user: cutover chmods them 0700
/// and writes, leaving that user the owner of the directory that holds the service
/// directories, free to swap a service's set for one of their own (the container then starts
/// with the attacker's values). Expected: refused, as sshd's StrictModes refuses.
#[test]
fn a_secrets_dir_owned_by_another_user_is_refused() {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let Some(root) = shm() else { return };
    let project = root.path().join("p");
    fs::create_dir(&project).unwrap();
    for d in [root.path(), project.as_path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
    }
    let dirs = ProjectDirs::new(root.path(), "p");
    let value = SecretString::from("h24-owner-value");
    let written = dirs.write("web-blue", [("K", &value)]);
    let owner = fs::metadata(&project).unwrap().uid();
    assert!(
        written.is_err(),
        "written into {} owned by uid {owner}, not this user",
        project.display()
    );
}

/// While a files-mode deploy runs (here: paused in its release phase, the files written and
/// compose running), no process on the host has a value in its argv or environment. (The
/// control, `env` mode, finds the value in compose's and the one-off's environment.)
#[test]
fn e2e_no_process_on_the_host_holds_a_files_mode_value_in_argv_or_env() {
    use crate::harness::project::{ready, App, Project};
    if !ready() {
        return;
    }
    let project = Project::compose(
        App::compose()
            .secrets()
            .secrets_delivery("files")
            .release(&["task", "sleep=4000"], "60s"),
    );
    let marker = format!("h24procmark{}", std::process::id());
    project
        .cutover_with_stdin(
            ["secrets", "set", "demo", "DB_PASSWORD"],
            &format!("{marker}\n"),
        )
        .success();
    let mut child = project.spawn(["deploy", "--image", "cutover-demo:v1"]);
    project.wait_for_step("release");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let mut found = Vec::new();
    let mut scanned = 0;
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        for what in ["environ", "cmdline"] {
            if let Ok(bytes) = fs::read(e.path().join(what)) {
                scanned += 1;
                if String::from_utf8_lossy(&bytes).contains(&marker) {
                    let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
                    found.push(format!(
                        "{}/{what}: {}",
                        e.path().display(),
                        String::from_utf8_lossy(&cmd).replace('\0', " ")
                    ));
                }
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(scanned > 10);
    assert!(status.success(), "the deploy failed");
    assert!(
        found.is_empty(),
        "a value in a process's argv or env: {found:#?}"
    );
    assert_eq!(
        fs::read_to_string(
            project
                .secrets_root()
                .join(&project.name)
                .join("web-blue/DB_PASSWORD")
        )
        .unwrap(),
        marker
    );
}

/// `secrets restore --all` (the boot unit) promises that one project's failure does not keep
/// the others' files from being written; one registered project whose `claims.json` does not
/// parse stops it before any project is restored, so after a reboot no container of any
/// files-mode project starts.
#[test]
fn restore_all_survives_one_damaged_project() {
    use crate::harness::project::{ready, App, Project};
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().secrets().secrets_delivery("files"));
    project.deploy_ok("cutover-demo:v1");
    let file = project
        .secrets_root()
        .join(&project.name)
        .join("web-blue")
        .join("DB_PASSWORD");
    assert!(file.is_file());
    // A registry of our own: this project, and a second one whose claims are damaged.
    let registry = tempfile::tempdir().unwrap();
    let damaged = tempfile::tempdir().unwrap();
    fs::write(damaged.path().join("claims.json"), "{ not json").unwrap();
    let state_dir = project.path().join(".cutover");
    assert!(state_dir.join("claims.json").is_file());
    fs::write(
        registry.path().join("a-good"),
        state_dir.display().to_string(),
    )
    .unwrap();
    fs::write(
        registry.path().join("b-damaged"),
        damaged.path().display().to_string(),
    )
    .unwrap();
    fs::remove_dir_all(project.secrets_root().join(&project.name)).unwrap();
    let out = project
        .command(["secrets", "restore", "--all"])
        .env("CUTOVER_REGISTRY_DIR", registry.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a damaged project is a failure: {stderr}"
    );
    assert!(
        file.is_file(),
        "the good project's files were not restored because another project is damaged: {stderr}"
    );
}

/// `CUTOVER_SECRETS_RUN_DIR` pointed at a shared tmpfs that exists already (the obvious
/// choice, `/dev/shm`, which README names): cutover chmods that directory itself to 0700,
/// so every other user of the box loses its shared memory (`shm_open`, postgres, Chrome).
/// Expected: a root that exists is checked (refused if others can write it), never chmodded;
/// cutover makes only its own `<root>/<project>` private.
#[test]
fn an_existing_shared_root_is_not_chmodded() {
    let mnt = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=1777", "h24shm"])
        .arg(mnt.path())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("cannot mount a tmpfs (not root?): skipped");
        return;
    }
    let dirs = ProjectDirs::new(mnt.path(), "p");
    let value = SecretString::from("h24-shm-value");
    let written = dirs.write("web-blue", [("K", &value)]).map(|_| ());
    let mode = fs::metadata(mnt.path()).unwrap().permissions().mode() & 0o7777;
    let _ = Command::new("umount").arg(mnt.path()).status();
    written.unwrap();
    assert_eq!(mode, 0o1777, "the shared tmpfs root was made {mode:o}");
}

/// `kill -9` of a deploy after the new color's files are written and before it starts (in its
/// release phase): the files stay on the tmpfs (nothing can run at a SIGKILL), and the next
/// deploy, which targets the same idle color, replaces them and leaves no other set behind.
#[test]
fn e2e_files_left_by_a_killed_deploy_are_replaced_by_the_next() {
    use crate::harness::project::{ready, App, Project};
    if !ready() {
        return;
    }
    let project = Project::compose(
        App::compose()
            .secrets()
            .secrets_delivery("files")
            .release(&["task", "sleep=3000"], "60s"),
    );
    project.deploy_ok("cutover-demo:v1");
    let dir = project.secrets_root().join(&project.name);
    let mut child = project.spawn(["deploy", "--image", "cutover-demo:v2"]);
    project.wait_for_step("release");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        dir.join("web-green/DB_PASSWORD").is_file(),
        "written before the release"
    );
    project
        .cutover_with_stdin(
            ["secrets", "set", "demo", "DB_PASSWORD"],
            "h24-after-kill\n",
        )
        .success();
    project.deploy_ok("cutover-demo:v2");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["web-green"], "only the serving color's set");
    assert_eq!(
        fs::read_to_string(dir.join("web-green/DB_PASSWORD")).unwrap(),
        "h24-after-kill"
    );
}

/// A root on a disk is refused, but only after cutover has chmodded it 0700: with
/// `CUTOVER_SECRETS_RUN_DIR=/var` (a typo, a wrong guess) root loses `/var`'s 0755 before
/// the refusal. Expected: the statfs check comes first and a refused root is left as it was.
#[test]
fn a_refused_disk_root_is_left_untouched() {
    let disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    if require_memory_backed(disk.path()).is_ok() {
        return; // the checkout is on a tmpfs: nothing to prove
    }
    fs::set_permissions(disk.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let dirs = ProjectDirs::new(disk.path(), "p");
    let value = SecretString::from("h24-disk-root");
    let err = dirs.write("web-blue", [("K", &value)]).unwrap_err();
    assert!(format!("{err:#}").contains("not on a tmpfs"), "{err:#}");
    let mode = fs::metadata(disk.path()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "the refused root was made {mode:o}");
}

/// A reboot runs `secrets restore`: it must write the values each color was deployed (and
/// health-checked) with, not a `secrets set` no deploy ever started, as in env mode, where the
/// restarted container keeps its environment. (Before the fix, restore read today's store.)
/// The next deploy carries the rotation to the new color only, and the stopped color's kept
/// ciphertext goes with it; nothing kept on disk holds a value.
#[test]
fn a_reboot_restore_does_not_apply_an_undeployed_rotation() {
    use crate::harness::project::{ready, App, Project};
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().secrets().secrets_delivery("files"));
    project.deploy_ok("cutover-demo:v1");
    let deployed = project.secret_value("DB_PASSWORD");
    let file = |color: &str| {
        project
            .secrets_root()
            .join(&project.name)
            .join(format!("web-{color}"))
            .join("DB_PASSWORD")
    };
    assert_eq!(fs::read_to_string(file("blue")).unwrap(), deployed);
    let kept = project.path().join(".cutover/deployed-secrets");
    let kept_blue = kept.join("web-blue.json");
    assert_eq!(fs::metadata(&kept_blue).unwrap().mode() & 0o777, 0o600);

    // `restore` with an identity that is not there: a clear refusal, nothing written.
    fs::remove_dir_all(project.secrets_root().join(&project.name)).unwrap();
    let out = project
        .command(["secrets", "restore"])
        .env("CUTOVER_IDENTITY", "/nonexistent/h24-identity.txt")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "restore without its identity succeeded"
    );
    assert!(
        stderr.contains("h24-identity.txt"),
        "names the identity: {stderr}"
    );
    assert!(!stderr.contains(&deployed) && !file("blue").exists());

    project
        .cutover_with_stdin(
            ["secrets", "set", "demo", "DB_PASSWORD"],
            "h24-never-deployed\n",
        )
        .success();
    project.cutover(["secrets", "restore"]).success();
    assert_eq!(
        fs::read_to_string(file("blue")).unwrap(),
        deployed,
        "after a reboot the serving color runs a value no deploy ever started"
    );
    let plaintext = [
        files_containing(&kept, &deployed),
        files_containing(&kept, "h24-never-deployed"),
    ]
    .concat();
    assert!(plaintext.is_empty(), "a value on disk: {plaintext:?}");

    // Deployed, the rotation reaches green; blue is stopped and its copy goes.
    project.deploy_ok("cutover-demo:v1");
    assert_eq!(
        fs::read_to_string(file("green")).unwrap(),
        "h24-never-deployed"
    );
    assert!(
        !kept_blue.exists(),
        "the stopped color's copy is still kept"
    );
    fs::remove_dir_all(project.secrets_root().join(&project.name)).unwrap();
    project.cutover(["secrets", "restore"]).success();
    assert_eq!(
        fs::read_to_string(file("green")).unwrap(),
        "h24-never-deployed"
    );
    assert!(!file("blue").exists());

    // A color deployed by a cutover that kept no copy: restored from the store, and named.
    fs::remove_file(kept.join("web-green.json")).unwrap();
    let out = project.cutover(["secrets", "restore", "--json"]).success();
    let json = out.stdout_json();
    crate::json_contract::validate("secrets-restore.schema.json", &json);
    assert_eq!(json["projects"][0]["from_store"][0], "web-green", "{json}");
}

/// After `cutover` is upgraded on the box, the boot unit must restore with the version that
/// deployed (an older one may not read what it keeps): a files-mode deploy replaces the boot
/// unit's copy when it differs, atomically, 0755, and says so; a current copy is left alone
/// and unmentioned. Here the copy is the project's own (`CUTOVER_BOOT_BINARY`), not the host's.
#[test]
fn a_files_mode_deploy_keeps_the_boot_units_cutover_current() {
    use crate::harness::project::{ready, App, Project};
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().secrets().secrets_delivery("files"));
    let copy = project.boot_binary();
    fs::write(&copy, b"an older cutover").unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o700)).unwrap();
    let run = project.deploy_ok("cutover-demo:v1");
    let this = fs::read(env!("CARGO_BIN_EXE_cutover")).unwrap();
    assert!(
        fs::read(&copy).unwrap() == this,
        "the copy was not replaced"
    );
    assert_eq!(fs::metadata(&copy).unwrap().mode() & 0o777, 0o755);
    assert!(
        run.stderr
            .contains("(the secrets boot unit's cutover) is now this version"),
        "{}",
        run.stderr
    );
    let leftovers: Vec<_> = fs::read_dir(copy.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".cutover-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let again = project.deploy_ok("cutover-demo:v1");
    assert!(!again.stderr.contains("boot unit"), "{}", again.stderr);
}

/// `secrets restore` run by hand while a deploy holds the project's lock: the deploy moves,
/// writes and removes the files and copies restore reads, and a restore racing it writes
/// again the files of a color the deploy has just stopped (plaintext of nothing running, left
/// on the tmpfs). Expected: refused, naming the lock, nothing written; then it runs.
#[test]
fn restore_is_refused_while_a_deploy_holds_the_lock() {
    use crate::harness::project::{ready, App, Project};
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().secrets().secrets_delivery("files"));
    project.deploy_ok("cutover-demo:v1");
    let dir = project.secrets_root().join(&project.name);
    fs::remove_dir_all(&dir).unwrap();
    let lock = project.path().join(".cutover/lock");
    // -o: the lock is flock's own, not its child's, so killing flock frees it.
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while Command::new("flock")
        .arg("-n")
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(std::time::Instant::now() < deadline, "flock never held");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let refused = project.cutover(["secrets", "restore"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let refused = refused.failure();
    assert!(refused.stderr.contains("deploy lock"), "{}", refused.stderr);
    assert!(!dir.exists(), "written while a deploy held the lock");
    project.cutover(["secrets", "restore"]).success();
    assert!(dir.join("web-blue/DB_PASSWORD").is_file());
}
