//! `logs` and `exec`: the command layer over one running container of the project, picked
//! by `engine::compose::service` (the serving color by default). Both run `docker` on the
//! container id directly (`docker/containers.rs` builds the command), which is the same on compose v1 and v2; the output is the
//! container's, streamed as it comes, and the exit code is docker's (the command's, for
//! `exec`). A followed log or a piped exec ends on Ctrl-C/SIGTERM (also one forwarded by
//! `--host`) by killing the `docker` client: exit 130.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use crate::cli::{ColorArg, ExecArgs, LogsArgs};
use crate::config::Color;
use crate::context::Context;
use crate::docker::containers::{self, ExecInput, LogsRequest};
use crate::engine::compose::service::{self, Pick};
use crate::process::{Cmd, Stdin};

pub fn run_logs(ctx: &Context, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let loaded = super::load_config(ctx)?;
    let pick = match args.service {
        Some(name) => Pick::Named(name),
        None => Pick::Serving,
    };
    let picked = service::pick(&loaded, &pick)?;
    let request = LogsRequest {
        follow: args.follow,
        since: args.since,
        tail: args.tail,
    };
    let cmd = containers::follow_logs_cmd(&picked.container.id, &request, &picked.label);
    if !ctx.quiet() {
        eprintln!(
            "{} ({}, {})",
            picked.label, picked.service, picked.container.state
        );
    }
    run(&cmd, Stdin::Closed)
}

pub fn run_exec(ctx: &Context, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let loaded = super::load_config(ctx)?;
    let pick = match (args.color, args.service) {
        (Some(ColorArg::Blue), _) => Pick::Color(Color::Blue),
        (Some(ColorArg::Green), _) => Pick::Color(Color::Green),
        (None, Some(name)) => Pick::Named(name),
        (None, None) => Pick::Serving,
    };
    let picked = service::pick(&loaded, &pick)?;
    if !picked.container.running() {
        anyhow::bail!(
            "{} ({}) is not running (it is {}); see `cutover status`",
            picked.label,
            picked.service,
            picked.container.state
        );
    }
    // On the box (`--host`) stdin is the relay's control channel: no TTY, nothing read.
    let on_box = crate::remote::on_box::stdin_is_relay();
    let tty = !on_box && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let input = match (tty, on_box) {
        (true, _) => ExecInput::Terminal,
        (false, false) => ExecInput::Piped,
        (false, true) => ExecInput::Closed,
    };
    let cmd = containers::exec_cmd(&picked.container.id, input, &args.command, &picked.label);
    if tty {
        // The terminal's foreground group must hold docker, so it runs in ours; Ctrl-C is the
        // command's (docker puts the terminal in raw mode).
        let code = cmd.run_interactive()?;
        return Ok(exit_code(code.unwrap_or(130)));
    }
    run(
        &cmd,
        if on_box {
            Stdin::Closed
        } else {
            Stdin::Forward
        },
    )
}

/// Runs `cmd` until it exits (its exit code) or a signal stops it (130).
fn run(cmd: &Cmd, stdin: Stdin) -> anyhow::Result<ExitCode> {
    let stop = super::progress::interrupt_flag()?;
    match cmd.run_until(&stop, stdin)? {
        Some(status) => {
            use std::os::unix::process::ExitStatusExt as _;
            Ok(exit_code(
                status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(1)),
            ))
        }
        None => Ok(ExitCode::from(130)),
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
