//! The command-line surface, as clap types and nothing else.
//!
//! The command surface is a contract (docs/ARCHITECTURE.md): names here are not renamed, only added to.
//! Logic lives in `cmd/` (what to print) and the domain modules (what to do).
//!
//! Every flag that takes a duration, size or number is parsed here by a typed clap value
//! parser, so a bad or out-of-range value is a usage error (exit 2, clap's `error:` line
//! naming the flag) and the command layer only ever sees a value it can use.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::{Dur, Size, Swap};

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str =
    "Zero-downtime blue/green deploys of a Docker Compose app behind nginx on one box";

const LONG_ABOUT: &str = "\
cutover deploys a Docker Compose app to the idle of two colors (blue, green), waits until it
answers its health check, points nginx at it, drains the old color and stops it. Secrets stay
encrypted with age in git and are decrypted only in memory at deploy time.

Typical flow:
  cutover init myapp            scaffold cutover.yml, templates/, secrets/
  cutover render --check        validate the config and the rendered files
  cutover deploy --image app:v2 deploy to the idle color, health-gated
  cutover status                which color serves, which image runs where
  cutover rollback              health-gated deploy of the previous image

Try it locally first: `cutover demo` runs a full blue/green cycle on a bundled demo app.";

const DEPLOY_EXAMPLES: &str = "\
Examples:
  cutover deploy --image myuser/app:v2                      on the box itself
  cutover --host admin@203.0.113.7 deploy --image app:v2   from a laptop or CI, over SSH
  cutover --host admin@203.0.113.7 deploy --image app:v2 --ship
                                      send the local image first (only the layers the box lacks)
With `registry:` in cutover.yml, an image from that registry is pulled (after `docker login`)
before anything starts.";

#[derive(Debug, Parser)]
#[command(name = "cutover", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Run as if started in DIR (the project directory holding cutover.yml)
    #[arg(short = 'C', long = "directory", global = true, value_name = "DIR")]
    pub directory: Option<PathBuf>,

    /// Config file [default: ./cutover.yml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// age identity file used to decrypt secrets (also: CUTOVER_AGE_KEY holds the key itself)
    #[arg(
        long,
        global = true,
        env = "CUTOVER_IDENTITY",
        value_name = "FILE",
        hide_env_values = true
    )]
    pub identity: Option<PathBuf>,

    /// Run the command on this box over SSH (also: remote.host in cutover.yml)
    #[arg(
        long,
        global = true,
        env = "CUTOVER_HOST",
        value_name = "[USER@]HOST[:PORT]",
        value_parser = crate::config::Target::parse
    )]
    pub host: Option<crate::config::Target>,

    /// Set by `--host` on the box's side: stdin is the channel to the caller (remote::on_box)
    #[arg(long, global = true, hide = true)]
    pub on_box: bool,

    /// Set by `--on-box` for the process that runs the command (remote::on_box)
    #[arg(long, global = true, hide = true, conflicts_with = "on_box")]
    pub on_box_child: bool,

    /// With --on-box: once the command succeeded, its project dir (a synced release) becomes
    /// the box's `current` release (remote::release)
    #[arg(long, global = true, hide = true)]
    pub on_box_promote: bool,

    /// With --on-box: the age identity arrives first on stdin
    #[arg(long, global = true, hide = true)]
    pub age_key_stdin: bool,

    /// Print only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more detail (each subprocess run and each Docker engine API request, with its
    /// time and how it ended)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a project: cutover.yml, templates/, secrets/, .gitignore (or a CI workflow)
    #[command(after_help = INIT_EXAMPLES)]
    Init(InitArgs),
    /// Write the compose and nginx files from cutover.yml and the templates
    Render(RenderArgs),
    /// Deploy an image to the idle color, health-gate it, switch nginx, drain the old color
    #[command(after_help = DEPLOY_EXAMPLES)]
    Deploy(DeployArgs),
    /// Health-gated deploy of the previous image (kept locally, no pull)
    Rollback(RollbackArgs),
    /// Show the active color, the image and health per color, and the last deploy
    Status(StatusArgs),
    /// Show the append-only deploy log with step timings
    History(HistoryArgs),
    /// Remove old app images beyond the last N that no container uses
    Prune(PruneArgs),
    /// Print a container's logs: the serving color, another color, an accessory or a worker
    Logs(LogsArgs),
    /// Run a command inside a running container (the serving color by default)
    Exec(ExecArgs),
    /// Manage age-encrypted secrets files (secrets/<name>.env.age)
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Make a fresh box ready: swap, sysctl, docker, compose, nginx, state dir
    Bootstrap(BootstrapArgs),
    /// Run a full local blue/green cycle on the bundled demo app, under live traffic
    Demo(DemoArgs),
    /// HTTPS for the site (nginx.tls): get the certificate, serve it, install renewal
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Run a command in a one-off container of the serving image, with the app's environment
    /// and secrets (migrations by hand, consoles)
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Maintenance mode: nginx answers 503 with a page to everyone but cutover's probes
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
    /// The nft switch's root side for a deploy user who is not root (run through `sudo -n`)
    #[command(name = "switch-rule", hide = true, long_about = SWITCH_RULE_ABOUT)]
    SwitchRule(SwitchRuleArgs),
    /// Print shell completions
    Completions {
        /// The shell to generate completions for
        shell: clap_complete::Shell,
    },
}

