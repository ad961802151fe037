//! Typed `docker compose` operations, for compose v2 (`docker compose`) and v1
//! (`docker-compose` 1.29), detected at run time.
//!
//! Two pitfalls shape this module. Compose v1 exits 0 on some usage errors, so an exit code
//! alone never proves a command we rely on worked: state is read back from the engine.
//! Container names differ (`p_s_1` in v1, `p-s-1` in v2), so containers are found by the
//! compose labels (`com.docker.compose.project` / `.service`) through `docker ps`, never by
//! name, and `docker ps`/`inspect` are asked for JSON, never parsed from tables.

pub use super::states::{ContainerState, HealthState};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::inspect::{self, DockerError};
use crate::process::{Cmd, ProcessError};

/// Which compose implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    V1,
    V2,
}

/// A detected compose tool and the project it operates on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compose {
    /// The tool as chosen and shown, e.g. `docker compose`.
    argv: Vec<String>,
    pub flavor: Flavor,
    pub version: String,
    /// What runs instead of `argv`: the compose v2 plugin binary itself, which
    /// `docker compose` execs after a start-up of the docker CLI and a metadata call of the
    /// plugin (~80 ms per compose call). Empty: `argv` runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plugin: Option<Plugin>,
}

/// The compose v2 CLI plugin the docker CLI picks, run directly (a v2 plugin binary runs
/// standalone with the same arguments and the same docker config), and its size + mtime so
/// a cached entry notices the binary changing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Plugin {
    path: PathBuf,
    stamp: String,
}

/// Why compose could not be found.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(
        "neither `docker compose` (v2) nor `docker-compose` (v1) works here; install one \
         (Debian: `apt-get install docker-compose`; or the compose plugin), or set CUTOVER_COMPOSE"
    )]
    Missing,
    #[error("CUTOVER_COMPOSE=`{value}` does not run a compose tool: {reason}")]
    BadOverride { value: String, reason: String },
}

impl Compose {
    /// Finds the compose tool: `CUTOVER_COMPOSE` (e.g. `docker-compose` or `docker compose`)
    /// when set, else `docker compose`, else `docker-compose`.
    pub fn detect() -> Result<Compose, DetectError> {
        if let Some(value) = std::env::var_os("CUTOVER_COMPOSE") {
            let value = value.to_string_lossy().into_owned();
            let argv: Vec<String> = value.split_whitespace().map(str::to_string).collect();
            return probe(&argv)
                .map(Compose::with_plugin)
                .map_err(|reason| DetectError::BadOverride { value, reason });
        }
        let candidates = [
            vec!["docker".to_string(), "compose".to_string()],
            vec!["docker-compose".to_string()],
        ];
        candidates
            .iter()
            .find_map(|argv| probe(argv).ok())
            .map(Compose::with_plugin)
            .ok_or(DetectError::Missing)
    }

    /// For `docker compose`, the plugin binary the docker CLI itself would run (it says so in
    /// `docker info --format '{{json .ClientInfo.Plugins}}'`), kept only when running it
    /// directly reports the same version. Anything unexpected keeps `docker compose`.
    fn with_plugin(self) -> Compose {
        if self.argv != ["docker", "compose"] {
            return self;
        }
        let plugin = plugin_path().and_then(|path| {
            let direct = probe(&[path.display().to_string()]).ok()?;
            (direct.flavor == Flavor::V2 && direct.version == self.version).then(|| Plugin {
                stamp: stamp(&path),
                path,
            })
        });
        Compose { plugin, ..self }
    }

    /// Whether a cached entry still describes the binaries: the plugin it runs is unchanged.
    fn still_valid(&self) -> bool {
        self.plugin
            .as_ref()
            .is_none_or(|p| stamp(&p.path) == p.stamp)
    }

    /// [`Compose::detect`], remembered in the user's cache dir. Asking compose for its
    /// version costs ~70 ms (v2) to ~430 ms (v1, a Python program) on every deploy; the answer
    /// only changes when one of the binaries or the settings that pick them changes, which the
    /// fingerprint covers.
    pub fn detect_cached() -> Result<Compose, DetectError> {
        let Some(cache) = cache_file() else {
            return Self::detect();
        };
        let fingerprint = fingerprint();
        if let Ok(text) = std::fs::read_to_string(&cache) {
            if let Ok(hit) = serde_json::from_str::<CachedTool>(&text) {
                if hit.format == CACHE_FORMAT
                    && hit.fingerprint == fingerprint
                    && hit.compose.still_valid()
                {
                    return Ok(hit.compose);
                }
            }
        }
        let compose = Self::detect()?;
        let entry = CachedTool {
            format: CACHE_FORMAT,
            fingerprint,
            compose: compose.clone(),
        };
        if let Ok(text) = serde_json::to_vec(&entry) {
            // A cache that cannot be written only costs the probe next time.
            let _ = crate::atomic::write(&cache, &text, 0o644);
        }
        Ok(compose)
    }

