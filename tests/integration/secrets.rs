//! `cutover secrets …` end to end: every subcommand, every bad input of issue #3, interop with
//! the real `age` CLI both ways, hermetic parsing, and scans proving no plaintext is left on
//! disk. Each test gets its own project dir, identity copy (git does not keep 0600) and
//! config dir, so nothing reads the developer's real identity. And secrets in a deploy: they
//! reach the app only through its environment, rotate with a redeploy, and are never
//! interpolated by compose (`$` in an image or command). The limits on a value's size are in
//! secret_limits.rs; what child processes get, in child_env.rs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::process::Command as StdCommand;

use crate::common::{cutover, fixture, repo_root, require};
use crate::harness::project::{edit_config, ready, shown, App, Project, Run};

/// A temp project dir for the `secrets` commands: recipients.txt listing the test identity,
/// that identity copied to a 0600 file, an empty per-user config, runs through assert_cmd.
/// Not a [`crate::harness::project::Project`] (no cutover.yml, ports or engine): a name of
/// its own.
struct SecretsDir {
    tmp: tempfile::TempDir,
}

impl SecretsDir {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let p = SecretsDir { tmp };
        fs::create_dir_all(p.dir().join("secrets")).unwrap();
        fs::create_dir_all(p.config_home()).unwrap();
        fs::create_dir_all(p.home()).unwrap();
        fs::copy(
            repo_root().join("secrets/recipients.txt"),
            p.dir().join("secrets/recipients.txt"),
        )
        .unwrap();
        fs::copy(fixture("secrets/test-identity.txt"), p.identity()).unwrap();
        chmod(&p.identity(), 0o600);
        p
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn dir(&self) -> PathBuf {
        self.root().join("project")
    }

    fn identity(&self) -> PathBuf {
        self.root().join("test-identity.txt")
    }

    fn config_home(&self) -> PathBuf {
        self.root().join("config")
    }

    fn home(&self) -> PathBuf {
        self.root().join("home")
    }

    fn secret(&self, name: &str) -> PathBuf {
        self.dir().join(format!("secrets/{name}.env.age"))
    }

    fn recipients(&self) -> PathBuf {
        self.dir().join("secrets/recipients.txt")
    }

    /// `cutover` in the project, with no identity configured and an empty per-user config.
    fn bare(&self) -> assert_cmd::Command {
        let mut cmd = cutover(&self.dir());
        cmd.env("XDG_CONFIG_HOME", self.config_home())
            .env("HOME", self.home())
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("EDITOR")
            .env_remove("VISUAL");
        cmd
    }

    /// `cutover` with the test identity.
    fn cmd(&self) -> assert_cmd::Command {
        let mut cmd = self.bare();
        cmd.env("CUTOVER_IDENTITY", self.identity());
        cmd
    }

    /// Writes a plaintext dotenv and encrypts it with cutover to secrets/<name>.env.age.
    fn encrypt(&self, name: &str, text: &str) {
        let plain = self.root().join(format!("{name}.env"));
        fs::write(&plain, text).unwrap();
        self.cmd()
            .args(["secrets", "encrypt"])
            .arg(&plain)
            .arg("--rm")
            .assert()
            .success();
    }

    fn show(&self, name: &str) -> String {
        let out = self
            .cmd()
            .args(["secrets", "show", name])
            .assert()
            .success();
        stdout(&out)
    }

    fn show_json(&self, name: &str) -> serde_json::Value {
        let out = self
            .cmd()
            .args(["secrets", "show", name, "--json"])
            .assert()
            .success();
        let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(doc["schema"], 2, "{doc}");
        doc["values"].clone()
    }

    /// Every regular file under the project, the config dir and the identity, with its bytes,
    /// to prove a failed command changed nothing. (Test helpers such as editor scripts live
    /// beside them in the temp root and are not part of it.)
    fn snapshot(&self) -> Snapshot {
        let mut files = Vec::new();
        for root in [self.dir(), self.config_home()] {
            walk(&root, &mut |path| {
                files.push((path.to_owned(), fs::read(path).unwrap_or_default()))
            });
        }
        files.push((self.identity(), fs::read(self.identity()).unwrap()));
        files.sort();
        Snapshot(files)
    }
}

/// File contents at one moment; a failed `==` prints paths and short digests, not bytes.
#[derive(PartialEq)]
struct Snapshot(Vec<(PathBuf, Vec<u8>)>);

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digest = |b: &[u8]| {
            b.iter()
                .fold(0u64, |h, &x| h.wrapping_mul(31).wrapping_add(x as u64))
        };
        f.debug_list()
            .entries(
                self.0
                    .iter()
                    .map(|(p, b)| format!("{} {:x}", p.display(), digest(b))),
            )
            .finish()
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            walk(&path, f);
        } else if kind.is_file() {
            f(&path);
        }
    }
}

/// A value unique to one test, so scans cannot match another test's data.
fn marker(tag: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("MARK{tag}{}x{nanos}", std::process::id())
}

/// Files under `roots` whose bytes contain `needle` (skipping big files, e.g. build output).
fn files_containing(roots: &[PathBuf], needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for root in roots {
        walk(root, &mut |path| {
            let small = fs::metadata(path).is_ok_and(|m| m.len() < 4 << 20);
            if small
                && fs::read(path)
                    .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                hits.push(path.to_owned());
            }
        });
    }
    hits
}

/// Asserts a command failed with exit 1, mentions each of `expect`, and never printed `secret`.
fn fails_with(cmd: &mut assert_cmd::Command, expect: &[&str], secret: &str) -> String {
    let out = cmd.assert().code(1);
    let (so, se) = (stdout(&out), stderr(&out));
    assert!(
        !so.contains(secret) && !se.contains(secret),
        "secret leaked:\n{so}\n{se}"
    );
    for e in expect {
        assert!(se.contains(e), "stderr lacks {e:?}:\n{se}");
    }
    se
}

