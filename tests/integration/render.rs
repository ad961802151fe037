//! `cutover init` and `cutover render`: the files are right, and the real tools accept them.

use std::path::Path;

use crate::common::{cutover, fixture, free_port, project_from_fixture, require, set_key};

const GOOD: &[&str] = &["parking", "minimal", "anchors", "workers"];

fn render_fixture(dir: &Path, name: &str) -> std::path::PathBuf {
    std::fs::copy(
        fixture(&format!("configs/good/{name}.yml")),
        dir.join("cutover.yml"),
    )
    .unwrap();
    cutover(dir)
        .args(["render", "--out", "out"])
        .assert()
        .success();
    dir.join("out")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn init_scaffolds_a_project_that_renders_straight_away() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("My Shop");
    cutover(dir.path())
        .arg("init")
        .arg(&project)
        .assert()
        .success();
    let config = read(&project.join("cutover.yml"));
    assert!(config.contains("project: my-shop"), "{config}");
    assert!(
        config.contains("# "),
        "the scaffold config explains itself with comments"
    );
    cutover(&project)
        .args(["render", "--check"])
        .assert()
        .success();
    let ignore = read(&project.join("secrets/.gitignore"));
    assert!(
        ignore.lines().any(|l| l == "*") && ignore.contains("!*.env.age"),
        "{ignore}"
    );
    assert!(read(&project.join(".gitignore")).contains(".cutover/"));
    assert!(project.join("templates/README.md").is_file());
    // Running init again never overwrites the config.
    let out = cutover(&project).arg("init").assert().code(1);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("already exists"));
    assert_eq!(read(&project.join("cutover.yml")), config);
}

#[test]
fn init_with_the_three_facts_and_a_sudo_user_writes_a_config_that_needs_no_edit() {
    let dir = tempfile::tempdir().unwrap();
    cutover(dir.path())
        .args([
            "init",
            "myapp",
            "--image",
            "ghcr.io/me/myapp",
            "--port",
            "3000",
        ])
        .args(["--health", "/up", "--user", "admin"])
        .assert()
        .success();
    let project = dir.path().join("myapp");
    let config = read(&project.join("cutover.yml"));
    for line in [
        "  image: ghcr.io/me/myapp         # required",
        "  port: 3000                      # required",
        "    path: /up                     # polled",
        "  include: /home/admin/nginx/myapp.inc",
        "  test: [sudo, -n, nginx, -t]",
        "  reload: [sudo, -n, nginx, -s, reload]",
    ] {
        assert!(
            config.lines().any(|l| l.starts_with(line)),
            "{line}\n{config}"
        );
    }
    cutover(&project)
        .args(["render", "--check"])
        .assert()
        .success();
    // The include the rendered site loads is the one in admin's directory.
    cutover(&project)
        .args(["render", "--out", "out"])
        .assert()
        .success();
    let site = read(&project.join("out/nginx-site.conf"));
    assert!(
        site.contains("include /home/admin/nginx/myapp.inc;"),
        "{site}"
    );

    // Without flags: app.image is the project's name, so `docker build -t myapp:v1` matches;
    // root's nginx commands and include.
    cutover(dir.path())
        .args(["init", "plain"])
        .assert()
        .success();
    let plain = read(&dir.path().join("plain/cutover.yml"));
    assert!(plain.contains("  image: plain "), "{plain}");
    assert!(plain.contains("  test: [nginx, -t]"), "{plain}");
    assert!(
        plain.contains("/etc/nginx/conf.d/plain-service-url.inc"),
        "{plain}"
    );
    // `--user root` is the root defaults.
    cutover(dir.path())
        .args(["init", "asroot", "--user", "root"])
        .assert()
        .success();
    assert!(read(&dir.path().join("asroot/cutover.yml")).contains("  test: [nginx, -t]"));

    // Mistakes name the flag and the expected form, and write nothing.
    for (args, needle) in [
        (
            &["init", "t1", "--image", "myapp:latest"][..],
            "app.image is the repository alone (`myapp`)",
        ),
        (
            &["init", "t2", "--user", "Bad User"],
            "--user \"Bad User\": expected a login name",
        ),
        (
            &["init", "t3", "--health", "up"],
            "--health \"up\": expected a URL path",
        ),
    ] {
        let out = cutover(dir.path()).args(args).assert().code(1);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!dir.path().join(args[1]).exists(), "{args:?}");
    }
}

