//! HTTPS for the project's site (`nginx.tls`): a certificate from an ACME CA with certbot's
//! webroot method, the site re-rendered with a 443 server once the certificate exists, and
//! renewal (a cron entry running `certbot renew`, a deploy hook that tests and reloads nginx).
//!
//! Order matters for never breaking the HTTP site: the site that serves
//! `/.well-known/acme-challenge/` from the webroot is live (written, `nginx -t`, reloaded)
//! before certbot runs; the HTTPS site is written only after a certificate exists, and a site
//! that fails `nginx -t` is put back. A certificate that cannot be issued leaves the HTTP
//! site serving and the step fails with certbot's own error (certbot's arguments and output
//! hold no secret: the ACME account key stays in certbot's config dir).
//!
//! Idempotent: a certificate that is valid for 30 more days and names every configured
//! domain (`openssl x509 -checkend`, `-ext subjectAltName`) is kept, and a second run
//! changes nothing. Under `--root` certbot and nginx are listed, not run; the files land
//! under the root. The `--cloud-init` user-data has no part of this step: see [`STEP`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::cloud_init::Part;
use super::{sbin, Options, StepDef, StepRun, Target};
use crate::config::{Loaded, Tls};
use crate::process::{shell_quote, Cmd, ProcessError};
use crate::render::Renderer;

/// Step "tls". The user-data gets no certificate (why: below); its site already serves
/// the challenge path, so `cutover tls issue` on the booted box completes HTTPS.
pub const STEP: StepDef = StepDef {
    name: "tls",
    run: |opts, s, _| bootstrap_step(opts, s),
    cloud_init: Part::Without(
        "the CA checks the domain, which need not point at the booting instance yet: \
         run `cutover tls issue` on the box",
    ),
};

/// The step in `cutover bootstrap`: skipped without a config or without `nginx.tls`.
fn bootstrap_step(opts: &Options, s: &mut StepRun<'_>) -> anyhow::Result<()> {
    let reason = if opts.nginx.is_some() {
        "no nginx.tls in cutover.yml"
    } else {
        &opts.no_config_reason
    };
    step(opts.tls.as_ref(), reason, s)
}

/// A certificate closer than this to its expiry is renewed (certbot's own default).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// What the step needs: the TLS settings and the two renderings of the site.
#[derive(Debug, Clone)]
pub struct Plan {
    pub project: String,
    pub tls: Tls,
    pub site_path: PathBuf,
    /// The site before a certificate exists: the app on HTTP plus the challenge path.
    pub site_without_cert: String,
    /// The site with the 443 server and the HTTP → HTTPS redirect.
    pub site_with_cert: String,
    pub test: Vec<String>,
    pub reload: Vec<String>,
}

/// Whether the certificate of `nginx.tls` exists (under `--root` when the target has one):
/// the site is rendered with its 443 server only then.
pub fn cert_ready(loaded: &Loaded, target: &Target) -> bool {
    loaded.config.nginx.tls.as_ref().is_some_and(|tls| {
        target.path(&tls.fullchain()).is_file() && target.path(&tls.privkey()).is_file()
    })
}

impl Plan {
    /// The TLS plan of a project: `None` when its config has no `nginx.tls`.
    pub fn of(loaded: &Loaded, renderer: &Renderer) -> anyhow::Result<Option<Plan>> {
        let Some(settings) = &loaded.config.nginx.tls else {
            return Ok(None);
        };
        let nginx = &loaded.config.nginx;
        Ok(Some(Plan {
            project: loaded.config.project.to_string(),
            tls: settings.clone(),
            site_path: nginx.site.clone(),
            site_without_cert: renderer.site_with(&loaded.config, false)?,
            site_with_cert: renderer.site_with(&loaded.config, true)?,
            test: nginx.test.clone(),
            reload: nginx.reload.clone(),
        }))
    }

    pub fn renew_cron(&self) -> PathBuf {
        self.tls.renew_cron.clone().unwrap_or_else(|| {
            PathBuf::from(format!("/etc/cron.d/cutover-certbot-{}", self.project))
        })
    }

    /// The deploy hook certbot runs after every renewal: `nginx -t`, then reload.
    pub fn deploy_hook(&self) -> PathBuf {
        self.tls
            .config_dir
            .join("renewal-hooks/deploy")
            .join(format!("cutover-{}", self.project))
    }

