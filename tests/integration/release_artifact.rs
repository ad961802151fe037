//! The release artifact (scripts/release.sh) and its installer (scripts/install.sh).
//!
//! The static binary runs `cutover --version` and `cutover render` inside an image holding
//! nothing but busybox (itself static) and the binary: no libc, no loader, no NSS modules.
//! install.sh installs it from a local HTTP server (also read from stdin, as `curl … | sh -s`)
//! and refuses, leaving nothing installed, a corrupted or truncated tarball, a .sha256 naming
//! another file, a tarball whose `cutover` is a symlink, a machine with no release, and a
//! directory where the binary goes; a noexec TMPDIR does not stop it.
//!
//! The artifact and the HTTP server are harness/artifact.rs's.

use std::path::Path;
use std::process::Command;

use crate::common::{fixture, repo_root, require, ImageGuard};
use crate::harness::artifact::{
    aarch64_binfmt, artifacts, artifacts_for, name, name_for, qemu_aarch64, Server, AARCH64,
    VERSION, X86_64,
};

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
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
fn release_static_binary_runs_in_an_image_without_libc() {
    if !require("docker", "run the binary in an image without libc")
        || !require("file", "check that the binaries are static")
    {
        return;
    }
    let Some(dist) = artifacts() else { return };
    let work = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(dist.join(format!("{}.tar.gz", name())))
            .arg("-C")
            .arg(work.path()),
    );
    let bin = work.path().join(name()).join("cutover");
    let busybox = Path::new("/bin/busybox");
    for file in [bin.as_path(), busybox] {
        let kind = run_ok(Command::new("file").arg("-b").arg(file));
        assert!(
            kind.contains("statically linked") || kind.contains("static-pie linked"),
            "{} is not static: {kind}",
            file.display()
        );
    }

    // The root filesystem: busybox, the binary, a sample project. Nothing else.
    let root = work.path().join("rootfs");
    for dir in ["bin", "usr/local/bin", "project", "tmp"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::fs::copy(&bin, root.join("usr/local/bin/cutover")).unwrap();
    std::fs::copy(
        fixture("configs/good/minimal.yml"),
        root.join("project/cutover.yml"),
    )
    .unwrap();
    let rootfs = work.path().join("rootfs.tar");
    run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
            .arg(&rootfs)
            .arg("-C")
            .arg(&root)
            .arg("."),
    );
    let listing = run_ok(Command::new("tar").arg("-tf").arg(&rootfs));
    let libs: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains("lib") || l.contains(".so"))
        .collect();
    assert!(libs.is_empty(), "the image would hold libraries: {libs:?}");

    let image = format!("cutover-release-test:{}", std::process::id());
    let _guard = ImageGuard(image.clone());
    run_ok(
        Command::new("docker")
            .args(["import", "--change", "ENV PATH=/usr/local/bin:/bin"])
            .arg(&rootfs)
            .arg(&image),
    );
    let script = "set -e; cutover --version; cd /project; \
                  HOME=/tmp cutover render --out /tmp/out; \
                  ls /tmp/out; cat /tmp/out/service-url.inc";
    let out = run_ok(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "/bin/sh",
        "-c",
        script,
    ]));
    assert!(out.starts_with(&format!("cutover {VERSION}\n")), "{out}");
    for file in ["compose.yml", "nginx-site.conf", "service-url.inc"] {
        assert!(
            out.lines().any(|l| l == file),
            "render wrote no {file}:\n{out}"
        );
    }
    assert!(out.contains("http://127.0.0.1:9001"), "{out}");
}

