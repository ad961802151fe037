//! The shape of `cutover.yml`: one struct per section, with serde defaults.
//!
//! Only structure and defaults live here; what a single value may be is in
//! [`super::scalars`], and checks that span keys are in [`super::validate`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::scalars::{
    deserialize_ip, deserialize_memory, deserialize_positive_dur, CommandLine, Dur, Environment,
    Listen, Name, Port, Replicas, Restart, Size, Swap, Swappiness,
};

/// The two colors of a blue/green deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    pub const ALL: [Color; 2] = [Color::Blue, Color::Green];

    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated project configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The compose project name (`-p`), also the prefix of nothing else: services are named
    /// `<app.name>-blue` / `<app.name>-green`.
    pub project: Name,
    pub app: App,
    pub colors: Colors,
    #[serde(default)]
    pub accessories: BTreeMap<Name, Accessory>,
    /// Processes from the app's image beside the web app, updated after every switch.
    #[serde(default)]
    pub workers: BTreeMap<Name, super::Worker>,
    #[serde(default)]
    pub nginx: Nginx,
    #[serde(default)]
    pub host: Host,
    /// The Docker Swarm engine (`--engine swarm`); absent, only the compose engine is set up.
    #[serde(default)]
    pub swarm: Option<Swarm>,
    /// Where deploy state, the lock and history live, relative to the project directory.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// `cutover --host`: the box to run on over SSH and where the project lives there.
    #[serde(default, skip_serializing_if = "super::Remote::is_unset")]
    pub remote: super::Remote,
    /// Commands run around a deploy (compose engine; see `config/hooks.rs`).
    #[serde(default, skip_serializing_if = "super::Hooks::is_unset")]
    pub hooks: super::Hooks,
    /// `ship: ssh`: `cutover --host … deploy --image REF` sends the local image over SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship: Option<super::Ship>,
    /// `registry:`: `docker login` (password from the secrets) and an explicit pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<super::Registry>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub name: Name,
    /// Image repository (and optionally tag); the tag is chosen at deploy time.
    pub image: String,
    /// The port the app listens on inside its container.
    pub port: Port,
    /// `deploy.resources.limits.memory` for each color.
    #[serde(deserialize_with = "deserialize_memory")]
    pub memory: Size,
    /// Shared by both colors through one YAML anchor.
    #[serde(default)]
    pub environment: Environment,
    /// Encrypted dotenv files whose keys reach both colors as process environment.
    #[serde(default)]
    pub secrets: Vec<PathBuf>,
    /// How decrypted secrets reach the containers (the app's, its workers', the accessories').
    #[serde(default)]
    pub secrets_delivery: SecretsDelivery,
    #[serde(default)]
    pub depends_on: Vec<Name>,
    #[serde(default)]
    pub command: Option<CommandLine>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub health: Health,
    /// The watch window after the switch: the old color keeps running, out of traffic, while
    /// the new one must stay up and healthy; if it fails inside the window nginx switches
    /// back. `0s` skips the window.
    #[serde(default = "default_settle")]
    pub settle: Dur,
    /// Longest wait for in-flight requests on the old color before stopping it.
    #[serde(default = "default_drain")]
    pub drain: Dur,
    /// `docker compose stop -t` grace period for the old color, after the drain.
    #[serde(default = "default_stop_grace")]
    pub stop_grace: Dur,
    #[serde(default)]
    pub restart: Restart,
    /// How many recent app images `prune` (and each deploy) keeps for rollback.
    #[serde(default = "default_keep_images")]
    pub keep_images: usize,
    /// Run once per deploy in a one-off container of the new image, before it starts.
    #[serde(default)]
    pub release: Option<super::Argv>,
    #[serde(
        default = "super::hooks::default_release_timeout",
        deserialize_with = "deserialize_positive_dur"
    )]
    pub release_timeout: Dur,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default = "default_health_path")]
    pub path: String,
    /// How long the new color may take to become healthy.
    #[serde(
        default = "default_health_timeout",
        deserialize_with = "deserialize_positive_dur"
    )]
    pub timeout: Dur,
    #[serde(
        default = "default_health_interval",
        deserialize_with = "deserialize_positive_dur"
    )]
    pub interval: Dur,
    /// Per-request timeout of one health probe.
    #[serde(
        default = "default_probe_timeout",
        deserialize_with = "deserialize_positive_dur"
    )]
    pub probe_timeout: Dur,
    /// The HTTP status that counts as healthy.
    #[serde(default = "default_health_status")]
    pub status: u16,
    /// How many healthy answers in a row (with the container still running) pass the gate.
    #[serde(default = "default_healthy_checks")]
    pub healthy_checks: u32,
    /// The container `healthcheck.test` for the swarm engine (swarm gates rollouts on it; the
    /// compose engine probes from the host instead) [default: `CMD-SHELL curl -fsS
    /// http://127.0.0.1:<port><path> || exit 1`].
    #[serde(default)]
    pub command: Option<Vec<String>>,
}

