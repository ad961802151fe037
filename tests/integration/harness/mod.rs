//! The test harness: what the tests stand on, none of it a test itself.
//!
//! - [`common`]: the `cutover` binary in an isolated environment (its own HOME and XDG
//!   dirs), fixtures, the one place tests read and write YAML, and the tool gates
//!   ([`common::require`]) that skip loudly without a tool and fail under `CI`.
//! - [`project`]: the one test-project builder, [`project::Project`] (with [`project::App`],
//!   the options of its cutover.yml, and [`project::Run`], a finished run).

pub mod common;
pub mod project;
