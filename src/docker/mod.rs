//! Typed Docker operations, the only place cutover runs `docker`/`docker compose` for the
//! engines: compose detection and project operations ([`compose`]), plain commands on containers by id ([`containers`]), swarm CLI operations
//! ([`swarm`]), docker's state words as enums ([`states`]), local images ([`images`]), one-off containers of a service ([`oneoff`]), and the list-then-inspect reader every one of
//! them uses ([`inspect`]); a project's containers and the old color's stop go through the
//! engine's API socket where the CLI would use that socket ([`engine_api`]). Everything is read as JSON; nothing here prints.

pub mod compose;
pub mod containers;
pub mod engine_api;
pub mod images;
pub mod inspect;
pub mod oneoff;
pub mod registry;
pub mod states;
pub mod swarm;

pub use inspect::DockerError;

/// An app's log lines as cutover may print them inside its own messages: terminal escapes
/// (compose v2 clears lines with `ESC[2K` even with `--no-color`; an app can write any) and
/// other control characters removed, newlines and tabs kept.
pub fn printable_log(raw: &str) -> String {
    console::strip_ansi_codes(raw)
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

/// The Docker engine's version, asked of the server: an error when the engine cannot be
/// reached (the CLI alone answers `docker --version`).
pub fn server_version() -> Result<String, crate::process::ProcessError> {
    crate::process::Cmd::new("docker", "reach the Docker engine")
        .args(["version", "--format", "{{.Server.Version}}"])
        .timeout(std::time::Duration::from_secs(20))
        .run()
        .map(|out| out.stdout.trim().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_lines_lose_terminal_escapes_and_control_characters() {
        let raw = "\x1b[2Kweb-green-1  | listening\r\n\x1b[31merror\x1b[0m: \x07boom\tend\n";
        assert_eq!(
            super::printable_log(raw),
            "web-green-1  | listening\nerror: boom\tend\n"
        );
        // A sequence the parser does not know loses its ESC and BEL: inert text remains.
        let osc = super::printable_log("a\x1b]0;title\x07b");
        assert!(!osc.chars().any(char::is_control), "{osc:?}");
    }
}
