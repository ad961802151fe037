//! `cutover demo`: a full local blue/green cycle on the bundled demo app, under live traffic,
//! with a private nginx on a loopback port. Everything it starts is removed at the end
//! (unless `--keep`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::DemoArgs;
use crate::config;
use crate::context::Context;
use crate::demo::{self, Load, Tally};
use crate::docker::compose::Compose;
use crate::engine::compose::{Deployer, Summary};
use crate::engine::{Event, Reporter, Request, Step};
use crate::nginx::LocalNginx;
use crate::render::{Renderer, Route};
use crate::report::duration;
use crate::state::Action;

/// Removes the demo's containers and nginx when the demo ends, however it ends.
struct Cleanup {
    project: String,
    nginx: Option<LocalNginx>,
    keep: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.keep {
            if let Some(nginx) = self.nginx.take() {
                // Leave it running: forget the handle so Drop does not stop it.
                std::mem::forget(nginx);
            }
            return;
        }
        if let Some(mut nginx) = self.nginx.take() {
            nginx.stop();
        }
        demo::remove_project(&self.project);
    }
}

/// Prints steps like a deploy and fires slow requests as the health gate starts, so they
/// are in flight on the old color when nginx switches.
struct DemoReporter {
    inner: super::progress::StepPrinter,
    nginx_port: u16,
    slow: Vec<std::thread::JoinHandle<Option<(u16, String)>>>,
    fire_slow: bool,
}

impl Reporter for DemoReporter {
    fn event(&mut self, event: Event) {
        if let (
            true,
            Event::Start {
                step: Step::Health, ..
            },
        ) = (self.fire_slow, &event)
        {
            let port = self.nginx_port;
            for _ in 0..3 {
                self.slow.push(std::thread::spawn(move || {
                    demo::http_get(port, "/slow?ms=2000")
                }));
            }
        }
        self.inner.event(event);
    }
}

impl DemoReporter {
    /// How many slow requests were fired, and how many got a 200.
    fn slow_answers(&mut self) -> (usize, usize) {
        let slow: Vec<_> = self
            .slow
            .drain(..)
            .map(|h| h.join().ok().flatten())
            .collect();
        let ok = slow.iter().filter(|a| matches!(a, Some((200, _)))).count();
        (slow.len(), ok)
    }
}

#[derive(Serialize)]
struct DemoReport {
    project: String,
    nginx: String,
    first: Summary,
    second: Summary,
    load: Tally,
    slow_requests: usize,
    slow_ok: usize,
    secret_reached_app: Option<bool>,
    total_ms: u64,
}

/// The throwaway project a demo deploys: its directory, ports, nginx prefix, secrets
/// identity and loaded config.
struct DemoProject {
    _workdir: Option<tempfile::TempDir>,
    dir: std::path::PathBuf,
    project: String,
    ports: [u16; 3],
    prefix: std::path::PathBuf,
    secrets: Option<std::path::PathBuf>,
    loaded: config::Loaded,
    renderer: Renderer,
}

impl DemoProject {
    fn create(keep: bool) -> anyhow::Result<DemoProject> {
        let workdir = tempfile::Builder::new()
            .prefix("cutover-demo-")
            .tempdir()
            .context("could not create a temp dir for the demo")?;
        // Without --keep the directory goes when the demo ends: the guard lives as long.
        let (workdir, dir) = if keep {
            (None, workdir.keep())
        } else {
            let dir = workdir.path().to_owned();
            (Some(workdir), dir)
        };
        let project = format!("cutover-demo-{}", std::process::id());
        let ports = [demo::free_port()?, demo::free_port()?, demo::free_port()?];
        let prefix = dir.join("nginx");
        let secrets = Some(demo::write_secrets(&dir)?);
        let config_path = dir.join("cutover.yml");
        crate::atomic::write(
            &config_path,
            demo::project_config(&project, ports, &prefix, secrets.is_some()).as_bytes(),
            0o644,
        )?;
        let loaded = config::load(&config_path, &dir)?;
        let renderer = Renderer::new(&dir)?;
        Ok(DemoProject {
            _workdir: workdir,
            dir,
            project,
            ports,
            prefix,
            secrets,
            loaded,
            renderer,
        })
    }
}

/// The demo nginx's site and the include pointing at blue.
fn write_nginx_files(
    prefix: &std::path::Path,
    renderer: &Renderer,
    loaded: &config::Loaded,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(prefix)?;
    let site = renderer.site(&loaded.config)?;
    crate::atomic::write(&prefix.join("site.conf"), site.as_bytes(), 0o644)?;
    crate::atomic::write(
        &prefix.join("service-url.inc"),
        renderer
            .include(&loaded.config, config::Color::Blue, None, Route::Direct)?
            .as_bytes(),
        0o644,
    )?;
    Ok(())
}

/// Whether the demo app got the demo secret (asked through nginx, on its test-only route).
fn secret_reached_app(port: u16) -> bool {
    matches!(demo::http_get(port, "/env?key=DEMO_SECRET"), Some((200, body)) if !body.trim().is_empty())
}

/// The demo images, built from fixtures/demo-app when missing.
fn demo_images(say: &dyn Fn(&str)) -> anyhow::Result<()> {
    say("==> demo images (cutover-demo:v1, cutover-demo:v2)");
    let built = demo::ensure_images(&demo::source_dir())?;
    say(if built {
        "    built from fixtures/demo-app"
    } else {
        "    already present"
    });
    Ok(())
}

