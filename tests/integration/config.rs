//! Bad config: one clear error naming the file, the line, the key path and what was expected,
//! exit code 1, and nothing written.

use crate::common::{cutover, fixture};

/// (fixture, `:line:col` after the file name, key path, what the message must say)
const BAD: &[(&str, &str, &str, &str)] = &[
    // Every value written verbatim into the nginx files is one word of no nginx syntax.
    (
        "tls-webroot-injection",
        ":12:5",
        "nginx.tls.webroot",
        "contains `;`: the value is written verbatim into the nginx files",
    ),
    (
        "tls-logs-dir-percent",
        ":12:5",
        "nginx.tls.logs_dir",
        "contains `%` (cron reads it as a newline)",
    ),
    (
        "tls-config-dir-space",
        ":12:5",
        "nginx.tls.config_dir",
        "contains the space ' '",
    ),
    (
        "health-path-injection",
        ":7:13",
        "app.health.path",
        "contains `;`",
    ),
    (
        "health-path-variable",
        ":7:13",
        "app.health.path",
        "contains `$` (nginx reads a variable)",
    ),
    (
        "restart-typo",
        ":7:12",
        "app.restart",
        "`on-falure` is not a restart policy (expected no, always, unless-stopped or on-failure[:N])",
    ),
    (
        "healthy-checks-never-fit",
        ":7:13",
        "app.health.healthy_checks",
        "the gate could never pass (expected at most 721)",
    ),
    (
        "image-with-tag",
        ":4:3",
        "app.image",
        "`myapp:latest` names a tag or digest; app.image is the repository alone (`myapp`): the tag comes from `cutover deploy --image myapp:v1`",
    ),
    (
        "remote-host-bad",
        ":8:17",
        "remote.host",
        "port `abc` is not 1-65535; expected [user@]host[:port]",
    ),
    (
        "worker-bad-overlap",
        ":14:14",
        "workers.scheduler.overlap",
        "expected `true` (start the new worker first) or `false`",
    ),
    (
        "worker-collides",
        ":15:3",
        "workers.jobs",
        "runs as the service `web-jobs-green`, which is also an accessory",
    ),
    (
        "worker-zero-timeout",
        ":16:16",
        "workers.jobs.health.timeout",
        "duration `0s` must be more than 0",
    ),
    ("unknown-key", ":6:3", "app.bogus", "unknown field `bogus`"),
    ("unknown-top-key", ":2:1", "bogus", "unknown field `bogus`"),
    (
        "wrong-type",
        ":5:9",
        "app.port",
        "expected a port number from 1 to 65535",
    ),
    ("bad-size", ":6:11", "app.memory", "invalid size `512X`"),
    (
        "memory-too-small",
        ":6:11",
        "app.memory",
        "memory limit `1k` is below docker's minimum of 6M",
    ),
    (
        "bad-duration",
        ":8:14",
        "app.health.timeout",
        "invalid duration `9x`",
    ),
    (
        "duration-too-long",
        ":7:15",
        "app.stop_grace",
        "duration `100000000000s` is too long (at most 24h)",
    ),
    (
        "duration-u64-max",
        ":7:10",
        "app.drain",
        "duration `18446744073709551615s` is too long",
    ),
    (
        "zero-interval",
        ":8:15",
        "app.health.interval",
        "duration `0s` must be more than 0",
    ),
    (
        "equal-ports",
        ":11:3",
        "colors.green",
        "port 8081 is also colors.blue",
    ),
    (
        "port-range",
        ":10:9",
        "colors.blue",
        "port 70000 is out of range",
    ),
    (
        "bad-bind",
        ":13:9",
        "colors.bind",
        "`localhost` is not an IP address",
    ),
    (
        "accessory-collides",
        ":14:3",
        "accessories.web-blue",
        "collides with the app's color services",
    ),
    (
        "bad-depends",
        ":7:3",
        "app.depends_on",
        "`db` is not an accessory",
    ),
    ("bad-name", ":1:10", "project", "invalid name `My_App`"),
    ("bad-swap", ":14:9", "host.swap", "or `auto` or `off`"),
    // Issue #13: registry login and shipping.
    (
        "registry-bad-secret-key",
        ":13:20",
        "registry.password_secret",
        "invalid secret key `registry-password` (expected the KEY of a KEY=value line",
    ),
    ("ship-unknown", ":10:7", "ship", "unknown variant `scp`, expected one of ssh"),
    ("not-yaml", ":6:9", "", "illegal placement of ':' indicator"),
    ("missing-field", ":1:1", "", "missing field `colors`"),
    (
        "not-a-mapping",
        ":1:1",
        "",
        "expected a mapping of `key: value` entries",
    ),
    // The bad value sits in the anchored mapping; the message also names the `<<` line.
    (
        "merged-bad-value",
        ":2:11",
        "accessories.db.memory",
        "invalid size `lots` (expected a size such as 512M, 1G or 1024k) (reached through the alias or `<<` merge at line 13, column 9)",
    ),
    // A key next to a `<<` overrides the merged one, and is reported where it is written.
    (
        "merge-sibling-bad",
        ":15:13",
        "accessories.db.memory",
        "memory limit `1k` is below docker's minimum of 6M",
    ),
    (
        "merged-equal-ports",
        ":3:3",
        "colors.green",
        "port 8081 is also colors.blue (expected two different host ports) (merged in by the `<<` at line 11)",
    ),
    (
        "duplicate-key",
        ":7:3",
        "",
        "duplicate key `port` (first at line 5, column 3",
    ),
    (
        "two-documents",
        ":9:1",
        "",
        "a second YAML document starts here (after a `---`); the file must hold exactly one",
    ),
    ("yaml-bomb", ":4:9", "", "a \"billion laughs\" YAML bomb"),
    // Issue #11: nginx cannot share a port with a color.
    (
        "listen-port-is-a-color",
        ":9:3",
        "colors.green",
        "port 80 is also nginx.listen (`80`)",
    ),
    // Issue #11: values written verbatim into the nginx files cannot carry nginx syntax.
    (
        "server-name-injection",
        ":9:3",
        "nginx.server_name",
        "contains `;`: the value is written verbatim into the nginx files",
    ),
    (
        "server-name-comment",
        ":9:3",
        "nginx.server_name",
        "contains `#`",
    ),
    (
        "include-newline-injection",
        ":9:3",
        "nginx.include",
        "contains a newline: the value is written verbatim into the nginx files",
    ),
    // Issue #14: the release phase and the hooks.
    ("release-empty", ":7:12", "app.release", "the command is empty"),
    ("release-not-a-list", ":7:12", "app.release", "expected a list"),
    (
        "release-timeout-zero",
        ":8:20",
        "app.release_timeout",
        "duration `0s` must be more than 0",
    ),
    (
        "hook-unknown",
        ":11:3",
        "hooks.after_deploy",
        "unknown field `after_deploy`, expected one of pre_deploy, post_deploy, on_failure, timeout",
    ),
    (
        "hook-bad-env-key",
        ":13:10",
        "hooks.post_deploy.env",
        "invalid environment key `slack-webhook-url`",
    ),
    (
        "hook-bad-timeout",
        ":13:14",
        "hooks.on_failure.timeout",
        "invalid duration `9x`",
    ),
    (
        "hook-missing-command",
        ":12:5",
        "hooks.pre_deploy.run",
        "unknown field `run`, expected one of command, env, timeout",
    ),
];

