//! What the compose engine observes before it decides anything, and what `status` shows:
//! the color nginx SERVES (asked through the probe, `/.cutover/active`), the color the include
//! on disk points at, the project's containers, and the record, with where they disagree.
//!
//! What nginx serves wins: a deploy killed between writing the include and reloading nginx
//! leaves a file naming one color while nginx still serves the other, and trusting the file
//! would send the next deploy onto the serving color.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Color, Loaded};
use crate::docker::compose::{containers_of, Container};
use crate::health::{Answer, Prober};
use crate::nginx::{include_port, Nginx};
use crate::state::{State, StateDir};

/// What nginx answered to `GET <probe>/.cutover/active`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Served {
    /// It serves this color's include.
    Color(Color),
    /// The include it serves has no marker (or names neither color): only the file can say.
    Unmarked(String),
    /// nginx did not answer the probe.
    Unreachable(String),
}

impl Served {
    pub fn color(&self) -> Option<Color> {
        match self {
            Served::Color(c) => Some(*c),
            _ => None,
        }
    }
}

/// What `status` and `deploy` see: what nginx serves, its include, the containers, and the
/// record.
#[derive(Debug, Clone, Serialize)]
pub struct Observed {
    /// What nginx serves, asked through the probe.
    pub served: Served,
    /// The color the nginx include points at (None: no include, or a port of neither color).
    pub nginx_color: Option<Color>,
    /// The include routes through the site's upstream group: a watch window's fallback that
    /// a deploy killed inside the window left open.
    pub fallback_open: bool,
    pub containers: Vec<Container>,
    pub running: BTreeSet<Color>,
    pub recorded: State,
    /// nft mode: the project's rule as read, when it leads nowhere a color is (a table
    /// missing, or changed by hand).
    #[serde(skip)]
    pub switch_problem: Option<SwitchProblem>,
}

/// What is wrong with a project's nft rule, in words.
#[derive(Debug, Clone)]
pub enum SwitchProblem {
    /// nginx's primary port reaches no color (the table is gone, or it leads to neither
    /// color's port): the site is down.
    Unreachable(String),
    /// The table no longer maps both ports (edited by hand): the next deploy rewrites it.
    Edited(String),
}

impl SwitchProblem {
    pub fn text(&self) -> &str {
        match self {
            SwitchProblem::Unreachable(t) | SwitchProblem::Edited(t) => t,
        }
    }
}

impl Observed {
    /// The color serving traffic: what nginx serves, if it runs; else the include's, if it
    /// runs; else the only running color; else whatever nginx or the record says.
    pub fn active(&self) -> Option<Color> {
        if let Some(c) = self.served.color().filter(|c| self.running.contains(c)) {
            return Some(c);
        }
        if let Some(c) = self.nginx_color.filter(|c| self.running.contains(c)) {
            return Some(c);
        }
        if self.running.len() == 1 {
            return self.running.iter().next().copied();
        }
        self.nginx_color.or(self.recorded.active)
    }

    /// The image a color's container runs (falling back to the record).
    pub fn image_of(&self, loaded: &Loaded, color: Color) -> Option<String> {
        let service = loaded.config.service(color);
        self.containers
            .iter()
            .find(|c| c.service == service && c.running())
            .map(|c| c.image.clone())
            .or_else(|| self.recorded.images.get(&color).cloned())
    }

    /// Where nginx, the containers and the record disagree, in words.
    pub fn disagreements(&self) -> Vec<String> {
        let mut out = Vec::new();
        let deployed_before = self.recorded.active.is_some() || !self.containers.is_empty();
        match self.nginx_color {
            Some(c) if !self.running.contains(&c) && deployed_before => out.push(format!(
                "nginx points at {c}, but no {c} container is running"
            )),
            None if !self.running.is_empty() => {
                out.push("containers run, but the nginx include points at neither color".into())
            }
            _ => {}
        }
        match (&self.served, self.nginx_color) {
            (Served::Color(s), Some(f)) if *s != f => out.push(format!(
                "nginx serves {s}, but the include on disk names {f} (a switch stopped before \
                 nginx reloaded); the next deploy puts the include back in line with nginx"
            )),
            (Served::Unreachable(why), _) if deployed_before && !self.running.is_empty() => {
                out.push(format!("nginx did not answer its probe: {why}"))
            }
            _ => {}
        }
        if let Some(problem) = &self.switch_problem {
            out.push(problem.text().to_string());
        }
        if self.running.len() == 2 {
            out.push("both colors are running (a deploy is in progress or was interrupted)".into());
        }
        if let (Some(rec), Some(active)) = (self.recorded.active, self.active()) {
            if rec != active {
                out.push(format!(
                    "the record says {rec} is active, but {active} serves"
                ));
            }
        }
        if let Some(p) = &self.recorded.in_progress {
            let alive = std::path::Path::new(&format!("/proc/{}", p.pid)).exists();
            out.push(format!(
                "a deploy of {} to {} (pid {}, started {}) {} at step `{}`",
                p.image,
                p.to,
                p.pid,
                p.started,
                if alive {
                    "is running"
                } else {
                    "did not finish; it stopped"
                },
                p.step
            ));
        }
        out
    }
}

