//! `cutover.yml` → a validated [`Config`].
//!
//! This is the only module that parses YAML. Deserialization goes straight from the text when
//! it can, so serde_yaml's errors carry the key path *and* the line
//! (`app.health.timeout: … at line 12 column 14`). Only a file that uses `<<` merge keys goes
//! through `Value::apply_merge()` first (serde_yaml does not apply merges when deserializing
//! into structs), at the cost of line numbers. Checks that span keys (equal color ports, an
//! accessory named like a color service) run after deserialization and name the key path.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

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
    #[serde(default, skip_serializing_if = "Remote::is_unset")]
    pub remote: Remote,
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
    pub memory: Size,
    /// Shared by both colors through one YAML anchor.
    #[serde(default)]
    pub environment: Environment,
    /// Encrypted dotenv files whose keys reach both colors as process environment.
    #[serde(default)]
    pub secrets: Vec<PathBuf>,
    #[serde(default)]
    pub depends_on: Vec<Name>,
    #[serde(default)]
    pub command: Option<CommandLine>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub health: Health,
    /// Longest wait for in-flight requests on the old color before stopping it.
    #[serde(default = "default_drain")]
    pub drain: Dur,
    /// `docker compose stop -t` grace period for the old color, after the drain.
    #[serde(default = "default_stop_grace")]
    pub stop_grace: Dur,
    #[serde(default = "default_restart")]
    pub restart: String,
    /// How many recent app images `prune` (and each deploy) keeps for rollback.
    #[serde(default = "default_keep_images")]
    pub keep_images: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default = "default_health_path")]
    pub path: String,
    /// How long the new color may take to become healthy.
    #[serde(default = "default_health_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_health_interval")]
    pub interval: Dur,
    /// Per-request timeout of one health probe.
    #[serde(default = "default_probe_timeout")]
    pub probe_timeout: Dur,
    /// The HTTP status that counts as healthy.
    #[serde(default = "default_health_status")]
    pub status: u16,
    /// The container `healthcheck.test` for the swarm engine (swarm gates rollouts on it; the
    /// compose engine probes from the host instead) [default: `CMD-SHELL curl -fsS
    /// http://127.0.0.1:<port><path> || exit 1`].
    #[serde(default)]
    pub command: Option<Vec<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            path: default_health_path(),
            timeout: default_health_timeout(),
            interval: default_health_interval(),
            probe_timeout: default_probe_timeout(),
            status: default_health_status(),
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
    #[serde(default = "default_restart")]
    pub restart: String,
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
    #[serde(default = "default_swarm_timeout")]
    pub timeout: Dur,
    /// `docker stack deploy --resolve-image`: `always` pins the registry digest so every node
    /// runs the same image; `never` uses local images only (a box without a registry).
    #[serde(default = "default_resolve_image")]
    pub resolve_image: ResolveImage,
}

/// `swarm.replicas`, 1–100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Replicas(pub u32);

impl<'de> Deserialize<'de> for Replicas {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_int(d, "a number of replicas from 1 to 100", |n| {
            if (1..=100).contains(&n) {
                Ok(Replicas(n as u32))
            } else {
                Err(format!("{n} replicas is out of range (expected 1 to 100)"))
            }
        })
    }
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

/// `host.swap`: `auto` (AWS table), `off`, or a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Swap {
    #[default]
    Auto,
    Off,
    Size(Size),
}

impl Swap {
    pub fn parse(text: &str) -> Result<Swap, String> {
        match text.trim() {
            "auto" => Ok(Swap::Auto),
            "off" | "none" | "0" => Ok(Swap::Off),
            other => Size::parse(other)
                .map(Swap::Size)
                .map_err(|e| format!("{e}, or `auto` or `off`")),
        }
    }
}

impl<'de> Deserialize<'de> for Swap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, "a swap size, `auto` or `off`", Swap::parse)
    }
}

impl Serialize for Swap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Swap::Auto => s.serialize_str("auto"),
            Swap::Off => s.serialize_str("off"),
            Swap::Size(size) => size.serialize(s),
        }
    }
}

