//! The app's images on this box: which exist and which any container uses. Reading and
//! checking a reference is string work and lives in `config/image_ref.rs`.
//!
//! The seeds `rmi` the old image right after a deploy, which makes rollback a rebuild. cutover
//! keeps the last N images of the app's repository; what else must stay (every image any
//! container or any cutover project on the box still needs) is decided in `prune`, from
//! [`in_use`] and the project registry.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::inspect::{self, DockerError};
pub use crate::config::image_ref::{normalize, repository};
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

/// `docker save -o FILE IMAGE`: the image as a tar archive (what `--ship` filters and sends).
pub fn save_cmd(image: &str, to: &std::path::Path) -> Cmd {
    Cmd::new("docker", format!("save {image} (docker save)"))
        .arg("save")
        .arg("-o")
        .arg(to)
        .arg(image)
}

/// `docker image inspect -- IMAGE`: its JSON, run unchecked (a missing image is the caller's
/// message).
pub fn inspect_cmd(image: &str) -> Cmd {
    Cmd::new("docker", format!("inspect the local image {image}"))
        .args(["image", "inspect", "--", image])
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
    fn save_and_inspect_name_the_image_after_the_options() {
        let out = std::path::Path::new("/tmp/x/full.tar");
        assert_eq!(
            save_cmd("app:v1", out).argv(),
            ["docker", "save", "-o", "/tmp/x/full.tar", "app:v1"]
        );
        // `--`: an image name can never be read as an option.
        assert_eq!(
            inspect_cmd("-app").argv(),
            ["docker", "image", "inspect", "--", "-app"]
        );
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