/// Reads nginx's include and the engine's containers for a project.
pub fn observe(loaded: &Loaded) -> anyhow::Result<Observed> {
    observe_with(loaded, None)
}

/// [`observe`], with the nft rule when it was read moments ago under the deploy's lock
/// (`nft_switch::decide`, which listed it to learn that nft works here): not listed again.
pub fn observe_with(
    loaded: &Loaded,
    rule: super::nft_switch::FirstRead,
) -> anyhow::Result<Observed> {
    let config = &loaded.config;
    // No include yet is a project never switched; an unreadable one is an error.
    let include = Nginx {
        include: config.nginx.include.clone(),
        test: Vec::new(),
        reload: Vec::new(),
    }
    .current_include()?;
    let fallback_open = include
        .as_deref()
        .is_some_and(crate::nginx::include_routes_through_a_group);
    let port = include.as_deref().and_then(include_port);
    let switch_primary = config.nginx.switch_ports.map(|[p, _]| p.0);
    // In nft mode the include names the switch's port: the rule says which color that is
    // (the rule wins over the record; a rule that cannot be read is an error, not "none").
    let mut switch_problem = None;
    // The rule's color, for nginx's nft marker below: the kernel is asked once per observe.
    let mut rule_known = None;
    let nginx_color = if port.is_some() && port == switch_primary {
        // A rule that cannot be read is an error (fail closed); one that leads to neither
        // color is a disagreement the next deploy repairs by writing the rule.
        let read = match rule {
            Some(read) => read,
            None => super::nft_switch::read_or_unmapped(config)?,
        };
        rule_known = Some(rule_color_of(config, &read));
        match read {
            Err(unmapped) => {
                switch_problem = Some(SwitchProblem::Edited(unmapped));
                None
            }
            Ok(Some(m)) => {
                let color = super::nft_switch::color_of(config, &m);
                if color.is_none() {
                    switch_problem = Some(SwitchProblem::Unreachable(format!(
                        "the nft rule maps port {} to port {}, neither color's (changed by \
                         hand?): the next deploy writes it again",
                        m.primary, m.primary_to
                    )));
                }
                color
            }
            Ok(None) => {
                switch_problem = Some(SwitchProblem::Unreachable(format!(
                    "the include routes through the nft switch, but table ip {} does not \
                     exist (a reboot without the boot unit?): the next deploy writes it again",
                    crate::nft::table(config.project.as_str())
                )));
                None
            }
        }
    } else {
        port.and_then(|port| {
            Color::ALL
                .into_iter()
                .find(|c| config.colors.port(*c) == port)
        })
    };
    // nginx's answer and the engine's are independent: ask both at once.
    let (served, containers) = std::thread::scope(|scope| {
        let served = scope.spawn(|| ask_nginx_knowing(config, rule_known));
        let containers = containers_of(config.project.as_str());
        (served.join(), containers)
    });
    let served = served.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let containers = containers?;
    let running = containers
        .iter()
        .filter(|c| c.running())
        .filter_map(|c| config.color_of_service(&c.service))
        .collect();
    let recorded = StateDir::new(loaded.state_dir()).load()?;
    Ok(Observed {
        served,
        nginx_color,
        fallback_open,
        containers,
        running,
        recorded,
        switch_problem,
    })
}

/// How one color stands right now: its container, and one probe of its health path.
pub enum ColorHealth<'c> {
    Healthy,
    /// Running, but its health path answered this.
    Unhealthy(Answer),
    /// Its container exists and does not run.
    NotRunning(&'c Container),
    NoContainer,
}

/// [`ColorHealth`] of `color` among `containers` (a running container of its service wins),
/// probing only a color that runs. `status` shows it; a switch back goes only to a healthy one.
pub fn color_health<'c>(
    loaded: &Loaded,
    containers: &'c [Container],
    color: Color,
    prober: &Prober,
) -> ColorHealth<'c> {
    let service = loaded.config.service(color);
    let mut mine = containers
        .iter()
        .filter(|c| c.service == service)
        .peekable();
    let Some(first) = mine.peek().copied() else {
        return ColorHealth::NoContainer;
    };
    if !mine.any(|c| c.running()) {
        return ColorHealth::NotRunning(first);
    }
    match prober.get(&health_url(loaded, color), None) {
        Answer::Status { code, .. } if code == loaded.config.app.health.status => {
            ColorHealth::Healthy
        }
        other => ColorHealth::Unhealthy(other),
    }
}