    /// Every compose tool that works here (v2 plugin, v1 binary), for tests that check both.
    pub fn all_available() -> Vec<Compose> {
        [
            vec!["docker".to_string(), "compose".to_string()],
            vec!["docker-compose".to_string()],
        ]
        .iter()
        .filter_map(|argv| probe(argv).ok())
        .collect()
    }

    /// A compose "tool" that is only a name, answered by a stand-in (unit tests).
    #[cfg(test)]
    pub(crate) fn fake(program: &str) -> Compose {
        Compose {
            argv: vec![program.to_string()],
            flavor: Flavor::V2,
            version: "fake".into(),
            plugin: None,
        }
    }

    /// The command prefix, e.g. `docker compose`.
    pub fn program(&self) -> String {
        self.argv.join(" ")
    }

    /// A compose command for `project` using `file`.
    pub fn cmd(&self, project: &str, file: &Path, summary: impl Into<String>) -> Cmd {
        let start = match &self.plugin {
            Some(plugin) => Cmd::new(&plugin.path, summary),
            None => Cmd::new(&self.argv[0], summary).args(&self.argv[1..]),
        };
        start.arg("-p").arg(project).arg("-f").arg(file)
    }

    /// Like [`Compose::cmd`], resolving relative paths (`./config:/config`) against the
    /// project directory rather than the directory of the rendered file.
    pub fn project_cmd(
        &self,
        project: &str,
        file: &Path,
        project_dir: &Path,
        summary: impl Into<String>,
    ) -> Cmd {
        self.cmd(project, file, summary)
            .arg("--project-directory")
            .arg(project_dir)
    }
}

#[derive(Serialize, Deserialize)]
struct CachedTool {
    /// [`CACHE_FORMAT`] of the cutover that wrote it: an older entry is probed again.
    #[serde(default)]
    format: u32,
    fingerprint: Vec<String>,
    compose: Compose,
}

/// 2: entries carry the compose v2 plugin path (format 1 had none, and would keep running
/// `docker compose` through the docker CLI).
const CACHE_FORMAT: u32 = 2;

fn cache_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("cutover").join("compose-tool.json"))
}

/// What decides which compose runs and which version it is: the override, the docker config
/// dir (its cli-plugins), and size + mtime of every binary a lookup could land on.
fn fingerprint() -> Vec<String> {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let docker_config = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
    let mut files: Vec<PathBuf> = ["docker", "docker-compose"]
        .iter()
        .filter_map(|p| crate::process::which(p))
        .collect();
    files.extend(docker_config.map(|d| d.join("cli-plugins/docker-compose")));
    for dir in [
        "/usr/local/lib/docker/cli-plugins",
        "/usr/local/libexec/docker/cli-plugins",
        "/usr/lib/docker/cli-plugins",
        "/usr/libexec/docker/cli-plugins",
    ] {
        files.push(Path::new(dir).join("docker-compose"));
    }
    let mut out = vec![
        format!("CUTOVER_COMPOSE={}", env("CUTOVER_COMPOSE")),
        format!("DOCKER_CONFIG={}", env("DOCKER_CONFIG")),
        format!("PATH={}", env("PATH")),
    ];
    for file in files {
        out.push(format!("{}: {}", file.display(), stamp(&file)));
    }
    out
}

/// Size and mtime of a file, or `absent`.
fn stamp(file: &Path) -> String {
    std::fs::metadata(file)
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            format!("{} {}.{}", m.len(), m.mtime(), m.mtime_nsec())
        })
        .unwrap_or_else(|_| "absent".to_string())
}

/// Where the docker CLI finds its `compose` plugin, as the CLI reports it.
fn plugin_path() -> Option<PathBuf> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Listed {
        name: String,
        #[serde(default)]
        path: PathBuf,
    }
    let cmd = Cmd::new("docker", "ask the docker CLI where its compose plugin is")
        .args(["info", "--format", "{{json .ClientInfo.Plugins}}"])
        .timeout(Duration::from_secs(20));
    let out = cmd.run_unchecked().ok()?;
    // `docker info` exits 1 when the daemon does not answer, yet prints the client part.
    let line = out.stdout.lines().find(|l| l.starts_with('['))?;
    let listed: Vec<Listed> = serde_json::from_str(line).ok()?;
    listed
        .into_iter()
        .find(|p| p.name == "compose" && p.path.is_absolute())
        .map(|p| p.path)
}

