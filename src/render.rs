//! The compose file, the nginx include and the nginx site, rendered from minijinja templates.
//!
//! Built-in templates live in `templates/` and are compiled into the binary; a project's own
//! `templates/<name>` replaces the built-in of the same name. Undefined variables are errors
//! (strict mode), so a typo in an override fails the render instead of emitting an empty
//! string into a compose file. This module builds the template context from the config and
//! decides nothing about deploys: callers say which image each color runs and which color
//! nginx points at.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::config::{Color, CommandLine, Config};

pub const COMPOSE: &str = "compose.yml.j2";
pub const INCLUDE: &str = "service-url.inc.j2";
pub const SITE: &str = "nginx-site.conf.j2";
/// `bootstrap --cloud-init` user-data (`.yml`: values are written as JSON scalars).
pub const CLOUD_INIT: &str = "cloud-init.yml.j2";
pub const STACK: &str = "stack.yml.j2";
/// The swarm engine's front nginx under `swarm.routing: host` (src/engine/swarm/front.rs).
pub const SWARM_UPSTREAM: &str = "swarm-upstream.conf.j2";
pub const SWARM_INCLUDE: &str = "swarm-service-url.inc.j2";
/// `init --ci github`: the deploy workflow (src/ci.rs).
pub const CI_GITHUB: &str = "ci/github-deploy.yml.j2";

/// Every built-in template, by the name a project overrides it with (`render --templates`
/// writes them out, the starting point of an override).
pub const BUILT_IN: &[(&str, &str)] = &[
    (COMPOSE, include_str!("../templates/compose.yml.j2")),
    (INCLUDE, include_str!("../templates/service-url.inc.j2")),
    (SITE, include_str!("../templates/nginx-site.conf.j2")),
    (CLOUD_INIT, include_str!("../templates/cloud-init.yml.j2")),
    (STACK, include_str!("../templates/stack.yml.j2")),
    (
        SWARM_UPSTREAM,
        include_str!("../templates/swarm-upstream.conf.j2"),
    ),
    (
        SWARM_INCLUDE,
        include_str!("../templates/swarm-service-url.inc.j2"),
    ),
    (
        CI_GITHUB,
        include_str!("../templates/ci/github-deploy.yml.j2"),
    ),
];

use crate::secrets::SecretKeys;

/// What the caller decided: the image each color runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub images: BTreeMap<Color, String>,
    pub secret_keys: SecretKeys,
    /// The image of each worker's color, by worker name (a color not named here runs the
    /// app color's image).
    pub workers: BTreeMap<String, BTreeMap<Color, String>>,
    /// `app.secrets_delivery: files`: the project's directory of secret files on the box
    /// (`secrets::files`), each service's files in `<dir>/<service>/`; `None` in env mode.
    pub secrets_dir: Option<std::path::PathBuf>,
}

/// The loaded template set.
pub struct Renderer {
    env: Environment<'static>,
    /// Where each template came from, for error messages ("built-in" or a path).
    origins: BTreeMap<&'static str, String>,
}

