//! The swarm engine's release phase (`app.release`): the user's command runs once per
//! deploy as a one-off `replicated-job` service of the NEW image, on the stack's overlay
//! network, with the app's environment and its secrets as swarm secret files (`<KEY>_FILE`),
//! after the secrets exist and before the stack deploy that starts the new color.
//!
//! Swarm's task state is the verdict (`complete`, or `failed` with its exit code): read as
//! JSON through `docker inspect`, never from a table. It is bounded by
//! `app.release_timeout`; an interrupt stops waiting. Whatever happened, the job is removed
//! after. Its last log lines are shown, every decrypted value masked as `***`, and are in
//! the error when it fails. A failure stops the deploy with nothing switched: the new color
//! was never deployed, nginx was not touched. A rollback skips it unless `--release`, as
//! under the compose engine.
//!
//! On a first deploy the stack's network and accessories do not exist yet, so they are
//! deployed first (the stack without the app), as the compose engine starts the accessories
//! before its release phase.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::config::{Config, Routing};
use crate::docker::swarm::{self, Job, TaskState};
use crate::engine::{Abort, Event, Failed, Step};
use crate::secrets::deploy_env::redact;

use super::{Run, Target};

/// How many log lines of the job are shown (and put in the error when it fails).
const LOG_LINES: usize = 20;

/// How the job ended, when it did not complete.
enum Ending {
    Complete,
    Gave(String),
    TimedOut,
    Interrupted,
}

impl Run<'_, '_> {
    /// The release phase, when configured: `t.run_release` is false on a rollback without
    /// `--release`, which only says so.
    pub(super) fn release(&mut self, t: &Target) -> anyhow::Result<()> {
        let config = &self.d.loaded.config;
        let Some(argv) = &config.app.release else {
            return Ok(());
        };
        let shown = argv.0.join(" ");
        if !t.run_release {
            self.clock.note(format!(
                "release phase `{shown}` not run (a rollback runs it only with --release)"
            ));
            return Ok(());
        }
        self.stop_if_interrupted("the release job")?;
        if t.first_deploy && !config.accessories.is_empty() {
            self.accessories_first(t)?;
        }
        let name = swarm::service_name(&t.project, "release");
        self.clock
            .start(Step::Release, format!("job {name} ({}): {shown}", t.image));
        let network = format!("{}_default", t.project);
        let network = swarm::network_exists(&network)?.then_some(network);
        let keys = &self.d.secret_keys.app;
        let names = super::secret_names(&t.project, &self.d.secrets);
        let mut env: Vec<String> = config
            .app
            .environment
            .0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.extend(keys.iter().map(|k| format!("{k}_FILE=/run/secrets/{k}")));
        let secrets = keys
            .iter()
            .filter_map(|k| names.get(k).map(|n| (n.clone(), k.clone())))
            .collect();
        let job = Job {
            name: &name,
            project: &t.project,
            image: &t.image,
            argv: &argv.0,
            env,
            secrets,
            network,
            memory: config.app.memory.to_string(),
            registry_auth: t.registry_auth,
            resolve_image: t.swarm.resolve_image.as_str() != "never",
        };
        // A job left by a cutover that was killed outright would block the name.
        swarm::remove_service(&name)?;
        swarm::create_job(&job)?;
        let ending = self.wait_job(&name);
        let logs = swarm::service_logs(&name, LOG_LINES)
            .unwrap_or_else(|e| vec![format!("(could not read the job's logs: {e})")]);
        let removed = swarm::remove_service(&name);
        let secrets = &self.d.secrets;
        let logs: Vec<String> = logs.iter().map(|l| redact(l, secrets)).collect();
        let reporter = self.clock.reporter();
        for line in &logs {
            reporter.event(Event::Output {
                from: "release".into(),
                line: line.clone(),
            });
        }
        if let Err(e) = &removed {
            self.clock
                .note(format!("could not remove the release job {name}: {e}"));
        }
        let (how, abort) = match ending? {
            Ending::Complete => {
                self.clock
                    .done(Step::Release, format!("`{shown}` exited 0"));
                return Ok(());
            }
            Ending::Gave(how) => (how, Abort::ReleaseFailed),
            Ending::TimedOut => (
                format!(
                    "timed out after {} (app.release_timeout)",
                    config.app.release_timeout
                ),
                Abort::ReleaseFailed,
            ),
            Ending::Interrupted => ("was interrupted".to_string(), Abort::Interrupted),
        };
        self.clock.failed(Step::Release, "failed");
        let mut why = format!("the release command `{shown}` {how}");
        if !logs.is_empty() {
            why.push_str("\nlast output lines of the release command:");
            for line in &logs {
                why.push_str(&format!("\n    {line}"));
            }
        }
        Err(Failed {
            message: format!(
                "deploy failed: {why}\nnothing was switched: the new color was not started and nginx was not touched; the release job was removed"
            ),
            abort,
        }
        .into())
    }