fn probe(argv: &[String]) -> Result<Compose, String> {
    let Some(program) = argv.first() else {
        return Err("empty command".into());
    };
    let out = Cmd::new(program, "ask compose for its version")
        .args(&argv[1..])
        .args(["version", "--short"])
        .timeout(Duration::from_secs(20))
        .run()
        .map_err(|e| e.to_string())?;
    let version = out.stdout.trim().trim_start_matches('v').to_string();
    let flavor = match version.split('.').next() {
        Some("1") => Flavor::V1,
        Some(major) if major.parse::<u32>().is_ok_and(|m| m >= 2) => Flavor::V2,
        _ => {
            return Err(format!(
                "unrecognised version output `{}`",
                out.stdout.trim()
            ))
        }
    };
    Ok(Compose {
        argv: argv.to_vec(),
        flavor,
        version,
        plugin: None,
    })
}

/// One compose project on disk: the tool, the project name and the rendered file.
#[derive(Debug, Clone)]
pub struct Project {
    pub compose: Compose,
    pub name: String,
    pub file: PathBuf,
    /// Relative paths in the compose file are relative to this directory.
    pub dir: PathBuf,
}

/// A container of the project, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    pub id: String,
    pub service: String,
    pub image: String,
    pub state: ContainerState,
    pub exit_code: Option<i64>,
    pub restart_count: i64,
    /// The container healthcheck's verdict; None without a healthcheck.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthState>,
    /// The `dev.cutover.worker` label: which worker this container runs, if it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Its main process on this host, while it runs (the engine's `State.Pid`): the way into
    /// its network namespace (the health gate's look at its listeners).
    #[serde(skip)]
    pub pid: Option<u32>,
}

impl Container {
    pub fn running(&self) -> bool {
        matches!(
            self.state,
            ContainerState::Running | ContainerState::Restarting
        )
    }
}

impl Project {
    pub(super) fn cmd(&self, summary: impl Into<String>) -> Cmd {
        self.compose
            .project_cmd(&self.name, &self.file, &self.dir, summary)
    }

    /// `up -d --no-deps SERVICE…` with secrets as process environment only. Recreates the
    /// container when its image or config changed. Killed past `timeout` (a stalled engine
    /// must not hold the deploy and its lock forever); the error names the call and the limit.
    pub fn up(
        &self,
        services: &[String],
        no_deps: bool,
        env: &BTreeMap<String, SecretString>,
        timeout: Duration,
        summary: impl Into<String>,
    ) -> Result<(), ProcessError> {
        let mut cmd = self.cmd(summary).args(["up", "-d"]).timeout(timeout);
        if no_deps {
            cmd = cmd.arg("--no-deps");
        }
        // Recreate even when compose thinks nothing changed: a rotated secret is invisible to
        // compose's config hash when the value arrives through the environment.
        cmd = cmd.arg("--force-recreate").args(services);
        for (k, v) in env {
            cmd = cmd.env(k, v.clone());
        }
        cmd.run().map(|_| ())
    }

    /// Stops a service's containers with a grace period, then removes them (never
    /// `down SERVICE`: a usage error in v1 that exits 0, and the whole project in early v2).
    /// The containers are found by their compose labels and handled with the docker CLI, which
    /// is what `compose stop`/`rm` do, without two compose start-ups on the deploy's path.
    pub fn stop_and_remove(&self, service: &str, grace: Duration) -> Result<(), DockerError> {
        let ids: Vec<String> = containers_of(&self.name)?
            .into_iter()
            .filter(|c| c.service == service)
            .map(|c| c.id)
            .collect();
        super::containers::stop_and_remove(service, &ids, grace)
    }
}

/// Removes every container of a compose project and its default network, as far as it can
/// (the demo's and the tests' cleanup: nothing to report when there is nothing).
pub fn remove_project(project: &str) {
    if let Ok(containers) = containers_of(project) {
        let ids: Vec<String> = containers.into_iter().map(|c| c.id).collect();
        if !ids.is_empty() {
            let _ =
                super::containers::remove_cmd(&ids, &format!("the containers of {project}")).run();
        }
    }
    let _ = Cmd::new("docker", format!("remove the network of {project}"))
        .args(["network", "rm", &format!("{project}_default")])
        .run();
}

/// Whether the docker CLI has a working compose plugin (`docker compose version`).
pub fn plugin_answers() -> bool {
    Cmd::new("docker", "check for docker compose")
        .args(["compose", "version"])
        .run()
        .is_ok()
}