impl Renderer {
    /// Loads the built-in templates, replaced by `<project_dir>/templates/<name>` where present.
    pub fn new(project_dir: &Path) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        let mut origins = BTreeMap::new();
        for (name, built_in) in BUILT_IN {
            let override_path = project_dir.join("templates").join(name);
            let (source, origin) = match std::fs::read_to_string(&override_path) {
                Ok(text) => (text, override_path.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    (built_in.to_string(), format!("built-in {name}"))
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("could not read {}", override_path.display()))
                }
            };
            env.add_template_owned(*name, source)
                .map_err(|e| template_error(&origin, e))?;
            origins.insert(*name, origin);
        }
        Ok(Renderer { env, origins })
    }

    pub(crate) fn render(&self, name: &'static str, ctx: impl Serialize) -> anyhow::Result<String> {
        let template = self.env.get_template(name)?;
        template
            .render(ctx)
            .map_err(|e| template_error(&self.origins[name], e))
    }

    /// The compose file for both colors and the accessories.
    pub fn compose(&self, config: &Config, plan: &Plan) -> anyhow::Result<String> {
        let ctx = ComposeContext::new(config, plan)?;
        self.render(COMPOSE, ctx)
    }

    /// The nginx include pointing at `color`, in or out of maintenance as asked: with the
    /// 503 block while the project's flag is on (the caller loads it, `maintenance::load`),
    /// so every switch, a deploy's included, keeps it. Rendering reads no file.
    ///
    /// With [`Route::Fallback`] nginx sends traffic to the site's upstream group for `color`,
    /// whose backup is the other color; with [`Route::Direct`], to `color`'s address alone.
    pub fn include(
        &self,
        config: &Config,
        color: Color,
        maintenance: Option<&crate::maintenance::Maintenance>,
        route: Route,
    ) -> anyhow::Result<String> {
        let upstream = upstream_url(config, color);
        let service_url = match route {
            Route::Direct => upstream.clone(),
            Route::Fallback => format!("http://{}", upstream_group(config, color)),
        };
        self.render(
            INCLUDE,
            minijinja::context! {
                project => config.project.as_str(),
                color => color.as_str(),
                port => config.colors.port(color),
                upstream => upstream,
                service_url => service_url,
                health_path => config.app.health.path.as_str(),
                maintenance => crate::maintenance::template_view(config, maintenance),
            },
        )
    }

    /// The include of `nginx.switch: nft`: traffic always goes to the site's switch group
    /// ([`switch_group`]), the marker names the mode (`nft <primary url> <project>`), not a
    /// color: which color answers is the kernel's rule, read back by `nft::read`.
    pub fn include_nft(
        &self,
        config: &Config,
        maintenance: Option<&crate::maintenance::Maintenance>,
    ) -> anyhow::Result<String> {
        let [primary, _] =
            switch_addresses(config).context("nginx.switch: nft needs nginx.switch_ports")?;
        self.render(
            INCLUDE,
            minijinja::context! {
                project => config.project.as_str(),
                color => "nft",
                upstream => format!("http://{primary}"),
                service_url => format!("http://{}", switch_group(config)),
                health_path => config.app.health.path.as_str(),
                maintenance => crate::maintenance::template_view(config, maintenance),
            },
        )
    }

    /// Where a template came from: "built-in <name>" or the override's path.
    pub fn origin<'a>(&'a self, name: &'a str) -> &'a str {
        self.origins.get(name).map(String::as_str).unwrap_or(name)
    }

    /// The nginx site (a `server` block) that includes the include; with `nginx.tls`, the
    /// HTTPS site once the certificate exists on this box.
    pub fn site(&self, config: &Config) -> anyhow::Result<String> {
        let cert_ready = config
            .nginx
            .tls
            .as_ref()
            .is_some_and(|tls| tls.fullchain().is_file() && tls.privkey().is_file());
        self.site_with(config, cert_ready)
    }

    /// The site as it is with (`cert_ready`) or without a certificate for `nginx.tls`.
    pub fn site_with(&self, config: &Config, cert_ready: bool) -> anyhow::Result<String> {
        let tls = config.nginx.tls.as_ref().map(|tls| {
            let port = tls.port().unwrap_or(443);
            minijinja::context! {
                ready => cert_ready,
                listen => tls.listen.0.as_str(),
                webroot => tls.webroot.display().to_string(),
                fullchain => tls.fullchain().display().to_string(),
                privkey => tls.privkey().display().to_string(),
                hsts => tls.hsts,
                health_path => config.app.health.path.as_str(),
                port_suffix => if port == 443 { String::new() } else { format!(":{port}") },
            }
        });
        let upstreams: Vec<_> = Color::ALL
            .into_iter()
            .map(|color| {
                minijinja::context! {
                    name => upstream_group(config, color),
                    primary => upstream_address(config, color),
                    backup => upstream_address(config, color.other()),
                }
            })
            .collect();
        let switch = switch_addresses(config).map(|[primary, backup]| {
            minijinja::context! {
                name => switch_group(config),
                table => crate::nft::table(config.project.as_str()),
                primary => primary,
                backup => backup,
            }
        });
        let text = self.render(
            SITE,
            minijinja::context! {
                project => config.project.as_str(),
                app => config.app.name.as_str(),
                upstreams => upstreams,
                switch => switch,
                connection_variable => connection_variable(config),
                nginx => minijinja::context! {
                    listen => config.nginx.listen.0.as_str(),
                    server_name => config.nginx.server_name.as_str(),
                    include => config.nginx.include.display().to_string(),
                },
                tls => tls,
            },
        )?;
        if let Some(tls) = &config.nginx.tls {
            self.check_tls_site(&text, tls, cert_ready)?;
        }
        Ok(text)
    }

    /// With `nginx.tls`, the site (a custom template too) must serve the ACME challenge from
    /// the webroot and, once the certificate exists, use it: a template that ignores `tls`
    /// would let certbot fail or leave the site on plain HTTP while saying HTTPS is on.
    fn check_tls_site(
        &self,
        text: &str,
        tls: &crate::config::Tls,
        cert_ready: bool,
    ) -> anyhow::Result<()> {
        let webroot = tls.webroot.display().to_string();
        let fullchain = tls.fullchain().display().to_string();
        let mut missing = Vec::new();
        if !text.contains("/.well-known/acme-challenge/") || !text.contains(&webroot) {
            missing.push(format!(
                "a `location /.well-known/acme-challenge/` with `root {webroot}` (tls.webroot)"
            ));
        }
        if cert_ready && (!text.contains(" ssl") || !text.contains(&fullchain)) {
            missing.push(format!(
                "a `listen … ssl` server with `ssl_certificate {fullchain}` (tls.fullchain)"
            ));
        }
        if missing.is_empty() {
            return Ok(());
        }
        bail!(
            "template {}: with nginx.tls the site must render {}; a custom template gets them from \
             the `tls` variable (tls.webroot, tls.ready, tls.listen, tls.fullchain, tls.privkey): \
             copy the `tls` blocks of the built-in nginx-site.conf.j2 (README.md, \"HTTPS\")",
            self.origin(SITE),
            missing.join(" and ")
        )
    }
}

