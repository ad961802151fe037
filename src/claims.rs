//! What a project claims on its box (host ports, the server names it answers on each nginx
//! port, its nginx files, its compose project name), and the check that no two cutover
//! projects on one box claim the same thing.
//!
//! Several projects share one nginx (one port, routed by `server_name`), so what must differ
//! is everything a project writes or binds: two projects with one color port would start
//! each other's traffic, one server name on one port is nginx's "conflicting server name"
//! (the second site is silently ignored), and one include or site file, or one compose project
//! name, would make one project's deploy rewrite or stop the other's. The check runs before
//! a deploy or a bootstrap changes anything and names BOTH projects.
//!
//! Each project's claims are written to `<state_dir>/claims.json` (0600 like every file in
//! the state dir, whose 0750 would hide a looser mode from other users anyway) when it deploys
//! or bootstraps, and found through the box-wide registry
//! ([`crate::registry`]). A registered project without claims (deployed by a cutover before
//! this file existed) is not checked against; its next deploy writes them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::config::Loaded;

/// One host port a project binds (or, for `nginx.listen`, shares with other sites).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortClaim {
    pub port: u16,
    /// The config key, e.g. `colors.blue`.
    pub key: String,
    /// nginx's listen port: other projects' sites may listen on it too.
    pub shared: bool,
}

/// One server name on one nginx port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameClaim {
    pub port: u16,
    pub server_name: String,
    pub key: String,
}

/// One file a project writes and no other may.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileClaim {
    pub path: PathBuf,
    pub key: String,
}

/// Everything one project claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub project: String,
    /// Its cutover.yml, to name it in a refusal.
    pub config: PathBuf,
    pub ports: Vec<PortClaim>,
    pub names: Vec<NameClaim>,
    pub files: Vec<FileClaim>,
}

/// The host port of a compose `ports:` entry (`8080:80`, `127.0.0.1:6379:6379/tcp`), if any.
fn host_port(spec: &str) -> Option<u16> {
    let spec = spec.split('/').next()?;
    let mut parts = spec.rsplit(':');
    let _container = parts.next()?;
    parts.next()?.parse().ok()
}

impl Claims {
    pub fn of(loaded: &Loaded) -> Claims {
        let config = &loaded.config;
        let nginx = &config.nginx;
        let port = |port: u16, key: &str, shared: bool| PortClaim {
            port,
            key: key.to_string(),
            shared,
        };
        let mut ports = vec![
            port(config.colors.blue.0, "colors.blue", false),
            port(config.colors.green.0, "colors.green", false),
        ];
        // nft mode's stable ports: another project's table mapping the same port would take
        // this project's traffic.
        if let Some([primary, backup]) = nginx.switch_ports {
            ports.push(port(primary.0, "nginx.switch_ports (primary)", false));
            ports.push(port(backup.0, "nginx.switch_ports (backup)", false));
        }
        for (name, acc) in &config.accessories {
            ports.extend(acc.ports.iter().filter_map(|spec| {
                host_port(spec).map(|p| port(p, &format!("accessories.{name}.ports"), false))
            }));
        }
        let mut listens: Vec<(u16, &str)> = nginx
            .listen_port()
            .map(|p| (p, "nginx.listen"))
            .into_iter()
            .collect();
        if let Some(tls) = &nginx.tls {
            listens.extend(tls.port().map(|p| (p, "nginx.tls.listen")));
        }
        let mut names = Vec::new();
        for (p, key) in &listens {
            ports.push(port(*p, key, true));
            names.extend(nginx.server_name.split_whitespace().map(|name| NameClaim {
                port: *p,
                server_name: name.to_string(),
                key: format!("nginx.server_name (on {key} {p})"),
            }));
        }
        let file = |path: &Path, key: &str| FileClaim {
            path: loaded.resolve(path),
            key: key.to_string(),
        };
        Claims {
            project: config.project.to_string(),
            config: loaded.path.clone(),
            ports,
            names,
            files: vec![
                file(&nginx.include, "nginx.include"),
                file(&nginx.site, "nginx.site"),
            ],
        }
    }

