//! The argv the box runs for `cutover --host`: this invocation's command re-emitted from the
//! parsed [`Cli`], never re-read from `std::env::args_os()`.
//!
//! Emitted: `-q`/`-v`, the command and its own options. Not emitted: the options that name
//! local things (`--host`, `-C`, `--config`, `--identity`), which the box replaces with its
//! own, the hidden `--on-box*` flags (the caller adds its own), and `deploy --ship` (done here,
//! before the box runs the deploy).
//!
//! Every value travels attached (`--message=-C foo`) and every positional word after `--`, so
//! a value that looks like a flag reaches the box's clap as the same value. Each command's
//! fields are destructured in full, so a new flag does not compile until it is emitted here;
//! the tests parse what is emitted back into the same command.

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::ValueEnum;

use crate::cli::{
    BootstrapArgs, Cli, Command, DeployArgs, DeployCommon, ExecArgs, HistoryArgs, LogsArgs,
    MaintenanceCommand, MaintenanceCommon, MaintenanceOffArgs, MaintenanceOnArgs, PruneArgs,
    RenderArgs, RollbackArgs, RunArgs, StatusArgs, TlsCommand, TlsIssueArgs,
};
use crate::config::{Dur, Swap};

/// The words after the box's own `cutover --on-box -C <dir>`.
pub(super) fn box_argv(cli: &Cli) -> anyhow::Result<Vec<String>> {
    let Cli {
        // Local things, or the box's own: see the module doc.
        directory: _,
        config: _,
        identity: _,
        host: _,
        on_box: _,
        on_box_child: _,
        on_box_promote: _,
        age_key_stdin: _,
        quiet,
        verbose,
        command,
    } = cli;
    let mut argv = Argv::default();
    argv.flag("quiet", *quiet);
    for _ in 0..*verbose {
        argv.flag("verbose", true);
    }
    emit_command(&mut argv, command)?;
    Ok(argv.0)
}

/// Words built flag by flag, every value attached to its flag.
#[derive(Default)]
struct Argv(Vec<String>);

impl Argv {
    fn words(&mut self, words: &[&str]) {
        self.0.extend(words.iter().map(|w| w.to_string()));
    }

    fn flag(&mut self, name: &str, on: bool) {
        if on {
            self.0.push(format!("--{name}"));
        }
    }

    fn value(&mut self, name: &str, value: impl Display) {
        self.0.push(format!("--{name}={value}"));
    }

    fn opt(&mut self, name: &str, value: Option<impl Display>) {
        if let Some(value) = value {
            self.value(name, value);
        }
    }

    fn duration(&mut self, name: &str, value: Option<Duration>) {
        // `Dur` prints what `Dur::parse`, the flags' parser, reads back exactly.
        self.opt(name, value.map(Dur));
    }

    fn path(&mut self, name: &str, value: Option<&Path>) -> anyhow::Result<()> {
        if let Some(path) = value {
            let text = path.to_str().with_context(|| {
                format!("argument --{name} {path:?} is not UTF-8; cannot send it to the box")
            })?;
            self.value(name, text);
        }
        Ok(())
    }

    /// A `ValueEnum` under clap's own name for it.
    fn choice(&mut self, name: &str, value: Option<impl ValueEnum + std::fmt::Debug>) {
        if let Some(value) = value {
            match value.to_possible_value() {
                Some(possible) => self.value(name, possible.get_name()),
                // Only a `#[value(skip)]` variant has none, and clap could not have parsed it.
                None => unreachable!("--{name} {value:?} has no command-line name"),
            }
        }
    }

    /// Positional words, after `--` so that none is taken for a flag.
    fn trailing<'a>(&mut self, words: impl IntoIterator<Item = &'a String>) {
        self.0.push("--".into());
        self.0.extend(words.into_iter().cloned());
    }
}

