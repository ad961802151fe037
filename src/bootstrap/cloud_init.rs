//! `bootstrap --cloud-init`: the same steps as `cutover bootstrap`, as `#cloud-config`
//! user-data for a new instance's first boot (no ssh session, no cutover binary needed).
//!
//! The document is built from the one step list ([`super::STEPS`]): each step's [`Part`]
//! says what it writes into the user-data, or names why it writes nothing, so a new step
//! cannot be forgotten here. cloud-init's own modules do what they do well: `swap:`
//! (allocate, mkswap, swapon, the fstab line), `packages:`, `write_files:` (sysctl file,
//! nginx site and include); `runcmd:` does the rest with the same commands a live bootstrap
//! runs. The instance's RAM is not known here, so `--swap auto` sizes swap from the AWS
//! table for `--ram` (default [`DEFAULT_RAM`]) instead of cloud-init's own `auto`, which
//! gives a t2.micro only 1 GiB. The document is rendered from `templates/cloud-init.yml.j2`
//! (overridable per project); that name ends in `.yml`, so minijinja writes every plain
//! `{{ value }}` as a JSON scalar, which is valid YAML, and only the file contents go out raw
//! (`| safe`), as block literals.

use serde::Serialize;

use super::distro::Distro;
use super::Options;

/// The RAM `--swap auto` is sized for without `--ram`: a t2.micro's 1 GiB, the box cutover
/// is made for. The instance's own RAM is unknown when its user-data is written.
pub const DEFAULT_RAM: u64 = 1 << 30;

/// What the user-data should set up.
#[derive(Debug, Clone)]
pub struct Request {
    /// What a live run would get from the same flags and config (swap, swappiness, user,
    /// nginx files, identity path): each step's part reads what its live step reads.
    pub opts: Options,
    /// RAM of the instance type (`--ram`), for `--swap auto`; `None`: [`DEFAULT_RAM`].
    pub ram: Option<u64>,
    /// The image's distribution (`--os`); `None`: [`Distro::default`].
    pub os: Option<Distro>,
    pub project: Option<String>,
}

/// The request with the instance's defaults decided: what each step's part reads.
pub struct Instance<'a> {
    pub opts: &'a Options,
    pub ram: u64,
    pub os: Distro,
    /// The deploy user: `--user`, else the image's login user.
    pub user: String,
}

