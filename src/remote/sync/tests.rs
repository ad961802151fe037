//! Tests of the sync: what is sent, with which modes, and what is refused.

use super::*;

#[test]
fn sends_config_templates_and_ciphertext_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("other.yml"), "project: x\n").unwrap();
    std::fs::create_dir_all(p.join("templates/sub")).unwrap();
    std::fs::write(p.join("templates/sub/a.j2"), "a").unwrap();
    std::fs::create_dir_all(p.join("secrets")).unwrap();
    std::fs::write(
        p.join("secrets/prod.env.age"),
        "-----BEGIN AGE ENCRYPTED FILE-----\nx\n",
    )
    .unwrap();
    std::fs::write(p.join("secrets/recipients.txt"), "age1xyz\n").unwrap();
    std::fs::write(p.join("secrets/.gitignore"), "*.env\n").unwrap();
    std::fs::create_dir_all(p.join(".cutover")).unwrap();
    std::fs::write(p.join(".cutover/state.json"), "{}").unwrap();
    let archive = pack(p, &p.join("other.yml"), "{}").unwrap();
    let out = tempfile::tempdir().unwrap();
    crate::process::Cmd::new("tar", "unpack")
        .args(["-x", "-f", "-", "-C"])
        .arg(out.path())
        .stdin_bytes(archive.tar)
        .run()
        .unwrap();
    let mut found: Vec<String> = Vec::new();
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(root, &path, found);
            } else {
                found.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    walk(out.path(), out.path(), &mut found);
    found.sort();
    assert_eq!(
        found,
        [
            ".cutover-synced",
            "cutover.yml",
            "secrets/prod.env.age",
            "secrets/recipients.txt",
            "templates/sub/a.j2"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("cutover.yml")).unwrap(),
        "project: x\n"
    );
}

#[test]
fn plaintext_in_secrets_refuses_the_sync_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("cutover.yml"), "project: x\n").unwrap();
    std::fs::create_dir_all(p.join("secrets")).unwrap();
    std::fs::write(p.join("secrets/prod.env"), "DB_PASSWORD=hunter2\n").unwrap();
    let err = pack(p, &p.join("cutover.yml"), "{}")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("prod.env is a plaintext dotenv file"), "{err}");
    assert!(!err.contains("hunter2"));
}

/// `(path, mode)` of every entry, as a tar on the box reads them.
fn modes(tar: &[u8]) -> Vec<(String, u32)> {
    let mut archive = tar::Archive::new(tar);
    let entries = archive.entries().unwrap().map(|e| {
        let e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        (path, e.header().mode().unwrap())
    });
    entries.collect()
}

#[test]
fn sends_0644_files_0755_executables_and_directories() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("cutover.yml"), "project: x\n").unwrap();
    std::fs::create_dir_all(p.join("templates/sub")).unwrap();
    std::fs::write(p.join("templates/sub/a.j2"), "a").unwrap();
    std::fs::write(p.join("templates/run.sh"), "#!/bin/sh\n").unwrap();
    let loose = std::fs::Permissions::from_mode(0o777);
    std::fs::set_permissions(p.join("templates/run.sh"), loose).unwrap();
    let archive = pack(p, &p.join("cutover.yml"), "{}").unwrap();
    assert_eq!(archive.files, 4);
    assert_eq!(
        modes(&archive.tar),
        [
            ("cutover.yml".to_string(), 0o644),
            ("templates".into(), 0o755),
            ("templates/run.sh".into(), 0o755),
            ("templates/sub".into(), 0o755),
            ("templates/sub/a.j2".into(), 0o644),
            (SYNC_MARKER.into(), 0o644),
        ]
    );
}

#[test]
fn a_file_never_arrives_looser_than_it_is_here() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let set = |path: &str, mode: u32| {
        let mode = std::fs::Permissions::from_mode(mode);
        std::fs::set_permissions(p.join(path), mode).unwrap();
    };
    std::fs::write(p.join("cutover.yml"), "project: x\n").unwrap();
    set("cutover.yml", 0o600);
    std::fs::create_dir_all(p.join("templates/own")).unwrap();
    std::fs::write(p.join("templates/own/a.j2"), "a").unwrap();
    std::fs::write(p.join("templates/hook.sh"), "#!/bin/sh\n").unwrap();
    set("templates/own/a.j2", 0o640);
    set("templates/hook.sh", 0o700);
    set("templates/own", 0o750);
    std::fs::create_dir_all(p.join("secrets")).unwrap();
    std::fs::write(
        p.join("secrets/prod.env.age"),
        "-----BEGIN AGE ENCRYPTED FILE-----\nx\n",
    )
    .unwrap();
    set("secrets/prod.env.age", 0o600);
    set("secrets", 0o500);
    let archive = pack(p, &p.join("cutover.yml"), "{}").unwrap();
    set("secrets", 0o700);
    assert_eq!(
        modes(&archive.tar),
        [
            ("cutover.yml".to_string(), 0o600),
            ("templates".into(), 0o755),
            ("templates/hook.sh".into(), 0o700),
            ("templates/own".into(), 0o750),
            ("templates/own/a.j2".into(), 0o640),
            // The owner keeps rwx on a directory: old releases must stay removable.
            ("secrets".into(), 0o700),
            ("secrets/prod.env.age".into(), 0o600),
            (SYNC_MARKER.into(), 0o644),
        ]
    );
}

