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
    if let Some(registry) = &options.registry {
        // An image outside the server would be pushed to Docker Hub, and the box would pull
        // it from there without the login `registry:` sets up.
        let in_server = config
            .app
            .image
            .starts_with(&format!("{}/", registry.server));
        if !in_server && registry.server != "docker.io" {
            anyhow::bail!(
                "app.image `{}` is not on registry.server `{}`: CI would push it elsewhere; \
                 name it `{}/{}`",
                config.app.image,
                registry.server,
                registry.server,
                config.app.image
            );
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn render(registry: Option<PushRegistry>) -> String {
        let config = Config::from_yaml(
            "project: shop\napp: { name: web, image: me/shop, port: 8080, memory: 128M }\ncolors: { blue: 9001, green: 9002 }\n",
            std::path::Path::new("cutover.yml"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let renderer = Renderer::new(dir.path()).unwrap();
        let options = Options {
            branch: "main".into(),
            release_url: "https://example.invalid/releases/".into(),
            registry,
        };
        workflow(&renderer, Provider::Github, &config, &options).unwrap()
    }

    #[test]
    fn without_a_registry_the_image_is_shipped_over_ssh() {
        let text = render(None);
        assert!(text.contains(
            "cutover --host \"$DEPLOY_HOST\" deploy --image \"$IMAGE\" --ship --lock-wait 10m --json"
        ));
        assert!(!text.contains("docker push"));
        assert!(text.contains("IMAGE: \"me/shop:${{ github.sha }}\""));
        assert!(text.contains("group: \"cutover-deploy-shop\""));
        assert!(text.contains("CUTOVER_RELEASE_URL: \"https://example.invalid/releases\""));
    }

    #[test]
    fn with_a_registry_ci_pushes_and_the_box_pulls() {
        let text = render(Some(PushRegistry {
            server: "docker.io".into(),
            username: "ci".into(),
        }));
        assert!(text.contains("docker push \"$IMAGE\""));
        assert!(text.contains("--password-stdin"));
        assert!(text.contains("REGISTRY_PASSWORD: ${{ secrets.REGISTRY_PASSWORD }}"));
        assert!(!text.contains("--ship"));
        assert!(text.contains("REGISTRY_SERVER: \"docker.io\""));
    }
}