/// What `/.cutover/active` answers: `<color> <upstream> <project>`; includes rendered by
/// older versions or custom templates may say `<color> <upstream>` or `<color>` alone.
pub(super) struct Marker<'a> {
    color: &'a str,
    upstream: Option<&'a str>,
    project: Option<&'a str>,
}

impl<'a> Marker<'a> {
    pub fn parse(body: &'a str) -> Marker<'a> {
        let mut words = body.split_whitespace();
        Marker {
            color: words.next().unwrap_or_default(),
            upstream: words.next(),
            project: words.next(),
        }
    }

    /// The color this marker names, when it is this project's: the name of a color, this
    /// project's upstream for it, this project's name. Several projects share one nginx, so a
    /// marker that names only a color may be another project's (routed by Host).
    pub fn ours(&self, config: &crate::config::Config) -> Result<Color, String> {
        self.ours_knowing(config, None)
    }

    /// [`Self::ours`], with the color the project's nft rule leads to when it was read moments
    /// ago ([`rule_color_of`]): an nft marker is then not read back from the kernel again.
    pub fn ours_knowing(
        &self,
        config: &crate::config::Config,
        rule: Option<Result<Option<Color>, String>>,
    ) -> Result<Color, String> {
        if self.color == "nft" {
            return self.ours_nft(config, rule);
        }
        let color = Color::ALL
            .into_iter()
            .find(|c| c.as_str() == self.color)
            .ok_or_else(|| format!("`{}` is not a color", self.color))?;
        if let Some(project) = self.project.filter(|p| *p != config.project.as_str()) {
            return Err(format!(
                "it is project {project}'s marker, not {}'s",
                config.project
            ));
        }
        let expected = crate::render::upstream_url(config, color);
        if let Some(upstream) = self.upstream.filter(|u| *u != expected) {
            return Err(format!(
                "its upstream {upstream} is not this project's {color} ({expected})"
            ));
        }
        Ok(color)
    }
}

impl Marker<'_> {
    /// The nft include's marker (`nft <primary url> <project>`): which color it serves is
    /// the kernel's rule: `rule` as read moments ago, else read back now.
    fn ours_nft(
        &self,
        config: &crate::config::Config,
        rule: Option<Result<Option<Color>, String>>,
    ) -> Result<Color, String> {
        if let Some(project) = self.project.filter(|p| *p != config.project.as_str()) {
            return Err(format!(
                "it is project {project}'s marker, not {}'s",
                config.project
            ));
        }
        let expected = crate::render::switch_addresses(config).map(|[p, _]| format!("http://{p}"));
        if self.upstream != expected.as_deref() {
            return Err(format!(
                "it routes through the nft switch at {}, not this project's ({})",
                self.upstream.unwrap_or("?"),
                expected.as_deref().unwrap_or("no nginx.switch_ports")
            ));
        }
        rule.unwrap_or_else(|| rule_color(config))?.ok_or_else(|| {
            format!(
                "nginx routes through the nft switch, but table ip {} does not exist",
                crate::nft::table(config.project.as_str())
            )
        })
    }
}

/// The color the project's nft rule leads its primary port to (None: no table); a rule
/// that cannot be read, or leads to neither color, in words.
fn rule_color(config: &crate::config::Config) -> Result<Option<Color>, String> {
    match super::nft_switch::read_or_unmapped(config) {
        Ok(read) => rule_color_of(config, &read),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// [`rule_color`] of a rule already read ([`super::nft_switch::read_or_unmapped`]'s answer).
fn rule_color_of(
    config: &crate::config::Config,
    read: &Result<Option<crate::nft::Mapping>, String>,
) -> Result<Option<Color>, String> {
    match read {
        Ok(None) => Ok(None),
        Ok(Some(m)) => super::nft_switch::color_of(config, m)
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "the nft rule maps port {} to port {}, neither color's",
                    m.primary, m.primary_to
                )
            }),
        Err(unmapped) => Err(unmapped.clone()),
    }
}

/// Asks nginx which color it serves: `/.cutover/active` answers `<color> <upstream> <project>`.
pub fn ask_nginx(config: &crate::config::Config) -> Served {
    ask_nginx_knowing(config, None)
}