    /// Every collision between `self` and `other`, in words naming both projects.
    pub fn collisions(&self, other: &Claims) -> Vec<String> {
        let who = |c: &Claims, key: &str| {
            format!("{key} of project {} ({})", c.project, c.config.display())
        };
        let mut out = Vec::new();
        if self.project == other.project {
            out.push(format!(
                "compose project name {}: project {} ({}) and project {} ({}) would share containers",
                self.project,
                self.project,
                self.config.display(),
                other.project,
                other.config.display()
            ));
        }
        for mine in &self.ports {
            for theirs in other.ports.iter().filter(|t| t.port == mine.port) {
                if !(mine.shared && theirs.shared) {
                    out.push(format!(
                        "port {}: {} and {}",
                        mine.port,
                        who(self, &mine.key),
                        who(other, &theirs.key)
                    ));
                }
            }
        }
        for mine in &self.names {
            for theirs in other.names.iter().filter(|t| {
                t.port == mine.port && same_server_name(&t.server_name, &mine.server_name)
            }) {
                // Spelled differently, the same to nginx: show both spellings.
                let name = if theirs.server_name == mine.server_name {
                    mine.server_name.clone()
                } else {
                    format!(
                        "{} (to nginx {}, the same as {})",
                        mine.server_name,
                        nginx_names(&mine.server_name)[0],
                        theirs.server_name
                    )
                };
                out.push(format!(
                    "server name {name} on port {}: {} and {}",
                    mine.port,
                    who(self, &mine.key),
                    who(other, &theirs.key)
                ));
            }
        }
        for mine in &self.files {
            for theirs in other.files.iter().filter(|t| t.path == mine.path) {
                out.push(format!(
                    "file {}: {} and {}",
                    mine.path.display(),
                    who(self, &mine.key),
                    who(other, &theirs.key)
                ));
            }
        }
        out
    }
}

/// `<state_dir>/claims.json`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("claims.json")
}

/// Whether nginx takes two `server_name`s for the same name: it compares them without case,
/// a trailing dot (a fully qualified name) names the same host, and `.example.com` is also
/// `example.com` itself.
fn same_server_name(a: &str, b: &str) -> bool {
    let theirs = nginx_names(b);
    nginx_names(a).iter().any(|name| theirs.contains(name))
}

/// The names nginx reads a server name as: lowercase, no trailing dot; `.example.com` is
/// `example.com` (first, the name as nginx compares it) and `*.example.com` both.
fn nginx_names(name: &str) -> Vec<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match name.strip_prefix('.') {
        Some(rest) => vec![rest.to_string(), format!("*.{rest}")],
        None => vec![name],
    }
}

impl Claims {
    /// Where the project lives: its config's directory, or, for a copy synced by `--host`
    /// (`<remote.dir>/releases/<stamp>/cutover.yml`, marked by the sync), the `remote.dir`
    /// above its releases, so every release of one project is one home.
    pub fn home(&self) -> PathBuf {
        let dir = self.config.parent().unwrap_or(Path::new("/"));
        let synced = dir.join(crate::config::SYNC_MARKER).exists();
        match dir.parent() {
            Some(releases) if synced && releases.file_name().is_some_and(|n| n == "releases") => {
                releases.parent().unwrap_or(releases).to_path_buf()
            }
            _ => dir.to_path_buf(),
        }
    }

    /// Whether `other` is this same project, registered from another state dir (a release of
    /// it, or its `state_dir` before a change): never a collision.
    pub fn same_project(&self, other: &Claims) -> bool {
        let synced = |c: &Claims| {
            c.config
                .parent()
                .is_some_and(|d| d.join(crate::config::SYNC_MARKER).exists())
        };
        // Two configs in one folder (prod.yml, staging.yml) are two projects; every release of
        // a synced copy is one.
        let same_file = self.config == other.config || (synced(self) && synced(other));
        self.project == other.project && self.home() == other.home() && same_file
    }
}

