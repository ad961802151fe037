//! `cutover init [DIR]`: scaffold a project that `cutover render --check` accepts as is;
//! `cutover init --ci github`: write the CI workflow for an existing project (src/ci.rs).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use crate::cli::{CiProvider, InitArgs};
use crate::config::Name;
use crate::context::Context;

const CONFIG_TEMPLATE: &str = include_str!("../../templates/cutover.yml.j2");

/// Keeps plaintext dotenv files out of git: only ciphertext and recipients are tracked.
const SECRETS_GITIGNORE: &str = "\
# Written by `cutover init`: only encrypted files and the recipients list belong in git.
*
!.gitignore
!*.env.age
!recipients.txt
";

const TEMPLATES_README: &str = "\
Templates placed here replace cutover's built-in template of the same name:

  compose.yml.j2        the compose file for both colors and the accessories
  nginx-site.conf.j2    the nginx server block (installed by `cutover bootstrap`)
  service-url.inc.j2    the nginx include that points at the active color

Start from the built-in ones: `cutover render --templates templates/` writes them here (a
file already here is kept). Delete the ones you do not change. Undefined variables are
errors, so `cutover render --check` catches a typo before a deploy does.
";

const PROJECT_GITIGNORE_LINES: &[&str] = &[".cutover/", "*.env"];

