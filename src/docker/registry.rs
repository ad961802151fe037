//! `docker login` and `docker pull` for `registry:` (issue #13), with failures sorted into
//! what the user must fix: the credentials, the tag, or the network.
//!
//! The password reaches `docker login --password-stdin` on stdin (wiped after the run), never
//! argv, environment or a file; docker then keeps it in its own credential store
//! (`$DOCKER_CONFIG/config.json` or the helper configured there). Neither command has a
//! format flag, so the kind of failure is read from docker's error text, and anything not
//! recognised is reported as docker said it.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::config::Registry;
use crate::process::{Cmd, ProcessError};

/// Long enough for a large image on a slow link; a stalled pull still ends.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const LOGIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a login or pull failed. Every variant says nothing changed: the pull runs before the
/// deploy starts a container.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "registry {server} refused the credentials of `{username}` (authentication failed; \
         check registry.username and the secret {secret}); nothing changed: {said}"
    )]
    Auth {
        server: String,
        username: String,
        secret: String,
        said: String,
    },
    #[error(
        "{image} is not on {server}: no tag `{tag}` there (push it first, or check --image); \
         nothing changed: {said}"
    )]
    MissingTag {
        image: String,
        server: String,
        tag: String,
        said: String,
    },
    #[error(
        "cannot reach the registry {server} for {image} (network: is it up, is the address \
         right?); nothing changed: {said}"
    )]
    Network {
        image: String,
        server: String,
        said: String,
    },
    #[error("failed to pull {image} from {server}; nothing changed: {said}")]
    Other {
        image: String,
        server: String,
        said: String,
    },
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// What docker's error text says went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Auth,
    MissingTag,
    Network,
    Other,
}

fn classify(stderr: &str) -> Kind {
    let s = stderr.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| s.contains(w));
    if any(&[
        "connection refused",
        "no such host",
        "i/o timeout",
        "network is unreachable",
        "no route to host",
        "tls handshake timeout",
        "connection reset",
        "server misbehaving",
        "context deadline exceeded",
    ]) {
        Kind::Network
    } else if any(&[
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "401",
        "incorrect username or password",
        "access denied",
        "denied:",
    ]) {
        Kind::Auth
    } else if any(&["manifest unknown", "not found", "does not exist"]) {
        Kind::MissingTag
    } else {
        Kind::Other
    }
}

/// The tag (or digest) part of an image reference.
fn tag_of(image: &str) -> &str {
    if let Some((_, digest)) = image.rsplit_once('@') {
        return digest;
    }
    match image.rsplit_once(':') {
        Some((_, tag)) if !tag.contains('/') => tag,
        _ => "latest",
    }
}

/// `docker login --password-stdin` to `registry.server`, to pull `image`.
pub fn login(registry: &Registry, password: &SecretString, image: &str) -> Result<(), PullError> {
    let server = &registry.server.0;
    let out = Cmd::new("docker", format!("log in to the registry {server}"))
        .args([
            "login",
            "--password-stdin",
            "--username",
            &registry.username,
            server,
        ])
        .stdin_bytes(password.expose_secret().as_bytes().to_vec())
        .timeout(LOGIN_TIMEOUT)
        .run_unchecked()?;
    if out.success() {
        return Ok(());
    }
    let said = crate::process::tail(out.stderr.trim(), 4);
    Err(match classify(&out.stderr) {
        Kind::Network => PullError::Network {
            image: image.to_string(),
            server: server.clone(),
            said,
        },
        // A login has no tag: whatever else it refuses is about the credentials.
        _ => PullError::Auth {
            server: server.clone(),
            username: registry.username.clone(),
            secret: registry.password_secret.0.clone(),
            said,
        },
    })
}

/// `docker pull IMAGE` (quiet: the caller shows progress).
pub fn pull(registry: &Registry, image: &str) -> Result<(), PullError> {
    let server = registry.server.0.clone();
    let out = Cmd::new("docker", format!("pull {image}"))
        .args(["pull", "-q", image])
        .timeout(PULL_TIMEOUT)
        .run_unchecked()?;
    if out.success() {
        return Ok(());
    }
    let said = crate::process::tail(out.stderr.trim(), 4);
    let image = image.to_string();
    Err(match classify(&out.stderr) {
        Kind::Auth => PullError::Auth {
            server,
            username: registry.username.clone(),
            secret: registry.password_secret.0.clone(),
            said,
        },
        Kind::MissingTag => PullError::MissingTag {
            tag: tag_of(&image).to_string(),
            image,
            server,
            said,
        },
        Kind::Network => PullError::Network {
            image,
            server,
            said,
        },
        Kind::Other => PullError::Other {
            image,
            server,
            said,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_errors_sort_into_what_to_fix() {
        let cases = [
            ("Error response from daemon: login attempt to http://127.0.0.1:5000/v2/ failed with status: 401 Unauthorized", Kind::Auth),
            ("Error response from daemon: manifest for 127.0.0.1:5000/demo:nope not found: manifest unknown: manifest unknown", Kind::MissingTag),
            ("Error response from daemon: Get \"http://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused", Kind::Network),
            ("Error response from daemon: head \"http://127.0.0.1:5000/v2/demo/manifests/v1\": no basic auth credentials", Kind::Auth),
            ("Error response from daemon: received unexpected HTTP status: 500 Internal Server Error", Kind::Other),
        ];
        for (text, kind) in cases {
            assert_eq!(classify(text), kind, "{text}");
        }
        assert_eq!(tag_of("127.0.0.1:5000/demo:v2"), "v2");
        assert_eq!(tag_of("127.0.0.1:5000/demo"), "latest");
    }
}
