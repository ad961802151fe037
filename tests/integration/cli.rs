//! The command surface itself: help, usage errors, completions.

use crate::common::cutover;

#[test]
fn help_lists_every_command_of_the_design() {
    let dir = tempfile::tempdir().unwrap();
    let out = cutover(dir.path()).arg("--help").assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for name in [
        "init",
        "render",
        "deploy",
        "rollback",
        "status",
        "history",
        "prune",
        "secrets",
        "bootstrap",
        "demo",
        "completions",
    ] {
        assert!(
            text.contains(&format!("  {name}")),
            "--help lacks {name}:\n{text}"
        );
    }
}

#[test]
fn usage_error_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    cutover(dir.path()).arg("--no-such-flag").assert().code(2);
}

#[test]
fn completions_for_bash_name_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let out = cutover(dir.path())
        .args(["completions", "bash"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        text.contains("deploy") && text.contains("rollback"),
        "{text}"
    );
}

#[test]
fn verbose_traces_each_subprocess_with_its_exit_code() {
    if !crate::common::require("docker", "trace docker subprocesses") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        crate::common::fixture("configs/good/minimal.yml"),
        dir.path().join("cutover.yml"),
    )
    .unwrap();
    let out = cutover(dir.path()).args(["-v", "status"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("    $ docker ps -a -q --no-trunc --filter"),
        "{stderr}"
    );
    assert!(stderr.contains("exit 0"), "{stderr}");
    let quiet = cutover(dir.path()).arg("status").output().unwrap();
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("    $ "));
}

