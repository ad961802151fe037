//! The aarch64 release binary (scripts/release.sh --target aarch64-unknown-linux-gnu, built
//! in Debian's cross toolchain) run under qemu-user on this x86_64 machine: a static ARM
//! ELF that prints its version, scaffolds and checks a project, reads and writes secrets the
//! age CLI agrees with, plans a bootstrap and plans a deploy against this machine's engine.
//!
//! The binary and qemu are harness/artifact.rs's [`Aarch64`].

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{fixture, repo_root, require};
use crate::harness::artifact::{Aarch64, VERSION};
use crate::harness::project::{ready, App, Project};

/// Runs `cmd` to a successful end; its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn aarch64_binary_is_a_static_arm_elf_that_scaffolds_and_checks_a_project() {
    if !require("file", "read the binary's ELF header") {
        return;
    }
    let Some(arm) = Aarch64::unpack() else { return };
    let kind = ok(Command::new("file").arg("-b").arg(&arm.bin));
    assert!(kind.contains("ARM aarch64"), "not an aarch64 ELF: {kind}");
    assert!(
        kind.contains("statically linked") || kind.contains("static-pie linked"),
        "not static: {kind}"
    );

    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let version = ok(arm.command(work.path(), &home).arg("--version"));
    assert_eq!(version, format!("cutover {VERSION}\n"));

    // BUILD-INFO names the toolchain exactly: Debian's rustc and the arm64 std at one version.
    let info = std::fs::read_to_string(arm.bin.with_file_name("BUILD-INFO")).unwrap();
    let version_of = |package: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(package)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {package} in BUILD-INFO:\n{info}"))
    };
    assert_eq!(
        version_of("rustc:amd64"),
        version_of("libstd-rust-dev:arm64"),
        "{info}"
    );
    assert!(
        info.starts_with(&format!(
            "cutover {VERSION}\ntarget aarch64-unknown-linux-gnu\n"
        )),
        "{info}"
    );
    assert!(info.contains("\nrustc -V: rustc 1."), "{info}");

    // The project `cutover init` scaffolds (the README's first step), checked by the same
    // binary: templates, YAML and minijinja all run on ARM.
    ok(arm.command(work.path(), &home).args(["init", "shop"]));
    let project = work.path().join("shop");
    let check = ok(arm.command(&project, &home).args(["render", "--check"]));
    assert!(check.contains("is valid"), "{check}");
}

#[test]
fn aarch64_secrets_round_trip_with_the_age_cli_both_ways() {
    if !require("age", "check interop with the age CLI") {
        return;
    }
    let Some(arm) = Aarch64::unpack() else { return };
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let project = work.path().join("project");
    std::fs::create_dir_all(project.join("secrets")).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let recipients = project.join("secrets/recipients.txt");
    std::fs::copy(repo_root().join("secrets/recipients.txt"), &recipients).unwrap();
    let identity = work.path().join("identity.txt");
    std::fs::copy(fixture("secrets/test-identity.txt"), &identity).unwrap();
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cmd = || {
        let mut c = arm.command(&project, &home);
        c.env("CUTOVER_IDENTITY", &identity);
        c
    };

    // age encrypts, the aarch64 cutover decrypts.
    let plain = work.path().join("plain.env");
    std::fs::write(&plain, "FROM_AGE=yes\nSPACED=hello world\n").unwrap();
    ok(Command::new("age")
        .arg("-R")
        .arg(&recipients)
        .arg("-o")
        .arg(project.join("secrets/fromage.env.age"))
        .arg(&plain));
    let shown: serde_json::Value =
        serde_json::from_str(&ok(cmd().args(["secrets", "show", "fromage", "--json"]))).unwrap();
    let shown = &shown["values"];
    assert_eq!(shown["FROM_AGE"], "yes", "{shown}");
    assert_eq!(shown["SPACED"], "hello world", "{shown}");

    // The aarch64 cutover encrypts, age decrypts.
    let text = "TO_AGE=yes\nMULTI=\"a\nb\"\n";
    let plain = work.path().join("prod.env");
    std::fs::write(&plain, text).unwrap();
    ok(cmd().args(["secrets", "encrypt"]).arg(&plain).arg("--rm"));
    let decrypted = ok(Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&identity)
        .arg(project.join("secrets/prod.env.age")));
    assert_eq!(decrypted, text);
}