/// An editor: a shell script that runs `body` with the file as $1.
fn editor(p: &SecretsDir, body: &str) -> PathBuf {
    let path = p.root().join(format!("editor-{}.sh", marker("")));
    fs::write(&path, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
    chmod(&path, 0o755);
    path
}

fn test_public_key() -> String {
    fs::read_to_string(fixture("secrets/test-identity.txt"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string()
}

// --- keygen -------------------------------------------------------------------------------

#[test]
fn keygen_writes_0600_create_new_and_prints_the_public_key() {
    let p = SecretsDir::new();
    let out_path = p.root().join("keys/id.txt");
    let out = p
        .bare()
        .args(["secrets", "keygen", "--out"])
        .arg(&out_path)
        .assert()
        .success();
    let public = stdout(&out).trim().to_string();
    assert!(public.starts_with("age1"), "{public}");
    assert_eq!(mode(&out_path), 0o600);
    let text = fs::read_to_string(&out_path).unwrap();
    assert!(text.contains(&format!("# public key: {public}")));
    assert!(text.contains("AGE-SECRET-KEY-1"));

    // create-new: a second keygen refuses and leaves the key alone.
    let se = fails_with(
        p.bare().args(["secrets", "keygen", "--out"]).arg(&out_path),
        &["already exists", "--force"],
        "AGE-SECRET-KEY",
    );
    assert!(se.contains("id.txt"), "{se}");
    assert_eq!(fs::read_to_string(&out_path).unwrap(), text);

    let out = p
        .bare()
        .args(["secrets", "keygen", "--force", "--out"])
        .arg(&out_path)
        .assert()
        .success();
    assert_ne!(stdout(&out).trim(), public);
    assert_eq!(mode(&out_path), 0o600);
}

#[test]
fn keygen_defaults_to_the_per_user_path_and_add_appends_the_recipient() {
    let p = SecretsDir::new();
    let out = p
        .bare()
        .args(["secrets", "keygen", "--add"])
        .assert()
        .success();
    let public = stdout(&out).trim().to_string();
    let default = p.config_home().join("cutover/identity.txt");
    assert_eq!(mode(&default), 0o600);
    assert_eq!(mode(default.parent().unwrap()), 0o700);
    let recipients = fs::read_to_string(p.recipients()).unwrap();
    assert!(recipients.contains(&test_public_key()), "{recipients}");
    assert!(recipients.ends_with(&format!("{public}\n")), "{recipients}");

    // The default identity is found without any flag or variable.
    p.bare()
        .args(["secrets", "set", "new", "A", "--generate", "8", "--create"])
        .assert()
        .success();
    let out = p
        .bare()
        .args(["secrets", "show", "new", "--keys"])
        .assert()
        .success();
    assert_eq!(stdout(&out), "A\n");
}

#[test]
fn keygen_add_in_a_second_project_adds_the_existing_key_and_only_force_replaces_it() {
    let p = SecretsDir::new();
    let first = p
        .bare()
        .args(["secrets", "keygen", "--add"])
        .assert()
        .success();
    let public = stdout(&first).trim().to_string();
    let identity = p.config_home().join("cutover/identity.txt");
    let key_text = fs::read_to_string(&identity).unwrap();

    // A second project: its recipients do not list this laptop's key yet.
    fs::write(p.recipients(), format!("{}\n", test_public_key())).unwrap();
    let second = p
        .bare()
        .args(["secrets", "keygen", "--add"])
        .assert()
        .success();
    assert_eq!(
        stdout(&second).trim(),
        public,
        "the existing key, not a new one"
    );
    assert!(
        stderr(&second).contains("kept the existing identity"),
        "{}",
        stderr(&second)
    );
    assert_eq!(fs::read_to_string(&identity).unwrap(), key_text);
    let recipients = fs::read_to_string(p.recipients()).unwrap();
    assert_eq!(recipients.matches(&public).count(), 1, "{recipients}");
    // Again: nothing to add, no duplicate line.
    let again = p
        .bare()
        .args(["secrets", "keygen", "--add"])
        .assert()
        .success();
    assert!(stderr(&again).contains("already in"), "{}", stderr(&again));
    assert_eq!(fs::read_to_string(p.recipients()).unwrap(), recipients);

    // Without --add an existing identity is refused, naming both ways on.
    fails_with(
        p.bare().args(["secrets", "keygen"]),
        &[
            "already exists",
            "keygen --add",
            "--force",
            "the old key is lost",
        ],
        "AGE-SECRET-KEY",
    );
    // --force replaces it and says which key is lost.
    let forced = p
        .bare()
        .args(["secrets", "keygen", "--force"])
        .assert()
        .success();
    assert_ne!(stdout(&forced).trim(), public);
    let said = stderr(&forced);
    assert!(
        said.contains(&format!("its key {public} is lost")),
        "{said}"
    );
    assert!(!said.contains("AGE-SECRET-KEY"), "{said}");
}

// --- encrypt / show -----------------------------------------------------------------------

#[test]
fn encrypt_then_show_text_keys_and_json() {
    let p = SecretsDir::new();
    let text = "# db\nDB_PASSWORD=\"pa ss\"\nexport API_KEY=abc123\n";
    p.encrypt("prod", text);
    let secret = p.secret("prod");
    assert_eq!(mode(&secret), 0o644, "ciphertext is meant to be committed");
    let armored = fs::read_to_string(&secret).unwrap();
    assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert!(!armored.contains("abc123"));
    assert!(
        !p.root().join("prod.env").exists(),
        "--rm removes the plaintext"
    );

    assert_eq!(p.show("prod"), text);
    let out = p
        .cmd()
        .args(["secrets", "show", "prod", "--keys"])
        .assert()
        .success();
    assert_eq!(stdout(&out), "DB_PASSWORD\nAPI_KEY\n");
    let json = p.show_json("prod");
    assert_eq!(json["DB_PASSWORD"], "pa ss");
    assert_eq!(json["API_KEY"], "abc123");
    let out = p
        .cmd()
        .args(["secrets", "show", "prod", "--keys", "--json"])
        .assert()
        .success();
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({"schema": 2, "file": "secrets/prod.env.age", "keys": ["DB_PASSWORD", "API_KEY"]})
    );
}

#[test]
fn encrypt_derives_names_and_refuses_to_replace_or_double_encrypt() {
    let p = SecretsDir::new();
    let plain = p.root().join(".env.staging");
    fs::write(&plain, "A=1\n").unwrap();
    p.cmd()
        .args(["secrets", "encrypt"])
        .arg(&plain)
        .assert()
        .success();
    assert!(p.secret("staging").exists());
    assert!(plain.exists(), "without --rm the plaintext stays");

    let before = p.snapshot();
    fails_with(
        p.cmd().args(["secrets", "encrypt"]).arg(&plain),
        &["already exists", "--force"],
        "A=1",
    );
    fails_with(
        p.cmd()
            .args(["secrets", "encrypt", "--name", "other"])
            .arg(p.secret("staging")),
        &["already age-encrypted"],
        "A=1",
    );
    assert_eq!(p.snapshot(), before);
    p.cmd()
        .args(["secrets", "encrypt", "--force"])
        .arg(&plain)
        .assert()
        .success();
}

#[test]
fn the_bundled_demo_secrets_decrypt_with_the_test_identity() {
    let p = SecretsDir::new();
    fs::copy(repo_root().join("secrets/demo.env.age"), p.secret("demo")).unwrap();
    let json = p.show_json("demo");
    assert!(
        json["DEMO_SECRET"].is_string() && json["DB_PASSWORD"].is_string(),
        "{json}"
    );
}

// --- interop with the age CLI -------------------------------------------------------------

#[test]
fn a_file_made_by_the_age_cli_decrypts_with_cutover() {
    if !require("age", "check interop with the age CLI") {
        return;
    }
    let p = SecretsDir::new();
    let plain = p.root().join("plain.env");
    fs::write(&plain, "FROM_AGE=yes\nSPACED=hello world\n").unwrap();
    for (name, armor) in [("armored", true), ("binary", false)] {
        let mut age = StdCommand::new("age");
        age.arg("-R")
            .arg(p.recipients())
            .arg("-o")
            .arg(p.secret(name));
        if armor {
            age.arg("-a");
        }
        assert!(age.arg(&plain).status().unwrap().success());
        let json = p.show_json(name);
        assert_eq!(json["FROM_AGE"], "yes");
        assert_eq!(json["SPACED"], "hello world");
    }
}

#[test]
fn a_file_made_by_cutover_decrypts_with_the_age_cli() {
    if !require("age", "check interop with the age CLI") {
        return;
    }
    let p = SecretsDir::new();
    let text = "TO_AGE=yes\nMULTI=\"a\nb\"\n";
    p.encrypt("prod", text);
    let out = StdCommand::new("age")
        .arg("-d")
        .arg("-i")
        .arg(p.identity())
        .arg(p.secret("prod"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), text);
}

#[test]
fn ssh_ed25519_recipients_and_identities_work_both_ways() {
    if !require("ssh-keygen", "make an ssh-ed25519 key") || !require("age", "check ssh interop") {
        return;
    }
    let p = SecretsDir::new();
    let key = p.root().join("id_ed25519");
    let status = StdCommand::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "deploy@box", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let public = fs::read_to_string(key.with_extension("pub")).unwrap();
    // Only the ssh key: proves the ssh identity, not the test identity, decrypts.
    fs::write(p.recipients(), format!("# the box\n{public}")).unwrap();
    p.encrypt("prod", "VIA_SSH=1\n");

    let out = p
        .bare()
        .arg("--identity")
        .arg(&key)
        .args(["secrets", "show", "prod", "--json"])
        .assert()
        .success();
    assert!(stdout(&out).contains("\"VIA_SSH\": \"1\""));

    let out = StdCommand::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key)
        .arg(p.secret("prod"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "VIA_SSH=1\n");
}

// --- identities ---------------------------------------------------------------------------

#[test]
fn cutover_age_key_holds_the_identity_itself() {
    let p = SecretsDir::new();
    p.encrypt("prod", "A=1\n");
    let key = fs::read_to_string(p.identity()).unwrap();
    let key = key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    let out = p
        .bare()
        .env("CUTOVER_AGE_KEY", key)
        .args(["secrets", "show", "prod", "--keys"])
        .assert()
        .success();
    assert_eq!(stdout(&out), "A\n");
}

#[test]
fn an_identity_readable_by_others_is_refused_with_the_fix() {
    let p = SecretsDir::new();
    p.encrypt("prod", "A=1\n");
    chmod(&p.identity(), 0o644);
    let se = fails_with(
        p.cmd().args(["secrets", "show", "prod"]),
        &["readable by group or others", "chmod 600"],
        "A=1",
    );
    assert!(se.contains(&p.identity().display().to_string()), "{se}");
}

#[test]
fn no_identity_says_how_to_make_one() {
    let p = SecretsDir::new();
    p.encrypt("prod", "A=1\n");
    let before = p.snapshot();
    fails_with(
        p.bare().args(["secrets", "show", "prod"]),
        &[
            "no age identity",
            "cutover secrets keygen",
            "CUTOVER_AGE_KEY",
        ],
        "A=1",
    );
    fails_with(
        p.bare()
            .args(["secrets", "set", "prod", "B"])
            .write_stdin("x"),
        &["no age identity"],
        "A=1",
    );
    fails_with(
        p.bare()
            .arg("--identity")
            .arg(p.root().join("missing.txt"))
            .args(["secrets", "show", "prod"]),
        &["missing.txt", "does not exist"],
        "A=1",
    );
    assert_eq!(p.snapshot(), before);
}

#[test]
fn a_public_key_passed_as_identity_is_explained() {
    let p = SecretsDir::new();
    p.encrypt("prod", "A=1\n");
    let wrong = p.root().join("pub.txt");
    fs::write(&wrong, format!("{}\n", test_public_key())).unwrap();
    chmod(&wrong, 0o600);
    fails_with(
        p.bare()
            .arg("--identity")
            .arg(&wrong)
            .args(["secrets", "show", "prod"]),
        &["line 1", "public key"],
        "A=1",
    );
}

// --- bad input ----------------------------------------------------------------------------

#[test]
fn wrong_identity_is_a_clear_error_and_changes_nothing() {
    let p = SecretsDir::new();
    let secret = marker("wrongid");
    p.encrypt("prod", &format!("A={secret}\n"));
    let other = p.root().join("other.txt");
    p.bare()
        .args(["secrets", "keygen", "--out"])
        .arg(&other)
        .assert()
        .success();
    let before = p.snapshot();
    for args in [
        &["secrets", "show", "prod"][..],
        &["secrets", "edit", "prod"],
        &["secrets", "unset", "prod", "A"],
        &["secrets", "rekey"],
        &["secrets", "exec", "prod", "--", "true"],
    ] {
        fails_with(
            p.bare().arg("--identity").arg(&other).args(args),
            &["cannot decrypt", "prod.env.age", "recipients.txt"],
            &secret,
        );
    }
    assert_eq!(p.snapshot(), before);
}

#[test]
fn truncated_and_tampered_files_are_refused() {
    let p = SecretsDir::new();
    let secret = marker("tamper");
    p.encrypt("prod", &format!("A={secret}\nB=2\n"));
    let good = fs::read_to_string(p.secret("prod")).unwrap();

    // Truncated: drop the end of the armor.
    fs::write(p.secret("prod"), &good[..good.len() / 2]).unwrap();
    fails_with(
        p.cmd().args(["secrets", "show", "prod"]),
        &["cannot decrypt", "prod.env.age"],
        &secret,
    );

    // Tampered: change one base64 character in the payload (the last body line).
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    let n = lines.len();
    let body = &mut lines[n - 2];
    let c = body.remove(2);
    body.insert(2, if c == 'A' { 'B' } else { 'A' });
    fs::write(p.secret("prod"), lines.join("\n") + "\n").unwrap();
    let before = p.snapshot();
    fails_with(
        p.cmd().args(["secrets", "show", "prod"]),
        &["cannot decrypt", "modified"],
        &secret,
    );
    fails_with(
        p.cmd().args(["secrets", "rekey"]),
        &["prod.env.age"],
        &secret,
    );
    assert_eq!(p.snapshot(), before);
}

#[test]
fn empty_recipients_file_is_refused_before_writing() {
    let p = SecretsDir::new();
    p.encrypt("prod", "A=1\n");
    fs::write(p.recipients(), "# nobody yet\n\n").unwrap();
    let plain = p.root().join("new.env");
    fs::write(&plain, "B=2\n").unwrap();
    let before = p.snapshot();
    fails_with(
        p.cmd().args(["secrets", "encrypt"]).arg(&plain),
        &["lists no public keys", "keygen --add"],
        "B=2",
    );
    fails_with(
        p.cmd()
            .args(["secrets", "set", "prod", "B"])
            .write_stdin("two"),
        &["lists no public keys"],
        "two",
    );
    fails_with(
        p.cmd().args(["secrets", "rekey"]),
        &["no public keys"],
        "A=1",
    );
    assert_eq!(p.snapshot(), before);
}

#[test]
fn a_malformed_recipient_line_is_named() {
    let p = SecretsDir::new();
    p.encrypt("prod", "A=1\n");
    let good = fs::read_to_string(p.recipients()).unwrap();
    fs::write(p.recipients(), format!("{good}\nage1notakey\n")).unwrap();
    let line = good.lines().count() + 2;
    let before = p.snapshot();
    fails_with(
        p.cmd().args(["secrets", "rekey"]),
        &[
            &format!("recipients.txt:{line}"),
            "not a valid age public key",
        ],
        "A=1",
    );
    fs::write(p.recipients(), format!("{good}hello\n")).unwrap();
    fails_with(
        p.cmd()
            .args(["secrets", "set", "prod", "B"])
            .write_stdin("2"),
        &[&format!("recipients.txt:{}", good.lines().count() + 1)],
        "A=1",
    );
    // Only the test's own rewrite of recipients.txt differs.
    fs::write(p.recipients(), format!("{good}\nage1notakey\n")).unwrap();
    assert_eq!(p.snapshot(), before);
}

#[test]
fn a_plaintext_env_where_an_encrypted_file_is_expected_is_detected() {
    let p = SecretsDir::new();
    let secret = marker("plain");
    fs::write(p.secret("prod"), format!("DB_PASSWORD={secret}\n")).unwrap();
    let before = p.snapshot();
    for args in [
        &["secrets", "show", "prod"][..],
        &["secrets", "exec", "prod", "--", "true"],
        &["secrets", "rekey"],
    ] {
        fails_with(
            p.cmd().args(args),
            &["plaintext dotenv file", "cutover secrets encrypt --force"],
            &secret,
        );
    }
    assert_eq!(p.snapshot(), before);

    // The suggested fix works: encrypt in place.
    p.cmd()
        .args(["secrets", "encrypt", "--force"])
        .arg(p.secret("prod"))
        .assert()
        .success();
    assert_eq!(p.show_json("prod")["DB_PASSWORD"], secret.as_str());
}

#[test]
fn duplicate_keys_name_file_line_and_key_but_not_the_value() {
    let p = SecretsDir::new();
    let secret = marker("dup");
    let plain = p.root().join("dup.env");
    fs::write(&plain, format!("A=1\nTOKEN={secret}\nTOKEN={secret}\n")).unwrap();
    let se = fails_with(
        p.cmd().args(["secrets", "encrypt"]).arg(&plain),
        &[
            "dup.env:3",
            "key `TOKEN`",
            "duplicate key, first set on line 2",
        ],
        &secret,
    );
    assert!(!p.secret("dup").exists(), "{se}");

    // The same key in two files is ambiguous too.
    p.encrypt("one", "SHARED=1\n");
    p.encrypt("two", "SHARED=2\n");
    fails_with(
        p.cmd()
            .args(["secrets", "exec", "one", "two", "--", "true"]),
        &["`SHARED`", "one.env.age", "two.env.age"],
        "SHARED=",
    );
}

#[test]
fn other_rejected_lines_never_echo_the_value() {
    let p = SecretsDir::new();
    let secret = marker("line");
    for (text, expect) in [
        (format!("{secret}\n"), "bad.env:1"),
        (format!("A=1\nB=\"{secret}\n"), "bad.env:2: key `B`"),
        (format!("A='{secret}' tail\n"), "after the closing quote"),
        (format!("A=\"{secret}\\q\"\n"), "unsupported escape"),
        (format!("bad key={secret}\n"), "invalid key name"),
    ] {
        let plain = p.root().join("bad.env");
        fs::write(&plain, text).unwrap();
        fails_with(
            p.cmd().args(["secrets", "encrypt"]).arg(&plain),
            &[expect],
            &secret,
        );
    }
}

// --- hermetic parsing ---------------------------------------------------------------------

#[test]
fn parsing_is_hermetic_nothing_comes_from_the_host_environment() {
    let p = SecretsDir::new();
    p.encrypt(
        "prod",
        "A=$CUTOVER_HOST_LEAK\nB=\"${CUTOVER_HOST_LEAK}x\"\nC='$CUTOVER_HOST_LEAK'\nD=$A\n",
    );
    let out = p
        .cmd()
        .env("CUTOVER_HOST_LEAK", "LEAKED")
        .args(["secrets", "show", "prod", "--json"])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let json = &json["values"];
    assert_eq!(json["A"], "$CUTOVER_HOST_LEAK");
    assert_eq!(json["B"], "${CUTOVER_HOST_LEAK}x");
    assert_eq!(json["C"], "$CUTOVER_HOST_LEAK");
    assert_eq!(json["D"], "$A");

    let out = p
        .cmd()
        .env("CUTOVER_HOST_LEAK", "LEAKED")
        .args(["secrets", "exec", "prod", "--", "printenv", "B"])
        .assert()
        .success();
    assert_eq!(stdout(&out), "${CUTOVER_HOST_LEAK}x\n");

    // `--host` after `--` is the command's own argument, not cutover's flag: a CI job with
    // CUTOVER_HOST set runs it locally, unrefused.
    let out = p
        .cmd()
        .env("CUTOVER_HOST", "box")
        .args(["secrets", "exec", "prod", "--", "echo", "--host", "x"])
        .assert()
        .success();
    assert_eq!(stdout(&out), "--host x\n");
}

// --- set / unset --------------------------------------------------------------------------

#[test]
fn set_reads_stdin_generate_makes_random_values_and_unset_removes() {
    let p = SecretsDir::new();
    p.encrypt("prod", "# keep me\nA=1\n");
    p.cmd()
        .args(["secrets", "set", "prod", "PASS"])
        .write_stdin("multi word $value\n")
        .assert()
        .success();
    p.cmd()
        .args(["secrets", "set", "prod", "A"])
        .write_stdin("replaced")
        .assert()
        .success();
    p.cmd()
        .args(["secrets", "set", "prod", "TOKEN", "--generate", "40"])
        .assert()
        .success();
    let json = p.show_json("prod");
    assert_eq!(
        json["PASS"], "multi word $value",
        "one trailing newline stripped"
    );
    assert_eq!(json["A"], "replaced");
    let token = json["TOKEN"].as_str().unwrap();
    assert_eq!(token.len(), 40);
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(p.show("prod").starts_with("# keep me\nA=replaced\n"));

    p.cmd()
        .args(["secrets", "unset", "prod", "A"])
        .assert()
        .success();
    let json = p.show_json("prod");
    assert!(json.get("A").is_none() && json.get("PASS").is_some());

    let before = p.snapshot();
    fails_with(
        p.cmd().args(["secrets", "unset", "prod", "A"]),
        &["`A` is not set"],
        "multi word",
    );
    fails_with(
        p.cmd()
            .args(["secrets", "set", "prod", "1BAD"])
            .write_stdin("x"),
        &["invalid key name"],
        "multi word",
    );
    assert_eq!(p.snapshot(), before);
}

#[test]
fn set_never_takes_the_value_from_argv() {
    let p = SecretsDir::new();
    p.cmd()
        .args(["secrets", "set", "prod", "KEY", "the-value"])
        .assert()
        .code(2);
}

#[test]
fn set_creates_a_missing_file_and_values_round_trip_through_quoting() {
    let p = SecretsDir::new();
    let value = "line1\nline2 \"quoted\" \\ # not a comment\t$X";
    p.cmd()
        .args(["secrets", "set", "fresh", "WEIRD", "--create"])
        .write_stdin(format!("{value}\n"))
        .assert()
        .success();
    assert_eq!(p.show_json("fresh")["WEIRD"], value);
}

#[test]
fn a_typo_in_a_secrets_name_creates_nothing_and_lists_the_files_there_are() {
    let p = SecretsDir::new();
    p.encrypt("prod", "A=1\n");
    p.encrypt("staging", "A=2\n");
    let before = p.snapshot();
    for args in [
        &["secrets", "set", "prodd", "KEY"][..],
        &["secrets", "edit", "prodd"],
    ] {
        let se = fails_with(
            p.cmd().args(args).write_stdin("value-of-the-typo\n"),
            &[
                "there is no secrets file `prodd`",
                "existing: prod, staging",
                "--create",
            ],
            "value-of-the-typo",
        );
        assert!(se.contains("prodd.env.age"), "{se}");
        assert_eq!(p.snapshot(), before, "{args:?} changed a file");
    }
    // The file's own name means the same file.
    assert_eq!(p.show("prod.env.age"), "A=1\n");
    p.cmd()
        .args(["secrets", "set", "prod.env.age", "B"])
        .write_stdin("2\n")
        .assert()
        .success();
    assert_eq!(p.show_json("prod")["B"], "2");
}

/// The scaffold's cutover.yml (`cutover init`) in the project.
fn scaffold_config(p: &SecretsDir) {
    let other = tempfile::tempdir().unwrap();
    cutover(other.path())
        .args(["init", "app"])
        .assert()
        .success();
    fs::copy(
        other.path().join("app/cutover.yml"),
        p.dir().join("cutover.yml"),
    )
    .unwrap();
}

#[test]
fn an_encrypted_file_reaches_the_app_and_an_unlisted_one_is_warned_about() {
    let p = SecretsDir::new();
    scaffold_config(&p);
    let plain = p.dir().join("prod.env");
    fs::write(&plain, "DB_PASSWORD=hunter2-and-more\n").unwrap();
    let out = p
        .cmd()
        .args(["secrets", "encrypt", "prod.env", "--rm"])
        .assert()
        .success();
    let said = stderr(&out);
    assert!(
        said.contains("listed secrets/prod.env.age in app.secrets in cutover.yml"),
        "{said}"
    );
    let config = fs::read_to_string(p.dir().join("cutover.yml")).unwrap();
    assert!(
        config.contains("  secrets: [secrets/prod.env.age]  # e.g."),
        "{config}"
    );
    let check = p.cmd().args(["render", "--check"]).assert().success();
    assert!(
        !stderr(&check).contains("listed by no service"),
        "{}",
        stderr(&check)
    );

    // A file the config cannot take automatically (a block list): a note, and every command
    // that loads the config warns, naming the line to add.
    fs::write(
        p.dir().join("cutover.yml"),
        config.replace(
            "  secrets: [secrets/prod.env.age]  # e.g.",
            "  secrets:\n    - secrets/prod.env.age\n  # e.g.",
        ),
    )
    .unwrap();
    let out = p
        .cmd()
        .args(["secrets", "set", "extra", "TOKEN", "--create"])
        .write_stdin("t0ken-value\n")
        .assert()
        .success();
    let said = stderr(&out);
    assert!(
        said.contains("note: secrets/extra.env.age is listed by no service"),
        "{said}"
    );
    for args in [&["render", "--check"][..], &["deploy", "--dry-run"]] {
        let out = p.cmd().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains("warning: secrets/extra.env.age is listed by no service, so its keys reach no container")
                && err.contains("`secrets: [secrets/extra.env.age]`"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("t0ken-value"), "{err}");
    }

    // A bare name in app.secrets names the form that works.
    let text = fs::read_to_string(p.dir().join("cutover.yml")).unwrap();
    fs::write(
        p.dir().join("cutover.yml"),
        text.replace("    - secrets/prod.env.age", "    - prod"),
    )
    .unwrap();
    fails_with(
        p.cmd().args(["render", "--check"]),
        &[
            "app.secrets: secrets file",
            "list it by its path: app.secrets: [secrets/prod.env.age]",
        ],
        "hunter2",
    );
}

/// `secrets set` drops exactly one trailing newline from stdin (what `echo` adds) and says so;
/// a second one is kept.
#[test]
fn secrets_set_says_when_it_drops_the_trailing_newline() {
    let project = Project::new().demo_secrets();
    let set = |key: &str, stdin: &str| {
        project
            .cutover_with_stdin(["secrets", "set", "prod", key, "--create"], stdin)
            .success()
            .stderr
    };
    let said = set("ECHOED", "pw\n");
    assert!(said.contains("without the one trailing newline"), "{said}");
    let said = set("CRLF", "pw\r\n");
    assert!(said.contains("without the one trailing CRLF"), "{said}");
    let said = set("KEPT", "pw\n\n");
    assert!(said.contains("without the one trailing newline"), "{said}");
    let said = set("EXACT", "pw");
    assert!(!said.contains("trailing"), "{said}");
    let values = shown(&project, "prod");
    assert_eq!(values["ECHOED"], "pw");
    assert_eq!(values["CRLF"], "pw");
    assert_eq!(values["KEPT"], "pw\n");
    assert_eq!(values["EXACT"], "pw");
}

// --- edit ---------------------------------------------------------------------------------

#[test]
fn edit_uses_a_private_file_on_tmpfs_and_re_encrypts() {
    let p = SecretsDir::new();
    p.encrypt("prod", "A=1\nB=2\n");
    let seen = p.root().join("seen.txt");
    let ed = editor(
        &p,
        &format!(
            "stat -c '%a %n' \"$1\" \"$(dirname \"$1\")\" > {seen}\n\
             sed -i 's/^A=1$/A=changed/' \"$1\"\nsed -i '/^B=/d' \"$1\"\necho C=3 >> \"$1\"",
            seen = seen.display()
        ),
    );
    let out = p
        .cmd()
        .env("EDITOR", &ed)
        .args(["secrets", "edit", "prod"])
        .assert()
        .success();
    let se = stderr(&out);
    assert!(
        se.contains("added C") && se.contains("changed A") && se.contains("removed B"),
        "{se}"
    );
    assert_eq!(p.show("prod"), "A=changed\nC=3\n");

    let seen = fs::read_to_string(&seen).unwrap();
    let mut lines = seen.lines();
    let (file_mode, file) = lines.next().unwrap().split_once(' ').unwrap();
    let (dir_mode, dir) = lines.next().unwrap().split_once(' ').unwrap();
    assert_eq!((file_mode, dir_mode), ("600", "700"), "{seen}");
    if Path::new("/dev/shm").is_dir() {
        assert!(file.starts_with("/dev/shm/"), "{seen}");
    }
    assert!(
        !Path::new(file).exists() && !Path::new(dir).exists(),
        "{seen}"
    );
}

#[test]
fn edit_refuses_invalid_content_and_keeps_the_original() {
    let p = SecretsDir::new();
    let secret = marker("edit");
    p.encrypt("prod", &format!("A={secret}\n"));
    let before = p.snapshot();
    let ed = editor(&p, "echo 'this line is not valid' >> \"$1\"");
    fails_with(
        p.cmd().env("EDITOR", &ed).args(["secrets", "edit", "prod"]),
        &["prod.env:2", "expected KEY=VALUE"],
        &secret,
    );
    let ed = editor(&p, "echo A=dup >> \"$1\"");
    fails_with(
        p.cmd().env("EDITOR", &ed).args(["secrets", "edit", "prod"]),
        &["prod.env:2", "duplicate key"],
        &secret,
    );
    let ed = editor(&p, "echo B=2 >> \"$1\"; exit 3");
    fails_with(
        p.cmd().env("EDITOR", &ed).args(["secrets", "edit", "prod"]),
        &["exit code 3", "not changed"],
        &secret,
    );
    assert_eq!(p.snapshot(), before);

    // Saving without changes does not rewrite the file (no noise in git).
    let ed = editor(&p, "true");
    let out = p
        .cmd()
        .env("EDITOR", &ed)
        .args(["secrets", "edit", "prod"])
        .assert()
        .success();
    assert!(stderr(&out).contains("no changes"));
    assert_eq!(p.snapshot(), before);
}

#[test]
fn a_failed_edit_reopens_the_editor_with_the_error_on_top_and_saves_the_fix() {
    let p = SecretsDir::new();
    let secret = marker("reopen");
    p.encrypt("prod", &format!("A={secret}\n"));
    let log = p.root().join("editor.log");
    // First open: a broken line. Reopened: what it saw on top goes to the log, then the fix.
    let ed = editor(
        &p,
        &format!(
            "echo open >> {log}\n\
             if grep -q '^# cutover: ' \"$1\"; then\n\
               grep '^# cutover: ' \"$1\" >> {log}\n\
               sed -i -e '/^this line is not valid$/d' \"$1\"\n\
               echo B=2 >> \"$1\"\n\
             else\n\
               echo 'this line is not valid' >> \"$1\"\n\
             fi",
            log = log.display()
        ),
    );
    let out = p
        .cmd()
        .env("EDITOR", &ed)
        .args(["secrets", "edit", "prod"])
        .assert()
        .success();
    assert!(stderr(&out).contains("added B"), "{}", stderr(&out));
    let seen = fs::read_to_string(&log).unwrap();
    assert_eq!(seen.matches("open").count(), 2, "{seen}");
    for needle in [
        "# cutover: this edit was not saved:",
        "prod.env:2",
        "expected KEY=VALUE",
        "save without a change to give up",
    ] {
        assert!(seen.contains(needle), "{needle}: {seen}");
    }
    assert!(!seen.contains(&secret), "{seen}");
    // The header never reaches the encrypted file.
    assert_eq!(p.show("prod"), format!("A={secret}\nB=2\n"));

    // Reopened and saved unchanged: give up with the error, nothing written.
    let before = p.snapshot();
    fs::remove_file(&log).unwrap();
    let ed = editor(
        &p,
        &format!(
            "echo open >> {log}\n\
             grep -q '^# cutover: ' \"$1\" || echo 'still not valid' >> \"$1\"",
            log = log.display()
        ),
    );
    fails_with(
        p.cmd().env("EDITOR", &ed).args(["secrets", "edit", "prod"]),
        &["prod.env:3", "expected KEY=VALUE"],
        &secret,
    );
    assert_eq!(fs::read_to_string(&log).unwrap().matches("open").count(), 2);
    assert_eq!(p.snapshot(), before);
}

// --- rekey / rotate -----------------------------------------------------------------------

#[test]
fn rekey_uses_fresh_file_keys_and_adds_new_recipients() {
    let p = SecretsDir::new();
    p.encrypt("a", "A=1\n");
    p.encrypt("b", "B=2\n");
    let old_a = fs::read(p.secret("a")).unwrap();
    let teammate = p.root().join("teammate.txt");
    p.bare()
        .args(["secrets", "keygen", "--add", "--out"])
        .arg(&teammate)
        .assert()
        .success();
    // Before rekey, the teammate cannot read existing files.
    p.bare()
        .arg("--identity")
        .arg(&teammate)
        .args(["secrets", "show", "a"])
        .assert()
        .code(1);
    p.cmd().args(["secrets", "rekey"]).assert().success();
    assert_ne!(fs::read(p.secret("a")).unwrap(), old_a);
    assert_eq!(mode(&p.secret("a")), 0o644);
    for id in [p.identity(), teammate] {
        let out = p
            .bare()
            .arg("--identity")
            .arg(&id)
            .args(["secrets", "show", "b"])
            .assert()
            .success();
        assert_eq!(stdout(&out), "B=2\n");
    }
}

#[test]
fn rekey_is_all_or_nothing() {
    let p = SecretsDir::new();
    p.encrypt("a", "A=1\n");
    // A file the current identity cannot read: rekey must not touch `a` either.
    let other = p.root().join("other.txt");
    let out = p
        .bare()
        .args(["secrets", "keygen", "--out"])
        .arg(&other)
        .assert()
        .success();
    let other_public = stdout(&out).trim().to_string();
    let good = fs::read_to_string(p.recipients()).unwrap();
    fs::write(p.recipients(), format!("{other_public}\n")).unwrap();
    p.encrypt("z", "Z=1\n");
    fs::write(p.recipients(), &good).unwrap();

    let before = p.snapshot();
    fails_with(
        p.cmd().args(["secrets", "rekey"]),
        &["no secrets file was changed", "z.env.age"],
        "Z=1",
    );
    assert_eq!(p.snapshot(), before);
}

/// A deploy holds the project's lock: `rekey`, which rewrites the deployed ciphertext kept
/// in `.cutover/` as well, is refused while it runs (a copy rewritten meanwhile would be
/// lost or left to the old key), nothing changed; once the lock is free it runs.
#[test]
fn rekey_is_refused_while_a_deploy_holds_the_lock() {
    let p = SecretsDir::new();
    p.encrypt("a", "A=1\n");
    let state = p.dir().join(".cutover");
    fs::create_dir_all(state.join("deployed-secrets")).unwrap();
    let lock = state.join("lock");
    // -o: the lock is flock's own, not its child's, so killing flock frees it.
    let mut holder = std::process::Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::process::Command::new("flock")
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
    let before = p.snapshot();
    let refused = p.cmd().args(["secrets", "rekey"]).assert().code(1);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let err = stderr(&refused);
    assert!(
        err.contains("deploy lock") && err.contains("Nothing was changed"),
        "{err}"
    );
    assert_eq!(p.snapshot(), before);
    p.cmd().args(["secrets", "rekey"]).assert().success();
}

#[test]
fn rekey_refuses_to_lock_out_the_current_identity() {
    let p = SecretsDir::new();
    p.encrypt("a", "A=1\n");
    let other = p.root().join("other.txt");
    let out = p
        .bare()
        .args(["secrets", "keygen", "--out"])
        .arg(&other)
        .assert()
        .success();
    fs::write(p.recipients(), stdout(&out)).unwrap();
    let before = p.snapshot();
    fails_with(
        p.cmd().args(["secrets", "rekey"]),
        &["could not decrypt it afterwards"],
        "A=1",
    );
    assert_eq!(p.snapshot(), before);
}

#[test]
fn rotate_identity_retires_the_old_key() {
    let p = SecretsDir::new();
    p.encrypt("a", "A=1\n");
    p.encrypt("b", "B=2\n");
    let new_id = p.root().join("new-identity.txt");
    let out = p
        .cmd()
        .args(["secrets", "rotate-identity", "--out"])
        .arg(&new_id)
        .assert()
        .success();
    let new_public = stdout(&out).trim().to_string();
    assert_eq!(mode(&new_id), 0o600);
    let recipients = fs::read_to_string(p.recipients()).unwrap();
    assert!(recipients.contains(&new_public), "{recipients}");
    assert!(!recipients.contains(&test_public_key()), "{recipients}");

    for name in ["a", "b"] {
        fails_with(
            p.cmd().args(["secrets", "show", name]),
            &["cannot decrypt"],
            "=1",
        );
        p.bare()
            .arg("--identity")
            .arg(&new_id)
            .args(["secrets", "show", name])
            .assert()
            .success();
        if require("age", "double-check with the age CLI") {
            let out = StdCommand::new("age")
                .arg("-d")
                .arg("-i")
                .arg(p.identity())
                .arg(p.secret(name))
                .output()
                .unwrap();
            assert!(!out.status.success(), "old identity still decrypts {name}");
        }
    }
}

#[test]
fn rotate_identity_in_place_keeps_the_old_key_aside() {
    let p = SecretsDir::new();
    p.encrypt("a", "A=1\n");
    let default = p.config_home().join("cutover/identity.txt");
    fs::create_dir_all(default.parent().unwrap()).unwrap();
    fs::copy(p.identity(), &default).unwrap();
    chmod(&default, 0o600);
    let old = fs::read_to_string(&default).unwrap();
    p.bare()
        .args(["secrets", "rotate-identity"])
        .assert()
        .success();
    let backup = p.config_home().join("cutover/identity.txt.old");
    assert_eq!(fs::read_to_string(&backup).unwrap(), old);
    assert_eq!(mode(&backup), 0o600);
    assert_eq!(mode(&default), 0o600);
    assert_ne!(fs::read_to_string(&default).unwrap(), old);
    // The default (new) identity reads the file; the old one does not.
    p.bare().args(["secrets", "show", "a"]).assert().success();
    p.cmd().args(["secrets", "show", "a"]).assert().code(1);

    // A second in-place rotation would overwrite the backup: refused, nothing changed.
    let before = p.snapshot();
    fails_with(
        p.bare().args(["secrets", "rotate-identity"]),
        &["identity.txt.old", "already exists"],
        "A=1",
    );
    assert_eq!(p.snapshot(), before);
}

// --- exec ---------------------------------------------------------------------------------

#[test]
fn exec_runs_the_command_with_the_variables_and_its_exit_code() {
    let p = SecretsDir::new();
    p.encrypt("a", "A=from-a\n");
    p.encrypt("b", "B=\"from b\"\n");
    let out = p
        .cmd()
        .args(["secrets", "exec", "a", "b", "--", "sh", "-c"])
        .arg("printf '%s|%s|%s' \"$A\" \"$B\" \"${CUTOVER_IDENTITY:-none}\"; exit 7")
        .assert()
        .code(7);
    assert_eq!(stdout(&out), "from-a|from b|none");

    // No shell between cutover and the command: `$A` and `;` reach it as written.
    let out = p
        .cmd()
        .args(["secrets", "exec", "a", "--", "echo", "$A;", "x"])
        .assert()
        .success();
    assert_eq!(stdout(&out), "$A; x\n");

    // The child does not inherit the master key.
    let key = fs::read_to_string(p.identity()).unwrap();
    let key = key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    let out = p
        .bare()
        .env("CUTOVER_AGE_KEY", key)
        .args(["secrets", "exec", "a", "--", "sh", "-c"])
        .arg("printf '%s' \"${CUTOVER_AGE_KEY:-gone}\"")
        .assert()
        .success();
    assert_eq!(stdout(&out), "gone");

    fails_with(
        p.cmd()
            .args(["secrets", "exec", "a", "--", "definitely-not-a-program-xyz"]),
        &["not found"],
        "from-a",
    );
}

// --- no plaintext left behind -------------------------------------------------------------

#[test]
fn no_plaintext_is_left_on_disk_after_edit_set_rekey_and_exec() {
    let p = SecretsDir::new();
    let secret = marker("disk");
    p.encrypt("prod", "A=1\n");

    // edit: the editor appends the marker, taken from its environment so this script holds
    // no copy of it.
    let ed = editor(
        &p,
        "printf 'EDITED=%s\\n' \"$CUTOVER_TEST_MARKER\" >> \"$1\"",
    );
    p.cmd()
        .env("EDITOR", &ed)
        .env("CUTOVER_TEST_MARKER", &secret)
        .args(["secrets", "edit", "prod"])
        .assert()
        .success();
    p.cmd()
        .args(["secrets", "set", "prod", "SET"])
        .write_stdin(format!("{secret}-set\n"))
        .assert()
        .success();
    p.cmd().args(["secrets", "rekey"]).assert().success();
    let out = p
        .cmd()
        .args(["secrets", "exec", "prod", "--", "printenv", "EDITED"])
        .assert()
        .success();
    assert_eq!(stdout(&out).trim(), secret);
    let json = p.show_json("prod");
    assert_eq!(json["SET"], format!("{secret}-set"));

    let mut roots = vec![
        p.root().to_owned(),
        std::env::temp_dir(),
        PathBuf::from("/tmp"),
        PathBuf::from("/dev/shm"),
    ];
    roots.extend(std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from));
    let hits = files_containing(&roots, &secret);
    assert!(hits.is_empty(), "plaintext marker found on disk: {hits:?}");

    // The scan itself works: a planted copy is found.
    let canary = p.root().join("canary");
    fs::write(&canary, format!("x{secret}x")).unwrap();
    assert_eq!(files_containing(&roots[..1], &secret), [canary]);
}

// --- secrets in a deploy ------------------------------------------------------------------

#[test]
fn e2e_secrets_reach_the_app_only_through_the_environment_and_rotate_with_a_redeploy() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().secrets());
    let demo_secret = project.secret_value("DEMO_SECRET");
    assert!(
        demo_secret.len() >= 8,
        "the fixture's value is distinctive enough to search for"
    );

    let Run { stdout, stderr, .. } = project.deploy_ok("cutover-demo:v1");
    assert!(
        !stdout.contains(&demo_secret) && !stderr.contains(&demo_secret),
        "value printed"
    );
    assert_eq!(
        project.get("/env?key=DEMO_SECRET").unwrap(),
        (200, demo_secret.clone())
    );
    // The compose file names the key and never holds the value; nor does any state file.
    let compose = std::fs::read_to_string(project.path().join(".cutover/compose.yml")).unwrap();
    assert!(compose.contains("DEMO_SECRET"), "{compose}");
    for entry in std::fs::read_dir(project.path().join(".cutover")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                !text.contains(&demo_secret),
                "{} holds the secret value",
                path.display()
            );
        }
    }

    // The rotation flow: set a new value, redeploy the active image.
    project
        .cutover_with_stdin(
            ["secrets", "set", "demo", "DB_PASSWORD"],
            "rotated-e2e-value-7f3a\n",
        )
        .success();
    let stdout = project.cutover(["deploy"]).success().stdout;
    assert!(
        stdout.contains("deployed cutover-demo:v1 to green"),
        "{stdout}"
    );
    assert_eq!(
        project.get("/env?key=DB_PASSWORD").unwrap(),
        (200, "rotated-e2e-value-7f3a".to_string())
    );
    project.assert_serving("green", "v1");

    // No identity: deploy fails before touching anything.
    let mut cmd = project.command(["deploy", "--image", "cutover-demo:v2"]);
    cmd.env_remove("CUTOVER_IDENTITY")
        .env("HOME", project.path())
        .env("XDG_CONFIG_HOME", project.path().join("nothing"));
    let stderr = Run::of(cmd).code(1).stderr;
    assert!(
        stderr.contains("cannot decrypt the secrets files named in cutover.yml"),
        "{stderr}"
    );
    project.assert_serving("green", "v1");
}