/// Good configs that only `render --check` covers (the rendered ones are in render.rs).
const GOOD: &[&str] = &["bom", "merge-keys"];

#[test]
fn good_configs_with_a_bom_or_merge_keys_load() {
    let dir = tempfile::tempdir().unwrap();
    for name in GOOD {
        cutover(dir.path())
            .arg("--config")
            .arg(fixture(&format!("configs/good/{name}.yml")))
            .args(["render", "--check"])
            .assert()
            .success();
    }
}

#[test]
fn every_bad_config_names_file_line_key_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    for (name, line, key, message) in BAD {
        let path = fixture(&format!("configs/bad/{name}.yml"));
        let out = cutover(dir.path())
            .arg("--config")
            .arg(&path)
            .args(["render", "--check"])
            .assert()
            .code(1);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        let located = format!("{}{line}: ", path.display());
        assert!(
            stderr.contains(&located),
            "{name}: expected `{located}` in:\n{stderr}"
        );
        if !key.is_empty() {
            assert!(
                stderr.contains(&format!("{line}: {key}: ")),
                "{name}: key `{key}` in:\n{stderr}"
            );
        }
        assert!(
            stderr.contains(message),
            "{name}: `{message}` in:\n{stderr}"
        );
        assert!(
            stderr.starts_with("error: invalid config"),
            "{name}:\n{stderr}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

/// Issue #11: `colors.bind: 0.0.0.0` (or `::`) works, but puts the app around nginx: every
/// command that acts on the colors says so on stderr, naming the file, line and key.
#[test]
fn binding_the_colors_to_every_interface_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("configs/good/bind-all.yml");
    let out = cutover(dir.path())
        .arg("--config")
        .arg(&path)
        .args(["render", "--check"])
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains(&format!(
            "warning: {}:10:3: colors.bind: 0.0.0.0 publishes both colors on every interface: the app answers on ports 8081 and 8082 around nginx",
            path.display()
        )),
        "{stderr}"
    );
    let v6 = dir.path().join("cutover.yml");
    std::fs::write(
        &v6,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("bind: 0.0.0.0", "bind: \"::\""),
    )
    .unwrap();
    let out = cutover(dir.path())
        .args(["render", "--check"])
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("colors.bind: :: publishes both colors"),
        "{stderr}"
    );
    // The default says nothing.
    let out = cutover(dir.path())
        .arg("--config")
        .arg(fixture("configs/good/minimal.yml"))
        .args(["render", "--check"])
        .assert()
        .success();
    assert!(out.get_output().stderr.is_empty());
}