fn emit_command(argv: &mut Argv, command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Render(a) => emit_render(argv, a)?,
        Command::Deploy(a) => emit_deploy(argv, a),
        Command::Rollback(a) => emit_rollback(argv, a),
        Command::Status(a) => emit_status(argv, a),
        Command::History(a) => emit_history(argv, a),
        Command::Prune(a) => emit_prune(argv, a),
        Command::Logs(a) => emit_logs(argv, a),
        Command::Exec(a) => emit_exec(argv, a),
        Command::Bootstrap(a) => emit_bootstrap(argv, a)?,
        Command::Tls(TlsCommand::Issue(a)) => emit_tls_issue(argv, a)?,
        Command::Run(RunArgs { command }) => {
            argv.words(&["run"]);
            argv.trailing(command);
        }
        Command::Maintenance(MaintenanceCommand::On(a)) => emit_maintenance_on(argv, a),
        Command::Maintenance(MaintenanceCommand::Off(MaintenanceOffArgs { common })) => {
            argv.words(&["maintenance", "off"]);
            emit_maintenance_common(argv, common);
        }
        Command::Init(_)
        | Command::Secrets(_)
        | Command::Demo(_)
        | Command::Completions { .. }
        | Command::SwitchRule(_) => {
            bail!("this command works on this machine's files; it is never sent to a box")
        }
    }
    Ok(())
}

fn emit_render(argv: &mut Argv, a: &RenderArgs) -> anyhow::Result<()> {
    let RenderArgs {
        engine,
        out,
        check,
        image,
        templates,
    } = a;
    argv.words(&["render"]);
    argv.choice("engine", Some(*engine));
    argv.path("out", out.as_deref())?;
    argv.flag("check", *check);
    argv.opt("image", image.as_ref());
    // Never sent (`reach`: local only), named for exhaustiveness.
    argv.path("templates", templates.as_deref())?;
    Ok(())
}

fn emit_deploy(argv: &mut Argv, a: &DeployArgs) {
    let DeployArgs {
        engine,
        image,
        // Done here, before the box runs the deploy.
        ship: _,
        common,
    } = a;
    argv.words(&["deploy"]);
    argv.choice("engine", Some(*engine));
    argv.opt("image", image.as_ref());
    emit_deploy_common(argv, common);
}

fn emit_rollback(argv: &mut Argv, a: &RollbackArgs) {
    let RollbackArgs {
        engine,
        release,
        common,
    } = a;
    argv.words(&["rollback"]);
    argv.choice("engine", Some(*engine));
    argv.flag("release", *release);
    emit_deploy_common(argv, common);
}

fn emit_deploy_common(argv: &mut Argv, common: &DeployCommon) {
    let DeployCommon {
        dry_run,
        lock_wait,
        force,
        json,
    } = common;
    argv.flag("dry-run", *dry_run);
    argv.duration("lock-wait", *lock_wait);
    argv.flag("force", *force);
    argv.flag("json", *json);
}

fn emit_status(argv: &mut Argv, a: &StatusArgs) {
    let StatusArgs { engine, json } = a;
    argv.words(&["status"]);
    argv.choice("engine", Some(*engine));
    argv.flag("json", *json);
}

fn emit_history(argv: &mut Argv, a: &HistoryArgs) {
    let HistoryArgs { json, limit } = a;
    argv.words(&["history"]);
    argv.flag("json", *json);
    argv.opt("limit", *limit);
}

fn emit_prune(argv: &mut Argv, a: &PruneArgs) {
    let PruneArgs {
        keep,
        dry_run,
        json,
    } = a;
    argv.words(&["prune"]);
    argv.value("keep", keep);
    argv.flag("dry-run", *dry_run);
    argv.flag("json", *json);
}

fn emit_logs(argv: &mut Argv, a: &LogsArgs) {
    let LogsArgs {
        follow,
        since,
        tail,
        service,
    } = a;
    argv.words(&["logs"]);
    argv.flag("follow", *follow);
    argv.duration("since", *since);
    argv.opt("tail", *tail);
    if let Some(service) = service {
        argv.trailing([service]);
    }
}

