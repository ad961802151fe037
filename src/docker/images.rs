//! The app's images on this box: which exist, and pruning all but the most recent few.
//!
//! The seeds `rmi` the old image right after a deploy, which makes rollback a rebuild. cutover
//! keeps the last N images of the app's repository (and always the ones recorded as running
//! or as the rollback target), and removes only images no container uses.

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

/// What pruning would remove: all but the newest `keep`, never one in `protected`.
pub fn prune_candidates(images: &[Image], keep: usize, protected: &BTreeSet<String>) -> Vec<Image> {
    images
        .iter()
        .skip(keep)
        .filter(|i| !protected.contains(&i.reference))
        .cloned()
        .collect()
}

/// Removes one image; an image a container still uses is refused by docker and kept.
pub fn remove(image: &Image) -> Result<(), crate::process::ProcessError> {
    Cmd::new("docker", format!("remove image {}", image.reference))
        .args(["rmi", &image.reference])
        .timeout(Duration::from_secs(60))
        .run()
        .map(|_| ())
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
    fn prune_keeps_newest_and_protected() {
        let img = |r: &str, c: &str| Image {
            reference: r.into(),
            id: r.into(),
            created: c.into(),
        };
        let images = vec![
            img("a:5", "2026-05"),
            img("a:4", "2026-04"),
            img("a:3", "2026-03"),
            img("a:2", "2026-02"),
            img("a:1", "2026-01"),
        ];
        let protected = BTreeSet::from(["a:1".to_string()]);
        let gone: Vec<_> = prune_candidates(&images, 2, &protected)
            .into_iter()
            .map(|i| i.reference)
            .collect();
        assert_eq!(gone, ["a:3", "a:2"]);
    }
}