/// [`ask_nginx`], with the color of the project's nft rule when it was read moments ago (an
/// nft marker's color is the rule's: not read from the kernel a second time).
fn ask_nginx_knowing(
    config: &crate::config::Config,
    rule: Option<Result<Option<Color>, String>>,
) -> Served {
    let url = format!("{}/.cutover/active", config.nginx.probe_base());
    match Prober::new(Duration::from_secs(2)).get(&url, config.nginx.probe_host().as_deref()) {
        Answer::Status { code: 200, body } => match Marker::parse(&body).ours_knowing(config, rule)
        {
            Ok(c) => Served::Color(c),
            Err(why) => Served::Unmarked(format!("{url} answered {:?}: {why}", body.trim())),
        },
        Answer::Status { code, .. } => Served::Unmarked(format!("{url} answered HTTP {code}")),
        Answer::NoAnswer(why) => Served::Unreachable(format!("{url}: {why}")),
    }
}

/// The URL of a color's health endpoint on this box.
pub fn health_url(loaded: &Loaded, color: Color) -> String {
    let config = &loaded.config;
    let host = match config.colors.upstream_host() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!(
        "http://{host}:{}{}",
        config.colors.port(color),
        config.app.health.path
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(project: &str, blue: u16) -> crate::config::Config {
        let text = format!(
            "project: {project}\napp: {{ name: web, image: example/web, port: 3000, memory: 64M }}\ncolors: {{ blue: {blue}, green: {} }}\n",
            blue + 1
        );
        crate::config::Config::from_yaml(&text, std::path::Path::new("cutover.yml")).unwrap()
    }

    #[test]
    fn a_marker_is_ours_only_with_our_project_and_upstream() {
        let two = config("two", 9011);
        let ours = Marker::parse("blue http://127.0.0.1:9011 two\n").ours(&two);
        assert_eq!(ours, Ok(Color::Blue));
        // Project one's include, served for project two's name (a Host collision): its color
        // is `blue` too, and must not pass for project two's.
        let theirs = Marker::parse("blue http://127.0.0.1:8081 one\n").ours(&two);
        assert!(
            theirs
                .as_ref()
                .unwrap_err()
                .contains("project one's marker"),
            "{theirs:?}"
        );
        let old_format = Marker::parse("blue http://127.0.0.1:8081\n").ours(&two);
        assert!(old_format
            .unwrap_err()
            .contains("is not this project's blue"));
        assert_eq!(
            Marker::parse("green http://127.0.0.1:9012").ours(&two),
            Ok(Color::Green)
        );
        assert_eq!(Marker::parse("green").ours(&two), Ok(Color::Green));
        assert!(Marker::parse("purple x two").ours(&two).is_err());
    }

    /// nginx's nft marker with the rule read moments ago: the verdicts a read of the kernel
    /// gave (the rule's color; no table; a table edited by hand; a port of neither color),
    /// and a reload-mode marker or another project's is judged as before, whatever the rule.
    #[test]
    fn an_nft_marker_takes_the_rule_read_moments_ago_with_the_verdicts_of_a_fresh_read() {
        let text =
            "project: two\napp: { name: web, image: example/web, port: 3000, memory: 64M }\n\
                    colors: { blue: 9011, green: 9012 }\n\
                    nginx: { switch: nft, switch_ports: [9100, 9101] }\n";
        let two =
            crate::config::Config::from_yaml(text, std::path::Path::new("cutover.yml")).unwrap();
        let nft = Marker::parse("nft http://127.0.0.1:9100 two\n");
        let mapping = |to: u16| crate::nft::Mapping {
            primary: 9100,
            primary_to: to,
            backup: 9101,
            backup_to: to,
        };
        let rule = |read| Some(rule_color_of(&two, &read));
        assert_eq!(
            nft.ours_knowing(&two, rule(Ok(Some(mapping(9012))))),
            Ok(Color::Green)
        );
        let gone = nft.ours_knowing(&two, rule(Ok(None))).unwrap_err();
        assert!(gone.contains("does not exist"), "{gone}");
        let edited = nft
            .ours_knowing(&two, rule(Err("does not map ports 9100 and 9101".into())))
            .unwrap_err();
        assert!(edited.contains("does not map ports"), "{edited}");
        let elsewhere = nft
            .ours_knowing(&two, rule(Ok(Some(mapping(1)))))
            .unwrap_err();
        assert!(elsewhere.contains("neither color's"), "{elsewhere}");
        // The include names the switch port, nginx still serves the reload-mode marker.
        assert_eq!(
            Marker::parse("blue http://127.0.0.1:9011 two")
                .ours_knowing(&two, rule(Ok(Some(mapping(9012))))),
            Ok(Color::Blue)
        );
        // Another project's nft marker, or another switch port, is never ours.
        for other in [
            "nft http://127.0.0.1:9100 one",
            "nft http://127.0.0.1:9200 two",
        ] {
            assert!(Marker::parse(other)
                .ours_knowing(&two, rule(Ok(Some(mapping(9012)))))
                .is_err());
        }
    }
}