#[test]
fn deploy_of_an_untagged_or_latest_image_warns_that_rollback_cannot_tell_it_apart() {
    let dir = tempfile::tempdir().unwrap();
    for (image, why) in [
        ("example/web", "no tag, so docker takes `:latest`"),
        ("example/web:latest", "`:latest` is whatever was built last"),
    ] {
        let out = cutover(dir.path())
            .arg("--config")
            .arg(fixture("configs/good/minimal.yml"))
            .args(["deploy", "--dry-run", "--image", image])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            stderr.contains(&format!("warning: --image {image}: {why}; rollback and history cannot tell such releases apart")),
            "{image}: {stderr}"
        );
    }
    let out = cutover(dir.path())
        .arg("--config")
        .arg(fixture("configs/good/minimal.yml"))
        .args(["deploy", "--dry-run", "--image", "example/web:v2"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("cannot tell"));
}

#[test]
fn missing_secrets_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("configs/bad/missing-secrets-file.yml");
    let out = cutover(dir.path())
        .arg("--config")
        .arg(&path)
        .args(["render", "--check"])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("app.secrets: secrets file"), "{stderr}");
    assert!(
        stderr.contains("secrets/nope.env.age does not exist"),
        "{stderr}"
    );
}

#[test]
fn empty_and_missing_config_files_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = cutover(dir.path())
        .arg("--config")
        .arg(fixture("configs/bad/empty.yml"))
        .args(["render", "--check"])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("the file is empty"), "{stderr}");

    let out = cutover(dir.path())
        .args(["render", "--check"])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("cutover.yml: no such file (run `cutover init`"),
        "{stderr}"
    );
}