/// The compose version probe runs once; its answer is cached until what picks the tool
/// changes (here: CUTOVER_COMPOSE).
#[test]
fn compose_detection_is_cached_until_the_choice_changes() {
    if !crate::common::require("docker", "detect compose") {
        return;
    }
    let tools = cutover::docker::compose::Compose::all_available();
    let Some(tool) = tools.first() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no compose tool works here and CI is set"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        crate::common::fixture("configs/good/minimal.yml"),
        dir.path().join("cutover.yml"),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let run = |choice: &str| {
        let out = cutover(dir.path())
            .env("XDG_CACHE_HOME", &cache)
            .env("CUTOVER_COMPOSE", choice)
            .args(["-v", "deploy", "--image", "example/web:1", "--dry-run"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let probe = format!("$ {} version --short", tool.program());
    assert!(run(&tool.program()).contains(&probe), "first run probes");
    assert!(
        !run(&tool.program()).contains(&probe),
        "second run uses the cache"
    );
    assert!(cache.join("cutover/compose-tool.json").is_file());
    // Naming the same tool differently changes the fingerprint: probed again.
    let spaced = format!(" {} ", tool.program());
    assert!(
        run(&spaced).contains(&probe),
        "a changed choice probes again"
    );
}

/// `docker compose` starts the docker CLI, which asks the plugin for its metadata and then
/// execs it: two extra processes on every compose call of a deploy. The detection records the
/// plugin binary the CLI itself reports, and from then on cutover runs it directly.
#[test]
fn compose_v2_runs_as_the_plugin_binary_the_docker_cli_reports() {
    if !crate::common::require("docker", "detect compose v2") {
        return;
    }
    let v2 = cutover::docker::compose::Compose::all_available()
        .into_iter()
        .any(|t| t.program() == "docker compose");
    if !v2 {
        assert!(
            std::env::var_os("CI").is_none(),
            "no `docker compose` (v2) here and CI is set"
        );
        crate::common::loud("*** SKIPPED: no `docker compose` (v2) found ***");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        crate::common::fixture("configs/good/minimal.yml"),
        dir.path().join("cutover.yml"),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let out = cutover(dir.path())
        .env("XDG_CACHE_HOME", &cache)
        .env("CUTOVER_COMPOSE", "docker compose")
        .args(["-v", "deploy", "--image", "example/web:1", "--dry-run"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let cached: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cache.join("cutover/compose-tool.json")).unwrap(),
    )
    .unwrap();
    let path = cached["compose"]["plugin"]["path"]
        .as_str()
        .unwrap_or_else(|| panic!("no plugin path cached: {cached}"));
    assert!(std::path::Path::new(path).is_file(), "{cached}");
    assert!(
        stderr.contains(&format!("$ {path} version --short")),
        "the plugin was not checked by running it directly:\n{stderr}"
    );
    // What the user sees stays `docker compose`.
    assert_eq!(
        cached["compose"]["argv"],
        serde_json::json!(["docker", "compose"])
    );
}

// --- stdout closed early --------------------------------------------------------------------

/// A project whose history.jsonl holds `entries` deploys: enough that `cutover history`
/// prints far more than a pipe buffer (64 KiB) holds, so the writer really meets a closed
/// reader.
fn project_with_long_history(entries: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        crate::common::fixture("configs/good/minimal.yml"),
        dir.path().join("cutover.yml"),
    )
    .unwrap();
    let state = dir.path().join(".cutover");
    std::fs::create_dir_all(&state).unwrap();
    let mut lines = String::new();
    for i in 0..entries {
        let (from, to) = if i % 2 == 0 {
            ("blue", "green")
        } else {
            ("green", "blue")
        };
        let entry = serde_json::json!({
            "time": format!("2026-01-01T00:{:02}:{:02}Z", (i / 60) % 60, i % 60),
            "user": "deployer",
            "engine": "compose",
            "action": "deploy",
            "image": format!("example/web:{i}"),
            "from": from,
            "to": to,
            "result": "ok",
            "steps": [{"step": "lock", "ms": 1}, {"step": "up", "ms": 680}, {"step": "health", "ms": 1200}],
            "total_ms": 2500,
        });
        lines.push_str(&entry.to_string());
        lines.push('\n');
    }
    std::fs::write(state.join("history.jsonl"), lines).unwrap();
    dir
}

/// Runs cutover with stdout a pipe that is closed after one line; returns (line, status,
/// stderr).
fn run_reading_one_line(dir: &std::path::Path, args: &[&str]) -> (String, i32, String) {
    use std::io::{BufRead as _, Read as _};
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("cutover"))
        .current_dir(dir)
        .env_remove("CUTOVER_AGE_KEY")
        .env_remove("CUTOVER_IDENTITY")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    // A signal death has no code: -1 fails every assertion below.
    (first, status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_reader_closing_stdout_early_ends_the_command_quietly_with_0() {
    let dir = project_with_long_history(4000);
    let full = cutover(dir.path()).arg("history").output().unwrap();
    assert!(full.status.success());
    assert!(
        full.stdout.len() > 256 * 1024,
        "the output must exceed a pipe buffer for this test to mean anything: {} bytes",
        full.stdout.len()
    );
    for args in [
        &["history"][..],
        &["history", "--json"],
        &["completions", "bash"],
    ] {
        let (first, code, stderr) = run_reading_one_line(dir.path(), args);
        assert!(!first.is_empty(), "{args:?} printed nothing");
        assert_eq!(code, 0, "{args:?} exit status; stderr: {stderr}");
        assert_eq!(stderr, "", "{args:?} wrote to stderr");
    }
}

/// Only a closed reader is quiet: a stdout that cannot take the output is an error.
#[test]
fn a_stdout_that_cannot_be_written_is_an_error() {
    let dir = project_with_long_history(10);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("cutover"))
        .current_dir(dir.path())
        .arg("history")
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: could not write to stdout"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

// --- usage errors ---------------------------------------------------------------------------

/// Runs the real binary; asserts exit 2, clap's `error:` line naming `flag`, no panic.
fn assert_usage_error(args: &[&str], flag: &str) {
    let stderr = usage_error_stderr(args);
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    assert!(
        stderr.contains(flag),
        "{args:?} does not name {flag}: {stderr}"
    );
}

/// Exit 2, nothing on stdout, no panic; returns stderr.
fn usage_error_stderr(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        crate::common::fixture("configs/good/minimal.yml"),
        dir.path().join("cutover.yml"),
    )
    .unwrap();
    let out = cutover(dir.path()).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    stderr.into_owned()
}

#[test]
fn every_bad_flag_value_is_a_usage_error_naming_the_flag() {
    let table: &[(&[&str], &str)] = &[
        // Durations: overflow, beyond what a deadline can hold, nonsense.
        (
            &["deploy", "--lock-wait", "18446744073709551615s"],
            "--lock-wait",
        ),
        (&["deploy", "--lock-wait", "101years"], "--lock-wait"),
        (&["deploy", "--lock-wait", "soon"], "--lock-wait"),
        (&["deploy", "--lock-wait=-5s"], "--lock-wait"),
        (
            &[
                "deploy",
                "--engine",
                "swarm",
                "--lock-wait",
                "18446744073709551615s",
            ],
            "--lock-wait",
        ),
        (
            &["rollback", "--lock-wait", "99999999999999999999h"],
            "--lock-wait",
        ),
        // Sizes.
        (&["bootstrap", "--swap", "99999999999999999G"], "--swap"),
        (&["bootstrap", "--swap", "lots"], "--swap"),
        (&["bootstrap", "--cloud-init", "--ram", "0"], "--ram"),
        (
            &["bootstrap", "--cloud-init", "--ram", "99999999999999G"],
            "--ram",
        ),
        (&["bootstrap", "--cloud-init", "--ram", "1T"], "--ram"),
        (&["bootstrap", "--cloud-init", "--os", "plan9"], "--os"),
        // Numbers.
        (&["prune", "--keep=-1"], "--keep"),
        (&["prune", "--keep", "18446744073709551616"], "--keep"),
        (&["prune", "--keep", "three"], "--keep"),
        (&["history", "-n", "99999999999999999999999"], "--limit"),
        (&["history", "--limit=-1"], "--limit"),
        (
            &["secrets", "set", "prod", "KEY", "--generate", "0"],
            "--generate",
        ),
        (
            &["secrets", "set", "prod", "KEY", "--generate", "65537"],
            "--generate",
        ),
        (
            &[
                "secrets",
                "set",
                "prod",
                "KEY",
                "--generate",
                "99999999999999999999",
            ],
            "--generate",
        ),
        // Enums.
        (&["deploy", "--engine", "k8s"], "--engine"),
        (&["status", "--engine", "k8s"], "--engine"),
        (&["render", "--engine", "k8s"], "--engine"),
        (&["completions", "tcsh"], "<SHELL>"),
    ];
    for (args, flag) in table {
        assert_usage_error(args, flag);
    }
}

#[test]
fn every_kind_of_usage_error_exits_2() {
    let table: &[(&[&str], &str)] = &[
        (&["--no-such-flag"], "--no-such-flag"),
        (&["deploy", "--imag", "x"], "--imag"),
        (&["no-such-command"], "no-such-command"),
        (&["secrets", "show"], "<NAME>"),
        (&["secrets", "set", "prod"], "<KEY>"),
        (&["secrets", "exec", "prod"], "<COMMAND>"),
        (&["completions"], "<SHELL>"),
        (&["deploy", "--image"], "--image"),
        (&["bootstrap", "--ram", "1G"], "--cloud-init"),
        (&["-q", "-v", "status"], "--quiet"),
    ];
    for (args, names) in table {
        assert_usage_error(args, names);
    }
    // A missing subcommand is answered with the help, on stderr, still as a usage error.
    for args in [&[][..], &["secrets"]] {
        let stderr = usage_error_stderr(args);
        assert!(stderr.contains("Usage: cutover"), "{args:?}: {stderr}");
    }
}

/// The README sections cutover's messages and templates point at (`README: "X"`,
/// `README.md "X"`, `(README.md, "X")`), each with the file that names it.
fn readme_references() -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, found: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let mut rest = text.as_str();
            while let Some(i) = rest.find("README") {
                rest = &rest[i + "README".len()..];
                // `README: "X"`, `README.md "X"`, `README.md, "X"`: a separator, then a quote.
                let named = rest.strip_prefix(".md").unwrap_or(rest);
                let Some(after) = [": ", ", ", " "]
                    .iter()
                    .find_map(|sep| named.strip_prefix(sep))
                else {
                    continue;
                };
                let (open, close) = if after.starts_with("\\\"") {
                    ("\\\"", "\\\"")
                } else if after.starts_with('"') {
                    ("\"", "\"")
                } else {
                    continue;
                };
                let quoted = &after[open.len()..];
                if let Some(end) = quoted.find(close) {
                    found.push((quoted[..end].to_string(), path.display().to_string()));
                }
            }
        }
    }
    let root = crate::common::repo_root();
    let mut found = Vec::new();
    walk(&root.join("src"), &mut found);
    walk(&root.join("templates"), &mut found);
    found
}

