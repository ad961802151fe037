//! Checks that span more than one key (equal color ports, an accessory named like a color
//! service, `depends_on` naming a missing accessory, a color on nginx's port…) and values
//! written verbatim into the nginx site, run after deserialization; and [`Config::warnings`]
//! for settings that work but defeat the design (a color published on every interface).
//!
//! Each failure names the key path it is about; [`super::yaml`] turns that path into the
//! line and column where the key is written.

use super::schema::{Color, Config};

/// A failed cross-key check, before it learns its file and line.
#[derive(Debug)]
pub(super) struct Invalid {
    pub key: String,
    pub message: String,
}

impl Invalid {
    fn new(key: impl Into<String>, message: String) -> Self {
        Invalid {
            key: key.into(),
            message,
        }
    }
}

impl Config {
    /// The first cross-key problem, if any.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        self.check_colors()?;
        self.check_app()?;
        self.check_health()?;
        self.check_accessories()?;
        self.check_workers()?;
        self.check_nginx()?;
        self.check_tls()
    }

    fn check_tls(&self) -> Result<(), Invalid> {
        let Some(tls) = &self.nginx.tls else {
            return Ok(());
        };
        if tls.domains.is_empty() {
            return Err(Invalid::new(
                "nginx.tls.domains",
                "must list at least one domain name, e.g. [example.com, www.example.com]"
                    .to_string(),
            ));
        }
        for domain in &tls.domains {
            let plain = !domain.is_empty()
                && domain.len() <= 253
                && !domain.starts_with(['.', '-'])
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            if !plain {
                return Err(Invalid::new(
                    "nginx.tls.domains",
                    format!(
                        "`{domain}` is not a domain name (expected letters, digits, `.` and `-`; \
                         the webroot challenge cannot issue wildcards)"
                    ),
                ));
            }
        }
        let email_ok = tls
            .email
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
            && !tls.email.contains(char::is_whitespace);
        if !email_ok {
            return Err(Invalid::new(
                "nginx.tls.email",
                format!(
                    "`{}` is not an email address (the ACME account's contact)",
                    tls.email
                ),
            ));
        }
        if !tls.acme_server.starts_with("https://") {
            return Err(Invalid::new(
                "nginx.tls.acme_server",
                format!(
                    "`{}` is not an https:// ACME directory URL",
                    tls.acme_server
                ),
            ));
        }
        if tls.port().is_none() {
            return Err(Invalid::new(
                "nginx.tls.listen",
                format!(
                    "`{}` has no port (expected 443 or address:port)",
                    tls.listen
                ),
            ));
        }
        for (key, path) in [
            ("webroot", &tls.webroot),
            ("config_dir", &tls.config_dir),
            ("work_dir", &tls.work_dir),
            ("logs_dir", &tls.logs_dir),
            (
                "renew_cron",
                tls.renew_cron.as_ref().unwrap_or(&tls.logs_dir),
            ),
        ] {
            if !path.is_absolute() {
                return Err(Invalid::new(
                    format!("nginx.tls.{key}"),
                    format!("`{}` must be an absolute path", path.display()),
                ));
            }
        }
        Ok(())
    }

    fn check_colors(&self) -> Result<(), Invalid> {
        let colors = &self.colors;
        if colors.blue == colors.green {
            return Err(Invalid::new(
                "colors.green",
                format!(
                    "port {} is also colors.blue (expected two different host ports)",
                    colors.green
                ),
            ));
        }
        if let Some([primary, backup]) = self.nginx.switch_ports {
            let taken = [
                (self.colors.blue.0, "colors.blue"),
                (self.colors.green.0, "colors.green"),
                (self.nginx.listen_port().unwrap_or(0), "nginx.listen"),
                (
                    self.nginx.tls.as_ref().and_then(|t| t.port()).unwrap_or(0),
                    "nginx.tls.listen",
                ),
            ];
            for port in [primary, backup] {
                if let Some((_, key)) = taken.iter().find(|(p, _)| *p == port.0) {
                    return Err(Invalid::new(
                        "nginx.switch_ports",
                        format!("port {port} is also {key} (expected two ports of their own)"),
                    ));
                }
            }
            if primary == backup {
                return Err(Invalid::new(
                    "nginx.switch_ports",
                    format!("both ports are {primary} (expected two different ports: [primary, backup])"),
                ));
            }
        } else if self.nginx.switch == super::schema::SwitchMode::Nft {
            return Err(Invalid::new(
                "nginx.switch",
                "`nft` needs nginx.switch_ports: [primary, backup] (two free loopback ports)"
                    .to_string(),
            ));
        }
        if let Some(listen) = self.nginx.listen_port() {
            for color in Color::ALL {
                if self.colors.port(color) == listen {
                    return Err(Invalid::new(
                        format!("colors.{color}"),
                        format!(
                            "port {listen} is also nginx.listen (`{}`): nginx and the {color} color cannot both bind it (expected a color port nginx does not listen on)",
                            self.nginx.listen
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Settings that load and work, but that the user should hear about on every command.
    pub(super) fn warnings(&self) -> Vec<Invalid> {
        let mut warnings = Vec::new();
        if self.colors.bind.is_unspecified() {
            warnings.push(Invalid::new(
                "colors.bind",
                format!(
                    "{} publishes both colors on every interface: the app answers on ports {} and {} around nginx (from other hosts too, unless a firewall blocks them); the default 127.0.0.1 keeps it behind nginx",
                    self.colors.bind, self.colors.blue, self.colors.green
                ),
            ));
        }
        warnings
    }

    /// The keys set in this config that only the compose engine carries out, each with why.
    /// The swarm engine refuses to deploy while any is set: running without them would skip
    /// a worker without a word, and it cannot keep that worker's promise (see the reason).
    /// Hooks, `registry:`, `app.release` and `overlap: true` workers work under both.
    pub(super) fn compose_only(&self) -> Vec<Invalid> {
        self.workers
            .iter()
            .filter(|(_, worker)| !worker.overlap)
            .map(|(name, _)| {
                Invalid::new(
                    format!("workers.{name}"),
                    "the swarm engine refuses a worker with `overlap: false` (the default): it promises one \
                     copy at a time (a scheduler never runs twice), and swarm's nearest \
                     (`update_config.order: stop-first`, `parallelism: 1`) does not keep it: \
                     swarm waits at most one minute for the old task to stop before it starts \
                     the new one anyway (swarmkit's old-task timeout), and a node cut off from \
                     the managers keeps running its task while swarm starts a replacement \
                     elsewhere; set `overlap: true` if two copies for a moment are harmless \
                     (it then runs as a start-first swarm service), or deploy with the compose \
                     engine"
                        .to_string(),
                )
            })
            .collect()
    }

    fn check_app(&self) -> Result<(), Invalid> {
        if let Err(why) = super::image_ref::check_reference(&self.app.image) {
            return Err(Invalid::new(
                "app.image",
                format!(
                    "`{}` is not an image repository such as myuser/app: {why}",
                    self.app.image
                ),
            ));
        }
        if let Err(why) = super::image_ref::check_repository(&self.app.image) {
            return Err(Invalid::new("app.image", why));
        }
        for (name, acc) in &self.accessories {
            if let Err(why) = super::image_ref::check_reference(&acc.image) {
                return Err(Invalid::new(
                    format!("accessories.{name}.image"),
                    format!("`{}` is not an image reference: {why}", acc.image),
                ));
            }
        }
        for dep in &self.app.depends_on {
            if !self.accessories.contains_key(dep) {
                return Err(Invalid::new(
                    "app.depends_on",
                    format!(
                        "`{dep}` is not an accessory (expected one of: {})",
                        list_or_none(self.accessories.keys().map(|n| n.as_str()))
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_health(&self) -> Result<(), Invalid> {
        let health = &self.app.health;
        if !health.path.starts_with('/') {
            return Err(Invalid::new(
                "app.health.path",
                format!("`{}` must start with `/`", health.path),
            ));
        }
        if health.healthy_checks == 0 {
            return Err(Invalid::new(
                "app.health.healthy_checks",
                "0 can never pass (expected at least 1 healthy answer in a row)".to_string(),
            ));
        }
        // A poll faster than this only burns the box's CPU (and a 1 ns interval left no room
        // to ask whether to stop); one probe must fit in the gate.
        if health.interval.0 < std::time::Duration::from_millis(10) {
            return Err(Invalid::new(
                "app.health.interval",
                format!("{} is too short (expected at least 10ms)", health.interval),
            ));
        }
        if health.probe_timeout.0 > health.timeout.0 {
            return Err(Invalid::new(
                "app.health.probe_timeout",
                format!(
                    "{} is longer than app.health.timeout ({}): one probe could outlast the gate",
                    health.probe_timeout, health.timeout
                ),
            ));
        }
        // The confirmations after the first healthy answer must fit in the gate's timeout, or
        // the gate could never pass (and, before this check, a huge count held the lock).
        let confirm_every = health.confirmation_interval();
        let most = health.timeout.0.as_nanos() / confirm_every.as_nanos().max(1) + 1;
        if u128::from(health.healthy_checks) > most {
            let needs = confirm_every.saturating_mul(health.healthy_checks.saturating_sub(1));
            return Err(Invalid::new(
                "app.health.healthy_checks",
                format!(
                    "{} healthy answers in a row, one every {} after the first, take at least {}, \
                     longer than app.health.timeout ({}): the gate could never pass (expected at most {most})",
                    health.healthy_checks,
                    super::Dur(confirm_every),
                    super::Dur(needs),
                    health.timeout
                ),
            ));
        }
        if health.interval.0 > health.timeout.0 {
            return Err(Invalid::new(
                "app.health.interval",
                format!(
                    "{} is longer than app.health.timeout ({})",
                    health.interval, health.timeout
                ),
            ));
        }
        if !(100..=599).contains(&health.status) {
            return Err(Invalid::new(
                "app.health.status",
                format!(
                    "{} is not an HTTP status (expected 100 to 599)",
                    health.status
                ),
            ));
        }
        if let Some(command) = &health.command {
            let ok = match command.first().map(String::as_str) {
                Some("NONE") => command.len() == 1,
                Some("CMD") | Some("CMD-SHELL") => command.len() >= 2,
                _ => false,
            };
            if !ok {
                return Err(Invalid::new(
                    "app.health.command",
                    "expected a healthcheck test list: [CMD, prog, args…], [CMD-SHELL, \"shell command\"] or [NONE]".to_string(),
                ));
            }
        }
        Ok(())
    }

    fn check_accessories(&self) -> Result<(), Invalid> {
        let color_services = [
            self.service(Color::Blue),
            self.service(Color::Green),
            self.app.name.0.clone(),
        ];
        for name in self.accessories.keys() {
            if color_services.contains(&name.0) {
                return Err(Invalid::new(
                    format!("accessories.{name}"),
                    format!(
                        "`{name}` collides with the app's color services ({} and {}); rename the accessory",
                        color_services[0], color_services[1]
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A worker's services must not be an accessory's name (compose has one namespace).
    fn check_workers(&self) -> Result<(), Invalid> {
        for name in self.workers.keys() {
            for color in Color::ALL {
                let service = self.worker_service(name.as_str(), color);
                if self.accessories.keys().any(|a| a.0 == service) {
                    return Err(Invalid::new(
                        format!("workers.{name}"),
                        format!(
                            "worker `{name}` runs as the service `{service}`, which is also an accessory; rename one"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_nginx(&self) -> Result<(), Invalid> {
        for (argv_key, argv) in [("test", &self.nginx.test), ("reload", &self.nginx.reload)] {
            if argv.first().is_none_or(|p| p.trim().is_empty()) {
                return Err(Invalid::new(
                    format!("nginx.{argv_key}"),
                    "must be a non-empty command list, e.g. [nginx, -t]".to_string(),
                ));
            }
        }
        if self.nginx.include.as_os_str().is_empty() {
            return Err(Invalid::new(
                "nginx.include",
                "must be a file path".to_string(),
            ));
        }
        if let Some(why) = nginx_syntax_in(&self.nginx.server_name) {
            return Err(verbatim(
                "nginx.server_name",
                &self.nginx.server_name,
                &why,
                "server names separated by spaces",
            ));
        }
        // Every other value nginx reads from the site or the include is one word: a path or
        // a URI. A space would split it into two arguments, and nginx syntax would end the
        // directive and add others (`/var/www; } location /x { … } #`).
        let mut words: Vec<(&str, String, &str)> = vec![
            (
                "nginx.include",
                self.nginx.include.to_string_lossy().into_owned(),
                "a file path",
            ),
            (
                "app.health.path",
                self.app.health.path.clone(),
                "a URI path such as /health",
            ),
        ];
        // The TLS paths also go into the renewal's cron line and deploy hook, where `%` is a
        // newline to cron.
        if let Some(tls) = &self.nginx.tls {
            let cron = tls.renew_cron.clone().unwrap_or_default();
            for (key, path) in [
                ("nginx.tls.webroot", &tls.webroot),
                ("nginx.tls.config_dir", &tls.config_dir),
                ("nginx.tls.work_dir", &tls.work_dir),
                ("nginx.tls.logs_dir", &tls.logs_dir),
                ("nginx.tls.renew_cron", &cron),
            ] {
                words.push((key, path.to_string_lossy().into_owned(), "a path"));
            }
        }
        for (key, value, expected) in &words {
            let why = nginx_syntax_in(value).or_else(|| {
                value
                    .chars()
                    .find(|c| {
                        c.is_whitespace()
                            || (*c == '%' && key.starts_with("nginx.tls."))
                            || (*c == '$' && *key == "app.health.path")
                    })
                    .map(|c| match c {
                        '%' => "`%` (cron reads it as a newline)".to_string(),
                        // The include rewrites the probe's request to it: nginx would read a
                        // variable there.
                        '$' => "`$` (nginx reads a variable)".to_string(),
                        c => format!("the space {c:?}"),
                    })
            });
            if let Some(why) = why {
                return Err(verbatim(key, value, &why, expected));
            }
        }
        Ok(())
    }
}

/// A value refused because nginx would read it as syntax.
fn verbatim(key: &str, value: &str, why: &str, expected: &str) -> Invalid {
    Invalid::new(
        key,
        format!(
            "{value:?} contains {why}: the value is written verbatim into the nginx files, so it could end the directive and add others (expected {expected})"
        ),
    )
}

/// The first character that nginx's config syntax gives a meaning to (ends a directive,
/// opens or closes a block, starts a comment or a quoted string, escapes), described.
fn nginx_syntax_in(value: &str) -> Option<String> {
    value.chars().find_map(|c| match c {
        ';' | '{' | '}' | '#' | '"' | '\'' | '\\' => Some(format!("`{c}`")),
        '\n' => Some("a newline".to_string()),
        c if c.is_control() => Some(format!("the control character {c:?}")),
        _ => None,
    })
}

fn list_or_none<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    if items.is_empty() {
        "none are defined".to_string()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error(nginx: &str) -> String {
        let text = format!(
            "project: p\napp: {{ name: web, image: example/web, port: 3000, memory: 64M }}\n\
             colors: {{ blue: 9011, green: 9012 }}\nnginx: {nginx}\n"
        );
        format!(
            "{:#}",
            Config::from_yaml(&text, std::path::Path::new("cutover.yml")).unwrap_err()
        )
    }

    #[test]
    fn switch_ports_of_their_own_in_range_or_a_refusal_naming_the_key() {
        for (nginx, said) in [
            (
                "{ switch_ports: [9011, 9100] }",
                "port 9011 is also colors.blue",
            ),
            (
                "{ listen: 9100, switch_ports: [9101, 9100] }",
                "port 9100 is also nginx.listen",
            ),
            (
                "{ switch_ports: [9100, 443], tls: { domains: [a.example], email: a@a.example } }",
                "port 443 is also nginx.tls.listen",
            ),
            ("{ switch_ports: [9100, 9100] }", "both ports are 9100"),
            ("{ switch: nft }", "`nft` needs nginx.switch_ports"),
            ("{ switch_ports: [0, 9100] }", "port 0 is out of range"),
            (
                "{ switch_ports: [9100, 65536] }",
                "port 65536 is out of range",
            ),
            ("{ switch_ports: [9100] }", "switch_ports"),
        ] {
            let e = error(nginx);
            assert!(e.contains(said), "{nginx}: {e}");
        }
    }
}
