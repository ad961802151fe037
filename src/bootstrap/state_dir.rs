//! The project's state dir (`.cutover/`: lock, history, rendered files), created 0750 and
//! owned by the project directory's owner, since deploys run as that user, not as root.
//!
//! The user-data does not create it: at first boot the project directory is not on the
//! instance yet, and the first `cutover deploy` creates it anyway.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use anyhow::Context as _;

use super::cloud_init::Part;
use super::{Options, StepDef, StepRun};

/// Step "state dir".
pub const STEP: StepDef = StepDef {
    name: "state dir",
    run: |opts, s, _| step(opts, s),
    cloud_init: Part::Later("the project's state dir is created by the first `cutover deploy`"),
};

/// Creates the state dir, or tightens its mode and owner.
fn step(opts: &Options, step: &mut StepRun<'_>) -> anyhow::Result<()> {
    let Some((live, project_dir)) = &opts.state_dir else {
        step.skip(opts.no_config_reason.clone());
        return Ok(());
    };
    let path = step.target.path(live);
    step.summary(path.display().to_string());
    if !path.exists() {
        step.change(format!("create {} (mode 0750)", path.display()));
        if step.dry_run() {
            return Ok(());
        }
        std::fs::create_dir_all(&path)
            .with_context(|| format!("could not create {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750))
            .with_context(|| format!("could not chmod {}", path.display()))?;
    } else {
        // Stricter than 0750 (e.g. 0700) is fine; group-writable or world-anything is not.
        step.ensure_mode(&path, 0o750, true)?;
    }
    let owner = std::fs::metadata(project_dir)
        .with_context(|| format!("could not read the metadata of {}", project_dir.display()))?;
    if let Ok(meta) = std::fs::metadata(&path) {
        if (meta.uid(), meta.gid()) != (owner.uid(), owner.gid()) {
            step.change(format!(
                "chown {}:{} {} (the project directory's owner, who runs deploys)",
                owner.uid(),
                owner.gid(),
                path.display()
            ));
            if !step.dry_run() {
                std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid()))
                    .with_context(|| format!("could not chown {}", path.display()))?;
            }
        }
    }
    Ok(())
}