#[test]
fn every_readme_section_a_message_names_exists() {
    let root = crate::common::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    // Headings outside fenced code (where `#` starts a shell or YAML comment).
    let mut fenced = false;
    let mut headings: Vec<&str> = Vec::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            headings.push(line.trim_start_matches('#').trim());
        }
    }
    let refs = readme_references();
    // The known ones are found, so a change to the pattern cannot silently find nothing.
    for known in [
        "From a laptop or CI: `--host`",
        "Config reference (`cutover.yml`)",
        "HTTPS",
    ] {
        assert!(refs.iter().any(|(r, _)| r == known), "{known}: {refs:?}");
    }
    for (section, file) in &refs {
        assert!(
            headings.contains(&section.as_str()),
            "{file} names the README section {section:?}, which does not exist; headings: {headings:?}"
        );
    }
}

#[test]
fn every_command_and_flag_of_the_readme_laptop_path_exists() {
    let root = crate::common::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("## From a fresh laptop to a deployed box")
        .nth(1)
        .expect("the README has the laptop path");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("its first sh block");
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for line in block.lines() {
        let line = line.split(" # ").next().unwrap_or(line);
        for command in line.split("&&").map(str::trim) {
            let Some(rest) = command.strip_prefix("cutover ") else {
                continue;
            };
            let mut words = rest.split_whitespace().peekable();
            let mut path: Vec<&str> = Vec::new();
            let mut flags: Vec<&str> = Vec::new();
            while let Some(word) = words.next() {
                if word == "--host" || word == "-C" {
                    flags.push(word);
                    words.next();
                } else if word.starts_with("--") {
                    flags.push(word);
                } else if path.is_empty()
                    || (path.len() == 1 && ["secrets", "tls", "maintenance"].contains(&path[0]))
                {
                    path.push(word);
                }
            }
            let out = cutover(dir.path())
                .args(&path)
                .arg("--help")
                .output()
                .unwrap();
            let help = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(out.status.success(), "cutover {path:?} --help: {help}");
            for flag in flags {
                assert!(
                    help.contains(flag),
                    "the README runs `{command}`, but `cutover {} --help` has no {flag}",
                    path.join(" ")
                );
            }
            checked += 1;
        }
    }
    // init, keygen, encrypt, render, bootstrap, deploy, init --ci.
    assert!(
        checked >= 7,
        "only {checked} cutover commands found in the laptop path"
    );
}
