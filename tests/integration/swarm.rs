//! The swarm engine: `render --engine swarm` (snapshot, `docker stack config`) and deploys on
//! the real engine as a single-node swarm (`docker swarm init --advertise-addr 127.0.0.1`).
//!
//! The e2e tests share one swarm (harness/swarm.rs). They skip the second e2e run of
//! scripts/test.sh (CUTOVER_COMPOSE set): they do not use compose, so that run would only
//! repeat them. Where the kernel has no IPVS the routing mesh cannot work: the load through
//! the published port is not measured, the tests say so loudly and check everything else.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cutover::demo::Load;

use crate::common::{require, yaml_to_json};
use crate::harness::project::{App, Project};
use crate::harness::swarm::{direct_get, routing_mesh, swarm_project, swarm_ready};

// ---- render ------------------------------------------------------------------------------

#[test]
fn swarm_render_writes_a_stack_file_that_matches_its_snapshot() {
    let project = Project::fixture("swarm").demo_secrets();
    let stderr = project
        .cutover(["render", "--engine", "swarm", "--out", "out"])
        .success()
        .stderr;
    // A loopback-bound accessory port would become public on every node: left out, said so.
    assert!(
        stderr.contains("left out `127.0.0.1:3306:3306`"),
        "{stderr}"
    );
    let stack = std::fs::read_to_string(project.path().join("out/stack.yml")).unwrap();
    insta::with_settings!({ prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("swarm-stack", stack);
    });
    for absent in [
        "container_name",
        "depends_on",
        "mem_limit",
        "restart:",
        "build",
        "127.0.0.1:3306",
    ] {
        assert!(!stack.contains(absent), "`{absent}` in:\n{stack}");
    }
    // Secrets by versioned name, mounted under their key; values appear nowhere.
    assert!(stack.contains("target: \"DB_PASSWORD\""), "{stack}");
    assert!(stack.contains("\"DB_PASSWORD_FILE\": \"/run/secrets/DB_PASSWORD\""));
    let values: BTreeMap<String, String> = serde_json::from_value(
        project
            .cutover(["secrets", "show", "demo", "--json"])
            .success()
            .stdout_json()["values"]
            .clone(),
    )
    .unwrap();
    for value in values.values() {
        assert!(!stack.contains(value.as_str()), "a secret value leaked");
    }
}

#[test]
fn swarm_render_is_accepted_by_docker_stack_config() {
    if !require(
        "docker",
        "validate the stack file with `docker stack config`",
    ) {
        return;
    }
    let project = Project::fixture("swarm").demo_secrets();
    project
        .cutover(["render", "--engine", "swarm", "--out", "out"])
        .success();
    let file = project.path().join("out/stack.yml");
    let resolved = match cutover::docker::swarm::stack_config(&file) {
        Ok(text) => text,
        Err(e)
            if e.to_string().contains("unknown command")
                || e.to_string().contains("is not a docker command") =>
        {
            // `docker stack config` arrived in client 25; older clients cannot check.
            assert!(
                std::env::var_os("CI").is_none(),
                "docker stack config unavailable: {e}"
            );
            crate::common::loud(&format!(
                "*** SKIPPED: this docker client has no `stack config`: {e} ***"
            ));
            return;
        }
        Err(e) => panic!("docker stack config rejected the stack file: {e}"),
    };
    let v = yaml_to_json(&resolved);
    let app = &v["services"]["backend"];
    assert_eq!(app["deploy"]["replicas"].as_u64(), Some(3));
    assert_eq!(app["deploy"]["update_config"]["order"], "start-first");
    assert_eq!(app["deploy"]["update_config"]["failure_action"], "rollback");
    assert_eq!(app["deploy"]["rollback_config"]["order"], "start-first");
    assert!(!app["healthcheck"]["test"].is_null());
    assert_eq!(app["secrets"][0]["target"], "DB_PASSWORD");
    for (name, svc) in v["services"].as_object().unwrap() {
        assert!(
            !svc["deploy"]["resources"]["limits"]["memory"].is_null(),
            "{name:?} has no memory limit"
        );
    }
    // Every external secret the services use is declared.
    assert_eq!(v["secrets"].as_object().unwrap().len(), 2);
}