/// Every file under the state dir, with its contents (lossy UTF-8).
fn state_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(state_files(&path));
        } else {
            let text =
                String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
            files.push((path, text));
        }
    }
    files
}

/// The demo secrets' value that must never leak.
const DB_PASSWORD: &str = "demo-db-password-not-real";

/// Issue #11: compose interpolates `$` in `--image` and `app.command` from an environment
/// holding every decrypted secret. A `$` in an image is refused before anything runs, saying
/// what a reference may hold; a `$` in the command reaches the container literally. The value
/// appears in no output and no file under `.cutover/`.
#[test]
fn e2e_dollar_in_image_or_command_never_interpolates_a_secret() {
    if !ready() || !require("age", "decrypt the demo secrets") {
        return;
    }
    let project = Project::compose(App::compose().secrets());
    let run = project
        .cutover(["deploy", "--image", "cutover-demo:${DB_PASSWORD}"])
        .failure();
    assert!(
        run.stderr
            .contains("`$` at byte 13 is not allowed in an image reference"),
        "{run}"
    );
    assert!(
        !format!("{}{}", run.stdout, run.stderr).contains(DB_PASSWORD),
        "{run}"
    );

    // `app.command` with `${DB_PASSWORD}`: the demo app ignores arguments after `serve`.
    edit_config(&project, |c| {
        c["app"]["command"] = serde_json::json!(["serve", "${DB_PASSWORD}", "$$HOME"]);
    });
    let run = project.deploy_ok("cutover-demo:v1");
    assert!(
        !format!("{}{}", run.stdout, run.stderr).contains(DB_PASSWORD),
        "{run}"
    );
    let id = cutover::docker::compose::containers_of(&project.name)
        .unwrap()
        .into_iter()
        .find(|c| c.service == "web-blue" && c.running())
        .expect("web-blue runs")
        .id;
    let inspect = Command::new("docker")
        .args(["inspect", "-f", "{{json .Config.Cmd}}", &id])
        .output()
        .unwrap();
    let cmd = String::from_utf8_lossy(&inspect.stdout);
    assert_eq!(cmd.trim(), r#"["serve","${DB_PASSWORD}","$$HOME"]"#);
    for (path, text) in state_files(&project.path().join(".cutover")) {
        assert!(
            !text.contains(DB_PASSWORD),
            "{} holds the secret",
            path.display()
        );
    }
    let history = project.cutover(["history"]).success();
    assert!(!history.stdout.contains(DB_PASSWORD), "{history}");
}

/// Redaction of hook and release output: a short value (under 8 characters) is masked only
/// where it stands alone, so the same value glued to itself, or to a long value that is
/// masked, is printed in full.
#[test]
fn a_short_secret_next_to_another_secret_is_still_masked() {
    use cutover::secrets::deploy_env::redact;
    let values: std::collections::BTreeMap<String, secrecy::SecretString> =
        [("PIN", "a1b2c3"), ("TOKEN", "tok_0123456789abcdef")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), secrecy::SecretString::from(v.to_string())))
            .collect();
    for line in [
        "auth a1b2c3tok_0123456789abcdef",
        "twice a1b2c3a1b2c3",
        "ok a1b2c3",
    ] {
        let shown = redact(line, &values);
        assert!(!shown.contains("a1b2c3"), "{line:?} shown as {shown:?}");
    }
}
