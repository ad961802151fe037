//! CI scaffolds: the GitHub Actions workflow `cutover init --ci github` writes.
//!
//! The workflow is a template (`templates/ci/github-deploy.yml.j2`, overridable like every
//! other template) rendered from the project's config: its name (the concurrency group), the
//! app image's repository (the image CI builds, tagged with the commit), and whether a
//! registry carries the image (`registry:`: push in CI, the box pulls) or the image is shipped
//! over the deploy's SSH connection (`deploy --ship`). Secrets are referenced by the names the
//! workflow documents, never rendered into it. This module renders text and writes nothing.

use serde::Serialize;

use crate::config::Config;
use crate::render::Renderer;

/// Where the workflow's install step fetches `install.sh` and the release tarballs from,
/// unless `CUTOVER_RELEASE_URL` says otherwise when the workflow is generated.
pub const DEFAULT_RELEASE_URL: &str = "https://github.com/cutover-dev/cutover/releases/download";

/// The CI systems `init --ci` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Github,
}

impl Provider {
    /// Where the scaffold goes, relative to the project (= repository) root.
    pub fn path(self) -> &'static str {
        match self {
            Provider::Github => ".github/workflows/deploy.yml",
        }
    }
}

/// The registry CI pushes to (the box pulls from it with its own login).
#[derive(Debug, Clone, Serialize)]
pub struct PushRegistry {
    pub server: String,
    pub username: String,
}

/// What the workflow is rendered from, besides the config.
#[derive(Debug, Clone)]
pub struct Options {
    /// The branch whose pushes deploy.
    pub branch: String,
    pub release_url: String,
    pub registry: Option<PushRegistry>,
}

#[derive(Serialize)]
struct WorkflowContext<'a> {
    project: &'a str,
    image: &'a str,
    branch: &'a str,
    version: &'a str,
    release_url: &'a str,
    registry: Option<&'a PushRegistry>,
}

/// The workflow text for `provider`.
pub fn workflow(
    renderer: &Renderer,
    provider: Provider,
    config: &Config,
    options: &Options,
) -> anyhow::Result<String> {
    let Provider::Github = provider;
    let ctx = WorkflowContext {
        project: config.project.as_str(),
        image: &config.app.image,
        branch: &options.branch,
        version: env!("CARGO_PKG_VERSION"),
        release_url: options.release_url.trim_end_matches('/'),
        registry: options.registry.as_ref(),
    };
    renderer.render(crate::render::CI_GITHUB, ctx)
}