impl Renderer {
    /// `#cloud-config` user-data from the bootstrap module's view of the steps.
    pub fn cloud_init(&self, view: impl Serialize) -> anyhow::Result<String> {
        self.render(CLOUD_INIT, view)
    }
}

/// `http://127.0.0.1:8081`: where nginx reaches a color.
pub fn upstream_url(config: &Config, color: Color) -> String {
    format!("http://{}", upstream_address(config, color))
}

/// `127.0.0.1:8081`: a color's address, as an nginx `server` line (and `$upstream_addr`)
/// names it.
pub fn upstream_address(config: &Config, color: Color) -> String {
    let host = match config.colors.upstream_host() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!("{host}:{}", config.colors.port(color))
}

/// `cutover_myapp_green`: the site's upstream group that serves `color` with the other
/// color as its backup (project names are `[a-z0-9_-]`, so the name is one nginx word).
pub fn upstream_group(config: &Config, color: Color) -> String {
    format!("cutover_{}_{}", config.project.as_str(), color.as_str())
}

/// `cutover_myapp_connection`: the variable the site's `map` sets to the `Connection` header a
/// proxied request sends (`upgrade` with an `Upgrade` header, so a WebSocket passes; `close`
/// without). A map's variable is global to nginx's `http` block, so each project has its own
/// (a box often defines the common `$connection_upgrade` already: a second definition would
/// fail `nginx -t`). Variable names take no `-`: `-` is written `_d` and `_` is `_u`, so
/// `my-app` and `my_app` never share one.
pub fn connection_variable(config: &Config) -> String {
    let mut name = String::from("cutover_");
    for c in config.project.as_str().chars() {
        match c {
            '-' => name.push_str("_d"),
            '_' => name.push_str("_u"),
            c => name.push(c),
        }
    }
    name.push_str("_connection");
    name
}

/// `cutover_myapp_switch`: the site's group of `nginx.switch: nft` (the two stable ports).
pub fn switch_group(config: &Config) -> String {
    format!("cutover_{}_switch", config.project.as_str())
}