impl Health {
    /// The longest wait between the healthy answers that confirm the first one: a quarter of
    /// the interval, at least 20 ms (and never more than the interval). An upper bound: the
    /// compose engine's gate confirms faster (2 ms apart, `health_gate::CONFIRM_EVERY`); config
    /// validation uses this bound to check the confirmations fit in `timeout`.
    pub fn confirmation_interval(&self) -> Duration {
        let interval = self.interval.get();
        (interval / 4).max(Duration::from_millis(20)).min(interval)
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            path: default_health_path(),
            timeout: default_health_timeout(),
            interval: default_health_interval(),
            probe_timeout: default_probe_timeout(),
            status: default_health_status(),
            healthy_checks: default_healthy_checks(),
            command: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Colors {
    pub blue: Port,
    pub green: Port,
    /// Host address the color ports are published on; loopback keeps the app behind nginx.
    #[serde(default = "default_bind", deserialize_with = "deserialize_ip")]
    pub bind: IpAddr,
}

impl Colors {
    pub fn port(&self, color: Color) -> u16 {
        match color {
            Color::Blue => self.blue.0,
            Color::Green => self.green.0,
        }
    }

    /// The address nginx and the health gate use to reach a color from the host.
    pub fn upstream_host(&self) -> IpAddr {
        if self.bind.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            self.bind
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Accessory {
    pub image: String,
    #[serde(deserialize_with = "deserialize_memory")]
    pub memory: Size,
    #[serde(default)]
    pub command: Option<CommandLine>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub environment: Environment,
    #[serde(default)]
    pub secrets: Vec<PathBuf>,
    /// Published ports, as compose writes them (`127.0.0.1:3306:3306`).
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub restart: Restart,
}

/// `swarm:`: how the swarm engine runs the app as one replicated service with rolling updates.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Swarm {
    /// The port published on every node through swarm's routing mesh.
    pub port: Port,
    /// How many tasks (containers) of the app run.
    #[serde(default = "default_replicas")]
    pub replicas: Replicas,
    /// How long a new task must stay healthy before the update counts it as a success
    /// (`update_config.monitor`).
    #[serde(default = "default_monitor")]
    pub monitor: Dur,
    /// Pause between replacing one task and the next (`update_config.delay`).
    #[serde(default)]
    pub update_delay: Option<Dur>,
    /// Longest wait for a rollout to converge or roll back.
    #[serde(
        default = "default_swarm_timeout",
        deserialize_with = "deserialize_positive_dur"
    )]
    pub timeout: Dur,
    /// `docker stack deploy --resolve-image`: `always` pins the registry digest so every node
    /// runs the same image; `never` uses local images only (a box without a registry).
    #[serde(default = "default_resolve_image")]
    pub resolve_image: ResolveImage,
    /// How traffic reaches the tasks: `ingress` (swarm's routing mesh on `port`, needs IPVS
    /// in every node's kernel) or `host` (blue and green as two global services on the color
    /// ports of every node, a front nginx upstream over the nodes' addresses, cutover's own
    /// gate, switch, watch window and drain).
    #[serde(default)]
    pub routing: Routing,
    /// `routing: host`: the http-level nginx file holding the `upstream` of the active color
    /// over every node, rewritten on every switch
    /// [default: /etc/nginx/conf.d/cutover-<project>-swarm.conf].
    #[serde(default)]
    pub upstream: Option<PathBuf>,
}

/// `swarm.routing` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    #[default]
    Ingress,
    Host,
}

/// `app.secrets_delivery`: how the compose engine hands decrypted secrets to containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretsDelivery {
    /// As container environment variables: simple, but Docker keeps a container's
    /// environment in its state on disk (`config.v2.json`).
    #[default]
    Env,
    /// As read-only files at `/run/secrets/<KEY>` (and `<KEY>_FILE` naming them), from a
    /// tmpfs on the box (`secrets/files.rs`): no value in Docker's state or the compose file.
    Files,
}

/// `docker stack deploy --resolve-image` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResolveImage {
    Always,
    Changed,
    Never,
}