impl Project {
    /// The project's containers, found by labels, with their engine state.
    pub fn containers(&self) -> Result<Vec<Container>, DockerError> {
        containers_of(&self.name)
    }

    /// The last `lines` log lines of a service (stdout and stderr), without compose's own
    /// chatter.
    pub fn logs(&self, service: &str, lines: usize) -> String {
        match self
            .cmd(format!("read the logs of {service}"))
            .args(["logs", "--no-color", "--tail", &lines.to_string(), service])
            .timeout(Duration::from_secs(20))
            .run_unchecked()
        {
            // v1 prints "Attaching to …" even when there is no container to read.
            Ok(out) => super::printable_log(&format!("{}{}", out.stdout, out.stderr))
                .lines()
                .filter(|l| !l.starts_with("Attaching to"))
                .collect::<Vec<_>>()
                .join("\n")
                .trim_end()
                .to_string(),
            Err(e) => format!("(could not read logs: {e})"),
        }
    }
}

/// Containers of a compose project, found by the `com.docker.compose.project` label.
pub fn containers_of(project: &str) -> Result<Vec<Container>, DockerError> {
    let label = format!("com.docker.compose.project={project}");
    // Through the engine's socket where the CLI would use it: one process-free exchange per
    // container instead of `docker ps` + `docker inspect` (~40 ms). An engine that cannot be
    // reached there is asked through the CLI, whose error says why.
    let parsed = match super::engine_api::Api::local()
        .map(|api| api.inspect_labelled::<Inspect>(&label, "containers"))
    {
        Some(Err(super::engine_api::ApiError::Unreachable { .. })) | None => {
            containers_by_cli(project)?
        }
        Some(answer) => answer?,
    };
    Ok(from_inspect(parsed))
}

/// `docker ps -a -q --filter label=…` + `docker inspect`.
fn containers_by_cli(project: &str) -> Result<Vec<Inspect>, DockerError> {
    let list = Cmd::new("docker", format!("list the containers of {project}"))
        .args([
            "ps",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
        ])
        .timeout(Duration::from_secs(30));
    let inspect = Cmd::new("docker", format!("inspect the containers of {project}"))
        .arg("inspect")
        .timeout(Duration::from_secs(30));
    inspect::list_and_inspect(list, inspect, "containers")
}

fn from_inspect(parsed: Vec<Inspect>) -> Vec<Container> {
    let mut containers: Vec<Container> = parsed
        .into_iter()
        // `compose run` containers (the release phase, `cutover run`) are never a color.
        .filter(|c| {
            c.config
                .labels
                .get("com.docker.compose.oneoff")
                .map(String::as_str)
                != Some("True")
        })
        .map(|c| Container {
            id: c.id,
            service: c
                .config
                .labels
                .get("com.docker.compose.service")
                .cloned()
                .unwrap_or_default(),
            image: c.config.image,
            state: c.state.status,
            exit_code: Some(c.state.exit_code),
            restart_count: c.restart_count,
            health: c.state.health.map(|h| h.status),
            worker: c.config.labels.get("dev.cutover.worker").cloned(),
            pid: u32::try_from(c.state.pid).ok().filter(|&pid| pid > 0),
        })
        .collect();
    containers.sort_by(|a, b| a.service.cmp(&b.service));
    containers
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    id: String,
    config: InspectConfig,
    state: InspectState,
    #[serde(default)]
    restart_count: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    image: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectState {
    status: ContainerState,
    exit_code: i64,
    /// 0 when it does not run.
    #[serde(default)]
    pid: i64,
    #[serde(default)]
    health: Option<InspectHealth>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectHealth {
    status: HealthState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_containers_process_is_read_and_a_stopped_ones_zero_is_none() {
        let inspect = |status: &str, pid: i64| {
            format!(
                r#"{{"Id":"c-{status}","Config":{{"Image":"i","Labels":{{"com.docker.compose.service":"web-{status}"}}}},"State":{{"Status":"{status}","ExitCode":0,"Pid":{pid}}},"RestartCount":0}}"#
            )
        };
        let parsed: Vec<Inspect> = serde_json::from_str(&format!(
            "[{},{}]",
            inspect("running", 4242),
            inspect("exited", 0)
        ))
        .unwrap();
        let containers = from_inspect(parsed);
        let pid_of = |service: &str| {
            containers
                .iter()
                .find(|c| c.service == service)
                .unwrap()
                .pid
        };
        assert_eq!(pid_of("web-running"), Some(4242));
        assert_eq!(pid_of("web-exited"), None);
    }
}
