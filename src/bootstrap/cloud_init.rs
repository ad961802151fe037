//! `bootstrap --cloud-init`: the same steps as `cutover bootstrap`, as `#cloud-config`
//! user-data for a new instance's first boot (no ssh session, no cutover binary needed).
//!
//! cloud-init's own modules do what they do well: `swap:` (allocate, mkswap, swapon, the
//! fstab line), `packages:`, `write_files:` (sysctl file, nginx site and include); `runcmd:`
//! does the rest with the same commands a live bootstrap runs. The instance's RAM is not
//! known here, so `--swap auto` sizes swap from the AWS table for `--ram` (default 1 GiB, a
//! t2.micro) instead of cloud-init's own `auto`, which gives a t2.micro only 1 GiB. The
//! project's state dir is not created: the project directory does not exist at first boot.
//! The document is rendered from `templates/cloud-init.yml.j2` (overridable per project);
//! that name ends in `.yml`, so minijinja writes every plain `{{ value }}` as a JSON scalar,
//! which is valid YAML, and only the file contents go out raw (`| safe`), as block literals.

use serde::Serialize;

use super::distro::Distro;
use super::nginx_site::{Files, DEBIAN_DEFAULT_SITE};
use super::packages;
use super::{swap, sysctl};
use crate::config::{Size, Swap, Swappiness};
use crate::process::shell_quote;

/// What the user-data should set up.
#[derive(Debug, Clone)]
pub struct Request {
    pub swap: Swap,
    /// RAM of the instance type, for `--swap auto`.
    pub ram: u64,
    /// The image's distribution; `None`: the default image ([`Distro::default`]).
    pub os: Option<Distro>,
    pub user: Option<String>,
    pub swappiness: Swappiness,
    pub nginx: Option<Files>,
    pub project: Option<String>,
    pub identity: std::path::PathBuf,
}

#[derive(Debug, Serialize)]
pub struct SwapView {
    pub filename: String,
    pub size: u64,
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct FileView {
    pub path: String,
    pub permissions: String,
    pub content: String,
}

/// The template's context.
#[derive(Debug, Serialize)]
pub struct View {
    pub project: Option<String>,
    pub os: String,
    pub notes: Vec<String>,
    pub swap: Option<SwapView>,
    pub packages: Vec<String>,
    pub files: Vec<FileView>,
    pub runcmd: Vec<Vec<String>>,
}

fn sh(script: String) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script]
}

/// The swap file to create: `--swap SIZE`, or sized for `--ram` with `--swap auto`.
fn swap_view(req: &Request) -> Option<SwapView> {
    match req.swap {
        Swap::Off => None,
        Swap::Size(size) => Some(SwapView {
            filename: swap::SWAP_FILE.into(),
            size: size.bytes(),
            why: format!("{size} (--swap)"),
        }),
        Swap::Auto => {
            let size = swap::auto_size(req.ram);
            Some(SwapView {
                filename: swap::SWAP_FILE.into(),
                size,
                why: format!(
                    "{} for {} of RAM (AWS table; set --ram or --swap for another instance type)",
                    Size(size),
                    Size(req.ram)
                ),
            })
        }
    }
}

/// The nginx site and include files, and the commands that enable them.
fn nginx_site(
    req: &Request,
    files: &mut Vec<FileView>,
    runcmd: &mut Vec<Vec<String>>,
    notes: &mut Vec<String>,
) {
    match &req.nginx {
        Some(nginx) => {
            files.push(FileView {
                path: nginx.site_path.display().to_string(),
                permissions: "0644".into(),
                content: nginx.site.clone(),
            });
            files.push(FileView {
                path: nginx.include_path.display().to_string(),
                permissions: "0644".into(),
                content: nginx.include.clone(),
            });
            if nginx.catch_all {
                runcmd.push(sh(format!(
                    "if [ -L {DEBIAN_DEFAULT_SITE} ]; then rm {DEBIAN_DEFAULT_SITE}; fi"
                )));
            }
            let quote = |argv: &[String]| {
                argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
            };
            runcmd.push(sh(format!("{} && {}", quote(&nginx.test), quote(&nginx.reload))));
        }
        None => notes.push(
            "no cutover.yml: no nginx site; run from the project directory (or -C DIR) to include it"
                .into(),
        ),
    }
}

/// Builds the template context for `req`.
pub fn view(req: &Request) -> anyhow::Result<View> {
    let os = req.os.unwrap_or_default();
    let plan = packages::plan_for(os);
    let user = req
        .user
        .clone()
        .unwrap_or_else(|| os.default_user().to_string());
    let mut notes = Vec::new();

    let swap = swap_view(req);

    let mut pkgs: Vec<String> = [Some(plan.docker), plan.compose, Some(plan.nginx)]
        .into_iter()
        .flatten()
        .map(str::to_string)
        .collect();
    let has_age = plan.manager == packages::Manager::Apt;
    if has_age {
        // Only to create the box identity below.
        pkgs.push("age".into());
    }
    if plan.compose.is_none() {
        notes.push(format!(
            "{} packages no docker compose; once booted: {}",
            os.id(),
            packages::COMPOSE_BY_HAND
        ));
    }

    let mut files = vec![FileView {
        path: sysctl::PATH.into(),
        permissions: "0644".into(),
        content: sysctl::contents(req.swappiness.0),
    }];
    let mut runcmd = vec![vec!["sysctl".to_string(), "-p".into(), sysctl::PATH.into()]];
    runcmd.push(
        ["systemctl", "enable", "--now", "docker", "nginx"]
            .map(String::from)
            .to_vec(),
    );
    runcmd.push(vec![
        "usermod".into(),
        "-aG".into(),
        "docker".into(),
        user.clone(),
    ]);
    nginx_site(req, &mut files, &mut runcmd, &mut notes);
    let identity = req.identity.display().to_string();
    if has_age {
        let dir = req
            .identity
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "/".into());
        // age-keygen -o opens with O_EXCL and mode 0600: never overwrites.
        runcmd.push(sh(format!(
            "install -d -m 0755 {dir} && if [ ! -e {identity} ]; then (umask 077 && age-keygen -o {identity}) && chown {user}: {identity}; fi && age-keygen -y {identity}",
            dir = shell_quote(&dir),
            identity = shell_quote(&identity),
            user = shell_quote(&user),
        )));
        notes.push(format!(
            "box identity: {identity}; read its public key with `sudo age-keygen -y {identity}` and add it with: {}",
            super::identity::add_recipient_command("<that key>", "<this box>")
        ));
    } else {
        notes.push(format!(
            "{} packages no age: create the box identity with `sudo cutover bootstrap --no-install` once cutover is on the box",
            os.id()
        ));
    }
    notes.push("the project's state dir is created by the first `cutover deploy`".into());
    Ok(View {
        project: req.project.clone(),
        os: os.id().to_string(),
        notes,
        swap,
        packages: pkgs,
        files,
        runcmd,
    })
}