impl ResolveImage {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolveImage::Always => "always",
            ResolveImage::Changed => "changed",
            ResolveImage::Never => "never",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Nginx {
    /// The include file holding `set $service_url …;`, rewritten on every switch.
    #[serde(default = "default_include")]
    pub include: PathBuf,
    /// Where `bootstrap` installs the site that includes it.
    #[serde(default = "default_site")]
    pub site: PathBuf,
    /// `listen` of the site's server block: a port (`80`) or `address:port`.
    #[serde(default = "default_listen")]
    pub listen: Listen,
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// Base URL that reaches this site through nginx, for the probe after a reload
    /// [default: http://127.0.0.1:<listen port>].
    #[serde(default)]
    pub probe: Option<String>,
    #[serde(default = "default_nginx_test")]
    pub test: Vec<String>,
    #[serde(default = "default_nginx_reload")]
    pub reload: Vec<String>,
    /// HTTPS with a certificate from an ACME server (`cutover tls issue`, bootstrap).
    #[serde(default)]
    pub tls: Option<Tls>,
    /// How a deploy switches colors: `reload` (the include + `nginx -s reload`), `nft` (an
    /// nftables DNAT from `switch_ports`, no reload), `auto` (nft where it can work).
    #[serde(default)]
    pub switch: SwitchMode,
    /// The two stable loopback ports nginx's upstream group names in nft mode: `[primary,
    /// backup]`; the kernel maps them to the colors.
    #[serde(default)]
    pub switch_ports: Option<[Port; 2]>,
}

/// `nginx.switch:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchMode {
    /// nft when `nginx.switch_ports` is set, `nft` runs and may change rules, and the color
    /// ports have a listener; else reload, said once.
    Auto,
    /// nftables DNAT; refused where it cannot work.
    Nft,
    /// The include + reload (every deploy reloads nginx).
    #[default]
    Reload,
}

/// `nginx.tls:`: a certificate from an ACME CA via certbot's webroot method, a 443 server and
/// an HTTP → HTTPS redirect for everything but the challenge path.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The names on the certificate; the first names it (`--cert-name`).
    pub domains: Vec<String>,
    /// The ACME account's contact address.
    pub email: String,
    /// The ACME directory URL [default: Let's Encrypt's production directory].
    #[serde(default = "default_acme_server")]
    pub acme_server: String,
    /// `Strict-Transport-Security` on HTTPS answers (opt-in: it cannot be taken back quickly).
    #[serde(default)]
    pub hsts: bool,
    /// `listen` of the HTTPS server block.
    #[serde(default = "default_tls_listen")]
    pub listen: Listen,
    /// The directory nginx serves `/.well-known/acme-challenge/` from and certbot writes to.
    #[serde(default = "default_webroot")]
    pub webroot: PathBuf,
    /// certbot's `--config-dir` (certificates, renewal config, hooks).
    #[serde(default = "default_certbot_config_dir")]
    pub config_dir: PathBuf,
    /// certbot's `--work-dir`.
    #[serde(default = "default_certbot_work_dir")]
    pub work_dir: PathBuf,
    /// certbot's `--logs-dir`.
    #[serde(default = "default_certbot_logs_dir")]
    pub logs_dir: PathBuf,
    /// The cron file that runs `certbot renew` twice a day
    /// [default: /etc/cron.d/cutover-certbot-<project>].
    #[serde(default)]
    pub renew_cron: Option<PathBuf>,
}

impl Tls {
    /// certbot's name for the certificate lineage: the first domain.
    pub fn cert_name(&self) -> &str {
        self.domains.first().map(String::as_str).unwrap_or("")
    }

    /// `<config_dir>/live/<cert name>/`.
    pub fn live_dir(&self) -> PathBuf {
        self.config_dir.join("live").join(self.cert_name())
    }

    pub fn fullchain(&self) -> PathBuf {
        self.live_dir().join("fullchain.pem")
    }

    pub fn privkey(&self) -> PathBuf {
        self.live_dir().join("privkey.pem")
    }

    /// The port of [`Tls::listen`] (`443`, `127.0.0.1:8443`).
    pub fn port(&self) -> Option<u16> {
        self.listen.0.rsplit(':').next()?.parse().ok()
    }
}

impl Default for Nginx {
    fn default() -> Self {
        Nginx {
            include: default_include(),
            site: default_site(),
            listen: default_listen(),
            server_name: default_server_name(),
            probe: None,
            test: default_nginx_test(),
            reload: default_nginx_reload(),
            tls: None,
            switch: SwitchMode::default(),
            switch_ports: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    #[serde(default)]
    pub swap: Swap,
    #[serde(default = "default_swappiness")]
    pub swappiness: Swappiness,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            swap: Swap::Auto,
            swappiness: default_swappiness(),
        }
    }
}

impl Nginx {
    /// Where cutover reaches the site through nginx from this box.
    pub fn probe_base(&self) -> String {
        if let Some(url) = &self.probe {
            return url.trim_end_matches('/').to_string();
        }
        let listen = &self.listen.0;
        match listen.parse::<std::net::SocketAddr>() {
            Ok(addr) if addr.ip().is_unspecified() => format!("http://127.0.0.1:{}", addr.port()),
            Ok(addr) => format!("http://{addr}"),
            Err(_) => format!("http://127.0.0.1:{listen}"),
        }
    }

