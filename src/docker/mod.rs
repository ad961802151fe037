//! Typed Docker operations, the only place cutover runs `docker`/`docker compose` for the
//! engines: compose detection and project operations ([`compose`]), plain commands on containers by id ([`containers`]), swarm CLI operations
//! ([`swarm`]), docker's state words as enums ([`states`]), local images ([`images`]), one-off containers of a service ([`oneoff`]), and the list-then-inspect reader every one of
//! them uses ([`inspect`]). Everything is read as JSON; nothing here prints.

pub mod compose;
pub mod containers;
pub mod images;
pub mod inspect;
pub mod oneoff;
pub mod registry;
pub mod states;
pub mod swarm;

pub use inspect::DockerError;

/// The Docker engine's version, asked of the server: an error when the engine cannot be
/// reached (the CLI alone answers `docker --version`).
pub fn server_version() -> Result<String, crate::process::ProcessError> {
    crate::process::Cmd::new("docker", "reach the Docker engine")
        .args(["version", "--format", "{{.Server.Version}}"])
        .timeout(std::time::Duration::from_secs(20))
        .run()
        .map(|out| out.stdout.trim().to_string())
}
