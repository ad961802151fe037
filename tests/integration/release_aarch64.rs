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
    if !nix_is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "cross-root.sh needs root (chroot); CI runs as root"
        );
        eprintln!("*** SKIPPED: cross-root.sh needs root (chroot) ***");
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

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}