/// `vm.swappiness`, 0–100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Swappiness(pub u8);

impl<'de> Deserialize<'de> for Swappiness {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_int(d, "a swappiness from 0 to 100", |n| {
            if (0..=100).contains(&n) {
                Ok(Swappiness(n as u8))
            } else {
                Err(format!(
                    "swappiness {n} is out of range (expected 0 to 100)"
                ))
            }
        })
    }
}

/// A compose-safe name: lowercase letters, digits, `-` and `_`, starting with a letter or
/// digit (compose lowercases project names and rejects others; we refuse rather than guess).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Name(pub String);

impl Name {
    pub fn parse(text: &str) -> Result<Name, String> {
        let valid = !text.is_empty()
            && text.len() <= 63
            && text
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if valid {
            Ok(Name(text.to_string()))
        } else {
            Err(format!(
                "invalid name `{text}` (expected lowercase letters, digits, `-` or `_`, starting with a letter or digit)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, "a name", Name::parse)
    }
}

/// A TCP port, 1–65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_int(d, "a port number from 1 to 65535", |n| {
            if (1..=65535).contains(&n) {
                Ok(Port(n as u16))
            } else {
                Err(format!("port {n} is out of range (expected 1 to 65535)"))
            }
        })
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
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

    /// The Host header for probes, when the site answers a specific server_name.
    pub fn probe_host(&self) -> Option<&str> {
        let first = self.server_name.split_whitespace().next()?;
        (first != "_" && !first.starts_with('~') && !first.contains('*')).then_some(first)
    }
}

/// nginx `listen`: a port or `address:port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listen(pub String);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, "a port or address:port", |text| {
            let valid = text.parse::<u16>().is_ok_and(|p| p > 0)
                || text.parse::<std::net::SocketAddr>().is_ok();
            if valid {
                Ok(Listen(text.to_string()))
            } else {
                Err(format!(
                    "`{text}` is not a listen address (expected a port such as 80, or address:port such as 127.0.0.1:8080)"
                ))
            }
        })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A byte size written like compose writes memory limits: `512M`, `1G`, `256m`, `1024k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(text: &str) -> Result<Size, String> {
        let expected = "expected a size such as 512M, 1G or 1024k";
        let t = text.trim();
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(digits_end);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size `{text}` ({expected})"))?;
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            _ => return Err(format!("invalid size `{text}` ({expected})")),
        };
        let bytes = n
            .checked_mul(mult)
            .ok_or_else(|| format!("size `{text}` is too large"))?;
        if bytes == 0 {
            return Err(format!("size `{text}` is zero ({expected})"));
        }
        Ok(Size(bytes))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// Renders in the largest whole unit, the form compose and nginx users write.
impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
            if b.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", b >> shift);
            }
        }
        write!(f, "{b}")
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, "a size such as 512M", Size::parse)
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A duration written like `90s`, `500ms`, `2m`, `1m 30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn parse(text: &str) -> Result<Dur, String> {
        humantime::parse_duration(text.trim())
            .map(Dur)
            .map_err(|_| {
                format!("invalid duration `{text}` (expected e.g. 90s, 500ms, 2m or 1m 30s)")
            })
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, "a duration such as 90s", Dur::parse)
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Environment as a map; YAML may also give a list of `KEY=value` (compose's list form).
/// Numbers and booleans are kept as their text, as compose does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Environment(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Map(BTreeMap<String, serde_yaml::Value>),
            List(Vec<String>),
        }
        let form = Form::deserialize(d).map_err(|_| {
            de::Error::custom("expected a map of KEY: value, or a list of KEY=value")
        })?;
        let mut out = BTreeMap::new();
        match form {
            Form::Map(map) => {
                for (key, value) in map {
                    let text = match value {
                        serde_yaml::Value::String(s) => s,
                        serde_yaml::Value::Number(n) => n.to_string(),
                        serde_yaml::Value::Bool(b) => b.to_string(),
                        serde_yaml::Value::Null => String::new(),
                        _ => {
                            return Err(de::Error::custom(format!(
                                "`{key}` must be a string, number or boolean"
                            )))
                        }
                    };
                    check_env_key(&key).map_err(de::Error::custom)?;
                    out.insert(key, text);
                }
            }
            Form::List(items) => {
                for item in items {
                    let (key, value) = item
                        .split_once('=')
                        .ok_or_else(|| de::Error::custom(format!("`{item}` is not KEY=value")))?;
                    check_env_key(key).map_err(de::Error::custom)?;
                    out.insert(key.to_string(), value.to_string());
                }
            }
        }
        Ok(Environment(out))
    }
}

