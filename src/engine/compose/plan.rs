//! `deploy --dry-run`: the commands a compose deploy would run, in order, from what the
//! observe and render steps decided. Nothing is written or started.

use crate::docker::compose::Project;
use crate::engine::Request;

use super::{health_url, Deployer, Rendered, Target};

pub(super) fn dry_run(
    d: &Deployer,
    req: &Request,
    project: &Project,
    t: &Target,
    r: &Rendered,
) -> Vec<String> {
    let loaded = d.loaded;
    let config = &loaded.config;
    let (to, image) = (t.to, &t.image);
    let idle_service = config.service(to);
    let compose_file = project.file.display().to_string();
    let program = d.compose.program();
    let mut plan = vec![format!("write {compose_file} ({to} runs {image})")];
    if !r.accessories_down.is_empty() {
        plan.push(format!(
            "{program} -p {} -f {compose_file} up -d {}",
            config.project,
            r.accessories_down.join(" ")
        ));
    }
    if let Some(hook) = &config.hooks.pre_deploy {
        plan.push(format!(
            "run the pre_deploy hook `{}` (up to {}); abort if it fails",
            hook.command.0.join(" "),
            crate::config::Dur(config.hooks.timeout_of(hook))
        ));
    }
    match (&config.app.release, req.release) {
        (Some(argv), true) => plan.push(format!(
            "{program} -p {} -f {compose_file} run --rm --no-deps -T {idle_service} {} (release phase, up to {}; abort if it fails)",
            config.project,
            argv.0.join(" "),
            config.app.release_timeout
        )),
        (Some(argv), false) => plan.push(format!(
            "skip the release phase `{}` (a rollback runs it only with --release)",
            argv.0.join(" ")
        )),
        (None, _) => {}
    }
    plan.push(format!(
        "{program} -p {} -f {compose_file} up -d --no-deps --force-recreate {idle_service}",
        config.project
    ));
    plan.push(format!(
        "wait for {} to answer {} {} times in a row (up to {})",
        health_url(loaded, to),
        config.app.health.status,
        config.app.health.healthy_checks,
        config.app.health.timeout
    ));
    plan.push(format!(
        "write {} -> {}, `{}`, `{}`",
        config.nginx.include.display(),
        crate::render::upstream_url(config, to),
        config.nginx.test.join(" "),
        config.nginx.reload.join(" ")
    ));
    plan.push(format!(
        "probe {}/.cutover/active until it says {to}",
        config.nginx.probe_base()
    ));
    if let Some(c) = t.from {
        if !config.app.settle.get().is_zero() {
            plan.push(format!(
                "watch {idle_service} for {} with {c} still running; switch back to {c} if it fails",
                config.app.settle
            ));
        }
        plan.push(format!(
            "drain {c} (up to {}), then stop -t {} {} and rm -f it",
            config.app.drain,
            config.app.stop_grace.get().as_secs(),
            config.service(c)
        ));
    }
    for m in &r.workers {
        let new = config.worker_service(&m.name, m.to);
        let old = m.from.map(|c| config.worker_service(&m.name, c));
        let up = match &m.worker.health {
            Some(h) => format!(
                "wait up to {} for its healthcheck to say healthy",
                h.timeout
            ),
            None => format!("watch it run for {}", m.worker.settle),
        };
        plan.push(match (old, m.worker.overlap) {
            (None, _) => format!("worker {}: up -d --no-deps {new}, {up}", m.name),
            (Some(old), false) => format!(
                "worker {}: stop {old}, up -d --no-deps {new}, {up}, rm {old} (start {old} again if {new} fails)",
                m.name
            ),
            (Some(old), true) => format!(
                "worker {}: up -d --no-deps {new}, {up}, then stop and rm {old}",
                m.name
            ),
        });
    }
    for gone in &r.retired {
        plan.push(format!(
            "worker {}: no longer in cutover.yml; stop and rm its {} container(s)",
            gone.name,
            gone.ids.len()
        ));
    }
    for (name, hook) in [
        ("post_deploy", &config.hooks.post_deploy),
        ("on_failure", &config.hooks.on_failure),
    ] {
        if let Some(hook) = hook {
            plan.push(format!(
                "run the {name} hook `{}` (up to {}){}",
                hook.command.0.join(" "),
                crate::config::Dur(config.hooks.timeout_of(hook)),
                if name == "on_failure" {
                    " if the deploy fails"
                } else {
                    ""
                }
            ));
        }
    }
    plan
}
