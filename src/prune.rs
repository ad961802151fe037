//! Pruning app images, for `cutover prune` and the prune after every deploy: all but the
//! newest `keep` images of one repository, and never an image someone on the box still needs.
//!
//! "Someone" is box-wide, because one repository can serve several projects (staging and prod
//! of one app): an image is kept when any container on the box was created from it (running
//! or stopped, any project), or when any registered cutover project ([`crate::registry`])
//! records it as a color's image or as its rollback target. A registered project whose state
//! cannot be read is a reason to prune nothing, not to guess: the image it needs may be the
//! one about to go.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::images::{self, Image, InUse};
use crate::state::{State, StateDir};

/// What must stay, and why it is known.
#[derive(Debug, Clone, Default)]
pub struct Protection {
    /// Images some cutover project records as current or previous (normalized references).
    pub recorded: BTreeSet<String>,
    pub in_use: InUse,
}

impl Protection {
    /// Everything on the box: this project's record (`own`, which may be newer than what
    /// its state file says), every registered project's record, every container's image.
    pub fn on_this_box(own: &State) -> anyhow::Result<Protection> {
        let mut recorded: BTreeSet<String> = own
            .kept_images()
            .iter()
            .map(|r| images::normalize(r))
            .collect();
        for dir in crate::registry::projects()? {
            let state = StateDir::new(&dir).load().with_context(|| {
                format!(
                    "could not read the state of the cutover project in {}, so its images are unknown",
                    dir.display()
                )
            })?;
            recorded.extend(state.kept_images().iter().map(|r| images::normalize(r)));
        }
        Ok(Protection {
            recorded,
            in_use: images::in_use()?,
        })
    }

    pub fn keeps(&self, image: &Image) -> bool {
        self.recorded.contains(&images::normalize(&image.reference)) || self.in_use.holds(image)
    }
}

/// What a prune did (or, on a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pruned {
    pub repository: String,
    pub dry_run: bool,
    pub removed: Vec<String>,
    /// `reference: why docker refused`.
    pub kept_with_errors: Vec<String>,
}

/// All but the newest `keep` images of `repository` that `protection` does not keep.
pub fn candidates(images: &[Image], keep: usize, protection: &Protection) -> Vec<Image> {
    images
        .iter()
        .skip(keep)
        .filter(|i| !protection.keeps(i))
        .cloned()
        .collect()
}

/// Prunes `repository` down to `keep` images, protecting everything on the box.
pub fn prune(repository: &str, keep: usize, own: &State, dry_run: bool) -> anyhow::Result<Pruned> {
    let protection = Protection::on_this_box(own)?;
    let listed = images::list(repository)?;
    let mut pruned = Pruned {
        repository: repository.to_string(),
        dry_run,
        ..Pruned::default()
    };
    for image in candidates(&listed, keep, &protection) {
        if dry_run {
            pruned.removed.push(image.reference);
            continue;
        }
        match images::remove(&image) {
            Ok(()) => pruned.removed.push(image.reference),
            Err(e) => pruned
                .kept_with_errors
                .push(format!("{}: {e}", image.reference)),
        }
    }
    Ok(pruned)
}

/// Registers the project whose state lives in `state_dir` so other projects' prunes keep
/// its images; called on every deploy.
pub fn register(state_dir: &Path) -> anyhow::Result<()> {
    crate::registry::register(state_dir).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_skip_the_newest_and_everything_protected() {
        let img = |r: &str, id: &str| Image {
            reference: r.into(),
            id: id.into(),
            created: String::new(),
        };
        let images = vec![
            img("app:4", "4444"),
            img("app:3", "3333"),
            img("app:2", "2222"),
            img("app:1", "1111"),
        ];
        let protection = Protection {
            recorded: BTreeSet::from(["app:1".to_string()]),
            in_use: InUse {
                references: BTreeSet::from(["app:3".to_string()]),
                untagged_ids: BTreeSet::new(),
            },
        };
        let gone: Vec<String> = candidates(&images, 1, &protection)
            .into_iter()
            .map(|i| i.reference)
            .collect();
        assert_eq!(gone, ["app:2"]);
    }
}