pub fn run(ctx: &Context, args: InitArgs) -> anyhow::Result<ExitCode> {
    let dir = match &args.dir {
        Some(d) => ctx.dir.join(d),
        None => ctx.dir.clone(),
    };
    if let Some(provider) = args.ci {
        return run_ci(ctx, &dir, provider, &args);
    }
    let config_path = dir.join("cutover.yml");
    if config_path.exists() {
        bail!(
            "{} already exists; cutover init never overwrites a config",
            config_path.display()
        );
    }
    let project = match &args.name {
        Some(name) => Name::parse(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?,
        None => project_name_for(&dir)?,
    };
    // Checked before anything is created: a mistake leaves no half-made project.
    let facts = Facts::of(&args, &project)?;
    std::fs::create_dir_all(dir.join("secrets"))
        .and_then(|()| std::fs::create_dir_all(dir.join("templates")))
        .with_context(|| format!("could not create directories in {}", dir.display()))?;

    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    let config_text = env
        .render_str(
            CONFIG_TEMPLATE,
            minijinja::context! {
                project => project.as_str(),
                // Padded so the comments stay in one column.
                image => format!("{:<24}", facts.image),
                image_name => &facts.image,
                port => format!("{:<25}", facts.port),
                health => format!("{:<23}", facts.health),
                user => facts.user,
            },
        )
        .context("could not render the scaffold config")?;

    write_new(&config_path, &config_text)?;
    write_new(&dir.join("secrets/.gitignore"), SECRETS_GITIGNORE)?;
    write_new(&dir.join("templates/README.md"), TEMPLATES_README)?;
    let gitignore = dir.join(".gitignore");
    append_missing_lines(&gitignore, PROJECT_GITIGNORE_LINES)?;

    if !ctx.quiet() {
        outln!("created {}", config_path.display())?;
        outln!("created {}", dir.join("secrets/.gitignore").display())?;
        outln!("created {}", dir.join("templates/README.md").display())?;
        outln!("updated {}", gitignore.display())?;
        outln!()?;
        outln!("next: edit cutover.yml, then `cutover render --check`")?;
        outln!("      secrets: `cutover secrets keygen --add`, then `cutover secrets encrypt prod.env`")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What `init`'s flags say about the app, checked, with the scaffold's defaults.
struct Facts {
    image: String,
    port: u16,
    health: String,
    /// The non-root deploy user (`--user root` is the root defaults).
    user: Option<String>,
}

impl Facts {
    fn of(args: &InitArgs, project: &Name) -> anyhow::Result<Facts> {
        let image = args
            .image
            .clone()
            .unwrap_or_else(|| project.as_str().to_string());
        crate::config::image_ref::check_repository(&image)
            .map_err(|why| anyhow::anyhow!("--image: {why}"))?;
        let port = args.port.unwrap_or(8080);
        if port == 0 {
            bail!("--port 0: expected the port the app listens on in its container (1-65535)");
        }
        let health = args.health.clone().unwrap_or_else(|| "/health".into());
        if !health.starts_with('/') || health.contains(|c: char| c.is_whitespace() || c == '#') {
            bail!("--health {health:?}: expected a URL path such as /health or /up");
        }
        let user = match args.user.as_deref() {
            None | Some("root") => None,
            Some(user) => Some(check_user(user)?.to_string()),
        };
        Ok(Facts {
            image,
            port,
            health,
            user,
        })
    }
}

/// A login name as useradd accepts it (and so safe in a path and the YAML).
fn check_user(user: &str) -> anyhow::Result<&str> {
    let ok = user.len() <= 32
        && user
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        bail!(
            "--user {user:?}: expected a login name such as admin, ubuntu or ec2-user \
             (lowercase letters, digits, `_`, `-`)"
        );
    }
    Ok(user)
}

/// The directory's name made into a compose project name (`My App` → `my-app`).
fn project_name_for(dir: &Path) -> anyhow::Result<Name> {
    // `.` and `..` have no name of their own; a directory not created yet has no canonical form.
    let named = dir
        .file_name()
        .filter(|n| *n != "." && *n != "..")
        .map(|n| n.to_string_lossy().into_owned());
    let raw = named
        .or_else(|| {
            std::fs::canonicalize(dir)
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .unwrap_or_default();
    let mut name: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_matches(['-', '_']).to_string();
    name.truncate(63);
    Name::parse(&name).map_err(|_| {
        anyhow::anyhow!(
            "cannot derive a project name from {}; pass --name NAME",
            dir.display()
        )
    })
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("could not write {}", path.display()))
}

fn append_missing_lines(path: &Path, lines: &[&str]) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    let mut text = existing.clone();
    for line in lines {
        if !existing.lines().any(|l| l.trim() == *line) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(line);
            text.push('\n');
        }
    }
    if text != existing {
        crate::atomic::write(path, text.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// `init --ci`: renders the workflow for the project in `dir` and writes (or prints) it.
fn run_ci(
    ctx: &Context,
    dir: &Path,
    provider: CiProvider,
    args: &InitArgs,
) -> anyhow::Result<ExitCode> {
    let config_path = if args.dir.is_some() {
        dir.join("cutover.yml")
    } else {
        ctx.config_path.clone()
    };
    let loaded = crate::config::load(&config_path, dir)?;
    let provider = match provider {
        CiProvider::Github => crate::ci::Provider::Github,
    };
    let options = crate::ci::Options {
        branch: args.branch.clone(),
        release_url: std::env::var("CUTOVER_RELEASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| crate::ci::DEFAULT_RELEASE_URL.to_string()),
        registry: push_registry(&loaded.config),
    };
    let renderer = crate::render::Renderer::new(&loaded.dir)?;
    let text = crate::ci::workflow(&renderer, provider, &loaded.config, &options)
        .context("could not render the CI workflow")?;
    if args.dry_run {
        out!("{text}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let path = loaded.dir.join(provider.path());
    if path.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to replace it (or --dry-run to see the new one)",
            path.display()
        );
    }
    let parent = path.parent().expect("the workflow path has a directory");
    std::fs::create_dir_all(parent)
        .with_context(|| format!("could not create {}", parent.display()))?;
    crate::atomic::write(&path, text.as_bytes(), 0o644)
        .with_context(|| format!("could not write {}", path.display()))?;
    if !ctx.quiet() {
        outln!("wrote {}", path.display())?;
        outln!()?;
        outln!(
            "next: add the repository secrets it names at its top (DEPLOY_HOST, DEPLOY_SSH_KEY,"
        )?;
        outln!("      DEPLOY_KNOWN_HOSTS, optional CUTOVER_AGE_KEY), commit it and push")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The registry CI pushes to: the config's `registry:`, when it has one; else the image is
/// shipped over SSH.
fn push_registry(config: &crate::config::Config) -> Option<crate::ci::PushRegistry> {
    config
        .registry
        .as_ref()
        .map(|registry| crate::ci::PushRegistry {
            server: registry.server.0.clone(),
            username: registry.username.clone(),
        })
}
