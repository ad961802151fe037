//! The app's images on this box: which exist, which any container uses, and checking a
//! reference before it reaches a compose file.
//!
//! The seeds `rmi` the old image right after a deploy, which makes rollback a rebuild. cutover
//! keeps the last N images of the app's repository; what else must stay (every image any
//! container or any cutover project on the box still needs) is decided in `prune`, from
//! [`in_use`] and the project registry.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::inspect::{self, DockerError};
use crate::process::Cmd;

/// One local image of the app's repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    pub reference: String,
    pub id: String,
    pub created: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Row {
    repository: String,
    tag: String,
    #[serde(rename = "ID")]
    id: String,
    created_at: String,
}

/// The repository part of an image reference: `myuser/app:1.2` → `myuser/app`.
pub fn repository(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    match without_digest.rsplit_once(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    }
}

/// Checks that `reference` is a docker image reference, `[host[:port]/]name[:tag][@digest]`.
///
/// The characters matter beyond docker's own grammar: a reference is written into the
/// compose file, and compose interpolates `$` from an environment that holds every decrypted
/// secret, so `app:${DB_PASSWORD}` must never get that far. The error says what is allowed.
pub fn check_reference(reference: &str) -> Result<(), String> {
    const GRAMMAR: &str = "expected [host[:port]/]name[:tag][@sha256:hex]: name parts of lowercase letters, digits and `.` `_` `-`, separated by `/`; a tag of letters, digits and `_` `.` `-` (at most 128)";
    if let Some((i, c)) = reference
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || "._-/:@".contains(*c)))
    {
        let shown = if c.is_control() || c.is_whitespace() {
            format!("{:?}", c)
        } else {
            format!("`{c}`")
        };
        return Err(format!(
            "{shown} at byte {i} is not allowed in an image reference ({GRAMMAR})"
        ));
    }
    let bad = |what: &str| Err(format!("{what} ({GRAMMAR})"));
    let (named, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let Some((algo, hex)) = digest.split_once(':') else {
            return bad("the digest after `@` has no `algorithm:`");
        };
        if algo.is_empty()
            || !algo
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            || hex.len() < 32
            || !hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return bad(
                "the digest after `@` is not `algorithm:hex` (e.g. sha256: and 64 hex digits)",
            );
        }
    }
    let repo = repository(named);
    if repo.len() < named.len() {
        let tag = &named[repo.len() + 1..];
        let first_ok = tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !first_ok || tag.len() > 128 || tag.contains(['/', ':', '@']) {
            return bad(&format!("the tag `{tag}` is not valid"));
        }
    }
    if repo.is_empty() {
        return bad("the name is empty");
    }
    let mut parts = repo.split('/').peekable();
    // The first part is a registry host when it looks like one (a dot, a port, localhost).
    let first = parts.peek().copied().unwrap_or_default();
    if repo.contains('/') && (first.contains(['.', ':']) || first == "localhost") {
        let (host, port) = first.split_once(':').unwrap_or((first, "0"));
        if host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return bad(&format!("the registry host `{first}` is not host[:port]"));
        }
        parts.next();
    }
    for part in parts {
        let edges_ok = part
            .bytes()
            .next()
            .zip(part.bytes().last())
            .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
        if !edges_ok || part.bytes().any(|b| b.is_ascii_uppercase() || b == b':') {
            return bad(&format!("the name part `{part}` is not valid"));
        }
    }
    Ok(())
}

/// Local images of `repo`, newest first.
pub fn list(repo: &str) -> Result<Vec<Image>, DockerError> {
    let cmd = Cmd::new("docker", format!("list the images of {repo}"))
        .args(["images", "--format", "{{json .}}", repo])
        .timeout(Duration::from_secs(30));
    let out = cmd.run()?;
    let rows: Vec<Row> = inspect::parse_lines(&cmd.display(), "image rows", &out.stdout)?;
    let mut images: Vec<Image> = rows
        .into_iter()
        .filter(|r| r.tag != "<none>")
        .map(|r| Image {
            reference: format!("{}:{}", r.repository, r.tag),
            id: r.id,
            created: r.created_at,
        })
        .collect();
    // `CreatedAt` is "2026-11-21 23:58:00 +0000 UTC": lexical order is time order.
    images.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then(b.reference.cmp(&a.reference))
    });
    Ok(images)
}

/// Whether an image exists locally; a Docker that cannot answer is an error, not "no".
pub fn try_exists(reference: &str) -> Result<bool, DockerError> {
    let cmd = Cmd::new("docker", format!("inspect image {reference}"))
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .timeout(Duration::from_secs(30));
    let out = cmd.run_unchecked()?;
    if out.success() {
        return Ok(true);
    }
    if out.stderr.to_lowercase().contains("no such image") {
        return Ok(false);
    }
    Err(cmd.failed(&out).into())
}

/// [`try_exists`] for callers that only decide whether to build: an unanswerable Docker
/// counts as "missing", and the build that follows reports the real error.
pub fn exists(reference: &str) -> bool {
    try_exists(reference).unwrap_or(false)
}