/// What one bootstrap step puts in the user-data, or why it puts nothing.
#[derive(Clone, Copy)]
pub enum Part {
    /// Its lines of the document, written in step order.
    Writes(fn(&Instance<'_>, &mut View)),
    /// Done at first boot by the part of the step named, as `how` says.
    DoneBy {
        step: &'static str,
        how: &'static str,
    },
    /// Not done at first boot: this note in the document says when it is (the notes of
    /// such steps come after every other note).
    Later(&'static str),
    /// Not done by the user-data, for this reason (no line in the document).
    Without(&'static str),
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

impl View {
    fn new(project: Option<String>, os: Distro) -> View {
        View {
            project,
            os: os.id().to_string(),
            notes: Vec::new(),
            swap: None,
            packages: Vec::new(),
            files: Vec::new(),
            runcmd: Vec::new(),
        }
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// A `write_files:` entry.
    pub fn file(&mut self, path: impl Into<String>, permissions: &str, content: String) {
        self.files.push(FileView {
            path: path.into(),
            permissions: permissions.into(),
            content,
        });
    }

    /// A `runcmd:` entry, run without a shell.
    pub fn run(&mut self, argv: &[&str]) {
        self.runcmd
            .push(argv.iter().map(|a| a.to_string()).collect());
    }

    /// A `runcmd:` entry that needs a shell (a test, `&&`, a umask).
    pub fn sh(&mut self, script: String) {
        self.runcmd.push(vec!["sh".into(), "-c".into(), script]);
    }
}

/// Builds the template context for `req`: every step's part, in step order.
pub fn view(req: &Request) -> View {
    let os = req.os.unwrap_or_default();
    let instance = Instance {
        opts: &req.opts,
        ram: req.ram.unwrap_or(DEFAULT_RAM),
        os,
        user: req
            .opts
            .user
            .clone()
            .unwrap_or_else(|| os.default_user().to_string()),
    };
    let mut view = View::new(req.project.clone(), os);
    for step in super::STEPS {
        if let Part::Writes(write) = step.cloud_init {
            write(&instance, &mut view);
        }
    }
    for step in super::STEPS {
        if let Part::Later(note) = step.cloud_init {
            view.note(note);
        }
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::{nginx_site, Target, STEPS};
    use crate::config::{Swap, Swappiness};

    /// Options that ask every step for something: swap, a user, a project with nginx files.
    fn everything() -> Options {
        Options {
            target: Target {
                root: None,
                dry_run: true,
            },
            swap: Swap::Auto,
            swappiness: Swappiness(10),
            install: true,
            user: Some("deploy".into()),
            nginx: Some(nginx_site::Files {
                site_path: "/etc/nginx/sites-enabled/app.conf".into(),
                site: "server {}\n".into(),
                include_path: "/etc/nginx/conf.d/app.inc".into(),
                include: "set $service_url http://127.0.0.1:8081;\n".into(),
                test: vec!["nginx".into(), "-t".into()],
                reload: vec!["nginx".into(), "-s".into(), "reload".into()],
                catch_all: true,
            }),
            no_config_reason: "no cutover.yml".into(),
            state_dir: Some(("/srv/app/.cutover".into(), "/srv/app".into())),
            identity: "/etc/cutover/identity.txt".into(),
            tls: None,
            nft: true,
            switch_grant: None,
        }
    }

    #[test]
    fn every_step_has_a_cloud_init_part_or_a_named_reason() {
        let mut names: Vec<&str> = STEPS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), STEPS.len(), "two steps share a name");
        let opts = everything();
        let writes = |name: &str| {
            STEPS
                .iter()
                .any(|s| s.name == name && matches!(s.cloud_init, Part::Writes(_)))
        };
        for os in [Distro::Ubuntu, Distro::Debian, Distro::Amzn, Distro::Fedora] {
            let instance = Instance {
                opts: &opts,
                ram: DEFAULT_RAM,
                os,
                user: "deploy".into(),
            };
            for step in STEPS {
                match step.cloud_init {
                    Part::Writes(write) => {
                        let empty = || View::new(None, os);
                        let mut view = empty();
                        write(&instance, &mut view);
                        assert_ne!(
                            serde_json::to_value(&view).unwrap(),
                            serde_json::to_value(empty()).unwrap(),
                            "{}: its part writes nothing ({os:?})",
                            step.name
                        );
                    }
                    Part::DoneBy { step: by, how } => {
                        assert!(
                            writes(by),
                            "{}: done by `{by}`, which writes nothing",
                            step.name
                        );
                        assert!(!how.trim().is_empty(), "{}: no how", step.name);
                    }
                    Part::Later(why) | Part::Without(why) => {
                        assert!(!why.trim().is_empty(), "{}: no reason", step.name);
                    }
                }
            }
        }
    }

    #[test]
    fn nftables_is_a_package_only_when_the_project_may_switch_by_nft() {
        let packages = |nft: bool| {
            let opts = Options {
                nft,
                ..everything()
            };
            let instance = Instance {
                opts: &opts,
                ram: DEFAULT_RAM,
                os: Distro::Debian,
                user: "deploy".into(),
            };
            let step = STEPS.iter().find(|s| s.name == "packages").unwrap();
            let Part::Writes(write) = step.cloud_init else {
                panic!("the packages step writes its part");
            };
            let mut view = View::new(None, Distro::Debian);
            write(&instance, &mut view);
            view.packages
        };
        assert!(packages(true).iter().any(|p| p == "nftables"));
        assert!(!packages(false).iter().any(|p| p == "nftables"));
    }

    #[test]
    fn later_notes_come_after_the_steps_own_notes() {
        let view = view(&Request {
            opts: everything(),
            ram: None,
            os: Some(Distro::Amzn),
            project: Some("app".into()),
        });
        let later: Vec<&str> = STEPS
            .iter()
            .filter_map(|s| match s.cloud_init {
                Part::Later(note) => Some(note),
                _ => None,
            })
            .collect();
        assert!(!later.is_empty());
        assert!(view.notes.len() > later.len(), "{:?}", view.notes);
        assert_eq!(view.notes[view.notes.len() - later.len()..], later);
    }
}