fn emit_exec(argv: &mut Argv, a: &ExecArgs) {
    let ExecArgs {
        color,
        service,
        command,
    } = a;
    argv.words(&["exec"]);
    argv.choice("color", *color);
    argv.opt("service", service.as_ref());
    argv.trailing(command);
}

fn emit_bootstrap(argv: &mut Argv, a: &BootstrapArgs) -> anyhow::Result<()> {
    let BootstrapArgs {
        dry_run,
        root,
        swap,
        no_install,
        cloud_init,
        user,
        json,
        yes,
        ram,
        os,
    } = a;
    argv.words(&["bootstrap"]);
    argv.flag("yes", *yes);
    argv.flag("dry-run", *dry_run);
    argv.path("root", root.as_deref())?;
    argv.opt(
        "swap",
        swap.map(|swap| match swap {
            Swap::Auto => "auto".to_string(),
            Swap::Off => "off".to_string(),
            Swap::Size(size) => size.to_string(),
        }),
    );
    argv.flag("no-install", *no_install);
    argv.flag("cloud-init", *cloud_init);
    argv.opt("user", user.as_ref());
    argv.flag("json", *json);
    argv.opt("ram", *ram);
    argv.choice("os", *os);
    Ok(())
}

fn emit_tls_issue(argv: &mut Argv, a: &TlsIssueArgs) -> anyhow::Result<()> {
    let TlsIssueArgs {
        dry_run,
        root,
        json,
    } = a;
    argv.words(&["tls", "issue"]);
    argv.flag("dry-run", *dry_run);
    argv.path("root", root.as_deref())?;
    argv.flag("json", *json);
    Ok(())
}

fn emit_maintenance_on(argv: &mut Argv, a: &MaintenanceOnArgs) {
    let MaintenanceOnArgs {
        message,
        retry_after,
        common,
    } = a;
    argv.words(&["maintenance", "on"]);
    argv.opt("message", message.as_ref());
    argv.duration("retry-after", Some(*retry_after));
    emit_maintenance_common(argv, common);
}

