//! The test harness: what the tests stand on, none of it a feature's test. One file per piece:
//!
//! - [`common`]: the `cutover` binary in an isolated environment (its own HOME and XDG dirs),
//!   fixtures, the one place tests read and write YAML, shell and file helpers, and the tool
//!   gates ([`common::require`], [`common::require_images`]) that skip loudly without a tool
//!   and fail under `CI`. `crate::common` is this module too (main.rs).
//! - [`project`]: the one test-project builder, [`project::Project`] ([`project::App`] is
//!   its cutover.yml, [`project::Run`] a finished run), what the tests ask of a project
//!   (`assert_serving`, `running_worker`, `env_dump`, `task_addrs`…) and [`project::ready`],
//!   the gate of the compose deploy tests (Docker, nginx, `cutover-demo:v1/v2`).
//! - [`workers_app`], [`lifecycle_app`]: the two other demo image repositories
//!   (`cutover-demo-workers`, `cutover-demo-lifecycle`), each with its gate and its app.
//! - [`ssh_box`]: the `--host` box: a real sshd per test, the box user, and
//!   [`ssh_box::RemoteProject`], a project deployed through it.
//! - [`laptop`]: the `--ship` tests' second `dockerd` (its own netns), and images built on it.
//! - [`docker_registry`]: Debian's `docker-registry` with htpasswd on loopback.
//! - [`acme`]: pebble (the ACME test CA) and its mock DNS on loopback.
//! - [`swarm`]: the single-node swarm the swarm tests share (left by the last of them, or,
//!   when compose projects are up then, by the last of those).
//! - [`cluster`]: a real three-node swarm (scripts/cluster.sh), one netns per node.
//! - [`netns`]: a fresh network namespace, and running code inside it.
//! - [`artifact`]: the static release tarball scripts/release.sh built (the aarch64 one waited
//!   for while scripts/test.sh builds it in the background), and a local HTTP server.
//! - [`readme_walk`]: the README's laptop-to-box path as commands (its `walk` markers), for
//!   the `--help` check here and the VM suite's walk of it.
//!
//! (The load client, `cutover::demo::Load`, is the crate's own: the demo and the benchmarks
//! use it too.)
//!
//! ## The compose matrix: `e2e_*`
//!
//! A test whose function name starts with `e2e_` is a compose-matrix test: scripts/test.sh
//! runs it twice, with `docker compose` (v2) in the workspace pass and again with
//! `CUTOVER_COMPOSE=docker-compose` (v1), selected by the filter `::e2e_`:
//!
//! ```text
//! CUTOVER_COMPOSE=docker-compose cargo test --test integration ::e2e_
//! ```
//!
//! The `::` anchors the filter at the start of a function name (every test lives in a module:
//! `deploy::e2e_full_cycle…`), so neither a file's name nor a word inside a name selects a
//! test: only the prefix does. Name a test `e2e_` when what it proves could differ between
//! the compose flavours (a deploy, a rollback, a failure path on the real engine); the swarm
//! tests so named are selected too and skip themselves there (swarm uses no compose). A test
//! whose subject is the nft rule, the state files, the secret stores, restore, prune or
//! nginx is not so named even when it deploys: compose only gets it to its start, the v2
//! pass runs it once, and a second run costs the suite minutes (scripts/test.sh: the suite
//! stays under 35 minutes on a fresh 2-core machine) and proves nothing more.

pub mod acme;
pub mod artifact;
pub mod cluster;
pub mod common;
pub mod docker_registry;
pub mod laptop;
pub mod lifecycle_app;
pub mod netns;
pub mod project;
pub mod readme_walk;
pub mod ssh_box;
pub mod swarm;
pub mod workers_app;