/// Removes one image; an image a container still uses is refused by docker and kept.
pub fn remove(image: &Image) -> Result<(), crate::process::ProcessError> {
    Cmd::new("docker", format!("remove image {}", image.reference))
        .args(["rmi", &image.reference])
        .timeout(Duration::from_secs(60))
        .run()
        .map(|_| ())
}

/// `app` → `app:latest`, `docker.io/library/app:v1` → `app:v1`: references as `docker images`
/// names them, so a container's reference and a listed image compare equal.
pub fn normalize(reference: &str) -> String {
    let short = reference
        .strip_prefix("docker.io/library/")
        .or_else(|| reference.strip_prefix("docker.io/"))
        .unwrap_or(reference);
    if short.contains('@') || repository(short).len() < short.len() {
        short.to_string()
    } else {
        format!("{short}:latest")
    }
}

/// What the containers on this box (running or stopped, of any project) were created from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InUse {
    /// `Config.Image` of every container, normalized ([`normalize`]).
    pub references: BTreeSet<String>,
    /// The image ID (`sha256:…`) of every container whose `Config.Image` is not a tag
    /// (created from an ID or a digest), so the tag cannot protect it.
    pub untagged_ids: BTreeSet<String>,
}

impl InUse {
    /// Whether removing `image` would take something a container was created from.
    pub fn holds(&self, image: &Image) -> bool {
        self.references.contains(&normalize(&image.reference))
            || self.untagged_ids.iter().any(|id| {
                id.trim_start_matches("sha256:")
                    .starts_with(image.id.trim_start_matches("sha256:"))
            })
    }
}

#[derive(Deserialize)]
struct ContainerImage {
    #[serde(rename = "Image")]
    id: String,
    #[serde(rename = "Config")]
    config: ContainerConfig,
}

#[derive(Deserialize)]
struct ContainerConfig {
    #[serde(rename = "Image")]
    image: String,
}

/// The images every container on the box uses (`docker ps -aq`, then `inspect`, through
/// [`inspect::list_and_inspect`]); output that does not parse is an error naming the command,
/// never "nothing in use".
pub fn in_use() -> Result<InUse, DockerError> {
    let containers: Vec<ContainerImage> = inspect::list_and_inspect(
        Cmd::new("docker", "list every container on the box")
            .args(["ps", "-aq", "--no-trunc"])
            .timeout(Duration::from_secs(30)),
        Cmd::new("docker", "inspect every container on the box")
            .args(["container", "inspect"])
            .timeout(Duration::from_secs(60)),
        "containers",
    )?;
    let mut found = InUse::default();
    for c in containers {
        if c.config.image.starts_with("sha256:") || c.config.image.contains('@') {
            found.untagged_ids.insert(c.id);
        } else {
            found.references.insert(normalize(&c.config.image));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_strips_tag_and_digest_but_not_registry_port() {
        assert_eq!(repository("myuser/app:1.2"), "myuser/app");
        assert_eq!(repository("registry:5000/app"), "registry:5000/app");
        assert_eq!(repository("registry:5000/app:v1"), "registry:5000/app");
        assert_eq!(repository("app@sha256:abc"), "app");
        assert_eq!(repository("app"), "app");
    }

    #[test]
    fn references_are_checked_and_dollars_refused() {
        for ok in [
            "app",
            "myuser/app:1.2",
            "registry:5000/team/app:v1",
            "localhost/app",
            "ghcr.io/o/app:2024-05-01_1",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "cutover-demo:v2",
        ] {
            assert_eq!(check_reference(ok), Ok(()), "{ok}");
        }
        let err = check_reference("app:${DB_PASSWORD}").unwrap_err();
        assert!(err.starts_with("`$` at byte 4 is not allowed"), "{err}");
        for bad in [
            "",
            "App:v1",
            "app:-v1",
            "app name",
            "app:v1\n",
            "app:",
            "/app",
            "app@sha256:12",
            "a//b",
        ] {
            assert!(check_reference(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn references_normalize_like_docker_images_lists_them() {
        assert_eq!(normalize("app"), "app:latest");
        assert_eq!(normalize("app:v1"), "app:v1");
        assert_eq!(normalize("docker.io/library/app:v1"), "app:v1");
        assert_eq!(normalize("docker.io/me/app"), "me/app:latest");
        assert_eq!(normalize("registry:5000/app"), "registry:5000/app:latest");
        let in_use = InUse {
            references: BTreeSet::from(["app:v1".to_string()]),
            untagged_ids: BTreeSet::from(["sha256:abcdef0123456789".to_string()]),
        };
        let img = |r: &str, id: &str| Image {
            reference: r.into(),
            id: id.into(),
            created: String::new(),
        };
        assert!(in_use.holds(&img("app:v1", "111111111111")));
        assert!(in_use.holds(&img("app:v2", "abcdef012345")));
        assert!(!in_use.holds(&img("app:v3", "222222222222")));
    }
}