    /// The port of `listen` (`80`, `127.0.0.1:8080`, `[::]:80`).
    pub fn listen_port(&self) -> Option<u16> {
        let listen = &self.listen.0;
        listen.parse::<u16>().ok().or_else(|| {
            listen
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(|a| a.port())
        })
    }

    /// The Host header for probes, when the site answers a specific server_name.
    ///
    /// A wildcard name gets a host it matches (`*.example.com`: `cutover-probe.example.com`,
    /// `www.example.*`: `www.example.cutover-probe`, `.example.com`: `example.com`), so
    /// beside another project on the same port the probe still reaches this site, not the
    /// port's default server. `_` and regular expressions give none.
    pub fn probe_host(&self) -> Option<String> {
        self.server_name.split_whitespace().find_map(|name| {
            if name == "_" || name.starts_with('~') {
                None
            } else if let Some(rest) = name.strip_prefix("*.") {
                Some(format!("cutover-probe.{rest}"))
            } else if let Some(rest) = name.strip_suffix(".*") {
                Some(format!("{rest}.cutover-probe"))
            } else if let Some(rest) = name.strip_prefix('.') {
                Some(rest.to_string())
            } else {
                Some(name.to_string())
            }
        })
    }
}

impl Config {
    /// Service name of a color: `<app>-blue` / `<app>-green`.
    pub fn service(&self, color: Color) -> String {
        format!("{}-{}", self.app.name, color)
    }

    /// Service name of a worker's color: `<app>-<worker>-blue` / `-green`.
    pub fn worker_service(&self, worker: &str, color: Color) -> String {
        format!("{}-{worker}-{color}", self.app.name)
    }

    /// Whether `workers:` names `worker`.
    pub fn has_worker(&self, worker: &str) -> bool {
        self.workers.keys().any(|n| n.as_str() == worker)
    }

    /// Which worker and color a compose service name belongs to, if any.
    pub fn worker_of_service(&self, service: &str) -> Option<(&Name, Color)> {
        self.workers.keys().find_map(|name| {
            Color::ALL
                .into_iter()
                .find(|c| self.worker_service(name.as_str(), *c) == service)
                .map(|c| (name, c))
        })
    }

    /// Which color a compose service name belongs to, if any.
    pub fn color_of_service(&self, service: &str) -> Option<Color> {
        Color::ALL.into_iter().find(|c| self.service(*c) == service)
    }

    /// The image reference used when nothing has been deployed to a color yet.
    pub fn default_image(&self) -> String {
        self.app.image.clone()
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".cutover")
}
fn default_settle() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_healthy_checks() -> u32 {
    3
}
fn default_drain() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_stop_grace() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_keep_images() -> usize {
    3
}
fn default_health_path() -> String {
    "/health".to_string()
}
fn default_health_timeout() -> Dur {
    Dur(Duration::from_secs(90))
}
fn default_health_interval() -> Dur {
    Dur(Duration::from_millis(500))
}
fn default_probe_timeout() -> Dur {
    Dur(Duration::from_secs(2))
}
fn default_health_status() -> u16 {
    200
}
fn default_bind() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
fn default_include() -> PathBuf {
    PathBuf::from("/etc/nginx/conf.d/service-url.inc")
}
fn default_site() -> PathBuf {
    PathBuf::from("/etc/nginx/sites-enabled/cutover.conf")
}
fn default_listen() -> Listen {
    Listen("80".to_string())
}
fn default_server_name() -> String {
    "_".to_string()
}
fn default_replicas() -> Replicas {
    Replicas(2)
}
fn default_monitor() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_swarm_timeout() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_resolve_image() -> ResolveImage {
    ResolveImage::Always
}
fn default_nginx_test() -> Vec<String> {
    vec!["nginx".into(), "-t".into()]
}
fn default_nginx_reload() -> Vec<String> {
    vec!["nginx".into(), "-s".into(), "reload".into()]
}
fn default_acme_server() -> String {
    "https://acme-v02.api.letsencrypt.org/directory".to_string()
}
fn default_tls_listen() -> Listen {
    Listen("443".to_string())
}
fn default_webroot() -> PathBuf {
    PathBuf::from("/var/www/cutover-acme")
}
fn default_certbot_config_dir() -> PathBuf {
    PathBuf::from("/etc/letsencrypt")
}
fn default_certbot_work_dir() -> PathBuf {
    PathBuf::from("/var/lib/letsencrypt")
}
fn default_certbot_logs_dir() -> PathBuf {
    PathBuf::from("/var/log/letsencrypt")
}
fn default_swappiness() -> Swappiness {
    Swappiness(10)
}
