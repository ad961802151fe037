//! The one way cutover reads Docker objects: list their ids (`docker ps -q …`,
//! `docker service ls -q …`), `docker inspect` them, and deserialize the typed JSON.
//!
//! Output that does not parse is an error naming the command, never an empty list: an empty
//! list means "nothing runs", and a deploy that believes that starts a second copy of the app
//! or stops the wrong color.

use serde::de::DeserializeOwned;

use crate::process::{Cmd, ProcessError};

/// Why Docker could not tell cutover what exists. Callers branch on nothing here; the variant
/// keeps the process error (exit status, stderr) intact for the message.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The engine's API socket answered with an error or with what does not parse.
    #[error(transparent)]
    Api(#[from] super::engine_api::ApiError),
    #[error("`{command}` printed output cutover cannot read as {what}: {source}")]
    Unparsable {
        command: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// The command line for an error message, without a wall of object ids.
fn command_line(cmd: &Cmd) -> String {
    const MAX: usize = 100;
    let line = cmd.display();
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{} …", &line[..cut]),
        None => line,
    }
}

/// Parses the JSON array `docker inspect` prints.
pub fn parse<T: DeserializeOwned>(
    command: &str,
    what: &'static str,
    stdout: &str,
) -> Result<Vec<T>, DockerError> {
    serde_json::from_str(stdout).map_err(|source| DockerError::Unparsable {
        command: command.to_string(),
        what,
        source,
    })
}

/// Parses one JSON object per line (`--format '{{json .}}'`); a line that does not parse is
/// an error, not a line to skip.
pub fn parse_lines<T: DeserializeOwned>(
    command: &str,
    what: &'static str,
    stdout: &str,
) -> Result<Vec<T>, DockerError> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|source| DockerError::Unparsable {
                command: command.to_string(),
                what,
                source,
            })
        })
        .collect()
}

/// Runs a command whose single JSON document is `what`.
pub fn run_json<T: DeserializeOwned>(cmd: &Cmd, what: &'static str) -> Result<T, DockerError> {
    let out = cmd.run()?;
    serde_json::from_str(out.stdout.trim()).map_err(|source| DockerError::Unparsable {
        command: command_line(cmd),
        what,
        source,
    })
}

/// Runs `list` (ids separated by whitespace), then `inspect` with those ids appended, and
/// deserializes every object. No ids: no inspect call, an empty list.
///
/// An object removed between the two calls makes `docker inspect` exit 1 while it still
/// prints the others; so a failed inspect is accepted when its output parses, and is the
/// process error when it does not.
pub fn list_and_inspect<T: DeserializeOwned>(
    list: Cmd,
    inspect: Cmd,
    what: &'static str,
) -> Result<Vec<T>, DockerError> {
    let ids = list.run()?;
    let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let inspect = inspect.args(&ids);
    let out = inspect.run_unchecked()?;
    match parse(&command_line(&inspect), what, &out.stdout) {
        Ok(list) => Ok(list),
        Err(_) if !out.success() => Err(inspect.failed(&out).into()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Thing {
        #[serde(rename = "Id")]
        id: String,
    }

    #[test]
    fn garbage_is_an_error_naming_the_command_not_an_empty_list() {
        let err = parse::<Thing>("docker inspect abc", "containers", "{not json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`docker inspect abc`"), "{err}");
        assert!(err.contains("containers"), "{err}");
        let err = parse::<Thing>("docker inspect abc", "containers", r#"[{"Name": 1}]"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `Id`"), "{err}");
        let err = parse_lines::<Thing>("docker images", "images", "{\"Id\":\"a\"}\nnope\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`docker images`"), "{err}");
    }

    #[test]
    fn garbage_from_a_real_inspect_names_the_command() {
        // `sh -c` prints an id, then garbage where `docker inspect` would print JSON.
        let list = Cmd::new("sh", "list").args(["-c", "echo abc"]);
        let inspect = Cmd::new("sh", "inspect").args(["-c", "echo '[{'", "inspect"]);
        let err = list_and_inspect::<Thing>(list, inspect, "containers")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sh -c"), "{err}");
        let empty = Cmd::new("sh", "list").args(["-c", "true"]);
        let never = Cmd::new("false", "inspect");
        assert!(list_and_inspect::<Thing>(empty, never, "containers")
            .unwrap()
            .is_empty());
    }
}