/// The claims of every other registered project on the box that recorded them, with the
/// state dir each is registered under.
fn others(own_state_dir: &Path) -> anyhow::Result<Vec<(PathBuf, Claims)>> {
    let own = own_state_dir.canonicalize().ok();
    let mut out = Vec::new();
    for dir in crate::registry::projects()? {
        if own.as_deref() == Some(dir.as_path()) {
            continue;
        }
        let file = path(&dir);
        match std::fs::read_to_string(&file) {
            Ok(text) => out.push((
                dir.clone(),
                serde_json::from_str(&text).with_context(|| {
                    format!(
                        "{} does not parse (expected a cutover project's claims as JSON): cannot \
                         tell whether this project collides with it",
                        file.display()
                    )
                })?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("could not read {}", file.display())),
        }
    }
    Ok(out)
}

/// Refuses when this project collides with another registered project on the box.
pub fn check(loaded: &Loaded) -> anyhow::Result<()> {
    let mine = Claims::of(loaded);
    let mut collisions = Vec::new();
    let mut entries = Vec::new();
    for (state_dir, other) in others(&loaded.state_dir())? {
        if mine.same_project(&other) {
            continue;
        }
        let found = mine.collisions(&other);
        if !found.is_empty() {
            if let Some(entry) = crate::registry::entry_of(&state_dir) {
                entries.push(format!(
                    "project {} in {}: rm {}",
                    other.project,
                    state_dir.display(),
                    entry.display()
                ));
            }
        }
        collisions.extend(found);
    }
    if collisions.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "project {} collides with another cutover project on this box (nothing changed):\n  {}\n\
         give each project its own colors ports, nginx.server_name, nginx.include and nginx.site; \
         if the other project is gone (or is this one under an old name), remove its registry \
         entry:\n  {}",
        mine.project,
        collisions.join("\n  "),
        entries.join("\n  ")
    )
}

/// Records the project's claims in its state dir and registers it, so later projects are
/// checked against it.
pub fn record(loaded: &Loaded) -> anyhow::Result<()> {
    let state_dir = loaded.state_dir();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("could not create {}", state_dir.display()))?;
    let file = path(&state_dir);
    let text = serde_json::to_string_pretty(&Claims::of(loaded))? + "\n";
    if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
        crate::atomic::write(&file, text.as_bytes(), crate::state::FILE_MODE)?;
    }
    crate::registry::register(&state_dir)?;
    Ok(())
}