pub fn run(ctx: &Context, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let say = |text: &str| {
        if !args.json && !ctx.quiet() {
            eprintln!("{text}");
        }
    };
    demo::check_tools()?;
    demo_images(&say)?;

    let DemoProject {
        _workdir,
        dir,
        project,
        ports,
        prefix,
        secrets,
        loaded,
        renderer,
    } = DemoProject::create(args.keep)?;
    say(&format!(
        "==> nginx on 127.0.0.1:{} (prefix {})",
        ports[2],
        prefix.display()
    ));
    write_nginx_files(&prefix, &renderer, &loaded)?;
    // Set up before nginx starts, so a failed start still removes what the demo made.
    let mut cleanup = Cleanup {
        project: project.clone(),
        nginx: None,
        keep: args.keep,
    };
    cleanup.nginx = Some(LocalNginx::start(&prefix)?);

    let env = crate::secrets::deploy_env(secrets.as_deref(), &loaded)?;
    let deployer = Deployer {
        loaded: &loaded,
        compose: Compose::detect_cached()?,
        renderer,
        secrets: env.values,
        secret_keys: env.keys,
        secret_sources: env.sources,
        secret_files: crate::secrets::files::for_project(&loaded.config)?,
        identity: secrets.clone(),
        rollback_values: Default::default(),
        interrupted: super::progress::interrupt_flag()?,
    };
    let request = |image: &str| Request {
        image: Some(image.to_string()),
        action: Action::Deploy,
        dry_run: false,
        release: true,
        force: false,
        lock_wait: Duration::ZERO,
        // The demo decrypts its secrets once, before both deploys.
        decrypted: Duration::ZERO,
    };
    let quiet = args.json || ctx.quiet();
    let mut reporter = DemoReporter {
        inner: super::progress::StepPrinter::new(quiet),
        nginx_port: ports[2],
        slow: Vec::new(),
        fire_slow: false,
    };

    say(&format!(
        "==> deploy 1: cutover-demo:v1 (first deploy, {} {})",
        deployer.compose.program(),
        deployer.compose.version
    ));
    let first = deployer.run(&request(demo::IMAGES[0]), &mut reporter)?;

    say("==> deploy 2: cutover-demo:v2 while a client sends requests through nginx (one connection each)");
    let load = Load::start(ports[2], Duration::from_secs(300));
    std::thread::sleep(Duration::from_millis(500));
    reporter.fire_slow = true;
    let second = deployer.run(&request(demo::IMAGES[1]), &mut reporter);
    std::thread::sleep(Duration::from_millis(500));
    let tally = load.finish();
    let second = second?;
    let (slow_requests, slow_ok) = reporter.slow_answers();

    let report = DemoReport {
        project: project.clone(),
        nginx: format!("http://127.0.0.1:{}", ports[2]),
        slow_requests,
        slow_ok,
        secret_reached_app: secrets.as_ref().map(|_| secret_reached_app(ports[2])),
        total_ms: started.elapsed().as_millis() as u64,
        first,
        second,
        load: tally,
    };
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&super::failure::versioned(
                super::failure::Document::Demo,
                &report
            ))?
        )?;
    } else if !ctx.quiet() {
        print_report(&report, args.keep, &dir)?;
    }
    // Clean: no request failed, and every slow one in flight across the switch finished.
    let clean = report.load.failed == 0 && report.slow_ok == report.slow_requests;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(r: &DemoReport, keep: bool, dir: &std::path::Path) -> anyhow::Result<()> {
    let ms = |m: u64| duration(Duration::from_millis(m));
    outln!()?;
    outln!("timeline")?;
    for (name, s) in [("deploy 1", &r.first), ("deploy 2", &r.second)] {
        outln!(
            "  {name}: {} → {} in {}{}",
            s.image,
            s.detail.to,
            ms(s.total_ms),
            s.detail
                .switch_ms
                .map(|m| format!(", nginx served it {} after the health gate", ms(m)))
                .unwrap_or_default()
        )?;
        outln!("    {}", super::progress::steps_line(&s.steps))?;
    }
    outln!()?;
    outln!("requests through nginx during deploy 2 (one connection per request)")?;
    outln!(
        "  {} sent, {} ok, {} failed",
        r.load.sent,
        r.load.ok,
        r.load.failed
    )?;
    for (answer, count) in &r.load.by_answer {
        outln!("  {count:>6} × {answer}")?;
    }
    for f in &r.load.failures {
        outln!("  failed: {f}")?;
    }
    outln!(
        "  slow requests (2 s) in flight on the old color at the switch: {}/{} completed with 200",
        r.slow_ok,
        r.slow_requests
    )?;
    match r.secret_reached_app {
        Some(true) => outln!("  DEMO_SECRET from secrets/demo.env.age reached the app as an env var (value not shown)")?,
        Some(false) => outln!("  DEMO_SECRET did NOT reach the app")?,
        None => {}
    }
    outln!()?;
    if keep {
        outln!(
            "kept running: nginx {} , project {} in {}",
            r.nginx,
            r.project,
            dir.display()
        )?;
        outln!("clean up: docker rm -f $(docker ps -aq --filter label=com.docker.compose.project={}) and nginx -p {}/nginx/ -s quit", r.project, dir.display())?;
    } else {
        outln!(
            "cleaned up: containers, network, nginx and the temp project are gone ({} in all)",
            ms(r.total_ms)
        )?;
    }
    Ok(())
}
