//! `remote:` in cutover.yml: where `cutover --host` finds the box and puts the project there
//! (issue #12, see `src/remote/`). Read on the machine that runs `cutover --host`; the box's
//! synced copy ignores it (the box does not SSH to itself). [`Target`] is the parsed
//! `[user@]host[:port]` that `--host`, `CUTOVER_HOST` and `remote.host` all give.

use serde::{Deserialize, Serialize};

/// Marks a copy synced to a box by `--host` (`<remote.dir>/releases/<stamp>/`): there,
/// `remote.host` in its cutover.yml is ignored (the box does not SSH to itself), and every
/// release is the same project (`claims.rs`).
pub const SYNC_MARKER: &str = ".cutover-synced";

use super::Name;

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// `[user@]host[:port]` (or a `Host` alias from ~/.ssh/config); `--host` and
    /// `CUTOVER_HOST` take precedence.
    /// Parsed as it is read, so a bad value is refused with its line.
    #[serde(default)]
    pub host: Option<Target>,
    /// The project directory on the box; `~/` is the SSH user's home.
    /// [default: `~/cutover/<project>`]
    #[serde(default)]
    pub dir: Option<String>,
}

/// `ship:` — how `cutover --host` gets a deploy's image onto the box.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Ship {
    /// `docker save` here, only the layers the box lacks, over the SSH connection.
    Ssh,
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

/// `[user@]host[:port]`, as given to `--host` / `CUTOVER_HOST` / `remote.host`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Target {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        let expected = "expected [user@]host[:port], e.g. admin@203.0.113.7:22";
        let text = text.trim();
        let (user, rest) = match text.rsplit_once('@') {
            Some((user, rest)) => (Some(user), rest),
            None => (None, text),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            // [IPv6]:port
            let (host, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("`{text}`: unclosed `[`; {expected}"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("`{text}`: {expected}")),
            }
        } else {
            match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        let port = match port {
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("`{text}`: port `{p}` is not 1-65535; {expected}"))?,
            ),
            None => None,
        };
        let word_ok = |w: &str| {
            !w.is_empty()
                && !w.starts_with('-')
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:%".contains(c))
        };
        if !word_ok(host) {
            return Err(format!("`{text}`: `{host}` is not a host name; {expected}"));
        }
        if let Some(user) = user {
            if !word_ok(user) || user.contains(':') {
                return Err(format!("`{text}`: `{user}` is not a user name; {expected}"));
            }
        }
        Ok(Target {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        })
    }

    /// The `ssh` destination: `user@host` or `host`.
    pub fn destination(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.destination())?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for Target {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Target::parse(&text)
    }
}

impl From<Target> for String {
    fn from(target: Target) -> String {
        target.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = Target::parse("deploy@203.0.113.7:2222").unwrap();
        assert_eq!(t.user.as_deref(), Some("deploy"));
        assert_eq!(t.host, "203.0.113.7");
        assert_eq!(t.port, Some(2222));
        assert_eq!(t.to_string(), "deploy@203.0.113.7:2222");
        let t = Target::parse("box").unwrap();
        assert_eq!((t.user, t.host.as_str(), t.port), (None, "box", None));
        let t = Target::parse("root@[::1]:22").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", Some(22)));
    }

    #[test]
    fn bad_targets_say_what_is_expected() {
        for bad in [
            "",
            "host:0",
            "host:99999",
            "-oProxyCommand=x",
            "a b",
            "u@",
            "host:x",
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(err.contains("expected [user@]host[:port]"), "{bad}: {err}");
        }
    }
}