    /// Follows the job's one task to an end, bounded by `app.release_timeout`.
    fn wait_job(&mut self, name: &str) -> anyhow::Result<Ending> {
        let limit = self.d.loaded.config.app.release_timeout.get();
        let started = Instant::now();
        loop {
            let tasks = swarm::tasks(name)?;
            let state = tasks.first().map(|t| t.state.clone());
            match tasks.first() {
                Some(t) if t.state == TaskState::Complete => return Ok(Ending::Complete),
                Some(t) if t.state.gave_up() || ended(&t.state) => {
                    let code = match t.exit_code {
                        Some(code) if t.state == TaskState::Failed => format!("exited {code}"),
                        _ => format!("ended {}", t.state),
                    };
                    let err = if t.error.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", t.error)
                    };
                    return Ok(Ending::Gave(format!("{code}{err}")));
                }
                _ => {}
            }
            if started.elapsed() >= limit {
                return Ok(Ending::TimedOut);
            }
            if self.d.interrupted.load(Ordering::SeqCst) {
                return Ok(Ending::Interrupted);
            }
            self.clock.waiting(
                Step::Release,
                started.elapsed(),
                limit,
                match state {
                    Some(s) => format!("task {s}"),
                    None => "no task yet".to_string(),
                },
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A first deploy: the stack without the app (its network, secrets and accessories), and
    /// each accessory running, before the release job needs them.
    fn accessories_first(&mut self, t: &Target) -> anyhow::Result<()> {
        self.clock.start(Step::Accessories, "");
        self.deploy_partial_stack(t, Vec::new(), true, false, Default::default())?;
        let limit = self.d.loaded.config.app.release_timeout.get();
        let started = Instant::now();
        for acc in self.d.loaded.config.accessories.keys() {
            let service = swarm::service_name(&t.project, acc.as_str());
            while !swarm::tasks(&service)?.iter().any(|t| t.serving()) {
                self.stop_if_interrupted("the release job")?;
                if started.elapsed() >= limit {
                    return Err(Failed {
                        message: format!(
                            "accessory {service} was not running after {:.0?}, before the release phase; nothing was switched",
                            started.elapsed()
                        ),
                        abort: Abort::ReleaseFailed,
                    }
                    .into());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        self.clock.done(
            Step::Accessories,
            format!(
                "{} accessor{} running before the release phase",
                self.d.loaded.config.accessories.len(),
                if self.d.loaded.config.accessories.len() == 1 {
                    "y"
                } else {
                    "ies"
                }
            ),
        );
        Ok(())
    }
}

/// The job's service, `<project>_release`, when it is also one of the stack's services (an
/// accessory named `release`, or the app under `routing: ingress`): removing a leftover job
/// by that name would remove that service. Said for an error, naming the key.
pub(super) fn name_taken(config: &Config, routing: Routing) -> Option<String> {
    config.app.release.as_ref()?;
    let key = if config.accessories.keys().any(|a| a.as_str() == "release") {
        "accessories.release"
    } else if routing == Routing::Ingress && config.app.name.as_str() == "release" {
        "app.name"
    } else {
        return None;
    };
    Some(format!(
        "{key}: the service {project}_release is also the name of app.release's one-off job under the swarm engine; rename it",
        project = config.project
    ))
}

/// A task state after which a job's task will not run again.
fn ended(state: &TaskState) -> bool {
    matches!(
        state,
        TaskState::Shutdown | TaskState::Remove | TaskState::Orphaned
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(app: &str, accessory: &str) -> Config {
        let text = format!(
            "project: shop\napp: {{ name: {app}, image: example/web, port: 3000, memory: 128M, release: [migrate] }}\n\
             accessories: {{ {accessory}: {{ image: redis:7, memory: 64M }} }}\n\
             colors: {{ blue: 9001, green: 9002 }}\n\
             swarm: {{ port: 80 }}\n"
        );
        Config::from_yaml(&text, Path::new("cutover.yml")).unwrap()
    }

    #[test]
    fn the_job_name_may_not_be_a_service_of_the_stack() {
        let taken = name_taken(&config("web", "release"), Routing::Host).unwrap();
        assert!(
            taken.starts_with("accessories.release: the service shop_release is also"),
            "{taken}"
        );
        let taken = name_taken(&config("release", "cache"), Routing::Ingress).unwrap();
        assert!(taken.starts_with("app.name: "), "{taken}");
        // Under host routing the app runs as release-blue / release-green.
        assert_eq!(name_taken(&config("release", "cache"), Routing::Host), None);
        assert_eq!(name_taken(&config("web", "cache"), Routing::Ingress), None);
    }
}