fn check_env_key(key: &str) -> Result<(), String> {
    let ok = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid environment key `{key}` (expected letters, digits and `_`, not starting with a digit)"
        ))
    }
}

/// A container command: a string (split by compose's shell-like rules) or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    Shell(String),
    Argv(Vec<String>),
}

/// Deserializes a scalar through `parse` *inside* the deserializer's visitor, so serde_yaml
/// attaches the full key path and the line of the value to the error.
fn parse_scalar<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<'de, T> de::Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            (self.parse)(&v.to_string()).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            (self.parse)(&v.to_string()).map_err(E::custom)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            (self.parse)(&v.to_string()).map_err(E::custom)
        }
    }
    d.deserialize_any(V { expecting, parse })
}

/// Like [`parse_scalar`] for integers only.
fn parse_int<'de, D, T>(
    d: D,
    expecting: &'static str,
    check: fn(i64) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        expecting: &'static str,
        check: fn(i64) -> Result<T, String>,
    }
    impl<'de, T> de::Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            (self.check)(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            let v = i64::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))?;
            (self.check)(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V { expecting, check })
}

fn deserialize_ip<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    parse_scalar(d, "an IP address", |text| {
        text.parse().map_err(|_| {
            format!("`{text}` is not an IP address (expected e.g. 127.0.0.1, 0.0.0.0 or ::1)")
        })
    })
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".cutover")
}
fn default_drain() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_stop_grace() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_restart() -> String {
    "on-failure".to_string()
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
fn default_swappiness() -> Swappiness {
    Swappiness(10)
}

/// The loaded config plus where it came from, so later errors can name the file.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    /// The project directory: relative paths in the config are relative to it.
    pub dir: PathBuf,
}

impl Loaded {
    /// Absolute path of a config-relative path.
    pub fn resolve(&self, rel: &Path) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.resolve(&self.config.state_dir)
    }
}

impl Config {
    /// Service name of a color: `<app>-blue` / `<app>-green`.
    pub fn service(&self, color: Color) -> String {
        format!("{}-{}", self.app.name, color)
    }

    /// Which color a compose service name belongs to, if any.
    pub fn color_of_service(&self, service: &str) -> Option<Color> {
        Color::ALL.into_iter().find(|c| self.service(*c) == service)
    }

    /// The image reference used when nothing has been deployed to a color yet.
    pub fn default_image(&self) -> String {
        self.app.image.clone()
    }