/// `["127.0.0.1:9100", "127.0.0.1:9101"]`: the switch ports' addresses (primary, backup), as
/// nginx names them; None without `nginx.switch_ports`. Always IPv4 loopback: the nft table
/// maps `ip daddr 127.0.0.1`.
pub fn switch_addresses(config: &Config) -> Option<[String; 2]> {
    let [primary, backup] = config.nginx.switch_ports?;
    Some([
        format!("127.0.0.1:{}", primary.0),
        format!("127.0.0.1:{}", backup.0),
    ])
}

/// Whether a site declares the switch group with today's ports, so an include naming it
/// passes `nginx -t` and reaches them.
pub fn site_declares_switch(config: &Config, site: &str) -> bool {
    let Some([primary, backup]) = switch_addresses(config) else {
        return false;
    };
    group_lines(site, &switch_group(config)).is_some_and(|lines| {
        lines
            == [
                format!("server {primary} max_fails=0"),
                format!("server {backup} backup max_fails=0"),
            ]
    })
}

/// The lines of a site's `upstream <name> { … }` block, trimmed, without their `;`
/// (comments skipped); None when the site does not declare it.
fn group_lines(site: &str, name: &str) -> Option<Vec<String>> {
    let wanted = format!("upstream {name} {{");
    let mut lines = site
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'));
    lines.any(|line| line == wanted).then(|| {
        lines
            .take_while(|line| *line != "}")
            .map(|line| line.trim_end_matches(';').to_string())
            .collect()
    })
}

/// How the include sends a project's traffic to the active color.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the color's address alone: a site without cutover's upstream groups (rendered
    /// by an older cutover, or a custom template that leaves them out).
    Direct,
    /// To the site's upstream group for the color, the other color its `backup`: while the
    /// old color still runs (the watch window), a request that finds the new color dead
    /// (refused, reset before its answer) is passed to the old one instead of failing.
    Fallback,
}

impl Route {
    /// The route a site supports: [`Route::Fallback`] only when it declares both of the
    /// project's upstream groups with today's addresses (the color first, the other color
    /// its backup): an include naming a group nginx does not know fails every request, and
    /// a group written before `colors` changed sends traffic to the old ports. `None` (no
    /// site, or one this user cannot read): direct.
    pub fn for_site(config: &Config, site: Option<&str>) -> Route {
        let Some(site) = site else {
            return Route::Direct;
        };
        let declares = |color: Color| {
            let Some(lines) = group_lines(site, &upstream_group(config, color)) else {
                return false;
            };
            let servers: Vec<(String, bool)> = lines
                .iter()
                .filter_map(|line| {
                    let mut words = line.split_whitespace();
                    (words.next() == Some("server")).then(|| {
                        let address = words.next().unwrap_or_default().to_string();
                        (address, words.any(|w| w == "backup"))
                    })
                })
                .collect();
            servers
                == [
                    (upstream_address(config, color), false),
                    (upstream_address(config, color.other()), true),
                ]
        };
        if Color::ALL.into_iter().all(declares) {
            Route::Fallback
        } else {
            Route::Direct
        }
    }
}

fn template_error(origin: &str, err: minijinja::Error) -> anyhow::Error {
    let line = err.line().map(|l| format!(":{l}")).unwrap_or_default();
    let detail = err.detail().map(|d| format!(" ({d})")).unwrap_or_default();
    anyhow::anyhow!("template {origin}{line}: {}{detail}", err.kind())
}

#[derive(Debug, Serialize)]
pub(crate) struct EnvItem {
    pub key: String,
    pub value: String,
}

#[derive(Serialize)]
struct AppView {
    name: String,
    port: u16,
    memory: String,
    restart: String,
    stop_grace_secs: u64,
    command: Option<serde_json::Value>,
    volumes: Vec<String>,
    depends_on: Vec<String>,
    environment: Vec<EnvItem>,
    secret_keys: Vec<String>,
}

#[derive(Serialize)]
struct ColorView {
    name: &'static str,
    service: String,
    port: u16,
    image: String,
    publish: String,
}

#[derive(Serialize)]
struct AccessoryView {
    name: String,
    image: String,
    memory: String,
    restart: String,
    command: Option<serde_json::Value>,
    volumes: Vec<String>,
    ports: Vec<String>,
    environment: Vec<EnvItem>,
    secret_keys: Vec<String>,
}