#[test]
fn swarm_render_without_a_swarm_section_says_what_to_add() {
    let stderr = Project::fixture("minimal")
        .cutover(["render", "--engine", "swarm", "--check"])
        .code(1)
        .stderr;
    assert!(stderr.contains("no `swarm:` section"), "{stderr}");
}

#[test]
fn swarm_deploy_refuses_compose_only_keys_naming_the_first_ones_line() {
    let project = Project::fixture("swarm").demo_secrets();
    let config = project.path().join("cutover.yml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    let line = text.lines().count() + 2;
    text.push_str(
        "workers:\n  jobs: { command: [/app, worker], memory: 64M }\n  \
         mail: { command: [/app, worker], memory: 64M, overlap: false }\n  \
         feed: { command: [/app, worker], memory: 64M, overlap: true }\n\
         registry: { server: registry.example.com, username: u, password_secret: DB_PASSWORD }\n\
         hooks:\n  pre_deploy: [/bin/true]\n",
    );
    std::fs::write(&config, text).unwrap();
    for extra in [&[][..], &["--dry-run"][..]] {
        let args = [
            "deploy",
            "--engine",
            "swarm",
            "--image",
            "myuser/pct-backend:v2",
        ];
        let run = project.cutover(args.iter().chain(extra));
        let stderr = run.code(1).stderr;
        assert!(
            stderr.contains(&format!(
                "cutover.yml:{line}:3: workers.jobs: the swarm engine refuses a worker with `overlap: false` (the default): it promises one copy at a time"
            )),
            "{stderr}"
        );
        // The other `overlap: false` worker; `overlap: true` workers, hooks and the
        // registry work under swarm.
        assert!(stderr.contains("(and 1 more such key)"), "{stderr}");
        assert!(
            stderr.contains("swarmkit's old-task timeout") && !stderr.contains("workers.feed"),
            "{stderr}"
        );
    }
    // Nothing was started: no lock, no history.
    assert!(!project.path().join(".cutover/history.jsonl").exists());
}

// ---- e2e: a single-node swarm -----------------------------------------------------------

#[test]
fn e2e_swarm_rolling_update_under_load_then_secret_rotation() {
    if !swarm_ready() {
        return;
    }
    let Some(project) = swarm_project(App::swarm()) else {
        return;
    };
    let stdout = project
        .swarm_deploy(&["--image", "cutover-demo:v1"])
        .success()
        .stdout;
    assert!(stdout.contains("deployed cutover-demo:v1"), "{stdout}");
    let answers = project.ask_tasks("/");
    assert_eq!(answers.len(), 2, "two replicas: {answers:?}");
    assert!(
        answers.iter().all(|a| a.starts_with("version=v1")),
        "{answers:?}"
    );
    // The secret reaches the app as a file, /run/secrets/<KEY>.
    let db_password = project.secret_value("DB_PASSWORD");
    assert!(project
        .ask_tasks("/env?key=DB_PASSWORD")
        .iter()
        .all(|v| *v == db_password));
    let mesh = routing_mesh(project.port);

    // Rolling update v1 → v2 under load; slow requests in flight on the old tasks.
    let load = mesh.then(|| Load::start(project.port, Duration::from_secs(300)));
    let old_tasks = project.task_addrs();
    let slow: Vec<_> = old_tasks
        .iter()
        .map(|ip| {
            let ip = ip.clone();
            std::thread::spawn(move || direct_get(&ip, "/slow?ms=4000"))
        })
        .collect();
    let started = Instant::now();
    let deployed = project.swarm_deploy(&["--image", "cutover-demo:v2", "--json"]);
    let took = started.elapsed();
    let summary = deployed.success().stdout_json();
    assert_eq!(summary["engine"], "swarm");
    assert_eq!(summary["from_image"], "cutover-demo:v1");
    for handle in slow {
        let (code, body) = handle
            .join()
            .unwrap()
            .expect("in-flight request on an old task answered");
        assert_eq!(code, 200, "{body}");
    }
    let answers = project.ask_tasks("/");
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(
        answers.iter().all(|a| a.starts_with("version=v2")),
        "{answers:?}"
    );
    eprintln!(
        "swarm rolling update v1 -> v2 (2 replicas, start-first): {} (rollout {} ms); {} slow requests on old tasks all completed",
        cutover::report::duration(took),
        summary["rollout_ms"],
        old_tasks.len()
    );
    if let Some(load) = load {
        let tally = load.finish();
        eprintln!(
            "through the routing mesh: {} sent, {} ok, {} failed {:?}",
            tally.sent, tally.ok, tally.failed, tally.by_answer
        );
        assert_eq!(tally.failed, 0, "{:?}", tally.failures);
        assert!(tally.by_answer.keys().any(|k| k.starts_with("version=v2")));
    }

    // Rotating a secret is a new versioned swarm secret and a rolling update.
    let before: Vec<String> = cutover::docker::swarm::secrets_of(&project.name)
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    project
        .cutover_with_stdin(
            ["secrets", "set", "demo", "DB_PASSWORD"],
            "rotated-password-2",
        )
        .success();
    let summary = project.swarm_deploy(&["--json"]).success().stdout_json();
    crate::json_contract::validate("deploy.schema.json", &summary);
    assert_eq!(
        summary["image"], "cutover-demo:v2",
        "redeploys the running image"
    );
    let created = summary["secrets_created"].as_array().unwrap();
    assert_eq!(created.len(), 1, "{summary}");
    assert!(created[0].as_str().unwrap().contains("_DB_PASSWORD_"));
    assert!(project
        .ask_tasks("/env?key=DB_PASSWORD")
        .iter()
        .all(|v| v == "rotated-password-2"));
    // The old version stays while the previous spec references it (`docker service rollback`),
    // and goes with the next deploy.
    let old_db = before.iter().find(|n| n.contains("_DB_PASSWORD_")).unwrap();
    let names = |project: &Project| -> Vec<String> {
        cutover::docker::swarm::secrets_of(&project.name)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    assert!(names(&project).contains(old_db));
    project
        .swarm_deploy(&["--image", "cutover-demo:v1", "--json"])
        .success();
    assert!(
        !names(&project).contains(old_db),
        "unreferenced version removed"
    );
    assert_eq!(names(&project).len(), 2);

    let history = project.history();
    assert_eq!(history.len(), 4);
    assert!(history
        .iter()
        .all(|h| h["engine"] == "swarm" && h["result"] == "ok"));
    let steps: Vec<&str> = history[1]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["decrypt", "lock", "observe", "secrets", "stack", "rollout", "prune"]
    );
    let status = project
        .cutover(["status", "--engine", "swarm", "--json"])
        .success()
        .stdout_json();
    crate::json_contract::validate("status-swarm.schema.json", &status);
    crate::json_contract::validate("status.schema.json", &status);
    assert!(status["last_deploy"].is_object(), "{status}");
    assert_eq!(status["services"][0]["image"], "cutover-demo:v1");
    assert_eq!(status["services"][0]["running"], 2);

    // A rollback on the swarm engine is a rolling update to the image before the last
    // deploy (v2, before the v1 above), recorded as a rollback.
    let back = project
        .cutover(["rollback", "--engine", "swarm", "--json"])
        .success()
        .stdout_json();
    assert_eq!(back["action"], "rollback", "{back}");
    assert_eq!(back["image"], "cutover-demo:v2", "{back}");
    assert!(project
        .ask_tasks("/")
        .iter()
        .all(|a| a.starts_with("version=v2")));
    let last = project.history().pop().unwrap();
    assert_eq!(
        (&last["engine"], &last["action"]),
        (&"swarm".into(), &"rollback".into())
    );
}

#[test]
fn e2e_swarm_failing_image_is_rolled_back_automatically() {
    if !swarm_ready() {
        return;
    }
    let Some(project) = swarm_project(App::swarm()) else {
        return;
    };
    project
        .swarm_deploy(&["--image", "cutover-demo:v1"])
        .success();
    let mesh = routing_mesh(project.port);
    let load = mesh.then(|| Load::start(project.port, Duration::from_secs(300)));

    // v2 whose health check never passes: swarm must roll back on its own.
    project.write_config(&App::swarm().env("FAIL_HEALTH", "1").health_timeout("3s"));
    let started = Instant::now();
    let failure = project.swarm_deploy(&["--image", "cutover-demo:v2"]);
    assert!(
        !failure.ok(),
        "a failing image must fail the deploy:\n{failure}"
    );
    let stderr = &failure.stderr;
    assert!(stderr.contains("swarm rolled the update back"), "{stderr}");
    assert!(stderr.contains("still runs cutover-demo:v1"), "{stderr}");
    eprintln!(
        "failing v2 detected and rolled back in {}",
        cutover::report::duration(started.elapsed())
    );
    let service = cutover::docker::swarm::service(&project.service())
        .unwrap()
        .unwrap();
    assert_eq!(
        cutover::docker::swarm::display_image(&service.image),
        "cutover-demo:v1"
    );
    assert_eq!(
        service.update.unwrap().state,
        cutover::docker::swarm::UpdateState::RollbackCompleted
    );
    let answers = project.ask_tasks("/");
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(
        answers.iter().all(|a| a.starts_with("version=v1")),
        "{answers:?}"
    );
    if let Some(load) = load {
        let tally = load.finish();
        assert_eq!(tally.failed, 0, "{:?}", tally.failures);
    }
    let last = project.history().pop().unwrap();
    assert_eq!(last["engine"], "swarm");
    assert_eq!(last["result"], "failed");
    assert!(last["reason"]
        .as_str()
        .unwrap()
        .contains("rolled the update back"));
}

/// Under `routing: ingress` an `overlap: true` worker is a service of the stack, created after
/// the app's first rollout and moved after each later one converged (a second stack deploy);
/// the summary names each worker's rollout.
#[test]
fn e2e_swarm_ingress_workers_move_after_the_rollout() {
    if !swarm_ready() {
        return;
    }
    let Some(project) = swarm_project(App::swarm()) else {
        return;
    };
    crate::harness::project::edit_config(&project, |c| {
        c["swarm"]["monitor"] = serde_json::json!("1s");
        c["workers"] = serde_json::json!({
            "ticker": { "command": ["worker", "ticker"], "memory": "16M", "overlap": true, "settle": "1s" }
        });
    });
    let worker = format!("{}-ticker", project.service());
    let image = || {
        cutover::docker::swarm::service(&worker)
            .unwrap()
            .map(|s| cutover::docker::swarm::display_image(&s.image).to_string())
    };
    let mut from = serde_json::Value::Null;
    for v in ["cutover-demo:v1", "cutover-demo:v2"] {
        let summary = project
            .swarm_deploy(&["--image", v, "--json"])
            .success()
            .stdout_json();
        let rollout = &summary["workers"][0];
        assert_eq!(rollout["name"], "ticker", "{summary}");
        assert_eq!(rollout["service"], worker.as_str(), "{summary}");
        assert_eq!(rollout["from_image"], from, "{summary}");
        assert_eq!(rollout["image"], v, "{summary}");
        let at = |name: &str| crate::common::step_at(&summary, name);
        assert!(
            at("rollout").is_some() && at("rollout") < at("workers"),
            "the worker moves after the app's rollout: {}",
            summary["steps"]
        );
        assert_eq!(image().as_deref(), Some(v));
        from = serde_json::json!(v);
    }
}
