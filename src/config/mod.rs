//! `cutover.yml` → a validated [`Config`], and the [`Loaded`] config the commands use.
//!
//! - [`schema`]: the sections and their defaults;
//! - [`scalars`]: single values (sizes, durations, ports, names…) and how each parses;
//! - [`validate`]: checks that span keys;
//! - [`remote`]: the `remote:` section (`cutover --host`);
//! - [`yaml`]: the YAML plumbing (serde-saphyr), where every error gets its
//!   `file:line:col: key.path:` prefix, also through `<<` merge keys and aliases.
//!
//! Everything public is re-exported here, so callers only ever name `crate::config::X`.

mod hooks;
pub mod image_ref;
mod registry;
mod remote;
mod scalars;
mod schema;
mod validate;
mod worker;
mod yaml;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

pub use hooks::{Argv, Hook, Hooks};
pub use registry::Registry;
pub use remote::{Remote, Ship, Target, SYNC_MARKER};
pub use scalars::{
    CommandLine, Dur, Environment, Listen, Name, Port, Replicas, Restart, Size, Swap, Swappiness,
};
pub use schema::{
    Accessory, App, Color, Colors, Config, Health, Host, Nginx, ResolveImage, Routing,
    SecretsDelivery, Swarm, SwitchMode, Tls,
};
pub use worker::{Worker, WorkerHealth};

/// The loaded config plus where it came from, so later errors can name the file.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    /// The project directory: relative paths in the config are relative to it.
    pub dir: PathBuf,
    /// `file:line:col: key: …` for settings that work but should be said (the command layer
    /// prints them on stderr).
    pub warnings: Vec<String>,
    /// `file:line:col: key: …` for each key set that only the compose engine carries out
    /// (the swarm engine refuses to deploy while there is any).
    pub compose_only: Vec<String>,
}

impl Loaded {
    /// Absolute path of a config-relative path.
    pub fn resolve(&self, rel: &Path) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.resolve(&self.config.state_dir)
    }
}

impl Config {
    /// Parses and validates config text. `file` is only used in messages.
    pub fn from_yaml(text: &str, file: &Path) -> anyhow::Result<Config> {
        yaml::parse_config(text, file)
    }
}

/// Checks that text is well-formed YAML (for rendered files), with the line of the problem.
pub fn check_yaml(text: &str) -> anyhow::Result<()> {
    yaml::check(text, "rendered file")
}

/// Why the config file cannot be used, in the chain of [`load`]'s error: `--json`'s failure
/// document branches on it (kind `config`), whatever context a caller adds in front.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: no such file (run `cutover init` to create one, or pass -C DIR / --config FILE)", .0.display())]
    Missing(PathBuf),
    /// The cause (file:line:col, the key, the fix) is the next error of the chain.
    #[error("invalid config {}", .0.display())]
    Invalid(PathBuf),
}

/// Reads and validates the config file, naming it in every error.
pub fn load(path: &Path, dir: &Path) -> anyhow::Result<Loaded> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::Missing(path.to_owned()).into())
        }
        Err(e) => {
            return Err(e).with_context(|| format!("could not read {}", path.display()));
        }
    };
    let parsed = yaml::parse_config_with_warnings(&text, path)
        .context(ConfigError::Invalid(path.to_owned()))?;
    let mut loaded = Loaded {
        config: parsed.config,
        path: path.to_owned(),
        dir: dir.to_owned(),
        warnings: parsed.warnings,
        compose_only: parsed.compose_only,
    };
    // nginx needs absolute paths; relative ones in the config are relative to the project.
    loaded.config.nginx.include = loaded.resolve(&loaded.config.nginx.include);
    loaded.config.nginx.site = loaded.resolve(&loaded.config.nginx.site);
    check_files_exist(&loaded)?;
    let unlisted: Vec<String> = unlisted_secrets(&loaded)
        .iter()
        .map(|file| unlisted_warning(&loaded, file))
        .collect();
    loaded.warnings.extend(unlisted);
    Ok(loaded)
}

fn check_files_exist(loaded: &Loaded) -> anyhow::Result<()> {
    let cfg = &loaded.config;
    let app = cfg
        .app
        .secrets
        .iter()
        .map(|p| ("app.secrets".to_string(), p));
    let acc = cfg.accessories.iter().flat_map(|(name, a)| {
        a.secrets
            .iter()
            .map(move |p| (format!("accessories.{name}.secrets"), p))
    });
    for (key, rel) in app.chain(acc) {
        let abs = loaded.resolve(rel);
        if !abs.is_file() {
            // `[prod]` or `[prod.env.age]`: the file exists under secrets/, named short.
            let name = rel.to_string_lossy();
            let stem = name.strip_suffix(".env.age").unwrap_or(&name);
            let meant = format!("secrets/{stem}.env.age");
            let hint = if !name.contains('/') && loaded.dir.join(&meant).is_file() {
                format!("list it by its path: {key}: [{meant}]")
            } else {
                "create it with `cutover secrets encrypt`".to_string()
            };
            return Err(anyhow::anyhow!(
                "{key}: secrets file {} does not exist ({hint})",
                abs.display()
            ))
            .context(ConfigError::Invalid(loaded.path.clone()));
        }
    }
    Ok(())
}

