//! Single config values and how each one parses: sizes, durations, ports, names, listen
//! addresses, swap settings, environment maps.
//!
//! Each type checks its value *inside* the deserializer's visitor, so the YAML layer can
//! report the error at the value's own line and column under its full key path.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

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
            // `false`: an unquoted `off` or `no`, which YAML reads as a boolean.
            "off" | "none" | "0" | "false" => Ok(Swap::Off),
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

/// A container restart policy, as compose writes it: `no`, `always`, `unless-stopped` or
/// `on-failure[:N]`. Parsed, so a typo is refused with its line, and the swarm engine maps a
/// known word, never a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    No,
    Always,
    /// The default: brings the serving color back after a reboot or a docker restart (an app
    /// that exits 0 on SIGTERM is not restarted by `on-failure`), but not one cutover stopped.
    #[default]
    UnlessStopped,
    OnFailure {
        max_attempts: Option<u32>,
    },
}

impl Restart {
    pub fn parse(text: &str) -> Result<Restart, String> {
        let expected = "expected no, always, unless-stopped or on-failure[:N]";
        match text.trim().split_once(':') {
            None => match text.trim() {
                // `false`: an unquoted `no`, which YAML reads as a boolean.
                "no" | "false" => Ok(Restart::No),
                "always" => Ok(Restart::Always),
                "unless-stopped" => Ok(Restart::UnlessStopped),
                "on-failure" => Ok(Restart::OnFailure { max_attempts: None }),
                other => Err(format!("`{other}` is not a restart policy ({expected})")),
            },
            Some(("on-failure", n)) => n
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .map(|n| Restart::OnFailure {
                    max_attempts: Some(n),
                })
                .ok_or_else(|| format!("`{text}`: `{n}` is not a number of attempts ({expected})")),
            Some(_) => Err(format!("`{text}` is not a restart policy ({expected})")),
        }
    }
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Restart::No => f.write_str("no"),
            Restart::Always => f.write_str("always"),
            Restart::UnlessStopped => f.write_str("unless-stopped"),
            Restart::OnFailure { max_attempts: None } => f.write_str("on-failure"),
            Restart::OnFailure {
                max_attempts: Some(n),
            } => write!(f, "on-failure:{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for Restart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, "a restart policy", Restart::parse)
    }
}

impl Serialize for Restart {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
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
    /// Docker's smallest container memory limit.
    pub const MIN_MEMORY: Size = Size(6 << 20);
    pub const MAX_MEMORY: Size = Size(1 << 50);

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
    /// The longest duration accepted anywhere: every wait in cutover is bounded by it, and
    /// adding it to an `Instant` can never overflow.
    pub const MAX: Duration = Duration::from_secs(24 * 60 * 60);

    pub fn parse(text: &str) -> Result<Dur, String> {
        let expected = "expected e.g. 90s, 500ms, 2m or 1m 30s";
        let d = humantime::parse_duration(text.trim()).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => {
                format!("duration `{text}` is too long (at most 24h)")
            }
            _ => format!("invalid duration `{text}` ({expected})"),
        })?;
        if d > Self::MAX {
            return Err(format!("duration `{text}` is too long (at most 24h)"));
        }
        Ok(Dur(d))
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
        // A visitor rather than an untagged enum: untagged buffers the value and so loses the
        // line and column of a bad entry.
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Environment;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of KEY: value, or a list of KEY=value")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Environment, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    check_env_key(&key).map_err(de::Error::custom)?;
                    // Asking for a string keeps `1.50` or `0x10` as written, as compose does.
                    let value: Option<String> = map.next_value()?;
                    out.insert(key, value.unwrap_or_default());
                }
                Ok(Environment(out))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Environment, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(item) = seq.next_element::<String>()? {
                    let (key, value) = item
                        .split_once('=')
                        .ok_or_else(|| de::Error::custom(format!("`{item}` is not KEY=value")))?;
                    check_env_key(key).map_err(de::Error::custom)?;
                    out.insert(key.to_string(), value.to_string());
                }
                Ok(Environment(out))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Environment, E> {
                Ok(Environment::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// `KEY` of a `KEY=value` line: letters, digits and `_`, not starting with a digit.
pub(super) fn is_env_key(key: &str) -> bool {
    key.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn check_env_key(key: &str) -> Result<(), String> {
    if is_env_key(key) {
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

/// Deserializes a scalar through `parse` *inside* the deserializer's visitor, so the YAML
/// layer attaches the full key path and the line and column of the value to the error.
pub(super) fn parse_scalar<'de, D, T>(
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
        // YAML 1.1 reads an unquoted `off`/`no` as false: the parser sees `false` and decides
        // (`host.swap: off`, `restart: no`), or refuses it with its own message.
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
            (self.parse)(if v { "true" } else { "false" }).map_err(E::custom)
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
        // Reported as custom errors, which carry the value's own column.
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            Err(E::custom(format!(
                "invalid type: string {v:?}, expected {}",
                self.expecting
            )))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            Err(E::custom(format!(
                "invalid type: number {v}, expected {}",
                self.expecting
            )))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
            Err(E::custom(format!(
                "invalid type: boolean {v}, expected {}",
                self.expecting
            )))
        }
    }
    d.deserialize_any(V { expecting, check })
}

/// A duration that must be more than zero (a zero poll interval would spin, a zero timeout
/// could never pass).
pub(super) fn deserialize_positive_dur<'de, D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
    parse_scalar(d, "a duration such as 90s", |text| {
        let dur = Dur::parse(text)?;
        if dur.0.is_zero() {
            return Err(format!("duration `{text}` must be more than 0"));
        }
        Ok(dur)
    })
}

/// A container memory limit: docker refuses less than 6M, and more than a PiB is a typo that
/// could overflow the memory budget's sums.
pub(super) fn deserialize_memory<'de, D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
    parse_scalar(d, "a size such as 512M", |text| {
        let size = Size::parse(text)?;
        if size.0 < Size::MIN_MEMORY.0 {
            return Err(format!(
                "memory limit `{text}` is below docker's minimum of 6M"
            ));
        }
        if size.0 > Size::MAX_MEMORY.0 {
            return Err(format!(
                "memory limit `{text}` is more than 1048576G (1 PiB)"
            ));
        }
        Ok(size)
    })
}

pub(super) fn deserialize_ip<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    parse_scalar(d, "an IP address", |text| {
        text.parse().map_err(|_| {
            format!("`{text}` is not an IP address (expected e.g. 127.0.0.1, 0.0.0.0 or ::1)")
        })
    })
}
