//! `cutover bootstrap`: turn flags and the (optional) cutover.yml into bootstrap options,
//! run the steps, and print the report (lines or JSON) or the `--cloud-init` user-data.
//!
//! A cutover.yml is optional: a box can be bootstrapped before any project is on it. With
//! one (in `-C DIR` / `--config FILE`, as for every command), its `host:` settings are the
//! defaults and the project's nginx site, include and state dir are installed; without one
//! those steps are skipped, and the report says so and how to include them. What a missing
//! flag or config means for the box (swap, swappiness, the image, its user, its RAM) is
//! decided in `bootstrap/` ([`Options::new`], `cloud_init::view`), not here.

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _};

use crate::bootstrap::distro::Distro;
use crate::bootstrap::{self, cloud_init, identity, Asked, Options, Report, Status, Target};
use crate::cli::{BootstrapArgs, OsArg};
use crate::config::{self, Loaded};
use crate::context::Context;
use crate::render::Renderer;

pub fn run(ctx: &Context, args: BootstrapArgs) -> anyhow::Result<ExitCode> {
    let loaded = if ctx.config_path.exists() {
        Some(super::load_config(ctx)?)
    } else {
        None
    };
    let cwd = std::env::current_dir().context("could not read the current directory")?;
    let asked = Asked {
        target: Target {
            root: args.root.as_ref().map(|r| cwd.join(r)),
            dry_run: args.dry_run,
        },
        swap: args.swap,
        install: !args.no_install,
        user: args.user.clone(),
    };
    let renderer = Renderer::new(&ctx.dir)?;
    let opts = Options::new(asked, loaded.as_ref(), &ctx.config_path, &renderer)?;
    if args.cloud_init {
        let request = cloud_init::Request {
            opts,
            ram: args.ram.map(|size| size.bytes()),
            os: args.os.map(distro),
            project: loaded.as_ref().map(|l| l.config.project.to_string()),
        };
        print_cloud_init(&renderer, &request)?;
        return Ok(ExitCode::SUCCESS);
    }
    run_steps(ctx, &args, &opts, loaded.as_ref())
}

/// Asks on the terminal whether to change this box; only `y`/`yes` is a yes.
fn confirmed() -> anyhow::Result<bool> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    eprint!(
        "cutover bootstrap changes THIS machine ({}): swap, sysctl, packages, services, nginx. \
         Continue? [y/N] ",
        host.trim()
    );
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("could not read the answer from the terminal")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// The distribution `--os` names.
fn distro(os: OsArg) -> Distro {
    match os {
        OsArg::Ubuntu => Distro::Ubuntu,
        OsArg::Debian => Distro::Debian,
        OsArg::Amzn => Distro::Amzn,
        OsArg::Fedora => Distro::Fedora,
    }
}

/// `--cloud-init`: the user-data on stdout, checked to be YAML (the template is overridable).
fn print_cloud_init(renderer: &Renderer, request: &cloud_init::Request) -> anyhow::Result<()> {
    let text = renderer.cloud_init(cloud_init::view(request))?;
    config::check_yaml(&text).context(
        "the rendered cloud-init user-data is not valid YAML (check templates/cloud-init.yml.j2)",
    )?;
    out!("{text}")?;
    Ok(())
}

/// Runs the steps on this box (or under `--root`), prints the report and records the
/// project's claims after a live run that changed the box.
fn run_steps(
    ctx: &Context,
    args: &BootstrapArgs,
    opts: &Options,
    loaded: Option<&Loaded>,
) -> anyhow::Result<ExitCode> {
    // Someone at a terminal running a live bootstrap is asked first: it changes this machine
    // (swap, sysctl, packages, services, nginx), which is the wrong one more often than not.
    if opts.target.live() && !args.yes && std::io::stdin().is_terminal() && !confirmed()? {
        eprintln!(
            "nothing changed (pass --yes to skip this question, or --dry-run to see the plan)"
        );
        return Ok(ExitCode::FAILURE);
    }
    bootstrap::check_privileges(&opts.target)?;
    let root = &opts.target.root;
    if let Some(root) = root {
        if !root.is_dir() {
            bail!("--root {}: no such directory", root.display());
        }
    }
    // Another project on this box with the same ports, server name or nginx files: refuse
    // before any step runs (a --root tree is not this box).
    if let (Some(loaded), None) = (loaded, root) {
        crate::claims::check(loaded).context("bootstrap refused")?;
    }
    let started = Instant::now();
    let report = bootstrap::run(opts);
    let took = started.elapsed();
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&super::failure::versioned(
                super::failure::Document::Bootstrap,
                &report
            ))?
        )?;
    } else if !ctx.quiet() || report.failed().is_some() {
        let listed = recipient_listed(loaded, report.recipient.as_deref());
        out!("{}", human_listed(&report, took, listed))?;
    }
    if let (Some(loaded), None, false, None) = (loaded, root, args.dry_run, report.failed()) {
        crate::claims::record(loaded)
            .context("bootstrap finished, but could not record the project's claims on this box")?;
    }
    if let Some(failed) = report.failed() {
        let done: Vec<&str> = report
            .steps
            .iter()
            .filter(|s| s.status == Status::Changed)
            .map(|s| s.name)
            .collect();
        bail!(
            "bootstrap stopped at step `{}`: {}\n(already changed: {}; fix the cause and rerun: every step is idempotent)",
            failed.name,
            failed.error.as_deref().unwrap_or("failed"),
            if done.is_empty() { "nothing".to_string() } else { done.join(", ") }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn status_label(status: Status, dry_run: bool) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Changed if dry_run => "would change",
        Status::Changed => "changed",
        Status::Skipped => "skipped",
        Status::Failed => "FAILED",
    }
}