/// A `secrets/*.env.age` that neither the app nor an accessory lists: its keys reach no
/// container, which is never what encrypting it meant (the README's first steps once
/// deployed an app without its secrets and nothing said so).
pub fn unlisted_secrets(loaded: &Loaded) -> Vec<String> {
    let cfg = &loaded.config;
    let listed: Vec<PathBuf> = cfg
        .app
        .secrets
        .iter()
        .chain(cfg.accessories.values().flat_map(|a| &a.secrets))
        .map(|p| canonical(&loaded.resolve(p)))
        .collect();
    let Ok(entries) = std::fs::read_dir(loaded.dir.join("secrets")) else {
        return Vec::new();
    };
    let mut unlisted: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_str().is_some_and(|n| n.ends_with(".env.age")) && p.is_file())
        .filter(|p| !listed.contains(&canonical(p)))
        .filter_map(|p| Some(format!("secrets/{}", p.file_name()?.to_str()?)))
        .collect();
    unlisted.sort();
    unlisted
}

/// Adds `file` (`secrets/prod.env.age`) to `app.secrets` in the config file's text, when
/// that key is an inline list (`secrets: []`, as `cutover init` writes it, or `[a, b]`);
/// comments and everything else stay byte for byte. Returns the new text, or `None` when
/// the key is absent or written another way (the caller then names the line to add).
pub fn with_app_secret(text: &str, file: &str) -> Option<String> {
    let mut in_app = false;
    let mut out = String::with_capacity(text.len() + file.len() + 2);
    let mut done = false;
    for line in text.split_inclusive('\n') {
        let top_level = !line.starts_with([' ', '\t', '#', '\n', '\r']);
        if top_level {
            in_app = line.starts_with("app:");
        }
        let rest = line.strip_prefix("  secrets:").filter(|_| in_app && !done);
        let Some(rest) = rest else {
            out.push_str(line);
            continue;
        };
        let (value, comment) = match rest.find('#') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let list = value.trim();
        let inner = list.strip_prefix('[')?.strip_suffix(']')?.trim();
        let items = if inner.is_empty() {
            file.to_string()
        } else {
            format!("{inner}, {file}")
        };
        let pad = if comment.is_empty() { "" } else { "  " };
        let newline = if line.ends_with('\n') { "\n" } else { "" };
        out.push_str(&format!(
            "  secrets: [{items}]{pad}{}{newline}",
            comment.trim_end()
        ));
        done = true;
    }
    done.then_some(out)
}