const INIT_EXAMPLES: &str = "\
Examples:
  cutover init myapp                   scaffold ./myapp
  cutover init --ci github --dry-run   print the GitHub Actions deploy workflow
  cutover init --ci github             write .github/workflows/deploy.yml (--force replaces it)";

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to scaffold (created if missing) [default: .]
    pub dir: Option<PathBuf>,
    /// Project name [default: the directory's name]
    #[arg(long, conflicts_with = "ci")]
    pub name: Option<String>,
    /// The app's image repository, without a tag (`deploy --image` picks the tag)
    /// [default: the project name, as in `docker build -t <project>:v1 .`]
    #[arg(long, value_name = "REPO", conflicts_with = "ci")]
    pub image: Option<String>,
    /// The port the app listens on inside its container [default: 8080]
    #[arg(long, value_name = "PORT", conflicts_with = "ci")]
    pub port: Option<u16>,
    /// The path the health gate polls, e.g. /up [default: /health]
    #[arg(long, value_name = "PATH", conflicts_with = "ci")]
    pub health: Option<String>,
    /// The SSH user who deploys on the box when it is not root (a cloud image's `admin`,
    /// `ubuntu`, `ec2-user`): the include goes in /home/USER/nginx/ and nginx is tested and
    /// reloaded through `sudo -n`, as `bootstrap` sets up
    #[arg(long, value_name = "USER", conflicts_with = "ci")]
    pub user: Option<String>,
    /// Instead: write a CI workflow for the existing cutover.yml (github:
    /// .github/workflows/deploy.yml: build, ship or push, deploy with `cutover --host`)
    #[arg(long, value_enum, value_name = "PROVIDER")]
    pub ci: Option<CiProvider>,
    /// With --ci: the branch whose pushes deploy
    #[arg(long, requires = "ci", default_value = "main")]
    pub branch: String,
    /// With --ci: replace an existing workflow file
    #[arg(long, requires = "ci")]
    pub force: bool,
    /// With --ci: print the workflow instead of writing it
    #[arg(long, requires = "ci")]
    pub dry_run: bool,
}

/// The CI systems `init --ci` writes a workflow for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CiProvider {
    /// GitHub Actions
    Github,
}

/// Which orchestrator runs the app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// Blue/green colors with docker compose behind nginx, on this box
    #[default]
    Compose,
    /// One replicated service with rolling updates, via `docker stack deploy`
    Swarm,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// compose: compose file + nginx files; swarm: the stack file (stack.yml)
    #[arg(long, value_enum, default_value_t = Engine::Compose)]
    pub engine: Engine,
    /// Write the files into DIR instead of .cutover/ (the nginx include is not installed)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Validate the config and render in memory; write nothing
    #[arg(long)]
    pub check: bool,
    /// Image to render for the idle color [default: the recorded images]
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Instead: write cutover's built-in templates into DIR (e.g. templates/, where a file
    /// overrides the built-in of its name); existing files are left alone
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "check", "image"])]
    pub templates: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// compose: blue/green behind nginx; swarm: `docker stack deploy` and a rolling update
    #[arg(long, value_enum, default_value_t = Engine::Compose)]
    pub engine: Engine,
    /// Image to deploy, e.g. myuser/app:2024-05-01 [default: redeploy the active image]
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// With --host: send the local image --image to the box over the SSH connection first,
    /// only the layers the box lacks (no registry) [config: `ship: ssh`]
    #[arg(long, requires = "image")]
    pub ship: bool,
    #[command(flatten)]
    pub common: DeployCommon,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// compose: the previous image on the idle color; swarm: the image before the last
    /// swarm deploy, as a rolling update
    #[arg(long, value_enum, default_value_t = Engine::Compose)]
    pub engine: Engine,
    /// Also run the release phase (app.release) again; a rollback skips it by default
    #[arg(long)]
    pub release: bool,
    #[command(flatten)]
    pub common: DeployCommon,
}