#[test]
fn render_templates_writes_the_built_ins_to_start_an_override_and_keeps_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    cutover(dir.path())
        .args(["init", "shop"])
        .assert()
        .success();
    let project = dir.path().join("shop");
    let mine = "# my own site\n";
    std::fs::write(project.join("templates/nginx-site.conf.j2"), mine).unwrap();
    let out = cutover(&project)
        .args(["render", "--templates", "templates"])
        .assert()
        .success();
    let said = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        said.contains("kept") && said.contains("nginx-site.conf.j2"),
        "{said}"
    );
    let repo = crate::common::repo_root().join("templates");
    for name in [
        "compose.yml.j2",
        "service-url.inc.j2",
        "ci/github-deploy.yml.j2",
    ] {
        assert_eq!(
            read(&project.join("templates").join(name)),
            read(&repo.join(name)),
            "{name}"
        );
    }
    assert_eq!(read(&project.join("templates/nginx-site.conf.j2")), mine);
    // The written copies are what a project override reads: it still renders.
    std::fs::remove_file(project.join("templates/nginx-site.conf.j2")).unwrap();
    cutover(&project)
        .args(["render", "--check"])
        .assert()
        .success();
    assert!(read(&project.join("templates/README.md")).contains("cutover render --templates"));
}

#[test]
fn init_gitignore_keeps_plaintext_env_files_out_of_git() {
    if !require("git", "check what git ignores") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    cutover(dir.path())
        .args(["init", "--name", "shop"])
        .assert()
        .success();
    std::fs::write(dir.path().join("secrets/prod.env"), "A=1\n").unwrap();
    std::fs::write(dir.path().join("secrets/prod.env.age"), "x").unwrap();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    git(&["init", "-q"]);
    assert!(git(&["check-ignore", "-q", "secrets/prod.env"])
        .status
        .success());
    assert!(git(&["check-ignore", "-q", "prod.env"]).status.success());
    assert!(!git(&["check-ignore", "-q", "secrets/prod.env.age"])
        .status
        .success());
}

#[test]
fn rendered_files_match_snapshots() {
    for name in GOOD {
        let dir = tempfile::tempdir().unwrap();
        let out = render_fixture(dir.path(), name);
        let root = regex_escape(&dir.path().canonicalize().unwrap().display().to_string());
        let raw = regex_escape(&dir.path().display().to_string());
        insta::with_settings!({
            filters => vec![(root.as_str(), "[PROJECT]"), (raw.as_str(), "[PROJECT]")],
            prepend_module_to_snapshot => false,
        }, {
            insta::assert_snapshot!(format!("{name}-compose"), read(&out.join("compose.yml")));
            insta::assert_snapshot!(format!("{name}-include"), read(&out.join("service-url.inc")));
            insta::assert_snapshot!(format!("{name}-site"), read(&out.join("nginx-site.conf")));
        });
    }
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

#[test]
fn compose_file_shape_follows_seed_004() {
    let dir = tempfile::tempdir().unwrap();
    let compose = read(&render_fixture(dir.path(), "parking").join("compose.yml"));
    assert_eq!(
        compose.matches("&common_environment").count(),
        1,
        "one anchor"
    );
    assert_eq!(
        compose.matches("<<: *common_environment").count(),
        2,
        "merged into both colors"
    );
    assert!(
        !compose.contains("mem_limit"),
        "never mem_limit next to deploy limits"
    );
    assert_eq!(
        compose.matches("memory: \"512M\"").count(),
        3,
        "mysql + both colors"
    );
    assert_eq!(compose.matches("memory: \"256M\"").count(), 1, "redis");
    assert!(compose.contains("- \"127.0.0.1:8081:8080\""), "{compose}");
    assert!(compose.contains("- \"127.0.0.1:8082:8080\""), "{compose}");
    assert!(
        compose.contains("costs $$5 a month"),
        "dollars escaped for compose"
    );
    assert!(
        compose.contains("\"mysql-volume\": {}"),
        "named volume declared"
    );
}

/// Both colors resolve, through the real compose tool, to the same environment (but for
/// CUTOVER_COLOR) and the same memory limit; every service has a memory limit.
#[test]
fn docker_compose_config_accepts_every_rendered_file() {
    if !require("docker", "validate rendered compose files") {
        return;
    }
    let tools = cutover::docker::compose::Compose::all_available();
    if tools.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no compose tool (v1 or v2) works here and CI is set"
        );
        crate::common::loud("*** SKIPPED: no docker compose / docker-compose found ***");
        return;
    }
    for tool in &tools {
        for name in GOOD {
            let dir = tempfile::tempdir().unwrap();
            let out = render_fixture(dir.path(), name);
            let result = tool
                .cmd(
                    "cfgcheck",
                    &out.join("compose.yml"),
                    "check the rendered compose file",
                )
                .arg("config")
                .run()
                .unwrap_or_else(|e| panic!("{} rejected {name}: {e}", tool.program()));
            let resolved = crate::common::yaml_to_json(&result.stdout);
            let services = resolved["services"].as_object().unwrap();
            let app = match *name {
                "parking" => "backend",
                "minimal" => "web",
                _ => "api",
            };
            let blue = &resolved["services"][format!("{app}-blue").as_str()];
            let green = &resolved["services"][format!("{app}-green").as_str()];
            let env_without_color = |svc: &serde_json::Value| {
                let mut env = svc["environment"].as_object().unwrap().clone();
                assert!(env.remove("CUTOVER_COLOR").is_some());
                env
            };
            assert_eq!(env_without_color(blue), env_without_color(green), "{name}");
            let limit =
                |svc: &serde_json::Value| svc["deploy"]["resources"]["limits"]["memory"].clone();
            assert_eq!(limit(blue), limit(green), "{name}");
            for (svc_name, svc) in services {
                assert!(
                    !limit(svc).is_null(),
                    "{name}: {svc_name:?} has no memory limit"
                );
            }
        }
    }
}