/// Names cut at the ustar field boundaries (100 and 155 bytes) inside a multibyte
/// character: the hand-built header sliced the string there and panicked.
#[test]
fn a_multibyte_character_at_a_header_field_boundary_is_sent_whole() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("cutover.yml"), "project: x\n").unwrap();
    std::fs::create_dir_all(p.join("templates")).unwrap();
    // `templates/` + 145 bytes puts `é` across byte 156; + 89 across byte 100.
    let names = [
        format!("{}é.j2", "a".repeat(145)),
        format!("{}é.j2", "b".repeat(89)),
        format!("{}/{}é.j2", "d".repeat(120), "c".repeat(200)),
    ];
    for name in &names {
        let path = p.join("templates").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, name.as_bytes()).unwrap();
    }
    let archive = pack(p, &p.join("cutover.yml"), "{}").unwrap();
    let out = tempfile::tempdir().unwrap();
    crate::process::Cmd::new("tar", "unpack")
        .args(["-x", "-f", "-", "-C"])
        .arg(out.path())
        .stdin_bytes(archive.tar)
        .run()
        .unwrap();
    for name in &names {
        let sent = out.path().join("templates").join(name);
        assert_eq!(std::fs::read_to_string(&sent).unwrap(), *name);
    }
}

fn project_with_links(links: &[(&str, &Path)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("cutover.yml"), "project: x\n").unwrap();
    std::fs::create_dir_all(p.join("templates/shared")).unwrap();
    std::fs::write(p.join("templates/shared/base.j2"), "base").unwrap();
    std::fs::create_dir_all(p.join("secrets")).unwrap();
    std::fs::create_dir_all(p.join(".cutover")).unwrap();
    std::fs::write(p.join(".cutover/state.json"), "{}").unwrap();
    for (link, target) in links {
        if p.join(link).is_dir() {
            std::fs::remove_dir_all(p.join(link)).unwrap();
        }
        std::os::unix::fs::symlink(target, p.join(link)).unwrap();
    }
    dir
}

fn refusal(dir: &Path) -> String {
    match pack(dir, &dir.join("cutover.yml"), "{}") {
        Ok(archive) => panic!("synced {} files", archive.files),
        Err(err) => format!("{err:#}"),
    }
}

#[test]
fn a_link_out_of_its_folder_is_refused_naming_link_and_target() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("shadow"), "root:secret-hash").unwrap();
    std::fs::create_dir_all(outside.path().join("keys")).unwrap();
    std::fs::write(outside.path().join("keys/id"), "PRIVATE").unwrap();
    let shadow = outside.path().join("shadow");
    let keys = outside.path().join("keys");
    for (link, target) in [
        ("templates/x.j2", shadow.as_path()),
        ("secrets/evil.env.age", shadow.as_path()),
        ("templates/keys", keys.as_path()),
        // The project root holds the state dir and whatever else: never under templates/.
        ("templates/everything", Path::new("..")),
        ("templates", Path::new(".")),
        ("secrets", Path::new(".cutover")),
        ("templates/gone.j2", Path::new("/nonexistent/file")),
    ] {
        let dir = project_with_links(&[(link, target)]);
        let message = refusal(dir.path());
        assert!(
            message.contains(&format!("{link} is a symlink to {}", target.display())),
            "{message}"
        );
        assert!(
            !message.contains("secret-hash") && !message.contains("PRIVATE"),
            "{message}"
        );
    }
}

#[test]
fn only_ciphertext_and_public_keys_leave_secrets() {
    for (name, bytes) in [
        ("prod.env.age", &b"DB_PASSWORD=caf\xe9-secret\n"[..]),
        ("recipients.txt", &b"age1abc\nDB_PASSWORD=s3cret\n"[..]),
    ] {
        let dir = project_with_links(&[]);
        std::fs::write(dir.path().join("secrets").join(name), bytes).unwrap();
        let message = refusal(dir.path());
        assert!(message.contains("refusing to sync"), "{name}: {message}");
        assert!(!message.contains("s3cret"), "{message}");
    }
}

#[test]
fn a_link_inside_its_folder_is_followed_once() {
    let dir = project_with_links(&[
        ("templates/site.j2", Path::new("shared/base.j2")),
        ("templates/again", Path::new("shared")),
        ("templates/shared/loop", Path::new("..")),
    ]);
    let archive = pack(dir.path(), &dir.path().join("cutover.yml"), "{}").unwrap();
    let names: Vec<String> = modes(&archive.tar).into_iter().map(|(n, _)| n).collect();
    assert!(
        names.contains(&"templates/site.j2".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"templates/shared/base.j2".to_string()),
        "{names:?}"
    );
    // Under each name it is reached by; `shared/loop` leads back up: not walked again.
    assert!(
        names.contains(&"templates/again/base.j2".to_string()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("loop")), "{names:?}");
}
