//! `prune`: remove the app's old images beyond the newest `keep`, never one recorded (a
//! color's, the rollback target) or used by a container of the project.

use serde::Serialize;

use crate::config::Loaded;
use crate::docker::images;

use super::observe::observe;

/// What `prune` removed (or would, with `--dry-run`) and what docker refused to remove.
#[derive(Debug, Serialize)]
pub struct PruneReport {
    pub repository: String,
    pub dry_run: bool,
    pub removed: Vec<String>,
    pub kept_with_errors: Vec<String>,
}

pub fn prune(loaded: &Loaded, keep: usize, dry_run: bool) -> anyhow::Result<PruneReport> {
    let observed = observe(loaded)?;
    let repository = images::repository(&loaded.config.app.image).to_string();
    let list = images::list(&repository)?;
    let mut protected = observed.recorded.kept_images();
    protected.extend(observed.containers.iter().map(|c| c.image.clone()));
    let mut removed = Vec::new();
    let mut kept_with_errors = Vec::new();
    for image in images::prune_candidates(&list, keep, &protected) {
        if dry_run {
            removed.push(image.reference.clone());
            continue;
        }
        match images::remove(&image) {
            Ok(()) => removed.push(image.reference.clone()),
            Err(e) => kept_with_errors.push(format!("{}: {e}", image.reference)),
        }
    }
    Ok(PruneReport {
        repository,
        dry_run,
        removed,
        kept_with_errors,
    })
}
