//! Secret values at the kernel's limit for one environment string (MAX_ARG_STRLEN, 128 KiB
//! for `KEY=value` and its NUL): `secrets set`, `encrypt` and `edit` refuse a value over it
//! naming the key and the limit, and a deploy says why before compose would fail with "could
//! not run docker-compose"; no value is ever printed.

use std::process::Command;

use crate::common::require;
use crate::harness::project::{ready, shown, App, Project, Run};

/// A value of `len` bytes that is easy to spot in output.
fn value_of_len(len: usize) -> String {
    "Zq9".repeat(len / 3 + 1)[..len].to_string()
}

/// MAX_ARG_STRLEN: `KEY=value` plus its NUL.
const ENV_LIMIT: usize = 128 * 1024;

/// Asserts that `run` refused a `BIG` one byte over the limit, naming the key and the limit
/// and printing no value.
#[track_caller]
fn refused_over_the_limit(run: Run, what: &str) {
    let run = run.failure();
    assert!(
        run.stderr.contains("key `BIG`")
            && run.stderr.contains(&format!("{} bytes", ENV_LIMIT + 1))
            && run.stderr.contains(&format!("limit of {ENV_LIMIT} bytes")),
        "{what}: {run}"
    );
    assert!(!run.stderr.contains("Zq9Zq9"), "{what} printed the value");
}

/// Issue #11: a value over the kernel's limit for one environment string made the deploy fail
/// with "could not run docker-compose". `set`, `encrypt` and `edit` refuse it naming the key
/// and the limit, and print no value; a value exactly at the limit is accepted.
#[test]
fn secret_over_the_env_limit_is_refused_at_set_encrypt_and_edit() {
    let project = Project::new().demo_secrets();
    let dir = project.path();
    let fits = ENV_LIMIT - "BIG=".len() - 1;
    let len_of_big = || shown(&project, "prod")["BIG"].as_str().unwrap().len();
    project
        .cutover_with_stdin(
            ["secrets", "set", "prod", "BIG", "--create"],
            &value_of_len(fits),
        )
        .success();
    assert_eq!(len_of_big(), fits);
    refused_over_the_limit(
        project.cutover_with_stdin(["secrets", "set", "prod", "BIG"], &value_of_len(fits + 1)),
        "set",
    );
    assert_eq!(len_of_big(), fits);

    let plain = dir.join("big.env");
    std::fs::write(&plain, format!("BIG={}\n", value_of_len(fits + 1))).unwrap();
    refused_over_the_limit(
        project.cutover(["secrets", "encrypt", "big.env"]),
        "encrypt",
    );
    assert!(!dir.join("secrets/big.env.age").exists());

    // An "editor" that replaces the file with the too-long value.
    use std::os::unix::fs::PermissionsExt;
    let editor = dir.join("editor.sh");
    std::fs::write(
        &editor,
        format!("#!/bin/sh\ncp {} \"$1\"\n", plain.display()),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = std::fs::read(dir.join("secrets/prod.env.age")).unwrap();
    let mut edit = project.command(["secrets", "edit", "prod"]);
    edit.env("EDITOR", &editor);
    refused_over_the_limit(Run::of(edit), "edit");
    assert_eq!(
        std::fs::read(dir.join("secrets/prod.env.age")).unwrap(),
        before
    );
}

/// A too-long value written with the `age` CLI behind cutover's back: the deploy says why
/// before it runs compose, and nothing is started.
#[test]
fn e2e_deploy_with_a_secret_over_the_env_limit_says_why_before_compose() {
    if !ready() || !require("age", "encrypt a secrets file") {
        return;
    }
    let project = Project::compose(App::compose().secrets());
    std::fs::write(
        project.path().join("big.env"),
        format!("BIG={}\n", value_of_len(ENV_LIMIT)),
    )
    .unwrap();
    let out = Command::new("age")
        .args([
            "-a",
            "-R",
            "secrets/recipients.txt",
            "-o",
            "secrets/demo.env.age",
            "big.env",
        ])
        .current_dir(project.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = project
        .cutover(["deploy", "--image", "cutover-demo:v1"])
        .failure();
    assert!(
        run.stderr.contains("key `BIG`")
            && run.stderr.contains(&format!("limit of {ENV_LIMIT} bytes")),
        "{run}"
    );
    assert!(!run.stderr.contains("could not run"), "{run}");
    assert!(!run.stderr.contains("Zq9Zq9"), "printed the value: {run}");
    assert!(project.running_services().is_empty(), "nothing may start");
}