#[test]
fn aarch64_bootstrap_dry_run_plans_and_changes_nothing() {
    let Some(arm) = Aarch64::unpack() else { return };
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let root = work.path().join("root");
    let project = work.path().join("project");
    for dir in [&home, &project, &root.join("etc/nginx/sites-enabled")] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(root.join("etc/fstab"), "# fstab\n").unwrap();
    std::fs::copy(
        fixture("configs/good/parking.yml"),
        project.join("cutover.yml"),
    )
    .unwrap();
    let r = root.to_str().unwrap();
    let before = tree(&root);
    let plan = ok(arm.command(&project, &home).args([
        "bootstrap",
        "--dry-run",
        "--root",
        r,
        "--swap",
        "16M",
    ]));
    assert_eq!(tree(&root), before, "a dry run changed the root:\n{plan}");
    for want in [
        format!("would: create {r}/swapfile (16M"),
        format!("would: create {r}/etc/sysctl.d/99-cutover.conf"),
        format!("would: create {r}/etc/cutover/identity.txt"),
    ] {
        assert!(plan.contains(&want), "missing `{want}` in:\n{plan}");
    }
}

/// Every path under `dir` with its bytes (files) or its target (links).
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let bytes = if meta.is_dir() {
                stack.push(path.clone());
                Vec::new()
            } else if meta.file_type().is_symlink() {
                std::fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                std::fs::read(&path).unwrap()
            };
            out.push((path.display().to_string(), bytes));
        }
    }
    out.sort();
    out
}

#[test]
fn aarch64_deploy_dry_run_plans_against_this_machines_engine() {
    if !ready() {
        return;
    }
    let Some(arm) = Aarch64::unpack() else { return };
    // Deployed by this machine's cutover; planned by the aarch64 one, which reads the same
    // state and asks the same engine.
    let project = Project::compose(App::compose());
    project.deploy_ok("cutover-demo:v1");
    let include_before = project.include();
    let plan = ok(arm.command(&project.path(), &project.home()).args([
        "deploy",
        "--image",
        "cutover-demo:v2",
        "--dry-run",
    ]));
    assert!(
        plan.contains("plan: deploy cutover-demo:v2 to green"),
        "{plan}"
    );
    assert!(
        plan.contains("up -d --no-deps --force-recreate web-green"),
        "{plan}"
    );
    assert_eq!(project.include(), include_before);
    assert_eq!(project.running_services(), ["web-blue"]);
    assert_eq!(project.history().len(), 1);
}