    fn dirs(&self) -> [(&'static str, &Path); 3] {
        [
            ("--config-dir", &self.tls.config_dir),
            ("--work-dir", &self.tls.work_dir),
            ("--logs-dir", &self.tls.logs_dir),
        ]
    }

    /// `certbot certonly --webroot …` for the configured domains.
    pub fn certonly(&self) -> Cmd {
        let tls = &self.tls;
        let mut cmd = Cmd::new(
            sbin("certbot"),
            format!("get a certificate for {}", tls.domains.join(", ")),
        )
        .args(["certonly", "--webroot", "-w"])
        .arg(&tls.webroot)
        .args(["--cert-name", tls.cert_name()]);
        for domain in &tls.domains {
            cmd = cmd.args(["-d", domain]);
        }
        cmd = cmd
            .args(["--server", &tls.acme_server, "--email", &tls.email])
            .args(["--agree-tos", "--non-interactive", "--keep-until-expiring"]);
        for (flag, dir) in self.dirs() {
            cmd = cmd.arg(flag).arg(dir);
        }
        // Certbot's own lock and a slow CA: bounded, generously.
        cmd.timeout(Duration::from_secs(300))
    }

    /// `certbot renew` with the same dirs, as the cron entry runs it.
    pub fn renew_argv(&self) -> Vec<String> {
        let mut argv = vec![
            sbin("certbot").display().to_string(),
            "renew".into(),
            "-q".into(),
        ];
        for (flag, dir) in self.dirs() {
            argv.push(flag.into());
            argv.push(dir.display().to_string());
        }
        argv
    }

    fn hook_script(&self) -> String {
        let line = |argv: &[String]| {
            argv.iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "#!/bin/sh\n\
             # Written by cutover for project {}: certbot runs this after renewing a certificate.\n\
             # nginx reads the new certificate only on a reload, and only a config that passes -t.\n\
             set -e\n{}\n{}\n",
            self.project,
            line(&self.test),
            line(&self.reload)
        )
    }

    fn cron_entry(&self) -> String {
        let argv: Vec<String> = self.renew_argv().iter().map(|a| shell_quote(a)).collect();
        format!(
            "# Written by cutover for project {}: renew its certificate (certbot renews only\n\
             # within 30 days of expiry, then runs the deploy hook that reloads nginx).\n\
             SHELL=/bin/sh\n\
             PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             17 3,15 * * * root {}\n",
            self.project,
            argv.join(" ")
        )
    }
}

/// What is known about the certificate on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Certificate {
    Missing,
    /// Valid beyond [`RENEW_BEFORE`] and naming every configured domain.
    Valid,
    Expiring,
    /// Issued for other names than the configured ones.
    OtherDomains(Vec<String>),
}

/// Reads the certificate at `fullchain` with openssl (no X.509 parser is a dependency).
pub fn inspect(fullchain: &Path, domains: &[String]) -> anyhow::Result<Certificate> {
    if !fullchain.exists() {
        return Ok(Certificate::Missing);
    }
    let openssl = || Cmd::new("openssl", format!("read {}", fullchain.display()));
    let checkend = openssl()
        .args(["x509", "-noout", "-checkend"])
        .arg(RENEW_BEFORE.as_secs().to_string())
        .arg("-in")
        .arg(fullchain)
        .run_unchecked()?;
    let san = openssl()
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(fullchain)
        .run()?;
    // `X509v3 Subject Alternative Name: \n    DNS:a, DNS:b`: the names are the DNS: entries.
    let names: Vec<String> = san
        .stdout
        .split([',', '\n'])
        .filter_map(|part| part.trim().strip_prefix("DNS:"))
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        anyhow::bail!(
            "`openssl x509 -ext subjectAltName` lists no DNS name in {}",
            fullchain.display()
        );
    }
    if domains.iter().any(|d| !names.contains(d)) {
        return Ok(Certificate::OtherDomains(names));
    }
    match checkend.code {
        Some(0) => Ok(Certificate::Valid),
        Some(1) => Ok(Certificate::Expiring),
        _ => Err(openssl().failed(&checkend).into()),
    }
}

