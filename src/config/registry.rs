//! `registry:` in cutover.yml: a private registry the deploy logs in to and pulls from
//! (issue #13). The password is never in the config: `password_secret` names a key of the
//! encrypted secrets files the deploy decrypts anyway, and reaches `docker login` on stdin.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// `host[:port]` as in image references, e.g. `registry.example.com` or `docker.io`.
    pub server: Server,
    pub username: String,
    /// The secrets key holding the password or access token.
    pub password_secret: SecretKey,
}

/// A registry host as image references spell it: no scheme, no path, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Server(pub String);

impl TryFrom<String> for Server {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let ok = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c))
            && !text.starts_with(['-', '.', ':']);
        if ok {
            Ok(Server(text))
        } else {
            Err(format!(
                "invalid registry server `{text}` (expected host[:port] as in image references, \
                 e.g. registry.example.com:5000, without https:// or a path)"
            ))
        }
    }
}

impl From<Server> for String {
    fn from(s: Server) -> String {
        s.0
    }
}

/// A secrets key name (`KEY` in a dotenv file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretKey(pub String);

impl TryFrom<String> for SecretKey {
    type Error = String;
    fn try_from(key: String) -> Result<Self, String> {
        if super::scalars::is_env_key(&key) {
            Ok(SecretKey(key))
        } else {
            Err(format!(
                "invalid secret key `{key}` (expected the KEY of a KEY=value line in an \
                 encrypted secrets file: letters, digits and `_`)"
            ))
        }
    }
}

impl From<SecretKey> for String {
    fn from(s: SecretKey) -> String {
        s.0
    }
}

impl Registry {
    /// Docker Hub's names for itself all mean one registry.
    fn canonical(host: &str) -> &str {
        match host {
            "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
            other => other,
        }
    }

    /// True when `image` is pulled from this registry (a reference without a registry host
    /// is Docker Hub's).
    pub fn serves(&self, image: &str) -> bool {
        let host = match image.split_once('/') {
            Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
            _ => "docker.io",
        };
        Self::canonical(host) == Self::canonical(&self.server.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(server: &str) -> Registry {
        Registry {
            server: Server(server.into()),
            username: "u".into(),
            password_secret: SecretKey("P".into()),
        }
    }

    #[test]
    fn which_images_a_registry_serves() {
        assert!(reg("127.0.0.1:5000").serves("127.0.0.1:5000/app:v2"));
        assert!(!reg("127.0.0.1:5000").serves("app:v2"));
        assert!(reg("docker.io").serves("me/app:v2"));
        assert!(reg("index.docker.io").serves("docker.io/me/app:v2"));
        assert!(!reg("ghcr.io").serves("me/app:v2"));
        assert!(Server::try_from("https://x".to_string()).is_err());
        assert!(SecretKey::try_from("1X".to_string()).is_err());
    }
}