/// Hostile run on #25 (fails today): two cold `scripts/cross-root.sh` at once, as two
/// engineers' `scripts/test.sh` on one machine share `~/.cache/cutover-test`. The second
/// one's stale-root sweep (`find $base ! -name $key -exec rm -rf`) also takes the first
/// one's `build.XXXXXX` work directory, mid-debootstrap; the first then fails with no
/// message (its debootstrap.log went with the directory). debootstrap is a stub here (it
/// only stands in for the minutes a real one takes, and reports whether its target
/// survived); the script under test is the real one, in a throwaway XDG_CACHE_HOME.
#[test]
fn cross_root_a_second_cold_build_does_not_delete_the_first_ones_work() {
    if !root_or_skip("cross-root.sh needs root (chroot)") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let stub_dir = work.path().join("stub");
    std::fs::create_dir_all(&stub_dir).unwrap();
    let report = work.path().join("report");
    std::fs::write(
        stub_dir.join("debootstrap"),
        format!(
            // The target is debootstrap's next-to-last argument (`… SUITE TARGET MIRROR`).
            "#!/bin/sh\nn=$(($# - 1)); eval t=\\${{$n}}\nmkdir -p \"$t\"\nsleep 3\nif [ -d \"$t\" ]; then r=intact; else r=vanished; fi\n\
             echo \"$$ $r\" >>{}\nexit 1\n",
            report.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        stub_dir.join("debootstrap"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        stub_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = || {
        Command::new("bash")
            .arg(repo_root().join("scripts/cross-root.sh"))
            .env("PATH", &path)
            .env("XDG_CACHE_HOME", work.path().join("cache"))
            .env("CUTOVER_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = run();
    // The first one is in its (stub) debootstrap once the stub has made its target.
    let base = work.path().join("cache/cutover-test/cross-root");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_dir(&base)
        .map(|d| d.flatten().any(|e| e.path().join("root").is_dir()))
        .unwrap_or(false)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = run();
    let first = first.wait_with_output().unwrap();
    let _ = second.wait_with_output().unwrap();
    let report = std::fs::read_to_string(&report).unwrap_or_default();
    assert!(
        !report.contains("vanished"),
        "the second cold run deleted the first one's root mid-debootstrap ({report:?}); the \
         first said:\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
}

/// Hostile run on #25: a cache directory someone else owns, or may write to. cross-root.sh
/// runs the root's rustc as root (chroot, /dev bound in): whoever can write there could swap
/// it. Refused before anything is built or run, naming the directory; debootstrap is a stub
/// that records being called (it must not be).
#[test]
fn cross_root_refuses_a_cache_dir_another_user_owns_or_may_write() {
    use std::os::unix::fs::chown;
    if !root_or_skip("cross-root.sh needs root (chroot)") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let stub_dir = work.path().join("stub");
    std::fs::create_dir_all(&stub_dir).unwrap();
    let called = work.path().join("called");
    std::fs::write(
        stub_dir.join("debootstrap"),
        format!("#!/bin/sh\ntouch {}\nexit 1\n", called.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        stub_dir.join("debootstrap"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        stub_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cache = work.path().join("cache");
    let base = cache.join("cutover-test/cross-root");
    std::fs::create_dir_all(&base).unwrap();
    let run = || {
        Command::new("bash")
            .arg(repo_root().join("scripts/cross-root.sh"))
            .env("PATH", &path)
            .env("XDG_CACHE_HOME", &cache)
            .env("CUTOVER_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    // Owned by nobody (65534).
    chown(&base, Some(65534), Some(65534)).unwrap();
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is owned by uid 65534, not root",
            base.display()
        )),
        "{stderr}"
    );

    // Root's, but its parent is writable by everyone (not sticky): the directory could be
    // renamed away and replaced.
    chown(&base, Some(0), Some(0)).unwrap();
    let parent = cache.join("cutover-test");
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is writable by group or others (mode 777)",
            parent.display()
        )),
        "{stderr}"
    );
    assert!(
        !called.exists(),
        "debootstrap ran from a cache it should refuse"
    );

    // Put right, the same cache is used (here: the stub debootstrap is reached).
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run();
    assert!(called.exists(), "{}", String::from_utf8_lossy(&out.stderr));

    // Hostile run #2: the cache directory a symlink to a root-owned directory whose parent
    // is another user's (who can rename it away and put their own in its place). The walk
    // up the symlink's own path saw only root's directories and accepted it.
    std::fs::remove_file(&called).unwrap();
    let theirs = work.path().join("theirs");
    std::fs::create_dir_all(theirs.join("cross-root")).unwrap();
    chown(&theirs, Some(65534), Some(65534)).unwrap();
    std::fs::remove_dir_all(&base).unwrap();
    std::os::unix::fs::symlink(theirs.join("cross-root"), &base).unwrap();
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is owned by uid 65534, not root",
            theirs.display()
        )),
        "{stderr}"
    );
    assert!(
        !called.exists(),
        "debootstrap ran from a cache it should refuse"
    );
}

/// True as root; else skips loudly (a failure under CI, which runs as root).
fn root_or_skip(what: &str) -> bool {
    if nix_is_root() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{what}; CI runs as root");
    eprintln!("*** SKIPPED: {what} ***");
    false
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

/// Hostile run #2 on #25: which rustc cross-root.sh pins, from a fake archive. debootstrap,
/// mount and chroot are stubs (the chroot one answers `apt-cache show` from the lists below,
/// compares versions with this machine's `dpkg`, and records then fails `apt-get install`);
/// the selection is the real script's. A libstd-rust-dev:arm64 the archive lacks entirely
/// ended the script with no message (apt-cache's failure under pipefail).
#[test]
fn cross_root_pins_the_newest_rustc_both_arches_carry_from_a_fake_archive() {
    if !root_or_skip("cross-root.sh needs root (chroot)") {
        return;
    }
    if !require("dpkg", "compare Debian versions") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let stub = work.path().join("stub");
    std::fs::create_dir_all(&stub).unwrap();
    let write = |name: &str, text: String| {
        std::fs::write(stub.join(name), text).unwrap();
        std::fs::set_permissions(stub.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    write(
        "debootstrap",
        "#!/bin/sh\nn=$(($# - 1)); eval t=\\${$n}\nmkdir -p \"$t/etc/apt/apt.conf.d\" \"$t/proc\"\n"
            .into(),
    );
    write("mount", "#!/bin/sh\nexit 0\n".into());
    write("umount", "#!/bin/sh\nexit 0\n".into());
    // `chroot ROOT env VAR=… COMMAND…`; the archive is $ARCHIVE/{rustc,std}, one version a line.
    write(
        "chroot",
        "#!/bin/sh\nshift; [ \"$1\" = env ] && shift\n\
         while case \"$1\" in *=*) true;; *) false;; esac; do shift; done\n\
         case \"$1 $2\" in\n\
         'dpkg --add-architecture'|'apt-get update') exit 0 ;;\n\
         'dpkg --compare-versions') shift; exec /usr/bin/dpkg \"$@\" ;;\n\
         'apt-cache show')\n\
           case \"$3\" in rustc:amd64) f=rustc ;; libstd-rust-dev:arm64) f=std ;; *) exit 100 ;; esac\n\
           [ -f \"$ARCHIVE/$f\" ] || { echo 'E: No packages found' >&2; exit 100; }\n\
           while read -r v; do printf 'Package: %s\\nVersion: %s\\n\\n' \"$f\" \"$v\"; done <\"$ARCHIVE/$f\"; exit 0 ;;\n\
         'apt-get install') echo \"$*\" >\"$ARCHIVE/installed\"; exit 1 ;;\n\
         esac\necho \"chroot stub: unexpected $*\" >&2; exit 1\n"
            .into(),
    );
    let path = format!(
        "{}:{}",
        stub.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // (case, rustc:amd64 versions, libstd-rust-dev:arm64 versions or None for no such
    // package, the version pinned or None, what stderr says)
    type Case = (
        &'static str,
        &'static [&'static str],
        Option<&'static [&'static str]>,
        Option<&'static str>,
        &'static str,
    );
    let cases: [Case; 5] = [
        (
            "arm64 lags",
            &["1.98.0+dfsg1-1", "1.97.1+dfsg1-1"],
            Some(&["1.97.1+dfsg1-1"]),
            Some("1.97.1+dfsg1-1"),
            "rustc 1.98.0+dfsg1-1 has no libstd-rust-dev:arm64 of its version yet; using 1.97.1+dfsg1-1",
        ),
        (
            "dpkg order",
            &["1.99.0+dfsg1-1", "1.100.0+dfsg1-1"],
            Some(&["1.100.0+dfsg1-1", "1.99.0+dfsg1-1"]),
            Some("1.100.0+dfsg1-1"),
            "apt could not install rustc, cargo and libstd-rust-dev:arm64 1.100.0+dfsg1-1",
        ),
        (
            "no pair",
            &["1.98.0+dfsg1-1"],
            Some(&["1.97.1+dfsg1-1"]),
            None,
            "no rustc version that sid and testing carry for both amd64 and arm64 (rustc (amd64): \
             1.98.0+dfsg1-1 ; libstd-rust-dev (arm64): 1.97.1+dfsg1-1 )",
        ),
        (
            "no arm64 std at all",
            &["1.98.0+dfsg1-1"],
            None,
            None,
            "no rustc version that sid and testing carry for both amd64 and arm64",
        ),
        (
            "below rust-version",
            &["1.85.0+dfsg1-1"],
            Some(&["1.85.0+dfsg1-1"]),
            None,
            "Debian's rustc 1.85.0+dfsg1-1 is older than Cargo.toml's rust-version",
        ),
    ];
    for (i, (case, rustc, std_, pinned, says)) in cases.into_iter().enumerate() {
        let archive = work.path().join(format!("archive-{i}"));
        std::fs::create_dir_all(&archive).unwrap();
        std::fs::write(archive.join("rustc"), rustc.join("\n") + "\n").unwrap();
        if let Some(std_) = std_ {
            std::fs::write(archive.join("std"), std_.join("\n") + "\n").unwrap();
        }
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/cross-root.sh"))
            .env("PATH", &path)
            .env("ARCHIVE", &archive)
            .env("XDG_CACHE_HOME", work.path().join(format!("cache-{i}")))
            .env("CUTOVER_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
        assert!(stderr.contains(says), "{case}: {stderr}");
        let installed = std::fs::read_to_string(archive.join("installed")).unwrap_or_default();
        match pinned {
            Some(v) => assert!(
                installed.contains(&format!(" rustc={v} cargo={v} libstd-rust-dev:arm64={v} ")),
                "{case}: {installed:?}"
            ),
            None => assert!(installed.is_empty(), "{case}: installed {installed:?}"),
        }
    }
}

/// Hostile run #2 on #25: a cold cross-root.sh of another script sweeps other roots by
/// their directory's age (a day). A root another checkout builds in every day kept the mtime
/// of the day it was made, so it was swept (mid-build, even) once a day old. cross-cargo.sh
/// now marks the root in use. The root here is a fake one marked ready, and `chroot` a stub
/// (cargo is not run); the mounts are made in cross-cargo.sh's private namespace.
#[test]
fn cross_cargo_marks_its_root_in_use_for_the_stale_root_sweep() {
    if !root_or_skip("cross-cargo.sh needs root (chroot)") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (dir, path) = fake_ready_root(work.path(), "#!/bin/sh\nexit 0\n");
    // Made two days ago.
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
    std::fs::File::open(&dir)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();

    ok(Command::new("bash")
        .arg(repo_root().join("scripts/cross-cargo.sh"))
        .arg("--version")
        .env("PATH", &path)
        .env("XDG_CACHE_HOME", work.path().join("cache"))
        .env("CARGO_HOME", work.path().join("cargo-home")));
    let age = std::fs::metadata(&dir)
        .unwrap()
        .modified()
        .unwrap()
        .elapsed()
        .unwrap_or_default();
    assert!(
        age < std::time::Duration::from_secs(3600),
        "the root in use still looks {}s old to the sweep",
        age.as_secs()
    );
}

/// A cross root under `work`/cache, marked ready for this checkout's cross-root.sh, with
/// `versions` naming rustc and the arm64 std 1.97.1+dfsg1-1 and no toolchain in it; and a PATH
/// whose `chroot` is the script `chroot_stub`. Returns the root's cache directory and PATH.
fn fake_ready_root(work: &Path, chroot_stub: &str) -> (std::path::PathBuf, String) {
    use sha2::Digest as _;
    let mut scripts = std::fs::read(repo_root().join("scripts/cross-root.sh")).unwrap();
    scripts.extend(std::fs::read(repo_root().join("scripts/debian-mirror.sh")).unwrap());
    let key: String = sha2::Sha256::digest(&scripts)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..16]
        .to_string();
    let dir = work.join("cache/cutover-test/cross-root").join(&key);
    // As a warm cache: its target directory already there (making it would touch the root's
    // directory).
    for sub in ["root/etc", "root/proc", "root/dev", "target"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("versions"),
        "libstd-rust-dev:arm64 1.97.1+dfsg1-1\nrustc:amd64 1.97.1+dfsg1-1\nrustc -V: rustc 1.97.1\n",
    )
    .unwrap();
    std::fs::write(dir.join("ready"), "").unwrap();
    let stub = work.join("stub");
    std::fs::create_dir_all(&stub).unwrap();
    std::fs::write(stub.join("chroot"), chroot_stub).unwrap();
    std::fs::set_permissions(stub.join("chroot"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        stub.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (dir, path)
}

/// Hostile run #2 on #25: the root changed after it was built (apt-get run in it by hand,
/// here a rustc 1.98 that dpkg reports) while its versions file still says 1.97.1: release.sh
/// wrote the file into BUILD-INFO as the toolchain that built the binary. Refused, naming
/// what dpkg says, before anything is built.
#[test]
fn release_refuses_a_cross_root_whose_packages_its_versions_file_does_not_name() {
    if !root_or_skip("release.sh --target aarch64 needs root (chroot)") {
        return;
    }
    if std::env::consts::ARCH != "x86_64" {
        return; // the cross build is x86_64 -> aarch64
    }
    let work = tempfile::tempdir().unwrap();
    let built = work.path().join("cargo-ran");
    let (dir, path) = fake_ready_root(
        work.path(),
        &format!(
            "#!/bin/sh\nif [ \"$2\" = dpkg-query ]; then\n\
             printf 'libstd-rust-dev:arm64 1.97.1+dfsg1-1\\nrustc:amd64 1.98.0+dfsg1-1\\n'; exit 0; fi\n\
             touch {}\nexit 0\n",
            built.display()
        ),
    );
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/release.sh"))
        .args([
            "--profile",
            "dev",
            "--target",
            "aarch64-unknown-linux-gnu",
            "--out",
        ])
        .arg(work.path().join("dist"))
        .env("PATH", &path)
        .env("XDG_CACHE_HOME", work.path().join("cache"))
        .env("CARGO_HOME", work.path().join("cargo-home"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the cross root holds rustc:amd64 1.98.0+dfsg1-1, which its versions file does not \
             name (changed since it was built): remove {}",
            dir.display()
        )),
        "{stderr}"
    );
    assert!(!built.exists(), "cargo ran in a root that was refused");
    assert!(!work.path().join("dist").exists());
}