#[derive(Debug, Args)]
pub struct DeployCommon {
    /// Print the plan (colors, image, commands) and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Wait this long for another deploy's lock, e.g. 30s [default: fail at once]
    #[arg(long, value_name = "DURATION", value_parser = wait_duration)]
    pub lock_wait: Option<Duration>,
    /// Deploy even when the memory budget says both colors will not fit
    #[arg(long)]
    pub force: bool,
    /// Print a JSON summary on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// compose: colors and nginx; swarm: the stack's services, tasks and last update
    #[arg(long, value_enum, default_value_t = Engine::Compose)]
    pub engine: Engine,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Print JSON on stdout (one array)
    #[arg(long)]
    pub json: bool,
    /// Show only the last N entries
    #[arg(short = 'n', long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// How many recent app images to keep
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub keep: usize,
    /// List what would be removed; remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Create a new age identity (0600, never overwritten without --force); print its public key
    Keygen {
        /// Where to write the identity [default: the per-user default path]
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Also append the public key to secrets/recipients.txt
        #[arg(long)]
        add: bool,
        /// Overwrite an existing identity file
        #[arg(long)]
        force: bool,
    },
    /// Validate a plaintext dotenv file and encrypt it to secrets/<name>.env.age
    Encrypt {
        /// The plaintext dotenv file
        file: PathBuf,
        /// Secrets file name [default: FILE's name without .env]
        #[arg(long)]
        name: Option<String>,
        /// Remove the plaintext file after encrypting
        #[arg(long)]
        rm: bool,
        /// Replace an existing secrets/<name>.env.age
        #[arg(long)]
        force: bool,
    },
    /// Print a decrypted secrets file (or only its key names)
    Show {
        /// Secrets file name, e.g. prod for secrets/prod.env.age
        name: String,
        /// Print only the key names, never values
        #[arg(long)]
        keys: bool,
        /// Print JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Edit a secrets file in $EDITOR (plaintext lives in a 0600 file on tmpfs, then removed)
    Edit {
        /// Secrets file name (`prod` or `prod.env.age`: secrets/prod.env.age)
        name: String,
        /// Make a new secrets file when NAME has none (without it, an unknown NAME is an
        /// error listing the existing ones: a typo never creates a file)
        #[arg(long)]
        create: bool,
    },
    /// Set KEY from stdin (or a generated value); values are never taken from argv
    Set {
        /// Secrets file name (`prod` or `prod.env.age`: secrets/prod.env.age)
        name: String,
        /// Key to set
        key: String,
        /// Make a new secrets file when NAME has none (without it, an unknown NAME is an
        /// error listing the existing ones: a typo never creates a file)
        #[arg(long)]
        create: bool,
        /// Generate a random value of N characters (1 to 65536) instead of reading stdin
        #[arg(long, value_name = "N", value_parser = generated_length())]
        generate: Option<usize>,
    },
    /// Remove KEY from a secrets file
    Unset {
        /// Secrets file name
        name: String,
        /// Key to remove
        key: String,
    },
    /// Re-encrypt every secrets file to the current recipients with fresh file keys (all or none)
    Rekey,
    /// New identity, add its recipient, rekey everything, retire the old recipient
    RotateIdentity {
        /// Where to write the new identity [default: the per-user default path]
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Write the secret files of `app.secrets_delivery: files` again (on tmpfs, from the
    /// ciphertext each running service was deployed from, so a `secrets set` not yet deployed
    /// stays out): what the boot unit `bootstrap` installs runs before Docker starts
    Restore {
        /// Every project registered on this box (the boot unit), not only this directory's
        #[arg(long)]
        all: bool,
        /// Say which services' files would be written; write nothing
        #[arg(long)]
        dry_run: bool,
        /// Print JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Run a command with the decrypted variables in its environment (no shell)
    Exec {
        /// Secrets file names, then `--`, then the command
        #[arg(required = true, num_args = 1..)]
        names: Vec<String>,
        /// The command and its arguments
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Apply every file change under DIR and list the live-system commands not run
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Swap file size (e.g. 2G), auto (AWS table: RAM <= 2 GiB -> 2 x RAM) or off
    #[arg(long, value_name = "SIZE|auto|off", value_parser = Swap::parse)]
    pub swap: Option<Swap>,
    /// Skip package installation (docker, compose, nginx)
    #[arg(long)]
    pub no_install: bool,
    /// Print equivalent #cloud-config user-data for a new EC2 instance instead
    #[arg(long)]
    pub cloud_init: bool,
    /// The user who deploys (added to the docker group) [default: $SUDO_USER]
    #[arg(long)]
    pub user: Option<String>,
    /// Print a JSON report on stdout
    #[arg(long)]
    pub json: bool,
    /// Change this box without asking (a live run on a terminal asks first; a run without a
    /// terminal, as from CI or `--host`, never asks)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// With --cloud-init: the instance type's RAM, for --swap auto [default: 1G, a t2.micro]
    #[arg(long, value_name = "SIZE", requires = "cloud_init", value_parser = Size::parse)]
    pub ram: Option<Size>,
    /// With --cloud-init: the image's distribution [default: ubuntu]
    #[arg(long, value_name = "ID", requires = "cloud_init", value_enum)]
    pub os: Option<OsArg>,
}

/// `bootstrap --os`: an image's os-release ID. (No doc comments on the variants: clap would
/// turn them into a described list and change `--help`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OsArg {
    Ubuntu,
    Debian,
    Amzn,
    Fedora,
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Get (or keep) the certificate with certbot's webroot method, render the HTTPS site,
    /// `nginx -t` and reload, and install renewal with a deploy hook that reloads nginx
    Issue(TlsIssueArgs),
}

#[derive(Debug, Args)]
pub struct TlsIssueArgs {
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Write the files under DIR and list certbot and nginx as commands not run
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print a JSON report on stdout
    #[arg(long)]
    pub json: bool,
}

const RUN_EXAMPLES: &str = "\
The container is `compose run --rm --no-deps` of the serving color's service: its image, its
environment, the decrypted secrets (process environment of compose only), its networks and
memory limit; no ports are published. A TTY is passed through when stdin and stdout are
terminals (`-T` otherwise); the command's exit code is cutover's.

Examples:
  cutover run -- bin/rails db:migrate
  cutover run -- python manage.py shell        (interactive on a terminal)
  echo 'select 1' | cutover run -- psql        (stdin piped in, no TTY)
  cutover --host admin@box run -- bin/migrate (no TTY and no stdin over --host)";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Serve 503 + the page + Retry-After to everyone but cutover's loopback probes
    #[command(after_help = "\
Examples:
  cutover maintenance on
  cutover maintenance on --message 'Upgrading the database, back at 14:00 UTC' --retry-after 30m
  cutover maintenance on --dry-run

The probe path (/.cutover/active) and the health path still reach the app from this box, so
`cutover deploy` works during maintenance and keeps it on. `cutover status` shows the mode.")]
    On(MaintenanceOnArgs),
    /// Serve the app again
    #[command(after_help = "Example:\n  cutover maintenance off")]
    Off(MaintenanceOffArgs),
}

#[derive(Debug, Args)]
pub struct MaintenanceOnArgs {
    /// The text of the page (HTML-escaped; one line, at most 500 characters)
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
    /// What the Retry-After header says, e.g. 2m or 1h (whole seconds)
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = wait_duration)]
    pub retry_after: Duration,
    #[command(flatten)]
    pub common: MaintenanceCommon,
}

#[derive(Debug, Args)]
pub struct MaintenanceOffArgs {
    #[command(flatten)]
    pub common: MaintenanceCommon,
}

#[derive(Debug, Args)]
pub struct MaintenanceCommon {
    /// Print what would change and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print a JSON result on stdout
    #[arg(long)]
    pub json: bool,
    /// How long to wait for a deploy holding the project's lock
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = wait_duration)]
    pub lock_wait: Duration,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo running at the end (nginx, containers) instead of cleaning up
    #[arg(long)]
    pub keep: bool,
    /// Print a JSON summary on stdout
    #[arg(long)]
    pub json: bool,
}