/// The step: see the module docs for the order.
pub fn step(plan: Option<&Plan>, skip_reason: &str, step: &mut StepRun<'_>) -> anyhow::Result<()> {
    let Some(plan) = plan else {
        step.skip(skip_reason.to_string());
        return Ok(());
    };
    let tls = &plan.tls;
    let fullchain = step.target.path(&tls.fullchain());
    let cert = inspect(&fullchain, &tls.domains)?;
    step.summary(match &cert {
        Certificate::Valid => format!("certificate for {} is valid", tls.domains.join(", ")),
        Certificate::Missing => format!("no certificate yet for {}", tls.domains.join(", ")),
        Certificate::Expiring => format!(
            "certificate for {} expires within 30 days",
            tls.domains.join(", ")
        ),
        Certificate::OtherDomains(names) => format!(
            "certificate names {}, not {}",
            names.join(", "),
            tls.domains.join(", ")
        ),
    });

    // nginx's workers (not root) read the tokens: every level of the webroot is 0755.
    let webroot = step.target.path(&tls.webroot);
    let challenge = webroot.join(".well-known/acme-challenge");
    if !challenge.is_dir() {
        step.change(format!("create {} (mode 0755)", challenge.display()));
        if !step.dry_run() {
            std::fs::create_dir_all(&challenge)
                .with_context(|| format!("could not create {}", challenge.display()))?;
        }
    }
    if !step.dry_run() {
        for dir in [&webroot, &webroot.join(".well-known"), &challenge] {
            step.ensure_mode(dir, 0o755, false)?;
        }
    }

    if cert != Certificate::Valid {
        // The challenge must be answerable before certbot asks the CA to check it; an
        // existing (expiring) certificate keeps HTTPS up meanwhile.
        let serving = if fullchain.exists() {
            &plan.site_with_cert
        } else {
            &plan.site_without_cert
        };
        apply_site(plan, step, serving)?;
        let certbot = plan.certonly();
        if step.target.live()
            && !sbin("certbot").is_absolute()
            && crate::process::which("certbot").is_none()
        {
            anyhow::bail!("certbot is not installed (Debian/Ubuntu: apt-get install certbot)");
        }
        if let Err(mut err) = step.live_command(&certbot) {
            let problems = match err.downcast_ref::<ProcessError>() {
                Some(ProcessError::Failed { stdout, .. }) => ca_problems(stdout),
                _ => None,
            };
            if let Some(problems) = problems {
                err = err.context(format!("the CA reported: {problems}"));
            }
            return Err(err.context(format!(
                "no certificate for {} from {}; the HTTP site keeps serving as before",
                tls.domains.join(", "),
                tls.acme_server
            )));
        }
    }
    if cert == Certificate::Valid || step.target.live() {
        apply_site(plan, step, &plan.site_with_cert)?;
    }

    step.write_file(&plan.deploy_hook(), plan.hook_script().as_bytes(), 0o755)?;
    step.write_file(&plan.renew_cron(), plan.cron_entry().as_bytes(), 0o644)?;
    Ok(())
}

/// The problem lines certbot prints on stdout after "The Certificate Authority reported these
/// problems:" (its stderr only says "Some challenges have failed"), joined on one line.
fn ca_problems(stdout: &str) -> Option<String> {
    let (_, rest) = stdout.split_once("reported these problems:")?;
    let lines: Vec<&str> = rest
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let words: Vec<&str> = lines.iter().flat_map(|l| l.split_whitespace()).collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// Writes `text` as the site when it differs, then `nginx -t` and reload; a site nginx
/// rejects is put back (and nginx not reloaded).
fn apply_site(plan: &Plan, step: &mut StepRun<'_>, text: &str) -> anyhow::Result<()> {
    let site = step.target.path(&plan.site_path);
    let old = match std::fs::read(&site) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("could not read {}", site.display())),
    };
    if !step.write_file(&plan.site_path, text.as_bytes(), 0o644)? {
        return Ok(());
    }
    let test = Cmd::from_argv(&plan.test, "test the nginx config").timeout(Duration::from_secs(30));
    let reload = Cmd::from_argv(&plan.reload, "reload nginx").timeout(Duration::from_secs(30));
    if !step.target.live() {
        step.live_command(&test)?;
        step.live_command(&reload)?;
        return Ok(());
    }
    if let Err(err) = step.live_command(&test) {
        match old {
            Some(bytes) => crate::atomic::write(&site, &bytes, 0o644)?,
            None => std::fs::remove_file(&site)
                .with_context(|| format!("could not remove {}", site.display()))?,
        }
        return Err(err.context(format!(
            "nginx rejected the new site {}; the previous one is back in place, nginx not reloaded",
            site.display()
        )));
    }
    let old_workers = crate::nginx::worker_pids(&plan.reload);
    step.live_command(&reload)?;
    // `nginx -s reload` returns before the old workers stop accepting: wait (bounded) until
    // they are gone, so the new site is what answers when this step reports it done.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while old_workers
        .iter()
        .any(|pid| crate::nginx::process_alive(*pid))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_problems_are_read_from_certbot_stdout() {
        let stdout = "\nCertbot failed to authenticate some domains (authenticator: webroot). The Certificate Authority reported these problems:\n  Domain: app.example\n  Type: connection\n  Detail: 127.0.0.1: Fetching http://app.example/x: Connection refused\n\nHint: the CA could not reach it.\n";
        assert_eq!(
            ca_problems(stdout).unwrap(),
            "Domain: app.example Type: connection Detail: 127.0.0.1: Fetching http://app.example/x: Connection refused"
        );
        assert_eq!(ca_problems("nothing"), None);
    }
}
