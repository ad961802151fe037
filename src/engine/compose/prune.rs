//! `prune`: remove the app's old images beyond the newest `keep` (after every deploy, and
//! `cutover prune`), never an image someone on the box still needs.
//!
//! "Someone" is box-wide, because one repository can serve several projects (staging and prod
//! of one app): an image is kept when any container on the box was created from it (running
//! or stopped, any project), or when any registered cutover project ([`crate::registry`])
//! records it as a color's image or as its rollback target. A registered project whose state
//! cannot be read is a reason to prune nothing, not to guess: the image it needs may be the
//! one about to go. Only `app.image`'s repository is pruned.
//!
//! A prune is a [`Survey`] (read the box) and then the removal. A repository holding no more
//! than `keep` images skips the box-wide reading: nothing in it can go. A deploy takes the
//! survey while the old color stops and removes only after its record is written.

use std::collections::BTreeSet;

use anyhow::Context as _;
use serde::Serialize;

use crate::config::Loaded;
use crate::docker::images::{self, Image, InUse};
use crate::state::{State, StateDir};

/// What `prune` removed (or would, with `--dry-run`) and what docker refused to remove.
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub repository: String,
    pub dry_run: bool,
    pub removed: Vec<String>,
    pub kept_with_errors: Vec<String>,
}

/// What must stay.
#[derive(Debug, Clone, Default)]
pub struct Protection {
    /// Images some cutover project records as current or previous (normalized references).
    pub recorded: BTreeSet<String>,
    pub in_use: InUse,
}

impl Protection {
    /// Everything on the box: this project's record (`own`, which may be newer than its
    /// state file), every registered project's record, every container's image.
    pub fn on_this_box(own: &State) -> anyhow::Result<Protection> {
        let mut recorded: BTreeSet<String> = own
            .kept_images()
            .iter()
            .map(|r| images::normalize(r))
            .collect();
        for dir in crate::registry::projects()? {
            let state = StateDir::new(&dir).load().with_context(|| {
                format!(
                    "could not read the record of the cutover project in {}, so the images it needs are unknown",
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

/// All but the newest `keep` of `images` (newest first) that `protection` does not keep.
pub fn candidates(images: &[Image], keep: usize, protection: &Protection) -> Vec<Image> {
    images
        .iter()
        .skip(keep)
        .filter(|i| !protection.keeps(i))
        .cloned()
        .collect()
}

/// `cutover prune`: `app.image`'s repository down to `keep` images.
pub fn prune(loaded: &Loaded, keep: usize, dry_run: bool) -> anyhow::Result<PruneReport> {
    let own = StateDir::new(loaded.state_dir()).load()?;
    let repository = images::repository(&loaded.config.app.image);
    prune_repository(repository, keep, &own, dry_run).with_context(|| {
        format!("pruned nothing in {repository}: what every project and container on the box needs must be known first")
    })
}

/// Prunes `repository` down to `keep` images, protecting everything on the box; `own` is the
/// deploying project's record.
pub fn prune_repository(
    repository: &str,
    keep: usize,
    own: &State,
    dry_run: bool,
) -> anyhow::Result<PruneReport> {
    Ok(Survey::take(repository, keep, own)?.prune(own, dry_run))
}

/// What a prune reads from the box before it removes anything: the repository's images and,
/// when there are more than `keep`, what protects them. Taken apart from [`Survey::prune`] so
/// a deploy can read the box while the old color stops, off its wall time.
#[derive(Debug)]
pub struct Survey {
    repository: String,
    keep: usize,
    listed: Vec<Image>,
    /// None when the repository holds at most `keep` images: nothing can be a candidate, so
    /// the box-wide inspect and the registry are not read.
    protection: Option<Protection>,
}

impl Survey {
    /// Lists `repository`, then, only when it holds more than `keep` images, everything on
    /// the box that protects them ([`Protection::on_this_box`], `own` included).
    pub fn take(repository: &str, keep: usize, own: &State) -> anyhow::Result<Survey> {
        let listed = images::list(repository)?;
        let protection = if listed.len() > keep {
            Some(Protection::on_this_box(own)?)
        } else {
            None
        };
        Ok(Survey {
            repository: repository.to_string(),
            keep,
            listed,
            protection,
        })
    }

    /// Removes the candidates. `own` is the deploying project's record as it stands now,
    /// added to the protection: it may be newer than the survey (the deploy recorded since).
    pub fn prune(self, own: &State, dry_run: bool) -> PruneReport {
        let mut report = PruneReport {
            repository: self.repository,
            dry_run,
            ..PruneReport::default()
        };
        let Some(mut protection) = self.protection else {
            return report;
        };
        protection
            .recorded
            .extend(own.kept_images().iter().map(|r| images::normalize(r)));
        for image in candidates(&self.listed, self.keep, &protection) {
            if dry_run {
                report.removed.push(image.reference);
                continue;
            }
            match images::remove(&image) {
                Ok(()) => report.removed.push(image.reference),
                Err(e) => report
                    .kept_with_errors
                    .push(format!("{}: {e}", image.reference)),
            }
        }
        report
    }
}

/// The deploy's prune: the survey during the stop, the removal after the record.
impl super::Run<'_, '_> {
    /// Reads what the prune needs from the box in a thread: `docker stop` mostly waits for
    /// the engine, so the survey costs the deploy no wall time. It is only a reading; nothing
    /// is removed before the record is written (`prune_images`).
    pub(super) fn start_survey(&self) -> std::thread::JoinHandle<anyhow::Result<Survey>> {
        let config = &self.d.loaded.config;
        let repository = images::repository(&config.app.image).to_string();
        let keep = config.app.keep_images;
        let state_dir = self.state_dir.clone();
        std::thread::spawn(move || Survey::take(&repository, keep, &state_dir.load()?))
    }

    /// Prunes `app.image`'s repository beyond `keep_images`, never an image anything on the
    /// box still records or runs (see [`Survey`]).
    pub(super) fn prune_images(&mut self) -> Vec<String> {
        let config = &self.d.loaded.config;
        let own = match self.state_dir.load() {
            Ok(state) => state,
            Err(e) => return vec![format!("pruned nothing: could not read the record: {e:#}")],
        };
        let repository = images::repository(&config.app.image);
        let survey = match self.survey.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the survey of the box panicked"))),
            None => Survey::take(repository, config.app.keep_images, &own),
        };
        match survey {
            Ok(survey) => {
                let report = survey.prune(&own, false);
                report
                    .removed
                    .iter()
                    .map(|r| format!("pruned image {r}"))
                    .chain(
                        report
                            .kept_with_errors
                            .iter()
                            .map(|k| format!("kept image {k}")),
                    )
                    .collect()
            }
            Err(e) => vec![format!("pruned nothing: {e:#}")],
        }
    }
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

    #[test]
    fn a_survey_prunes_nothing_without_protection_and_keeps_what_own_records_now() {
        let img = |r: &str| Image {
            reference: r.into(),
            id: format!("id-{r}"),
            created: String::new(),
        };
        let survey = |protection| Survey {
            repository: "app".into(),
            keep: 1,
            listed: vec![img("app:3"), img("app:2"), img("app:1")],
            protection,
        };
        // No protection read (the repository held at most `keep`): nothing is a candidate.
        assert!(survey(None)
            .prune(&State::default(), true)
            .removed
            .is_empty());
        // The record written after the survey protects its images too.
        let own = State {
            previous_image: Some("app:2".into()),
            ..State::default()
        };
        let report = survey(Some(Protection::default())).prune(&own, true);
        assert_eq!(report.removed, ["app:1"]);
    }
}