    /// Parses and validates config text. `file` is only used in messages.
    pub fn from_yaml(text: &str, file: &Path) -> anyhow::Result<Config> {
        let shown = file.display();
        let value: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}", located(&shown, &e)))
            .context("the file is not valid YAML")?;
        if value.is_null() {
            bail!("{shown}: the file is empty (expected at least `project`, `app` and `colors`)");
        }
        // Compose-style `x-*` keys hold anchors; they need the Value path like merges do.
        let config: Config = if has_merge_key(&value) || has_extension_key(&value) {
            let mut merged = value;
            merged
                .apply_merge()
                .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
            if let serde_yaml::Value::Mapping(map) = &mut merged {
                map.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with("x-")));
            }
            serde_yaml::from_value(merged).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?
        } else {
            serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("{}", located(&shown, &e)))?
        };
        config.validate().map_err(|e| {
            let line = find_key_line(text, &e.key);
            match line {
                Some(line) => anyhow::anyhow!("{shown}:{line}: {}: {}", e.key, e.message),
                None => anyhow::anyhow!("{shown}: {}: {}", e.key, e.message),
            }
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Invalid> {
        let colors = &self.colors;
        if colors.blue == colors.green {
            return Err(Invalid::new(
                "colors.green",
                format!(
                    "port {} is also colors.blue (expected two different host ports)",
                    colors.green
                ),
            ));
        }
        if self.app.image.trim().is_empty() || self.app.image.contains(char::is_whitespace) {
            return Err(Invalid::new(
                "app.image",
                format!(
                    "`{}` is not an image reference (expected e.g. myuser/app or myuser/app:1.2)",
                    self.app.image
                ),
            ));
        }
        if !self.app.health.path.starts_with('/') {
            return Err(Invalid::new(
                "app.health.path",
                format!("`{}` must start with `/`", self.app.health.path),
            ));
        }
        if self.app.health.interval.0 > self.app.health.timeout.0 {
            return Err(Invalid::new(
                "app.health.interval",
                format!(
                    "{} is longer than app.health.timeout ({})",
                    self.app.health.interval, self.app.health.timeout
                ),
            ));
        }
        if !(100..=599).contains(&self.app.health.status) {
            return Err(Invalid::new(
                "app.health.status",
                format!(
                    "{} is not an HTTP status (expected 100 to 599)",
                    self.app.health.status
                ),
            ));
        }
        let color_services = [
            self.service(Color::Blue),
            self.service(Color::Green),
            self.app.name.0.clone(),
        ];
        for name in self.accessories.keys() {
            if color_services.contains(&name.0) {
                return Err(Invalid::new(
                    format!("accessories.{name}"),
                    format!(
                        "`{name}` collides with the app's color services ({} and {}); rename the accessory",
                        color_services[0], color_services[1]
                    ),
                ));
            }
        }
        for dep in &self.app.depends_on {
            if !self.accessories.contains_key(dep) {
                return Err(Invalid::new(
                    "app.depends_on",
                    format!(
                        "`{dep}` is not an accessory (expected one of: {})",
                        list_or_none(self.accessories.keys().map(|n| n.as_str()))
                    ),
                ));
            }
        }
        if let Some(command) = &self.app.health.command {
            let kind = command.first().map(String::as_str);
            let ok = match kind {
                Some("NONE") => command.len() == 1,
                Some("CMD") | Some("CMD-SHELL") => command.len() >= 2,
                _ => false,
            };
            if !ok {
                return Err(Invalid::new(
                    "app.health.command",
                    "expected a healthcheck test list: [CMD, prog, args…], [CMD-SHELL, \"shell command\"] or [NONE]".to_string(),
                ));
            }
        }
        for argv_key in ["test", "reload"] {
            let argv = if argv_key == "test" {
                &self.nginx.test
            } else {
                &self.nginx.reload
            };
            if argv.first().is_none_or(|p| p.trim().is_empty()) {
                return Err(Invalid::new(
                    format!("nginx.{argv_key}"),
                    "must be a non-empty command list, e.g. [nginx, -t]".to_string(),
                ));
            }
        }
        if self.nginx.include.as_os_str().is_empty() {
            return Err(Invalid::new(
                "nginx.include",
                "must be a file path".to_string(),
            ));
        }
        Ok(())
    }
}

fn list_or_none<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    if items.is_empty() {
        "none are defined".to_string()
    } else {
        items.join(", ")
    }
}

/// A failed cross-key check, before it learns its file and line.
struct Invalid {
    key: String,
    message: String,
}

impl Invalid {
    fn new(key: impl Into<String>, message: String) -> Self {
        Invalid {
            key: key.into(),
            message,
        }
    }
}

/// Formats a serde_yaml error as `file:line:col: path: message`.
fn located(file: &impl fmt::Display, err: &serde_yaml::Error) -> String {
    let text = err.to_string();
    match err.location() {
        Some(loc) => {
            // serde_yaml appends " at line X column Y"; we put it in front instead.
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            let message = text.strip_suffix(&suffix).unwrap_or(&text);
            format!("{file}:{}:{}: {message}", loc.line(), loc.column())
        }
        None => format!("{file}: {text}"),
    }
}