/// Runs scripts/install.sh VERSION against `url`, installing under `destdir`.
fn install(url: &str, destdir: &Path, tmp: &Path) -> std::process::Output {
    Command::new("sh")
        .arg(repo_root().join("scripts/install.sh"))
        .arg(VERSION)
        .env("CUTOVER_RELEASE_URL", url)
        .env("DESTDIR", destdir)
        .env("TMPDIR", tmp)
        .env_remove("PREFIX")
        .output()
        .unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn release_install_sh_verifies_the_sha256_and_installs() {
    if !require("python3", "serve the release over HTTP") || !require("curl", "download it") {
        return;
    }
    let Some(dist) = artifacts() else { return };
    let work = tempfile::tempdir().unwrap();
    let tarball = format!("{}.tar.gz", name());
    // good/v<VERSION>/ as built; bad/v<VERSION>/ with one byte of the tarball changed.
    for (variant, corrupt) in [("good", false), ("bad", true)] {
        let dir = work
            .path()
            .join("srv")
            .join(variant)
            .join(format!("v{VERSION}"));
        std::fs::create_dir_all(&dir).unwrap();
        for file in [tarball.clone(), format!("{tarball}.sha256")] {
            std::fs::copy(dist.join(&file), dir.join(&file)).unwrap();
        }
        if corrupt {
            let path = dir.join(&tarball);
            let mut bytes = std::fs::read(&path).unwrap();
            let i = bytes.len() / 2;
            bytes[i] ^= 0x01;
            std::fs::write(&path, bytes).unwrap();
        }
    }
    // The .sha256 is in `sha256sum -c` format.
    run_ok(
        Command::new("sha256sum")
            .args(["-c", &format!("{tarball}.sha256")])
            .current_dir(work.path().join(format!("srv/good/v{VERSION}"))),
    );
    let server = Server::start(&work.path().join("srv"));
    let base = format!("http://127.0.0.1:{}", server.port);
    let tmp = work.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();

    let good = work.path().join("good");
    let out = install(&format!("{base}/good"), &good, &tmp);
    assert!(
        out.status.success(),
        "install.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = good.join("usr/local/bin/cutover");
    let version = run_ok(Command::new(&installed).arg("--version"));
    assert_eq!(version.trim(), format!("cutover {VERSION}"));
    assert_eq!(entries(&good.join("usr/local/bin")), ["cutover"]);

    // `curl -fsSL …/install.sh | sh -s VERSION`: the script is sh's stdin.
    let piped = work.path().join("piped");
    let script = std::fs::File::open(repo_root().join("scripts/install.sh")).unwrap();
    let out = Command::new("sh")
        .args(["-s", VERSION])
        .stdin(script)
        .env("CUTOVER_RELEASE_URL", format!("{base}/good"))
        .env("DESTDIR", &piped)
        .env("TMPDIR", &tmp)
        .env_remove("PREFIX")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh from stdin failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(entries(&piped.join("usr/local/bin")), ["cutover"]);
    // And with no version: the usage, not a shell error about $0.
    let out = Command::new("sh")
        .arg("-s")
        .stdin(std::fs::File::open(repo_root().join("scripts/install.sh")).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("usage: sh install.sh VERSION"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A corrupted tarball: refused, the binary already there untouched, nothing added.
    let bad = work.path().join("bad");
    let bin_dir = bad.join("usr/local/bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::write(bin_dir.join("cutover"), "the old one").unwrap();
    let out = install(&format!("{base}/bad"), &bad, &tmp);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sha256 mismatch"), "{stderr}");
    assert!(stderr.contains("nothing was installed"), "{stderr}");
    assert_eq!(entries(&bin_dir), ["cutover"]);
    assert_eq!(
        std::fs::read_to_string(bin_dir.join("cutover")).unwrap(),
        "the old one"
    );
    // Its download dir is gone too.
    assert!(
        entries(&tmp).is_empty(),
        "install.sh left {:?}",
        entries(&tmp)
    );
}

/// A directory whose `uname` says `machine` for `-m` (and is the real one otherwise), to put
/// first on install.sh's PATH: the machine it reads, the one input this test varies.
fn uname_says(dir: &Path, machine: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = dir.join(format!("uname-{machine}"));
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("uname");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = -m ]; then echo {machine}; else exec /bin/uname \"$@\"; fi\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn release_install_sh_picks_the_tarball_by_uname_m_and_refuses_other_machines() {
    if !require("python3", "serve the release over HTTP")
        || !require("curl", "download it")
        || !require("file", "read the installed binary's ELF header")
        || !require(
            "unshare",
            "run the aarch64 binary through a private binfmt_misc",
        )
    {
        return;
    }
    let Some(dist) = artifacts() else { return };
    let Some(arm_dist) = artifacts_for(AARCH64) else {
        return;
    };
    if qemu_aarch64().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let srv = work.path().join(format!("srv/v{VERSION}"));
    std::fs::create_dir_all(&srv).unwrap();
    for (dir, triple) in [(&dist, X86_64), (&arm_dist, AARCH64)] {
        let tarball = format!("{}.tar.gz", name_for(triple));
        for file in [tarball.clone(), format!("{tarball}.sha256")] {
            std::fs::copy(dir.join(&file), srv.join(&file)).unwrap();
        }
    }
    let server = Server::start(&work.path().join("srv"));
    let base = format!("http://127.0.0.1:{}", server.port);
    let tmp = work.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let path = std::env::var("PATH").unwrap();

    // (what uname -m says or None for this machine's own, the tarball, what `file` says)
    let cases = [
        (None, X86_64, "x86-64"),
        (Some("amd64"), X86_64, "x86-64"),
        (Some("aarch64"), AARCH64, "ARM aarch64"),
        (Some("arm64"), AARCH64, "ARM aarch64"),
    ];
    for (machine, triple, elf) in cases {
        let destdir = work
            .path()
            .join(format!("dest-{}", machine.unwrap_or("native")));
        // install.sh tries the binary before installing it: an aarch64 one runs here only
        // through qemu-user.
        let mut cmd = if triple == AARCH64 {
            aarch64_binfmt(Path::new("sh"))
        } else {
            Command::new("sh")
        };
        cmd.arg(repo_root().join("scripts/install.sh"))
            .arg(VERSION)
            .env("CUTOVER_RELEASE_URL", &base)
            .env("DESTDIR", &destdir)
            .env("TMPDIR", &tmp)
            .env_remove("PREFIX");
        if let Some(machine) = machine {
            let shim = uname_says(work.path(), machine);
            cmd.env("PATH", format!("{}:{path}", shim.display()));
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{machine:?}: install.sh failed: {stderr}"
        );
        assert!(
            stderr.contains(&format!("{}.tar.gz", name_for(triple))),
            "{stderr}"
        );
        let installed = destdir.join("usr/local/bin/cutover");
        let kind = run_ok(Command::new("file").arg("-b").arg(&installed));
        assert!(kind.contains(elf), "{machine:?} got a {kind}");
    }

    // Any other machine: refused by name, nothing downloaded or installed; a 32-bit ARM one
    // is told what a 64-bit OS would report.
    for (machine, why) in [
        (
            "riscv64",
            "no cutover release for riscv64 (there are x86_64 and aarch64)",
        ),
        (
            "armv7l",
            "no cutover release for armv7l (there are x86_64 and aarch64): a 32-bit ARM system",
        ),
    ] {
        let shim = uname_says(work.path(), machine);
        let destdir = work.path().join(format!("dest-{machine}"));
        let out = Command::new("sh")
            .arg(repo_root().join("scripts/install.sh"))
            .arg(VERSION)
            .env("CUTOVER_RELEASE_URL", &base)
            .env("DESTDIR", &destdir)
            .env("PATH", format!("{}:{path}", shim.display()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
        assert!(!stderr.contains("downloading"), "{stderr}");
        assert!(!destdir.exists());
    }
}

/// Hostile run on #25: what a broken or hostile server can send install.sh. Each case is
/// served from its own directory; `installs` says whether install.sh must accept it.
#[test]
fn release_install_sh_refuses_a_sha256_of_another_file_a_truncated_download_and_a_symlink() {
    if !require("python3", "serve the release over HTTP") || !require("curl", "download it") {
        return;
    }
    let Some(dist) = artifacts() else { return };
    let work = tempfile::tempdir().unwrap();
    let tarball = format!("{}.tar.gz", name());
    let good = std::fs::read(dist.join(&tarball)).unwrap();
    let hash = sha256_hex(&good);

    // A tarball whose cutover is a symlink to a binary outside it (here this machine's sh):
    // what a plain `cp` would install in cutover's place.
    let stage = work.path().join("stage");
    std::fs::create_dir_all(stage.join(name())).unwrap();
    std::os::unix::fs::symlink("/bin/sh", stage.join(name()).join("cutover")).unwrap();
    let link_tar = work.path().join("link.tar.gz");
    run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(&link_tar)
            .arg("-C")
            .arg(&stage)
            .arg(name()),
    );
    let link = std::fs::read(&link_tar).unwrap();

    let upper = format!("  {}  *{tarball}\r\n", hash.to_uppercase());
    let other = format!("{hash}  cutover-{VERSION}-riscv64.tar.gz\n");
    let two = format!("{hash}  {tarball}\n{hash}  {tarball}\n");
    let link_sum = format!("{}  {tarball}\n", sha256_hex(&link));
    let sum = format!("{hash}  {tarball}\n");
    let truncated = &good[..good.len() / 2];
    // (case, tarball bytes, .sha256 text, installs, what stderr says)
    let cases: [(&str, &[u8], &str, bool, &str); 5] = [
        ("upper", &good, &upper, true, "installed"),
        ("other", &good, &other, false, "is the sha256 of 'cutover-"),
        ("two", &good, &two, false, "holds 2 lines, expected one"),
        ("truncated", truncated, &sum, false, "sha256 mismatch"),
        (
            "link",
            &link,
            &link_sum,
            false,
            "/cutover is not a regular file",
        ),
    ];
    for (case, bytes, sha, _, _) in &cases {
        let dir = work.path().join(format!("srv/{case}/v{VERSION}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&tarball), bytes).unwrap();
        std::fs::write(dir.join(format!("{tarball}.sha256")), sha).unwrap();
    }
    let server = Server::start(&work.path().join("srv"));
    let tmp = work.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    for (case, _, _, installs, says) in cases {
        let dest = work.path().join(format!("dest-{case}"));
        let out = install(
            &format!("http://127.0.0.1:{}/{case}", server.port),
            &dest,
            &tmp,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{case}: {stderr}");
        let bin_dir = dest.join("usr/local/bin");
        if installs {
            assert!(out.status.success(), "{case}: {stderr}");
            let version = run_ok(Command::new(bin_dir.join("cutover")).arg("--version"));
            assert_eq!(version.trim(), format!("cutover {VERSION}"), "{case}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
            assert!(
                entries(&bin_dir).is_empty(),
                "{case} installed {:?}",
                entries(&bin_dir)
            );
        }
        assert!(entries(&tmp).is_empty(), "{case} left {:?}", entries(&tmp));
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Hostile run #2 on #25: where the binary lands. A directory (or a symlink to one) at
/// `bin/cutover` took the binary inside it (`mv` onto a directory) and install.sh said
/// "installed"; a TMPDIR mounted noexec (a common hardening) failed the `--version` try with
/// "does not run on this machine"; a read-only bin directory got cp's bare error; `..` and
/// `-rf` passed for versions and an empty `uname -m` was named as ''. The noexec and
/// read-only mounts are made in a private mount namespace (`unshare`, as root).
#[test]
fn release_install_sh_refuses_a_directory_for_the_binary_and_tries_it_outside_a_noexec_tmp() {
    if !require("python3", "serve the release over HTTP")
        || !require("curl", "download it")
        || !require("unshare", "mount a noexec TMPDIR privately")
    {
        return;
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !is_root {
        assert!(
            std::env::var_os("CI").is_none(),
            "the private mounts need root; CI runs as root"
        );
        eprintln!("*** SKIPPED: the private mounts need root ***");
        return;
    }
    let Some(dist) = artifacts() else { return };
    let work = tempfile::tempdir().unwrap();
    let srv = work.path().join(format!("srv/v{VERSION}"));
    std::fs::create_dir_all(&srv).unwrap();
    let tarball = format!("{}.tar.gz", name());
    for file in [tarball.clone(), format!("{tarball}.sha256")] {
        std::fs::copy(dist.join(&file), srv.join(&file)).unwrap();
    }
    let server = Server::start(&work.path().join("srv"));
    let base = format!("http://127.0.0.1:{}", server.port);
    let tmp = work.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();

    // A directory, and a symlink to one, where the binary goes: refused, left as they were.
    let dir_case = work.path().join("dest-dir");
    let bin_dir = dir_case.join("usr/local/bin");
    std::fs::create_dir_all(bin_dir.join("cutover")).unwrap();
    let link_case = work.path().join("dest-link");
    std::fs::create_dir_all(link_case.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(link_case.join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(
        link_case.join("elsewhere"),
        link_case.join("usr/local/bin/cutover"),
    )
    .unwrap();
    for dest in [&dir_case, &link_case] {
        let out = install(&base, dest, &tmp);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", dest.display());
        assert!(
            stderr.contains("/usr/local/bin/cutover is a directory, not a binary"),
            "{stderr}"
        );
        assert_eq!(entries(&dest.join("usr/local/bin")), ["cutover"]);
        assert!(entries(&dest.join("usr/local/bin/cutover")).is_empty());
        assert!(entries(&tmp).is_empty(), "left {:?}", entries(&tmp));
    }

    // A noexec TMPDIR: installed (the binary is tried in the bin directory), and a
    // read-only bin directory: refused by name.
    let noexec = work.path().join("noexec");
    let ro = work.path().join("dest-ro");
    std::fs::create_dir_all(&noexec).unwrap();
    std::fs::create_dir_all(ro.join("usr/local/bin")).unwrap();
    let script = repo_root().join("scripts/install.sh");
    let in_namespace = |setup: String, destdir: &Path| {
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!("{setup} && exec sh \"$0\" {VERSION}",))
            .arg(&script)
            .env("CUTOVER_RELEASE_URL", &base)
            .env("DESTDIR", destdir)
            .env("TMPDIR", &noexec)
            .env_remove("PREFIX")
            .output()
            .unwrap()
    };
    let installed = work.path().join("dest-noexec");
    let out = in_namespace(
        format!("mount -t tmpfs -o noexec tmpfs '{}'", noexec.display()),
        &installed,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "noexec TMPDIR: {stderr}");
    let version = run_ok(Command::new(installed.join("usr/local/bin/cutover")).arg("--version"));
    assert_eq!(version.trim(), format!("cutover {VERSION}"));
    assert_eq!(entries(&installed.join("usr/local/bin")), ["cutover"]);

    let ro_bin = ro.join("usr/local/bin");
    let out = in_namespace(
        format!(
            "mount --bind -o ro '{}' '{}'",
            ro_bin.display(),
            ro_bin.display()
        ),
        &ro,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot write to {}", ro_bin.display())),
        "{stderr}"
    );

    // Versions that are not one, and a machine that names no architecture: refused by
    // name before anything is downloaded.
    for version in ["..", "-rf", ".1"] {
        let out = Command::new("sh")
            .arg(&script)
            .arg(version)
            .env("CUTOVER_RELEASE_URL", &base)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{version}: {stderr}");
        assert!(stderr.contains("not a version"), "{version}: {stderr}");
    }
    let shim = uname_says(work.path(), "''");
    let out = Command::new("sh")
        .arg(&script)
        .arg(VERSION)
        .env("CUTOVER_RELEASE_URL", &base)
        .env(
            "PATH",
            format!("{}:{}", shim.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("uname -m printed nothing"), "{stderr}");
}