/// The report as lines: one per step, then each change, the commands not run and the
/// identity's public key with the command that makes the box a recipient.
pub(super) fn human(report: &Report, took: std::time::Duration) -> String {
    human_listed(report, took, false)
}

/// Whether the project's `secrets/recipients.txt` already holds the box's key: then the
/// command that appends it is not shown again (run twice, it would add a second line).
fn recipient_listed(loaded: Option<&Loaded>, recipient: Option<&str>) -> bool {
    let (Some(loaded), Some(recipient)) = (loaded, recipient) else {
        return false;
    };
    let path = loaded.dir.join("secrets/recipients.txt");
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| crate::secrets::keys::Recipients::parse(&path, text).ok())
        .is_some_and(|r| r.contains(recipient))
}

/// [`human`], knowing whether the box's key is already a recipient of the project.
fn human_listed(report: &Report, took: std::time::Duration, listed: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let header = match (&report.root, report.dry_run) {
        (None, false) => "cutover bootstrap on this box".to_string(),
        (None, true) => {
            "cutover bootstrap --dry-run: nothing is changed; this is the plan".to_string()
        }
        (Some(root), false) => format!(
            "cutover bootstrap --root {}: files under it; live-system commands are listed, not run",
            root.display()
        ),
        (Some(root), true) => format!(
            "cutover bootstrap --root {} --dry-run: nothing is changed; this is the plan",
            root.display()
        ),
    };
    let _ = writeln!(out, "{header}");
    let would = if report.dry_run { "would: " } else { "" };
    for step in &report.steps {
        let _ = writeln!(
            out,
            "  {:<13} {:<13} {}{}",
            status_label(step.status, report.dry_run),
            step.name,
            step.summary,
            step_took(step.seconds)
        );
        for change in &step.changes {
            let _ = writeln!(out, "                  - {would}{change}");
        }
        for note in &step.notes {
            let _ = writeln!(out, "                  note: {note}");
        }
    }
    let not_run: Vec<&String> = report.not_run().collect();
    if !not_run.is_empty() {
        let _ = writeln!(
            out,
            "not run (live-system commands; run them as root on the box):"
        );
        for cmd in not_run {
            let _ = writeln!(out, "  {cmd}");
        }
    }
    if let (Some(path), Some(recipient), true) = (&report.identity_path, &report.recipient, listed)
    {
        let _ = writeln!(
            out,
            "box identity {}\n  public key: {recipient} (already in secrets/recipients.txt)",
            path.display()
        );
    } else if let (Some(path), Some(recipient)) = (&report.identity_path, &report.recipient) {
        let label = hostname().unwrap_or_else(|| "this box".into());
        let _ = writeln!(
            out,
            "box identity {}\n  public key: {recipient}\n  make the box a recipient (in the project, where its secrets can be decrypted), then commit:\n    {}",
            path.display(),
            identity::add_recipient_command(recipient, &label)
        );
    }
    let count = |s: Status| report.steps.iter().filter(|x| x.status == s).count();
    if report.failed().is_none() {
        let _ = writeln!(
            out,
            "{}: {} {}, {} ok, {} skipped in {}",
            if report.dry_run { "plan" } else { "done" },
            count(Status::Changed),
            if report.dry_run {
                "to change"
            } else {
                "changed"
            },
            count(Status::Ok),
            count(Status::Skipped),
            crate::report::duration(took)
        );
    }
    out
}

/// A step's time, shown only when it is worth reading (the package install, not a sysctl).
fn step_took(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!(
            " ({})",
            crate::report::duration(std::time::Duration::from_secs_f64(seconds))
        )
    } else {
        String::new()
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys/kernel/hostname"))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}