/// Longest wait a flag accepts: far beyond any real wait, and far inside what `Instant` can
/// add, so a deadline computed later never overflows.
pub const MAX_WAIT: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A wait such as `30s` or `1m 30s`, at most [`MAX_WAIT`].
const LOGS_HELP: &str = "\
Examples:
  cutover logs                    the serving color's logs
  cutover logs -f --since 10m     follow them, starting 10 minutes back (Ctrl-C ends, exit 130)
  cutover logs green              the other color (blue, green, an accessory or a worker name)
  cutover logs scheduler -n 50    a worker's last 50 lines
  cutover --host admin@box logs -f";

#[derive(Debug, Args)]
#[command(after_help = LOGS_HELP)]
pub struct LogsArgs {
    /// Keep printing new lines until Ctrl-C
    #[arg(short, long)]
    pub follow: bool,
    /// Only lines from this long ago on, e.g. 10m, 2h
    #[arg(long, value_name = "DURATION", value_parser = wait_duration)]
    pub since: Option<Duration>,
    /// Only the last N lines
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<u64>,
    /// `blue`, `green`, an accessory or a worker [default: the serving color]
    pub service: Option<String>,
}

const EXEC_HELP: &str = "\
The command runs in the container with its environment (secrets included, as the container
has them); its exit code is cutover's. A terminal is passed through (`docker exec -it`) when
stdin and stdout are terminals; otherwise stdin is piped in and no TTY is allocated. With
--host there is never a TTY and no stdin: the SSH session's stdin is cutover's control channel.

