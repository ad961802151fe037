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
    // `status` asks the engine's socket where the CLI would reach it (docker::engine_api):
    // each request is traced like a subprocess, with its HTTP status.
    let out = cutover(dir.path()).args(["-v", "status"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let local = cutover::docker::engine_api::local_socket().is_some();
    if local {
        assert!(
            stderr.contains("    $ GET /containers/json?all=1&filters=")
                && stderr.contains("[Docker engine API at ")
                && stderr.contains(", HTTP 200)"),
            "{stderr}"
        );
    } else {
        assert!(
            stderr.contains("    $ docker ps -a -q --no-trunc --filter"),
            "{stderr}"
        );
    }
    // A dry-run deploy runs docker processes (the compose probe): each with its exit code.
    let out = cutover(dir.path())
        .args(["-v", "deploy", "--dry-run"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.starts_with("    $ ")
            && l.contains("version --short")
            && l.ends_with(", exit 0)")),
        "{stderr}"
    );
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

/// The `--help` of `cutover PATH…`, asked once per command path.
fn help_of(path: &[String]) -> String {
    static SEEN: std::sync::Mutex<Vec<(Vec<String>, String)>> = std::sync::Mutex::new(Vec::new());
    if let Some((_, help)) = SEEN.lock().unwrap().iter().find(|(p, _)| p == path) {
        return help.clone();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = cutover(dir.path())
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    SEEN.lock().unwrap().push((path.to_vec(), help.clone()));
    help
}

/// Whether `help` shows `flag` as a word of its own (`--ship` is not found in `--shipping`).
fn shows_flag(help: &str, flag: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    help.match_indices(flag).any(|(at, _)| {
        let before = help[..at].chars().next_back();
        let after = help[at + flag.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// Checks one `cutover ARGS…` line of the README: clap parses it as the binary would (an
/// unknown subcommand or flag, a missing value, a bad value, a stray positional all fail),
/// and each subcommand and flag it uses is shown by the `--help` of the command it belongs
/// to (so a hidden flag, or one only a sibling command has, fails too). Returns the command
/// path (`["secrets", "keygen"]`).
fn check_readme_command(args: &[String]) -> Result<Vec<String>, String> {
    use clap::CommandFactory as _;
    use clap::Parser as _;
    let shown = args.join(" ");
    cutover::cli::Cli::try_parse_from(
        std::iter::once("cutover".to_string()).chain(args.iter().cloned()),
    )
    .map_err(|e| format!("`cutover {shown}` does not parse: {}", e.render()))?;
    // Walk clap's tree for the command path and the flags, each flag with the command path
    // it was given under (a global flag before the subcommand is checked in the top help).
    let root = cutover::cli::Cli::command();
    let mut chain = vec![root];
    let mut path: Vec<String> = Vec::new();
    let mut flags: Vec<(String, Vec<String>)> = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let current = chain.last().unwrap().clone();
        if let Some(flag) = word.strip_prefix('-').filter(|f| !f.is_empty()) {
            let (name, inline_value) = match flag.split_once('=') {
                Some((n, _)) => (n, true),
                None => (flag, false),
            };
            let arg = chain.iter().rev().find_map(|c| {
                c.get_arguments()
                    .find(|a| match name.strip_prefix('-') {
                        Some(long) => a.get_long() == Some(long),
                        None => name.len() == 1 && a.get_short() == name.chars().next(),
                    })
                    .cloned()
            });
            let arg = arg.ok_or_else(|| format!("`cutover {shown}`: no {word} in clap's tree"))?;
            if arg.get_action().takes_values() && !inline_value {
                words.next();
            }
            flags.push((format!("-{name}"), path.clone()));
        } else if let Some(sub) = current.find_subcommand(word) {
            path.push(sub.get_name().to_string());
            chain.push(sub.clone());
        }
    }
    // Each subcommand is listed by its parent's help, each flag by its command's.
    for depth in 0..path.len() {
        let help = help_of(&path[..depth]);
        if !shows_flag(&help, &path[depth]) {
            return Err(format!(
                "`cutover {shown}`: `cutover {} --help` does not list {}",
                path[..depth].join(" "),
                path[depth]
            ));
        }
    }
    for (flag, under) in flags {
        if !shows_flag(&help_of(&under), &flag) {
            return Err(format!(
                "`cutover {shown}`: `cutover {} --help` has no {flag}",
                under.join(" ")
            ));
        }
    }
    Ok(path)
}

#[test]
fn every_command_and_flag_of_the_readme_laptop_path_exists() {
    let readme = std::fs::read_to_string(crate::common::repo_root().join("README.md")).unwrap();
    let steps = crate::harness::readme_walk::steps(&readme).unwrap_or_else(|e| panic!("{e}"));
    let mut paths = Vec::new();
    for (cmd, step) in &steps {
        if let crate::harness::readme_walk::Step::Cutover(args) = step {
            let path = check_readme_command(args)
                .unwrap_or_else(|e| panic!("README line {}: {e}", cmd.line));
            paths.push((path.join(" "), args.clone()));
        }
    }
    walk_shape(&steps, &paths).unwrap_or_else(|e| panic!("{e}"));
}

/// The path a newcomer walks, in this order, every step (not only cutover's): a README edit
/// that moves one out of the walk's markers (the build, the edit of the secrets, the `cd`) or
/// drops what makes it the box's (`--host`) fails here, rather than leaving the VM suite's
/// walk shorter or pointed at the laptop. `paths`: each cutover step's subcommand path.
fn walk_shape(
    steps: &[(
        crate::harness::readme_walk::Command,
        crate::harness::readme_walk::Step,
    )],
    paths: &[(String, Vec<String>)],
) -> Result<(), String> {
    use crate::harness::readme_walk::Step;
    let mut cutover = paths.iter();
    let kinds: Vec<String> = steps
        .iter()
        .map(|(_, step)| match step {
            Step::Install => "install".to_string(),
            Step::Cd(_) => "cd".to_string(),
            Step::Edit(_) => "edit".to_string(),
            Step::Build(_) => "build".to_string(),
            Step::Cutover(_) => cutover.next().map(|(p, _)| p.clone()).unwrap_or_default(),
        })
        .collect();
    let want = [
        "install",
        "install",
        "init",
        "cd",
        "secrets keygen",
        "edit",
        "secrets encrypt",
        "render",
        "bootstrap",
        "build",
        "deploy",
        "init",
    ];
    if kinds != want {
        return Err(format!(
            "the README's walk is {kinds:?}, not the path {want:?}"
        ));
    }
    let args = |path: &str| -> &Vec<String> { &paths.iter().find(|(p, _)| p == path).unwrap().1 };
    for on_box in ["bootstrap", "deploy"] {
        if !args(on_box).iter().any(|w| w == "--host") {
            return Err(format!(
                "the walk's {on_box} has no --host: it would run on the laptop"
            ));
        }
    }
    let deploy = args("deploy");
    if !deploy.iter().any(|w| w == "--ship") {
        return Err(format!(
            "the walk's deploy does not ship its image: {deploy:?}"
        ));
    }
    let built = steps.iter().find_map(|(_, s)| match s {
        Step::Build(tag) => Some(tag),
        _ => None,
    });
    let image = deploy.iter().skip_while(|w| *w != "--image").nth(1);
    if built != image {
        return Err(format!("the walk builds {built:?} but deploys {image:?}"));
    }
    let edited = steps.iter().find_map(|(_, s)| match s {
        Step::Edit(file) => Some(file),
        _ => None,
    });
    if edited.is_none() || !args("secrets encrypt").contains(edited.unwrap()) {
        return Err(format!(
            "the walk writes {edited:?} but encrypts {:?}",
            args("secrets encrypt")
        ));
    }
    Ok(())
}

/// Hostile README edits the walk's shape refuses: each still parses, and each would leave
/// the VM suite walking less than the README's path (or walking it on the laptop).
#[test]
fn a_readme_edit_that_moves_a_step_out_of_the_walk_is_refused() {
    use crate::harness::readme_walk::{steps, Step, END};
    let readme = std::fs::read_to_string(crate::common::repo_root().join("README.md")).unwrap();
    let shape = |readme: &str| -> Result<(), String> {
        let steps = steps(readme)?;
        let paths: Vec<(String, Vec<String>)> = steps
            .iter()
            .filter_map(|(_, s)| match s {
                Step::Cutover(args) => {
                    Some((check_readme_command(args).unwrap().join(" "), args.clone()))
                }
                _ => None,
            })
            .collect();
        walk_shape(&steps, &paths)
    };
    shape(&readme).unwrap_or_else(|e| panic!("the README itself: {e}"));
    let line_of = |needle: &str| {
        readme
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no README line with {needle}"))
            .to_string()
    };
    // A line moved from the walk to just after its end marker, as an edit might.
    let moved_out = |needle: &str| {
        let line = line_of(needle);
        readme.replacen(&format!("{line}\n"), "", 1).replacen(
            END,
            &format!("{END}\n```sh\n{line}\n```"),
            1,
        )
    };
    let edits = [
        ("the build moved out", moved_out("docker build -t")),
        ("the cd moved out", {
            let line = line_of("cutover init myapp");
            readme.replacen(&line, line.split(" && cd").next().unwrap(), 1)
        }),
        (
            "the edit moved out",
            readme.replacen("$EDITOR prod.env && ", "", 1),
        ),
        ("bootstrap without --host", {
            let line = line_of("bootstrap  #");
            readme.replacen(&line, &line.replacen("--host admin@203.0.113.7 ", "", 1), 1)
        }),
        (
            "deploy of another tag",
            readme.replacen("deploy --image myapp:v1", "deploy --image myapp:v2", 1),
        ),
    ];
    for (what, edited) in edits {
        assert_ne!(edited, readme, "{what}: the edit changed nothing");
        assert!(
            shape(&edited).is_err(),
            "{what}: the walk's shape accepts it"
        );
    }
}

#[test]
fn the_readme_command_check_fails_on_what_a_typo_makes() {
    let ok = |line: &str| {
        let cmd = &crate::harness::readme_walk::lex(line, 1).unwrap()[0];
        check_readme_command(&cmd.argv[1..])
    };
    assert_eq!(
        ok("cutover --host admin@h deploy --image a:v1 --ship").unwrap(),
        ["deploy"]
    );
    assert_eq!(
        ok("cutover secrets keygen --add").unwrap(),
        ["secrets", "keygen"]
    );
    assert_eq!(
        ok("cutover -C 'my app' render --check").unwrap(),
        ["render"]
    );
    for (line, says) in [
        // A typo'd flag, a flag of a sibling command, a typo'd subcommand.
        ("cutover deploy --image a:v1 --shipp", "--shipp"),
        ("cutover render --ship", "--ship"),
        ("cutover secrets keygn --add", "keygn"),
        ("cutover deplyo --image a:v1", "deplyo"),
        // A flag without its value, a value clap refuses, a stray word.
        ("cutover deploy --image", "--image"),
        ("cutover init myapp --port http", "--port"),
        ("cutover render --check extra", "extra"),
        // Parsed, but not in any --help: the README must not teach a hidden flag.
        ("cutover --on-box status", "--on-box"),
    ] {
        let err = ok(line).expect_err(line);
        assert!(err.contains(says), "{line}: {err}");
    }
    assert!(shows_flag("  --ship  send", "--ship"));
    assert!(!shows_flag("  --shipping  send", "--ship"));
    assert!(!shows_flag("  --no-ship", "--ship"));
}

#[test]
fn the_readme_walk_reads_commands_as_a_shell_does() {
    use crate::harness::readme_walk::{commands, lex, step, Step};
    let argv = |text: &str| -> Vec<Vec<String>> {
        lex(text, 1)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .into_iter()
            .map(|c| c.argv)
            .collect()
    };
    // A continuation line, a comment (with an apostrophe), `&&`, quotes with spaces.
    assert_eq!(
        argv("cutover deploy \\\n  --image 'my app:v1' # it's shipped\n# a comment line\ncd \"a b\" && cutover status"),
        [
            vec!["cutover", "deploy", "--image", "my app:v1"],
            vec!["cd", "a b"],
            vec!["cutover", "status"],
        ]
    );
    assert_eq!(argv("echo a#b"), [vec!["echo", "a#b"]], "# inside a word");
    assert_eq!(argv("x \"a\\\"b\" ''"), [vec!["x", "a\"b", ""]]);
    // The line each command starts on, past a continuation.
    let cmds = lex("a \\\n b\nc", 10).unwrap();
    assert_eq!((cmds[0].line, cmds[1].line), (10, 12));
    // What the walk cannot run as a person would is refused, naming the line.
    for (text, says) in [
        ("a\nb | c", "line 2: the walk cannot run a pipe"),
        ("a > f", "redirection"),
        ("a $(b)", "command substitution"),
        ("a \"`b`\"", "command substitution"),
        ("a &", "background"),
        ("a 'b", "line 1: a `'` is never closed"),
        ("a \\", "ends the block"),
        ("&& a", "no command before it"),
    ] {
        let err = lex(text, 1).expect_err(text);
        assert!(err.contains(says), "{text}: {err}");
    }
    // A word a shell would expand is refused: the walk would run it unexpanded.
    for line in [
        "cutover deploy --image $IMAGE",
        "cutover --identity ~/id.txt status",
        "cutover secrets encrypt *.env",
    ] {
        let err = step(&lex(line, 3).unwrap()[0]).unwrap_err();
        assert!(
            err.contains("README line 3") && err.contains("expanded"),
            "{err}"
        );
    }
    // A step the walk does not know names its line.
    let err = step(&lex("rm -rf /", 7).unwrap()[0]).unwrap_err();
    assert!(err.contains("README line 7: `rm -rf /`"), "{err}");
    assert_eq!(
        step(&lex("docker build -t x:v1 .", 1).unwrap()[0]),
        Ok(Step::Build("x:v1".into()))
    );
    // The markers: missing, doubled, a non-sh block, an unclosed block.
    let walk = |body: &str| {
        commands(&format!(
            "x\n<!-- walk: laptop-to-box -->\n{body}<!-- /walk -->\n"
        ))
    };
    assert_eq!(walk("```sh\ncutover status\n```\n").unwrap()[0].line, 4);
    assert!(commands("no markers")
        .unwrap_err()
        .contains("no `<!-- walk"));
    assert!(walk("```yaml\na: b\n```\n")
        .unwrap_err()
        .contains("```yaml"));
    assert!(walk("```sh\ncutover status\n")
        .unwrap_err()
        .contains("not closed"));
    assert!(walk("prose only\n").unwrap_err().contains("no ```sh block"));
    let twice = "<!-- walk: laptop-to-box -->\n```sh\na\n```\n<!-- /walk -->\n";
    assert!(commands(&format!("{twice}{twice}"))
        .unwrap_err()
        .contains("2 times"));
}