#[derive(Serialize)]
struct ComposeContext {
    project: String,
    app: AppView,
    colors: Vec<ColorView>,
    accessories: Vec<AccessoryView>,
    workers: Vec<WorkerView>,
    volumes: Vec<String>,
    /// Files mode: the project's secrets directory (a checked, plain absolute path).
    secrets_dir: Option<String>,
    mount_dir: &'static str,
}

#[derive(Serialize)]
struct WorkerView {
    name: String,
    color: &'static str,
    service: String,
    image: String,
    memory: String,
    command: serde_json::Value,
    health: Option<WorkerHealthView>,
}

#[derive(Serialize)]
struct WorkerHealthView {
    test: serde_json::Value,
    interval_ms: u128,
    retries: u128,
}

/// Both colors of every worker; a worker's image is its own record's, else its color's.
fn worker_views(
    config: &Config,
    plan: &Plan,
    colors: &[ColorView],
) -> anyhow::Result<Vec<WorkerView>> {
    let mut out = Vec::new();
    for (name, worker) in &config.workers {
        for (c, color) in Color::ALL.into_iter().zip(colors) {
            let image = plan
                .workers
                .get(name.as_str())
                .and_then(|m| m.get(&c))
                .cloned()
                .unwrap_or_else(|| color.image.clone());
            let health = worker.health.as_ref().map(|h| {
                let test = health_test(&h.command);
                let interval = h.interval.get().as_millis().max(1);
                WorkerHealthView {
                    test,
                    interval_ms: interval,
                    // Docker must not call it unhealthy before the deploy's own timeout.
                    retries: h.timeout.get().as_millis() / interval + 1,
                }
            });
            out.push(WorkerView {
                name: name.to_string(),
                color: color.name,
                service: config.worker_service(name.as_str(), c),
                image: checked_image(&image, &format!("the image of worker {name} ({c})"))?,
                memory: worker.memory.to_string(),
                command: command_json(&worker.command),
                health,
            });
        }
    }
    Ok(out)
}