fn has_extension_key(value: &serde_yaml::Value) -> bool {
    value.as_mapping().is_some_and(|m| {
        m.keys()
            .any(|k| k.as_str().is_some_and(|k| k.starts_with("x-")))
    })
}

fn has_merge_key(value: &serde_yaml::Value) -> bool {
    match value {
        serde_yaml::Value::Mapping(map) => map
            .iter()
            .any(|(k, v)| k.as_str() == Some("<<") || has_merge_key(v)),
        serde_yaml::Value::Sequence(seq) => seq.iter().any(has_merge_key),
        serde_yaml::Value::Tagged(t) => has_merge_key(&t.value),
        _ => false,
    }
}

/// Best-effort line of a dotted key path (`colors.green`) for messages: follows block-style
/// nesting by indentation and finds the rest of the path inside a flow map on the same line.
fn find_key_line(text: &str, key_path: &str) -> Option<usize> {
    let parts: Vec<&str> = key_path.split('.').collect();
    let mut depth = 0;
    let mut parent_indent: Option<usize> = None;
    for (idx, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let indent = line.len() - trimmed.len();
        match parent_indent {
            Some(p) if indent <= p => return None,
            None if indent != 0 => continue,
            _ => {}
        }
        let Some(rest) = trimmed
            .strip_prefix(parts[depth])
            .and_then(|r| r.trim_start().strip_prefix(':'))
        else {
            continue;
        };
        depth += 1;
        if depth == parts.len() || flow_contains(rest, &parts[depth..]) {
            return Some(idx + 1);
        }
        parent_indent = Some(indent);
    }
    None
}

fn flow_contains(mut rest: &str, keys: &[&str]) -> bool {
    for key in keys {
        let found = ["{", ",", " "].iter().find_map(|sep| {
            let needle = format!("{sep}{key}:");
            rest.find(&needle).map(|at| at + needle.len())
        });
        match found {
            Some(after) => rest = &rest[after..],
            None => return false,
        }
    }
    true
}

/// Checks that text is well-formed YAML (for rendered files), with the line of the problem.
pub fn check_yaml(text: &str) -> anyhow::Result<()> {
    serde_yaml::from_str::<serde_yaml::Value>(text)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{}", located(&"rendered file", &e)))
}

/// Reads and validates the config file, naming it in every error.
pub fn load(path: &Path, dir: &Path) -> anyhow::Result<Loaded> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{}: no such file (run `cutover init` to create one, or pass -C DIR / --config FILE)",
            path.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("could not read {}", path.display()));
        }
    };
    let config = Config::from_yaml(&text, path)
        .with_context(|| format!("invalid config {}", path.display()))?;
    let mut loaded = Loaded {
        config,
        path: path.to_owned(),
        dir: dir.to_owned(),
    };
    // nginx needs absolute paths; relative ones in the config are relative to the project.
    loaded.config.nginx.include = loaded.resolve(&loaded.config.nginx.include);
    loaded.config.nginx.site = loaded.resolve(&loaded.config.nginx.site);
    check_files_exist(&loaded)?;
    Ok(loaded)
}

fn check_files_exist(loaded: &Loaded) -> anyhow::Result<()> {
    let cfg = &loaded.config;
    let app = cfg
        .app
        .secrets
        .iter()
        .map(|p| ("app.secrets".to_string(), p));
    let acc = cfg.accessories.iter().flat_map(|(name, a)| {
        a.secrets
            .iter()
            .map(move |p| (format!("accessories.{name}.secrets"), p))
    });
    for (key, rel) in app.chain(acc) {
        let abs = loaded.resolve(rel);
        if !abs.is_file() {
            bail!(
                "invalid config {}: {key}: secrets file {} does not exist (create it with `cutover secrets encrypt`)",
                loaded.path.display(),
                abs.display()
            );
        }
    }
    Ok(())
}

// ---- remote: (issue #12) -------------------------------------------------------------------
// Self-contained so it moves as one block when this file is split.