Examples:
  cutover exec -- /app healthcheck
  cutover exec --color green -- sh -c 'echo $HOSTNAME'
  cutover exec --service scheduler -- sh
  cutover --host admin@box exec -- ./manage.py check";

#[derive(Debug, Args)]
#[command(after_help = EXEC_HELP)]
pub struct ExecArgs {
    /// Run in this color's container [default: the serving color]
    #[arg(long, value_enum, conflicts_with = "service")]
    pub color: Option<ColorArg>,
    /// Run in an accessory's or a worker's container instead
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    Blue,
    Green,
}

fn wait_duration(text: &str) -> Result<Duration, String> {
    let wait = Dur::parse(text)?.get();
    if wait > MAX_WAIT || Instant::now().checked_add(wait).is_none() {
        return Err(format!("duration `{text}` is too long (at most 100 years)"));
    }
    Ok(wait)
}

/// `--generate N`: a secret value is an environment variable, and Linux caps one at 128 KiB.
fn generated_length() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=65536)
}

const SWITCH_RULE_ABOUT: &str = "\
The nft switch's root side (nginx.switch: nft), for a deploy user who is not root: changing
nftables rules needs CAP_NET_ADMIN, so deploys run this through `sudo -n`, and
`cutover bootstrap` (as root) allows exactly this project's argv in
/etc/sudoers.d/cutover-switch-<project>, for the root-owned copy
/usr/local/lib/cutover-root/cutover. Not for people: deploy, rollback and status call it.

It trusts only the project name and the colors: the ports come from the grant bootstrap wrote
(/var/lib/cutover/switch/<project>.grant, root-only). It prints one JSON document: the
project, its grant, the rule in the kernel afterwards (null: no table). The global options
(-C, --config, --host, ...) are ignored: it reads no cutover.yml and acts on this machine only.
A project without a grant, a grant another user could have written or that names ports
below 1024 or twice, is refused (exit 1, the file and what was expected on stderr).

Examples (as the deploy user):
  sudo -n /usr/local/lib/cutover-root/cutover switch-rule read web
  sudo -n /usr/local/lib/cutover-root/cutover switch-rule set web green blue

Retiring a project (as root): `switch-rule remove <project>` first (it needs the grant), then
delete its grant and /etc/sudoers.d/cutover-switch-<project>. After cutover.yml's ports change,
run `cutover bootstrap` again: it rewrites the grant.";

#[derive(Debug, Args)]
pub struct SwitchRuleArgs {
    #[command(subcommand)]
    pub action: SwitchRuleAction,
}

#[derive(Debug, Subcommand)]
pub enum SwitchRuleAction {
    /// Print the project's rule as the kernel has it
    Read {
        /// The project (its name in cutover.yml)
        project: String,
    },
    /// Lead the primary port to PRIMARY's port and the backup port to BACKUP's, save it
    Set {
        /// The project (its name in cutover.yml)
        project: String,
        /// The color nginx's primary switch port leads to (the one serving)
        primary: RuleColor,
        /// The color nginx's backup switch port leads to (the previous one in the watch
        /// window, else PRIMARY again)
        backup: RuleColor,
    },
    /// Delete the project's table and its saved ruleset
    Remove {
        /// The project (its name in cutover.yml)
        project: String,
    },
}

/// A color, as `switch-rule set` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuleColor {
    Blue,
    Green,
}
