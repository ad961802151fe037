//! One integration test binary (as in casey/just): every test runs the real `cutover` binary
//! in a temp dir. Tests that need an outside tool (docker, nginx, age) call
//! [`common::require`]: without the tool they say so loudly and skip, and with `CI` set they
//! fail instead. Every run gets its own HOME and XDG dirs ([`common::isolate`]), never the
//! user's; deploy tests build their project with [`harness::project::Project`].

mod bootstrap;
mod child_env;
mod ci_scaffold;
mod cli;
mod config;
mod demo;
mod deploy;
mod deploy_failures;
mod harness;
mod history;
mod hooks;
mod interrupts;
mod layers;
mod logs_exec_run;
mod maintenance;
mod multi_app;
mod nginx;
mod prune;
mod registry;
mod release_artifact;
mod release_phase;
mod remote;
mod render;
mod rollback;
mod secret_limits;
mod secrets;
mod ship;
mod state_recovery;
mod swarm;
mod tls;
mod workers;

// `crate::common::…` names the helpers wherever tests use them (history.rs among them).
use harness::common;