fn emit_maintenance_common(argv: &mut Argv, common: &MaintenanceCommon) {
    let MaintenanceCommon {
        dry_run,
        json,
        lock_wait,
    } = common;
    argv.flag("dry-run", *dry_run);
    argv.flag("json", *json);
    argv.duration("lock-wait", Some(*lock_wait));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn parse(words: &[&str]) -> Cli {
        let argv = std::iter::once("cutover").chain(words.iter().copied());
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{words:?}: {e}"))
    }

    fn emitted(words: &[&str]) -> Vec<String> {
        box_argv(&parse(words)).unwrap()
    }

    /// What the box parses from what is emitted for `words`.
    fn on_the_box(words: &[&str]) -> Cli {
        let argv = emitted(words);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        parse(&argv)
    }

    #[test]
    fn every_remote_command_reaches_the_box_as_parsed_here() {
        let commands: &[&[&str]] = &[
            &[
                "render", "--engine", "swarm", "--out", "o", "--check", "--image", "a:1",
            ],
            &[
                "deploy",
                "--engine",
                "swarm",
                "--image",
                "a:1",
                "--dry-run",
                "--force",
            ],
            &["deploy", "--lock-wait", "1m 30s", "--json"],
            &["deploy", "--lock-wait", "1500ms"],
            &[
                "rollback",
                "--release",
                "--lock-wait",
                "2h",
                "--force",
                "--json",
            ],
            &["rollback", "--engine", "swarm", "--json"],
            &["status", "--engine", "swarm", "--json"],
            &["history", "--json", "-n", "5"],
            &["prune", "--keep", "7", "--dry-run", "--json"],
            &["logs", "-f", "--since", "10m", "-n", "50", "scheduler"],
            &["logs"],
            &[
                "exec",
                "--color",
                "green",
                "--",
                "sh",
                "-c",
                "echo --host x",
            ],
            &["exec", "--service", "worker", "--", "--config", "-C"],
            &[
                "bootstrap",
                "--dry-run",
                "--root",
                "r",
                "--swap",
                "2G",
                "--no-install",
            ],
            &["bootstrap", "--swap", "off", "--user", "deploy", "--json"],
            &[
                "bootstrap",
                "--cloud-init",
                "--ram",
                "512M",
                "--os",
                "debian",
            ],
            &["tls", "issue", "--dry-run", "--root", "r", "--json"],
            &["run", "--", "bin/migrate", "--", "-v"],
            &[
                "maintenance",
                "on",
                "--message",
                "back soon",
                "--retry-after",
                "30m",
            ],
            &[
                "maintenance",
                "on",
                "--dry-run",
                "--json",
                "--lock-wait",
                "5s",
            ],
            &["maintenance", "off", "--lock-wait", "1m", "--json"],
            &["-q", "status"],
            &["-vv", "status"],
        ];
        for words in commands {
            let here = parse(words);
            let there = on_the_box(words);
            assert_eq!(
                format!("{:?}", there.command),
                format!("{:?}", here.command),
                "{words:?} was sent as {:?}",
                emitted(words)
            );
            assert_eq!((there.quiet, there.verbose), (here.quiet, here.verbose));
        }
    }

    #[test]
    fn local_options_are_not_sent() {
        assert_eq!(
            emitted(&["--host", "box", "-C", "proj", "deploy", "--image", "a:1", "--json"]),
            ["deploy", "--engine=compose", "--image=a:1", "--json"]
        );
        assert_eq!(
            emitted(&[
                "--host=box",
                "-Cproj",
                "--config=x.yml",
                "status",
                "--identity",
                "k",
                "-v"
            ]),
            ["--verbose", "status", "--engine=compose"]
        );
        // Clustered short flags: `-C` inside them named a local dir the box used to get.
        assert_eq!(emitted(&["-qCproj", "history"]), ["--quiet", "history"]);
        assert_eq!(
            emitted(&["-vC", "proj", "history"]),
            ["--verbose", "history"]
        );
        let shipped = on_the_box(&["deploy", "--image", "a:1", "--ship"]);
        assert!(matches!(shipped.command, Command::Deploy(a) if !a.ship));
    }

    #[test]
    fn a_value_that_looks_like_a_flag_arrives_unchanged() {
        let sent = emitted(&["maintenance", "on", "--message=-C foo"]);
        assert!(sent.contains(&"--message=-C foo".to_string()), "{sent:?}");
        let Command::Maintenance(MaintenanceCommand::On(on)) =
            on_the_box(&["maintenance", "on", "--message=-C foo"]).command
        else {
            panic!("not maintenance on");
        };
        assert_eq!(on.message.as_deref(), Some("-C foo"));
        for image in ["--config=x.yml", "-Cdir", "--host", "--"] {
            let flag = format!("--image={image}");
            let Command::Deploy(deploy) = on_the_box(&["deploy", &flag]).command else {
                panic!("not deploy");
            };
            assert_eq!(deploy.image.as_deref(), Some(image));
        }
        let Command::Logs(logs) = on_the_box(&["logs", "--", "-C"]).command else {
            panic!("not logs");
        };
        assert_eq!(logs.service.as_deref(), Some("-C"));
    }

    #[test]
    fn a_path_that_is_not_utf8_is_refused() {
        use std::os::unix::ffi::OsStrExt as _;
        let bad = std::ffi::OsStr::from_bytes(b"out\xff");
        let argv = ["cutover".as_ref(), "render".as_ref(), "--out".as_ref(), bad];
        let cli = Cli::try_parse_from(argv).unwrap();
        let err = box_argv(&cli).unwrap_err().to_string();
        assert!(err.contains("is not UTF-8"), "{err}");
    }
}