impl ComposeContext {
    fn new(config: &Config, plan: &Plan) -> anyhow::Result<Self> {
        let app = &config.app;
        let environment = env_items(&app.environment.0, &plan.secret_keys.app, "app")?;
        let publish_host = match config.colors.bind {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let mut colors = Vec::new();
        for color in Color::ALL {
            let port = config.colors.port(color);
            let image = plan
                .images
                .get(&color)
                .cloned()
                .unwrap_or_else(|| config.default_image());
            checked_image(&image, &format!("the image of {color}"))?;
            colors.push(ColorView {
                name: color.as_str(),
                service: config.service(color),
                port,
                image,
                publish: format!("{publish_host}:{port}:{}", app.port),
            });
        }
        let mut accessories = Vec::new();
        for (name, acc) in &config.accessories {
            let keys = plan.secret_keys.accessory(name.as_str());
            accessories.push(AccessoryView {
                name: name.to_string(),
                image: checked_image(&acc.image, &format!("accessories.{name}.image"))?,
                memory: acc.memory.to_string(),
                restart: acc.restart.to_string(),
                command: acc.command.as_ref().map(command_json),
                volumes: literals(&acc.volumes),
                ports: literals(&acc.ports),
                environment: env_items(&acc.environment.0, keys, &format!("accessories.{name}"))?,
                secret_keys: keys.iter().cloned().collect(),
            });
        }
        let volumes = named_volumes(
            app.volumes
                .iter()
                .chain(config.accessories.values().flat_map(|a| &a.volumes)),
        );
        let workers = worker_views(config, plan, &colors)?;
        let secrets_dir = match &plan.secrets_dir {
            None => None,
            Some(dir) => Some(
                dir.to_str()
                    .with_context(|| format!("{}: not UTF-8", dir.display()))?
                    .to_string(),
            ),
        };
        if secrets_dir.is_some() {
            file_keys_free(&app.environment.0, &plan.secret_keys.app, "app")?;
            for (name, acc) in &config.accessories {
                file_keys_free(
                    &acc.environment.0,
                    plan.secret_keys.accessory(name.as_str()),
                    &format!("accessories.{name}"),
                )?;
            }
        }
        Ok(ComposeContext {
            secrets_dir,
            mount_dir: crate::secrets::files::MOUNT_DIR,
            workers,
            project: config.project.to_string(),
            app: AppView {
                name: app.name.to_string(),
                port: app.port.0,
                memory: app.memory.to_string(),
                restart: app.restart.to_string(),
                stop_grace_secs: app.stop_grace.get().as_secs(),
                command: app.command.as_ref().map(command_json),
                volumes: literals(&app.volumes),
                depends_on: app.depends_on.iter().map(|d| d.to_string()).collect(),
                environment,
                secret_keys: plan.secret_keys.app.iter().cloned().collect(),
            },
            colors,
            accessories,
            volumes,
        })
    }
}

/// Files mode sets `<KEY>_FILE` for every secret key: a plain entry of that name would
/// silently lose to it (or win over it), so it is refused.
fn file_keys_free(
    env: &BTreeMap<String, String>,
    secret_keys: &BTreeSet<String>,
    owner: &str,
) -> anyhow::Result<()> {
    if let Some(key) = secret_keys
        .iter()
        .map(|k| format!("{k}_FILE"))
        .find(|k| env.contains_key(k))
    {
        bail!(
            "{owner}.environment.{key}: with app.secrets_delivery: files cutover sets `{key}` to the secret's file; remove it from environment"
        );
    }
    Ok(())
}

/// Plain environment entries, with `$` doubled so compose does not interpolate them; a key
/// that is also a secret is refused, since one of the two values would silently win.
pub(crate) fn env_items(
    env: &BTreeMap<String, String>,
    secret_keys: &BTreeSet<String>,
    owner: &str,
) -> anyhow::Result<Vec<EnvItem>> {
    if let Some(key) = env.keys().find(|k| secret_keys.contains(*k)) {
        bail!(
            "{owner}.environment.{key}: `{key}` is also a key in the secrets files; keep it in one place"
        );
    }
    Ok(env
        .iter()
        .map(|(k, v)| EnvItem {
            key: k.clone(),
            value: literal(v),
        })
        .collect())
}

/// `app.command` / `accessories.*.command` for the compose file, `$` escaped ([`literal`]).
/// A healthcheck's `test` from a command line: a list is exec'd (`CMD`), a string goes to
/// the shell (`CMD-SHELL`). Compose files and stack files write it alike.
pub(crate) fn health_test(cmd: &CommandLine) -> serde_json::Value {
    match command_json(cmd) {
        serde_json::Value::Array(argv) => {
            let mut test = vec![serde_json::json!("CMD")];
            test.extend(argv);
            serde_json::Value::Array(test)
        }
        shell => serde_json::json!(["CMD-SHELL", shell]),
    }
}

pub(crate) fn command_json(cmd: &CommandLine) -> serde_json::Value {
    match cmd {
        CommandLine::Shell(s) => serde_json::Value::String(literal(s)),
        CommandLine::Argv(v) => serde_json::json!(literals(v)),
    }
}

/// A cutover.yml value as compose must read it: `$` doubled. compose (and `docker stack
/// deploy`) interpolate `$VAR`/`${VAR}` from their own environment, which holds every
/// decrypted secret at deploy time, so an unescaped `${DB_PASSWORD}` in a command would put
/// the secret into the container's spec, `docker inspect` and error messages. Values in
/// cutover.yml are literal: a `$` reaches the container as a `$` (a shell in the container
/// still expands it there, from the container's own environment).
pub(crate) fn literal(value: &str) -> String {
    value.replace('$', "$$")
}

pub(crate) fn literals(values: &[String]) -> Vec<String> {
    values.iter().map(|v| literal(v)).collect()
}

/// `image` if it is a valid image reference, else an error naming `what` and what is allowed.
/// A reference never holds `$`, so it needs no escaping once checked.
pub(crate) fn checked_image(image: &str, what: &str) -> anyhow::Result<String> {
    crate::config::image_ref::check_reference(image)
        .map_err(|why| anyhow!("{what}, `{image}`: {why}"))?;
    Ok(image.to_string())
}

/// Volume sources that are names, not host paths: `mysql-volume:/var/lib/mysql` → `mysql-volume`.
pub(crate) fn named_volumes<'a>(specs: impl Iterator<Item = &'a String>) -> Vec<String> {
    let names: BTreeSet<String> = specs
        .filter_map(|spec| spec.split_once(':').map(|(src, _)| src))
        .filter(|src| !src.is_empty() && !src.starts_with(['/', '.', '~', '$']))
        .map(str::to_string)
        .collect();
    names.into_iter().collect()
}