/// The warning for an unlisted secrets file (`secrets/prod.env.age`), naming the fix.
pub fn unlisted_warning(loaded: &Loaded, file: &str) -> String {
    format!(
        "{file} is listed by no service, so its keys reach no container: add it to app.secrets \
         in {} (`secrets: [{file}]`) or to an accessory's secrets",
        loaded.path.display()
    )
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MINIMAL: &str = "project: demo\napp:\n  name: web\n  image: demo/web\n  port: 8080\n  memory: 128M\ncolors: { blue: 8081, green: 8082 }\n";

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_yaml(text, Path::new("cutover.yml")).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn the_probe_host_is_one_the_server_names_match() {
        let host = |names: &str| {
            let mut c = parse(MINIMAL).unwrap();
            c.nginx.server_name = names.into();
            c.nginx.probe_host()
        };
        assert_eq!(host("app.example.com www"), Some("app.example.com".into()));
        assert_eq!(
            host("*.example.com"),
            Some("cutover-probe.example.com".into())
        );
        assert_eq!(
            host("www.example.*"),
            Some("www.example.cutover-probe".into())
        );
        assert_eq!(host(".example.com"), Some("example.com".into()));
        assert_eq!(host("_ ~^x.*$ b.example"), Some("b.example".into()));
        assert_eq!(host("_"), None);
    }

    #[test]
    fn an_encrypted_file_joins_an_inline_app_secrets_list_and_nothing_else_moves() {
        let scaffold = "app:\n  name: web  # x\n  secrets: []                     # e.g.\naccessories:\n  db:\n    secrets: []\n";
        let added = with_app_secret(scaffold, "secrets/prod.env.age").unwrap();
        assert_eq!(
            added,
            "app:\n  name: web  # x\n  secrets: [secrets/prod.env.age]  # e.g.\naccessories:\n  db:\n    secrets: []\n"
        );
        let two = with_app_secret(&added, "secrets/b.env.age").unwrap();
        assert!(two.contains("  secrets: [secrets/prod.env.age, secrets/b.env.age]  # e.g.\n"));
        // A block list, or no app.secrets at all: left to the user, with the line named.
        assert!(with_app_secret("app:\n  secrets:\n    - a\n", "b").is_none());
        assert!(with_app_secret("app:\n  name: web\n", "b").is_none());
    }

    /// YAML 1.1 words a user writes unquoted, as the scaffold's comments show them.
    #[test]
    fn unquoted_off_and_no_mean_what_they_say() {
        for word in ["off", "no", "'off'", "false"] {
            let c = parse(&format!("{MINIMAL}host:\n  swap: {word}\n")).unwrap();
            assert_eq!(c.host.swap, Swap::Off, "swap: {word}");
        }
        let c = parse(&MINIMAL.replace("memory: 128M\n", "memory: 128M\n  restart: no\n")).unwrap();
        assert_eq!(c.app.restart, Restart::No);
        let err = parse(&format!("{MINIMAL}host:\n  swap: on\n")).unwrap_err();
        assert!(
            err.contains("host.swap") && err.contains("`auto` or `off`"),
            "{err}"
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.colors.bind.to_string(), "127.0.0.1");
        assert_eq!(c.app.health.path, "/health");
        assert_eq!(c.app.health.timeout.get(), Duration::from_secs(90));
        assert_eq!(c.app.memory.bytes(), 128 << 20);
        assert_eq!(c.service(Color::Green), "web-green");
        assert_eq!(c.nginx.test, ["nginx", "-t"]);
        assert_eq!(c.host.swap, Swap::Auto);
        assert_eq!(c.app.settle.get(), Duration::from_secs(5));
        assert_eq!(c.app.health.healthy_checks, 3);
    }

    #[test]
    fn confirmations_follow_at_a_quarter_interval_and_must_fit_in_the_timeout() {
        let health = |yaml: &str| {
            parse(&MINIMAL.replace(
                "  memory: 128M\n",
                &format!("  memory: 128M\n  health: {{ {yaml} }}\n"),
            ))
        };
        let ms = Duration::from_millis;
        let c = health("interval: 500ms").unwrap();
        assert_eq!(c.app.health.confirmation_interval(), ms(125));
        let c = health("interval: 40ms").unwrap();
        assert_eq!(c.app.health.confirmation_interval(), ms(20));
        let c = health("interval: 10ms").unwrap();
        assert_eq!(c.app.health.confirmation_interval(), ms(10));
        // 1 + 60 s / 250 ms fit in the timeout; one more cannot.
        assert!(health("interval: 1s, timeout: 60s, healthy_checks: 241").is_ok());
        let err = health("interval: 1s, timeout: 60s, healthy_checks: 242").unwrap_err();
        assert!(err.contains("app.health.healthy_checks"), "{err}");
        assert!(err.contains("expected at most 241"), "{err}");
        let err = health("healthy_checks: 1000000000").unwrap_err();
        assert!(err.contains("the gate could never pass"), "{err}");
        let err = health("interval: 1ns").unwrap_err();
        assert!(err.contains("expected at least 10ms"), "{err}");
        let err = health("timeout: 2s, probe_timeout: 10s").unwrap_err();
        assert!(err.contains("one probe could outlast the gate"), "{err}");
    }

    #[test]
    fn settle_may_be_zero_and_healthy_checks_not() {
        let c =
            parse(&MINIMAL.replace("  memory: 128M\n", "  memory: 128M\n  settle: 0s\n")).unwrap();
        assert_eq!(c.app.settle.get(), Duration::ZERO);
        let err = parse(&MINIMAL.replace(
            "  memory: 128M\n",
            "  memory: 128M\n  health: { healthy_checks: 0 }\n",
        ))
        .unwrap_err();
        assert!(err.contains("app.health.healthy_checks"), "{err}");
        assert!(err.contains("at least 1"), "{err}");
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(Size::parse("512M").unwrap().bytes(), 512 << 20);
        assert_eq!(Size::parse("1g").unwrap().bytes(), 1 << 30);
        assert_eq!(Size::parse("1024k").unwrap().to_string(), "1M");
        assert_eq!(Size::parse("1536M").unwrap().to_string(), "1536M");
        for bad in ["512X", "", "M", "-1M", "0", "1.5G"] {
            assert!(Size::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            Dur::parse("500ms").unwrap().get(),
            Duration::from_millis(500)
        );
        assert_eq!(Dur::parse("1m 30s").unwrap().get(), Duration::from_secs(90));
        assert!(Dur::parse("9x").is_err());
        assert_eq!(Dur::parse("24h").unwrap().get(), Dur::MAX);
        for too_long in [
            "25h",
            "100000000000s",
            "18446744073709551615s",
            "99999999999999999999s",
        ] {
            let err = Dur::parse(too_long).unwrap_err();
            assert!(err.contains("too long (at most 24h)"), "{too_long}: {err}");
        }
    }

    #[test]
    fn merge_keys_follow_yaml_precedence() {
        let text = include_str!("../../fixtures/configs/good/merge-keys.yml");
        let c = parse(text).unwrap();
        // In `<<: [*probe, *slow]` the first mapping wins a key both define.
        assert_eq!(c.app.health.interval.get(), Duration::from_millis(250));
        assert_eq!(c.app.health.timeout.get(), Duration::from_secs(45));
        assert_eq!(c.app.health.path, "/ready");
        assert_eq!(c.colors.blue.0, 18091);
        // A key written next to `<<` overrides the merged one.
        let cache = &c.accessories[&Name("cache".into())];
        assert_eq!(cache.memory.to_string(), "48M");
        assert_eq!(cache.restart, Restart::UnlessStopped);
    }

    #[test]
    fn leading_bom_is_accepted_and_a_second_document_is_named() {
        let c = parse(&format!("\u{feff}{MINIMAL}")).unwrap();
        assert_eq!(c.project.as_str(), "demo");
        let err = parse(&format!("{MINIMAL}---\nproject: x\n")).unwrap_err();
        assert!(
            err.contains("cutover.yml:9:1: a second YAML document starts here"),
            "{err}"
        );
    }

    #[test]
    fn memory_limits_are_bounded() {
        for (memory, says) in [
            ("1k", "below docker's minimum of 6M"),
            ("2000000G", "more than 1048576G (1 PiB)"),
        ] {
            let err = parse(&MINIMAL.replace("128M", memory)).unwrap_err();
            assert!(
                err.contains(&format!(
                    "cutover.yml:6:11: app.memory: memory limit `{memory}` is {says}"
                )),
                "{err}"
            );
        }
        assert!(parse(&MINIMAL.replace("128M", "6M")).is_ok());
    }

    #[test]
    fn rendered_yaml_check_names_the_line() {
        assert!(check_yaml("a: 1\nb: [x]\n").is_ok());
        let err = format!("{:#}", check_yaml("a: 1\nb: [x\n").unwrap_err());
        assert!(err.starts_with("rendered file:"), "{err}");
    }

    #[test]
    fn merge_keys_are_applied() {
        let text = "x-env: &env { A: '1' }\nproject: demo\napp:\n  name: web\n  image: demo/web\n  port: 8080\n  memory: 128M\n  environment:\n    <<: *env\n    B: '2'\ncolors: { blue: 8081, green: 8082 }\n";
        let c = parse(text).unwrap();
        assert_eq!(c.app.environment.0["A"], "1");
        assert_eq!(c.app.environment.0["B"], "2");
        // Unknown keys are still refused on the merge path.
        let err = parse(&text.replace("    B: '2'\n", "    B: '2'\n  bogus: 1\n")).unwrap_err();
        assert!(err.contains("unknown field `bogus`"), "{err}");
    }

    #[test]
    fn cross_key_errors_name_key_and_line() {
        let text = MINIMAL.replace("green: 8082", "green: 8081");
        let err = parse(&text).unwrap_err();
        assert!(
            err.starts_with("cutover.yml:7:23: colors.green: port 8081"),
            "{err}"
        );
    }

    #[test]
    fn environment_accepts_list_and_scalars() {
        let text = MINIMAL.replace(
            "  memory: 128M\n",
            "  memory: 128M\n  environment: { PORT: 8080, DEBUG: true, NAME: x }\n",
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.app.environment.0["PORT"], "8080");
        assert_eq!(c.app.environment.0["DEBUG"], "true");
        let text = MINIMAL.replace(
            "  memory: 128M\n",
            "  memory: 128M\n  environment: [A=1, B=x=y]\n",
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.app.environment.0["B"], "x=y");
        // Values are kept as written, as compose keeps them.
        let text = MINIMAL.replace(
            "  memory: 128M\n",
            "  memory: 128M\n  environment: { A: 1.50, B: 0x10, C: ~, D: yes }\n",
        );
        let env = parse(&text).unwrap().app.environment.0;
        assert_eq!(
            [&env["A"], &env["B"], &env["C"], &env["D"]],
            ["1.50", "0x10", "", "yes"]
        );
    }
}