/// [`check`], then (unless `dry_run`) [`record`]: what a deploy does before anything else.
pub fn claim(loaded: &Loaded, dry_run: bool) -> anyhow::Result<()> {
    check(loaded)?;
    if !dry_run {
        record(loaded)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_of_compose_port_specs() {
        assert_eq!(host_port("8080:80"), Some(8080));
        assert_eq!(host_port("127.0.0.1:6379:6379/tcp"), Some(6379));
        assert_eq!(host_port("[::1]:5432:5432"), Some(5432));
        assert_eq!(host_port("6379"), None);
    }

    fn claims(project: &str, blue: u16, name: &str, include: &str) -> Claims {
        Claims {
            project: project.into(),
            config: PathBuf::from(format!("/srv/{project}/cutover.yml")),
            ports: vec![
                PortClaim {
                    port: blue,
                    key: "colors.blue".into(),
                    shared: false,
                },
                PortClaim {
                    port: 80,
                    key: "nginx.listen".into(),
                    shared: true,
                },
            ],
            names: vec![NameClaim {
                port: 80,
                server_name: name.into(),
                key: "nginx.server_name".into(),
            }],
            files: vec![FileClaim {
                path: include.into(),
                key: "nginx.include".into(),
            }],
        }
    }

    #[test]
    fn two_projects_cannot_share_a_switch_port() {
        let switch = |port| PortClaim {
            port,
            key: "nginx.switch_ports (primary)".into(),
            shared: false,
        };
        let mut one = claims("one", 8081, "one.example", "/etc/one.inc");
        let mut two = claims("two", 9081, "two.example", "/etc/two.inc");
        one.ports.push(switch(9500));
        two.ports.push(switch(9500));
        let found = one.collisions(&two);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("port 9500")
                && found[0].contains("nginx.switch_ports (primary) of project two"),
            "{found:?}"
        );
        two.ports.pop();
        two.ports.push(switch(9502));
        assert!(one.collisions(&two).is_empty());
    }

    #[test]
    fn every_release_of_a_project_is_the_same_project() {
        let boxdir = tempfile::tempdir().unwrap();
        let release = |stamp: &str, synced: bool| {
            let dir = boxdir.path().join("web/releases").join(stamp);
            std::fs::create_dir_all(&dir).unwrap();
            if synced {
                std::fs::write(dir.join(crate::config::SYNC_MARKER), "{}").unwrap();
            }
            dir.join("cutover.yml")
        };
        let mut a = claims("web", 8081, "a.example", "/etc/nginx/a.inc");
        let mut b = a.clone();
        a.config = release("0000000001.0-1", true);
        b.config = release("0000000009.0-2", true);
        assert_eq!(a.home(), boxdir.path().join("web"));
        assert!(a.same_project(&b), "a state_dir change between releases");
        let mut local = a.clone();
        local.config = PathBuf::from("/srv/web/cutover.yml");
        assert_eq!(local.home(), Path::new("/srv/web"));
        assert!(
            !local.same_project(&a),
            "another copy of the project elsewhere collides"
        );
        let mut renamed = b.clone();
        renamed.project = "web2".into();
        assert!(!renamed.same_project(&a));
        // Two configs in one folder are two projects.
        let (mut prod, mut staging) = (local.clone(), local.clone());
        prod.config = PathBuf::from("/srv/app/prod.yml");
        staging.config = PathBuf::from("/srv/app/staging.yml");
        assert!(!prod.same_project(&staging));
        assert!(prod.same_project(&prod.clone()));
        // Two copies in folders that merely sit in a `releases/` dir are two projects.
        let (mut staging, mut prod) = (a.clone(), a.clone());
        staging.config = release("staging", false);
        prod.config = release("prod", false);
        assert!(!staging.same_project(&prod));
    }

    #[test]
    fn server_names_collide_as_nginx_compares_them() {
        let one = claims("one", 8081, "app.example.com", "/etc/nginx/one.inc");
        for same in ["APP.Example.COM.", "app.example.com.", "App.Example.Com"] {
            let two = claims("two", 8091, same, "/etc/nginx/two.inc");
            let found = one.collisions(&two);
            assert_eq!(found.len(), 1, "{same}: {found:?}");
            assert!(found[0].starts_with("server name"), "{found:?}");
        }
        let other = claims("two", 8091, "api.example.com", "/etc/nginx/two.inc");
        assert!(one.collisions(&other).is_empty());
        let dotted = claims("two", 8091, ".app.example.com", "/etc/nginx/two.inc");
        assert_eq!(one.collisions(&dotted).len(), 1, "`.name` covers `name`");
        let wild = claims("three", 8095, "*.app.example.com", "/etc/nginx/three.inc");
        assert_eq!(dotted.collisions(&wild).len(), 1, "`.name` covers `*.name`");
        assert!(one.collisions(&wild).is_empty());
    }

    #[test]
    fn collisions_name_both_projects() {
        let api = claims("api", 8081, "api.example", "/etc/nginx/api.inc");
        let admin = claims("admin", 8091, "admin.example", "/etc/nginx/admin.inc");
        assert!(
            api.collisions(&admin).is_empty(),
            "one shared listen port is fine"
        );
        let clash = claims("admin", 8081, "api.example", "/etc/nginx/api.inc");
        let found = api.collisions(&clash);
        assert_eq!(found.len(), 3, "{found:?}");
        for line in &found {
            assert!(
                line.contains("project api") && line.contains("project admin"),
                "{line}"
            );
        }
    }
}