/// Paths of the files `render` writes, relative to its output directory.
pub struct OutputFiles {
    pub compose: PathBuf,
    pub include: PathBuf,
    pub site: PathBuf,
    /// The swarm engine's stack file.
    pub stack: PathBuf,
}

impl OutputFiles {
    pub fn in_dir(dir: &Path) -> Self {
        OutputFiles {
            compose: dir.join("compose.yml"),
            include: dir.join("service-url.inc"),
            site: dir.join("nginx-site.conf"),
            stack: dir.join("stack.yml"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_volumes_skip_host_paths() {
        let specs = [
            "mysql-volume:/var/lib/mysql".to_string(),
            "./data:/data".to_string(),
            "/srv:/srv:ro".to_string(),
            "cache:/cache".to_string(),
            "anonymous".to_string(),
        ];
        assert_eq!(named_volumes(specs.iter()), ["cache", "mysql-volume"]);
    }

    #[test]
    fn commands_escape_dollars() {
        let argv = CommandLine::Argv(vec!["serve".into(), "${DB_PASSWORD}".into()]);
        assert_eq!(
            command_json(&argv),
            serde_json::json!(["serve", "$${DB_PASSWORD}"])
        );
        let shell = CommandLine::Shell("echo $HOME".into());
        assert_eq!(command_json(&shell), serde_json::json!("echo $$HOME"));
    }

    fn demo_config() -> Config {
        let text =
            "project: shop\napp: { name: web, image: example/web, port: 3000, memory: 64M }\n\
                    colors: { blue: 8081, green: 8082 }\n";
        Config::from_yaml(text, Path::new("cutover.yml")).unwrap()
    }

    #[test]
    fn the_site_declares_each_colors_group_with_the_other_as_backup() {
        let config = demo_config();
        let renderer = Renderer::new(Path::new("/nonexistent")).unwrap();
        let site = renderer.site_with(&config, false).unwrap();
        assert!(
            site.contains(
                "upstream cutover_shop_green {\n    server 127.0.0.1:8082 max_fails=0;\n    \
                 server 127.0.0.1:8081 backup max_fails=0;\n}"
            ),
            "{site}"
        );
        assert_eq!(Route::for_site(&config, Some(&site)), Route::Fallback);
        let include = renderer
            .include(&config, Color::Green, None, Route::Fallback)
            .unwrap();
        assert!(include.contains("set $service_url http://cutover_shop_green;"));
        assert!(include.contains("set $cutover_upstream http://127.0.0.1:8082;"));
        assert_eq!(crate::nginx::include_port(&include), Some(8082));
    }

    #[test]
    fn the_site_passes_websockets_on_with_a_connection_map_of_the_projects_own() {
        let config = demo_config();
        let renderer = Renderer::new(Path::new("/nonexistent")).unwrap();
        let site = renderer.site_with(&config, false).unwrap();
        assert!(
            site.contains(
                "map $http_upgrade $cutover_shop_connection {\n    default upgrade;\n    '' close;\n}"
            ),
            "{site}"
        );
        assert!(site.contains(
            "        proxy_http_version 1.1;\n        proxy_set_header Upgrade $http_upgrade;\n        \
             proxy_set_header Connection $cutover_shop_connection;\n"
        ));
        // Variable names take no `-`; `my-app` and `my_app` keep distinct ones.
        let named = |project: &str| {
            let text = format!(
                "project: {project}\napp: {{ name: web, image: example/web, port: 3000, memory: 64M }}\n\
                 colors: {{ blue: 8081, green: 8082 }}\n"
            );
            connection_variable(&Config::from_yaml(&text, Path::new("cutover.yml")).unwrap())
        };
        assert_eq!(named("my-app"), "cutover_my_dapp_connection");
        assert_eq!(named("my_app"), "cutover_my_uapp_connection");
    }

    #[test]
    fn a_site_without_both_groups_gets_the_direct_route() {
        let config = demo_config();
        assert_eq!(Route::for_site(&config, None), Route::Direct);
        let old_site = "server {\n    listen 80;\n    include /x.inc;\n}\n";
        assert_eq!(Route::for_site(&config, Some(old_site)), Route::Direct);
        // Groups with other addresses (written before `colors` changed): direct.
        let renderer = Renderer::new(Path::new("/nonexistent")).unwrap();
        let stale = renderer
            .site_with(&config, false)
            .unwrap()
            .replace("127.0.0.1:8082", "127.0.0.1:9999");
        assert_eq!(Route::for_site(&config, Some(&stale)), Route::Direct);
        // One group, a commented-out one, or another project's: not enough.
        let half = "upstream cutover_shop_blue {\n}\n# upstream cutover_shop_green {\n\
                    upstream cutover_other_green {\n}\n";
        assert_eq!(Route::for_site(&config, Some(half)), Route::Direct);
        let renderer = Renderer::new(Path::new("/nonexistent")).unwrap();
        let include = renderer
            .include(&config, Color::Blue, None, Route::Direct)
            .unwrap();
        assert!(include.contains("set $service_url http://127.0.0.1:8081;"));
    }

    #[test]
    fn env_values_escape_dollars_and_refuse_secret_collisions() {
        let env = BTreeMap::from([("A".to_string(), "pa$word".to_string())]);
        let items = env_items(&env, &BTreeSet::new(), "app").unwrap();
        assert_eq!(items[0].value, "pa$$word");
        let secrets = BTreeSet::from(["A".to_string()]);
        let err = env_items(&env, &secrets, "app").unwrap_err().to_string();
        assert!(err.starts_with("app.environment.A:"), "{err}");
        assert!(!err.contains("pa$word"), "must not print the value: {err}");
    }
}

#[cfg(test)]
mod secret_files_tests {
    use super::*;

    #[test]
    fn files_mode_mounts_each_services_own_files_and_names_no_value() {
        let yaml = "project: p\ncolors: {blue: 8001, green: 8002}\napp:\n  name: web\n  image: demo\n  port: 8080\n  memory: 64M\n  secrets: [s.env.age]\n  secrets_delivery: files\nworkers:\n  jobs:\n    command: [worker]\n    memory: 32M\naccessories:\n  db:\n    image: db\n    memory: 64M\n    secrets: [db.env.age]\n";
        let config = Config::from_yaml(yaml, Path::new("cutover.yml")).unwrap();
        let plan = Plan {
            images: BTreeMap::new(),
            secret_keys: SecretKeys {
                app: BTreeSet::from(["API_KEY".to_string()]),
                accessories: BTreeMap::from([(
                    "db".to_string(),
                    BTreeSet::from(["DB_PASSWORD".to_string()]),
                )]),
            },
            workers: BTreeMap::new(),
            secrets_dir: Some(PathBuf::from("/run/cutover/secrets/p")),
        };
        let text = Renderer::new(Path::new("/nonexistent"))
            .unwrap()
            .compose(&config, &plan)
            .unwrap();
        crate::config::check_yaml(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let services = &doc["services"];
        assert_eq!(
            services["web-blue"]["environment"]["API_KEY_FILE"], "/run/secrets/API_KEY",
            "{text}"
        );
        assert!(
            services["web-blue"]["environment"].get("API_KEY").is_none(),
            "{text}"
        );
        assert_eq!(
            services["web-jobs-green"]["volumes"][0]["source"],
            "/run/cutover/secrets/p/web-jobs-green/API_KEY"
        );
        assert_eq!(services["web-blue"]["volumes"][0]["read_only"], true);
        assert_eq!(
            services["db"]["volumes"][0]["source"],
            "/run/cutover/secrets/p/db/DB_PASSWORD"
        );
        assert_eq!(
            services["db"]["environment"]["DB_PASSWORD_FILE"],
            "/run/secrets/DB_PASSWORD"
        );
    }
}