/// `remote:` in cutover.yml, read on the machine that runs `cutover --host` (see
/// `src/remote/`). The box's own copy of the project ignores it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// `[user@]host[:port]` (or a `Host` alias from ~/.ssh/config); `--host` and
    /// `CUTOVER_HOST` take precedence.
    #[serde(default)]
    pub host: Option<String>,
    /// The project directory on the box; `~/` is the SSH user's home.
    /// [default: `~/cutover/<project>`]
    #[serde(default)]
    pub dir: Option<String>,
}

impl Remote {
    pub fn is_unset(&self) -> bool {
        self == &Remote::default()
    }

    /// `remote.dir`, else `~/cutover/<project>`.
    pub fn dir_or_default(&self, project: &Name) -> String {
        self.dir
            .clone()
            .unwrap_or_else(|| format!("~/cutover/{}", project.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "project: demo\napp:\n  name: web\n  image: demo/web\n  port: 8080\n  memory: 128M\ncolors: { blue: 8081, green: 8082 }\n";

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_yaml(text, Path::new("cutover.yml")).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.colors.bind.to_string(), "127.0.0.1");
        assert_eq!(c.app.health.path, "/health");
        assert_eq!(c.app.health.timeout.get(), Duration::from_secs(90));
        assert_eq!(c.app.memory.bytes(), 128 << 20);
        assert_eq!(c.service(Color::Green), "web-green");
        assert_eq!(c.nginx.test, ["nginx", "-t"]);
        assert_eq!(c.host.swap, Swap::Auto);
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(Size::parse("512M").unwrap().bytes(), 512 << 20);
        assert_eq!(Size::parse("1g").unwrap().bytes(), 1 << 30);
        assert_eq!(Size::parse("1024k").unwrap().to_string(), "1M");
        assert_eq!(Size::parse("1536M").unwrap().to_string(), "1536M");
        for bad in ["512X", "", "M", "-1M", "0", "1.5G"] {
            assert!(Size::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            Dur::parse("500ms").unwrap().get(),
            Duration::from_millis(500)
        );
        assert_eq!(Dur::parse("1m 30s").unwrap().get(), Duration::from_secs(90));
        assert!(Dur::parse("9x").is_err());
    }

    #[test]
    fn merge_keys_are_applied() {
        let text = "x-env: &env { A: '1' }\nproject: demo\napp:\n  name: web\n  image: demo/web\n  port: 8080\n  memory: 128M\n  environment:\n    <<: *env\n    B: '2'\ncolors: { blue: 8081, green: 8082 }\n";
        let c = parse(text).unwrap();
        assert_eq!(c.app.environment.0["A"], "1");
        assert_eq!(c.app.environment.0["B"], "2");
        // Unknown keys are still refused on the merge path.
        let err = parse(&text.replace("    B: '2'\n", "    B: '2'\n  bogus: 1\n")).unwrap_err();
        assert!(err.contains("unknown field `bogus`"), "{err}");
    }

    #[test]
    fn cross_key_errors_name_key_and_line() {
        let text = MINIMAL.replace("green: 8082", "green: 8081");
        let err = parse(&text).unwrap_err();
        assert!(
            err.starts_with("cutover.yml:7: colors.green: port 8081"),
            "{err}"
        );
    }

    #[test]
    fn key_line_finder_follows_nesting() {
        let text = "app:\n  name: x\n  health:\n    path: /h\nhealth:\n  path: /other\n";
        assert_eq!(find_key_line(text, "app.health.path"), Some(4));
        assert_eq!(find_key_line(text, "health.path"), Some(6));
        assert_eq!(find_key_line(text, "nope"), None);
    }

    #[test]
    fn environment_accepts_list_and_scalars() {
        let text = MINIMAL.replace(
            "  memory: 128M\n",
            "  memory: 128M\n  environment: { PORT: 8080, DEBUG: true, NAME: x }\n",
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.app.environment.0["PORT"], "8080");
        assert_eq!(c.app.environment.0["DEBUG"], "true");
        let text = MINIMAL.replace(
            "  memory: 128M\n",
            "  memory: 128M\n  environment: [A=1, B=x=y]\n",
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.app.environment.0["B"], "x=y");
    }
}
