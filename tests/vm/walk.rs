//! Phase 1: the README's laptop-to-box path as written, on the pristine box as its sudo user
//! `admin`: the commands between the README's walk markers (read by
//! `harness/readme_walk.rs`, the same reading the fast `--help` test checks), run in order
//! in an empty folder on this machine, with only these values substituted, word for word:
//!
//! - the box `admin@203.0.113.7` is the VM (`admin@127.0.0.1:PORT`);
//! - the app is the demo app: `--image myapp` / `myapp:v1` name its repository
//!   `cutover-vmsuite`, and it listens on 8080 and answers `/health` (`--port`, `--health`);
//! - `$EDITOR prod.env` writes a secret, `docker build` builds the demo image, and the two
//!   install lines are the binary under test (the install script has its own tests);
//! - "run the one command it prints" runs the line `bootstrap` printed, in `bash`.
//!
//! No hand edit of cutover.yml between the commands. The walk ends with the app deployed and
//! answering a hash of the secret it received; its project is the one the later phases use.

use std::cell::Cell;

use crate::common::{isolate, loud, repo_root};
use crate::machine::Vm;
use crate::project::{stripped_binary, BoxProject};
use crate::readme_walk::{steps, Step};

/// The walk's secret: spaces, a `$` and a `#`, which reach the app exactly as written.
const SECRET_KEY: &str = "WALK_SECRET";

/// One substitution: the README's word (after the flag `after`, when given) and the walk's.
struct Sub {
    after: Option<&'static str>,
    from: &'static str,
    to: String,
    used: Cell<bool>,
}

fn substitutions(vm: &Vm) -> Vec<Sub> {
    let sub = |after, from, to: &str| Sub {
        after,
        from,
        to: to.to_string(),
        used: Cell::new(false),
    };
    vec![
        sub(None, "admin@203.0.113.7", &vm.host()),
        sub(Some("--image"), "myapp", "cutover-vmsuite"),
        sub(None, "myapp:v1", "cutover-vmsuite:v1"),
        sub(Some("--port"), "3000", "8080"),
        sub(Some("--health"), "/up", "/health"),
    ]
}

fn substitute(subs: &[Sub], argv: &[String]) -> Vec<String> {
    argv.iter()
        .enumerate()
        .map(|(i, word)| {
            let before = i.checked_sub(1).map(|j| argv[j].as_str());
            match subs
                .iter()
                .find(|s| s.from == word && (s.after.is_none() || s.after == before))
            {
                Some(s) => {
                    s.used.set(true);
                    s.to.clone()
                }
                None => word.clone(),
            }
        })
        .collect()
}

/// FNV-1a 64, as the demo's `/secret-hash` computes it.
pub fn fnv1a(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}\n")
}

/// The line `bootstrap` printed for making the box a recipient (the one after "then commit:").
fn printed_command(stdout: &str) -> String {
    let mut lines = stdout.lines();
    lines
        .by_ref()
        .find(|l| l.trim_end().ends_with("then commit:"))
        .unwrap_or_else(|| panic!("bootstrap printed no command to run:\n{stdout}"));
    let command = lines.next().unwrap_or_default().trim().to_string();
    assert!(
        command.contains("secrets/recipients.txt"),
        "the line after 'then commit:' is not the recipient command: {command:?}\n{stdout}"
    );
    command
}

/// Runs `line` in bash in the project's folder, as a person pastes it, with `cutover` the
/// binary under test.
fn paste(web: &BoxProject, line: &str) {
    let bin = web.home().join(".bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("cutover");
    if !link.exists() {
        std::os::unix::fs::symlink(stripped_binary(), &link).unwrap();
    }
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c").arg(line).current_dir(web.path());
    isolate(&mut cmd, &web.home());
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("{}:{path}", bin.display()))
        .stdin(std::process::Stdio::null());
    let out = cmd.output().expect("run bash");
    assert!(
        out.status.success(),
        "the command bootstrap printed failed: {line}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Walks the README's path on the pristine box; returns its project, deployed (blue, v1),
/// with the secret checked.
pub fn readme_path(vm: &Vm) -> BoxProject {
    crate::bootstrap::assert_pristine(vm);
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let walk = steps(&readme).unwrap_or_else(|e| panic!("{e}"));
    let subs = substitutions(vm);
    let mut web = BoxProject::empty(vm, "myapp");
    let value = format!("walk {} with spaces, a $ and a # too", std::process::id());
    let mut deployed = false;
    let mut outputs = String::new();
    for (cmd, step) in walk {
        match step {
            Step::Install => loud(&format!(
                "vm walk: README line {}: `{}`: the binary under test stands in for the release",
                cmd.line,
                cmd.argv.join(" ")
            )),
            Step::Cd(dir) => web.cd(&dir),
            Step::Edit(file) => {
                // Double quotes: the dotenv dialect keeps spaces, `$` and `#` as written.
                std::fs::write(
                    web.path().join(&file),
                    format!("{SECRET_KEY}=\"{}\"\n", value.replace('$', "\\$")),
                )
                .unwrap();
            }
            Step::Build(tag) => {
                let tag = substitute(&subs, &[tag])[0].clone();
                assert_eq!(tag, "cutover-vmsuite:v1", "README line {}", cmd.line);
                crate::deploy::local_images();
            }
            Step::Cutover(args) => {
                let args = substitute(&subs, &args);
                let words: Vec<&str> = args.iter().map(String::as_str).collect();
                let run = web.cutover_here(&words);
                assert!(
                    run.out.status.success(),
                    "README line {}: `cutover {}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
                    cmd.line,
                    args.join(" "),
                    run.out.status,
                    run.stdout(),
                    run.stderr()
                );
                loud(&format!(
                    "vm walk: README line {}: `cutover {}` took {:.1}s",
                    cmd.line,
                    args.join(" "),
                    run.took.as_secs_f64()
                ));
                outputs.push_str(&run.stdout());
                outputs.push_str(&run.stderr());
                if words.contains(&"bootstrap") {
                    // "run the one command it prints"
                    paste(&web, &printed_command(&run.stdout()));
                }
                deployed |= words.contains(&"deploy");
            }
        }
    }
    for s in &subs {
        assert!(
            s.used.get(),
            "the README no longer has `{}`: the walk's substitution of it ({}) is stale",
            s.from,
            s.to
        );
    }
    assert!(deployed, "the walk deployed nothing");
    assert!(
        web.path().join(".github/workflows/deploy.yml").is_file(),
        "`cutover init --ci github` wrote no workflow"
    );
    assert!(
        !outputs.contains(&value),
        "a command of the walk printed the secret's value"
    );
    let body = vm
        .http_get("/")
        .unwrap_or_else(|e| panic!("GET / after the walk: {e}"));
    assert!(body.contains("blue") && body.contains("v1"), "{body}");
    assert_eq!(
        vm.http_get(&format!("/secret-hash?key={SECRET_KEY}")),
        Ok(fnv1a(value.as_bytes())),
        "the walk's app did not receive its secret as written"
    );
    loud("vm walk: the README's path deployed the app, and it answered with its secret's hash");
    web
}