/// The rendered site and include pass `nginx -t` in a temp prefix; a broken include does not.
#[test]
fn nginx_accepts_rendered_site_and_include() {
    if !require("nginx", "check rendered nginx files with nginx -t") {
        return;
    }
    for name in GOOD {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("nginx");
        let include = prefix.join("service-url.inc");
        project_from_fixture(dir.path(), name, |map| {
            set_key(
                map,
                "nginx",
                "include",
                include.display().to_string().into(),
            );
            set_key(
                map,
                "nginx",
                "listen",
                format!("127.0.0.1:{}", free_port()).into(),
            );
        });
        cutover(dir.path())
            .args(["render", "--out", "out"])
            .assert()
            .success();
        cutover::nginx::LocalNginx::write_config(&prefix).unwrap();
        std::fs::copy(
            dir.path().join("out/nginx-site.conf"),
            prefix.join("site.conf"),
        )
        .unwrap();
        std::fs::copy(dir.path().join("out/service-url.inc"), &include).unwrap();
        let test = cutover::nginx::LocalNginx::argv(&prefix, &["-t"]);
        let run = || {
            std::process::Command::new(&test[0])
                .args(&test[1..])
                .output()
                .unwrap()
        };
        let ok = run();
        assert!(
            ok.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        std::fs::write(&include, "set $service_url http://127.0.0.1:8081\n").unwrap();
        assert!(
            !run().status.success(),
            "{name}: a broken include must fail nginx -t"
        );
    }
}

#[test]
fn template_override_with_undefined_variable_names_template_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("configs/good/minimal.yml"),
        dir.path().join("cutover.yml"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/service-url.inc.j2"),
        "# custom\nset $service_url {{ upstrem }};\n",
    )
    .unwrap();
    let out = cutover(dir.path())
        .args(["render", "--check"])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("templates/service-url.inc.j2:2"),
        "{stderr}"
    );
    assert!(stderr.contains("undefined"), "{stderr}");
}

#[test]
fn template_override_replaces_the_built_in() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("configs/good/minimal.yml"),
        dir.path().join("cutover.yml"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/service-url.inc.j2"),
        "set $service_url {{ upstream }}; # {{ color }} via override\n",
    )
    .unwrap();
    cutover(dir.path())
        .args(["render", "--out", "o"])
        .assert()
        .success();
    assert_eq!(
        read(&dir.path().join("o/service-url.inc")),
        "set $service_url http://127.0.0.1:9001; # blue via override\n"
    );
}

#[test]
fn render_check_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("configs/good/minimal.yml"),
        dir.path().join("cutover.yml"),
    )
    .unwrap();
    cutover(dir.path())
        .args(["render", "--check"])
        .assert()
        .success();
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "only cutover.yml");
}
