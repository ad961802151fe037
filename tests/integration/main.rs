//! One integration test binary (as in casey/just): every test runs the real `cutover` binary
//! in a temp dir, against the real Docker engine, nginx, `age`, sshd… where the behaviour
//! lives there.
//!
//! Two kinds of file:
//! - **`harness/`**: what the tests stand on (harness/mod.rs lists its pieces): the one
//!   project builder, [`harness::project::Project`]; the binary in an isolated environment
//!   (its own HOME and XDG dirs, [`common::isolate`]); the tool gates ([`common::require`]:
//!   without the tool a test says so loudly and skips, with `CI` set it fails instead); the
//!   sshd box, the laptop's second dockerd, the registry, the ACME server, the shared swarm.
//! - **one file per feature**, named as a user would look for it:
//!   - a deploy: `deploy.rs` (the happy path, the dry run), `deploy_failures.rs` (health
//!     gate, container exit, `nginx -t`, probe, switch-back, refusals), `interrupts.rs`
//!     (lock, SIGTERM, `kill -9`), `state_recovery.rs` (crashes, torn or damaged files),
//!     `rollback.rs`, `prune.rs`, `multi_app.rs` (two projects, one nginx), `demo.rs`,
//!     `switch_clients.rs` (keep-alive clients and WebSockets through a switch);
//!   - around it: `hooks.rs`, `release_phase.rs`, `workers.rs`, `logs_exec_run.rs`,
//!     `maintenance.rs`, `nginx.rs` (the active marker, the drain's nginx workers);
//!   - secrets: `secrets.rs`, `secret_limits.rs`, `child_env.rs` (what children never get);
//!   - files and commands: `render.rs`, `config.rs`, `cli.rs`, `history.rs`, `json_contract.rs`
//!     (every `--json` document against docs/json/), `layers.rs`
//!     (docs/ARCHITECTURE.md's layer table against `src/`);
//!   - the box: `bootstrap.rs`, `tls.rs`, `remote.rs` (`--host`), `ship.rs`, `registry.rs`,
//!     `ci_scaffold.rs`, `release_artifact.rs`, `release_aarch64.rs` (the aarch64 binary
//!     under qemu-user); the swarm engine: `swarm.rs`.
//!
//! Tests named `e2e_*` are the compose matrix: scripts/test.sh runs them again against
//! compose v1, selected by `::e2e_` (harness/mod.rs). Snapshots are in `snapshots/`.

mod bootstrap;
mod child_env;
mod ci_scaffold;
mod cli;
mod cluster;
mod config;
mod demo;
mod deploy;
mod deploy_failures;
mod harness;
mod history;
mod hooks;
mod interrupts;
mod json_contract;
mod layers;
mod logs_exec_run;
mod maintenance;
mod multi_app;
mod nginx;
mod prune;
mod registry;
mod release_aarch64;
mod release_artifact;
mod release_phase;
mod remote;
mod render;
mod rollback;
mod secret_files;
mod secret_files_attacks;
mod secret_limits;
mod secret_rollback;
mod secrets;
mod ship;
mod state_recovery;
mod swarm;
mod switch_clients;
mod switch_nft;
mod tls;
mod workers;

// `crate::common::…` names the helpers wherever tests use them (history.rs among them).
use harness::common;
