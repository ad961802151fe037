//! Plain docker commands on containers known by id: stop, remove, start again, read the last
//! log lines. Each is an argv builder (`*_cmd`: pure, unit-tested without an engine, as
//! kamal tests its commands) and a run of it; the engines call the runs, never `docker`
//! themselves.

use std::time::Duration;

use super::inspect::DockerError;
use crate::process::{Cmd, ProcessError};

/// `docker stop -t GRACE ID…`: SIGTERM, then SIGKILL after the grace period.
pub fn stop_cmd(ids: &[String], grace: Duration, what: &str) -> Cmd {
    Cmd::new("docker", format!("stop {what}"))
        .args(["stop", "-t", &grace.as_secs().to_string()])
        .args(ids)
        .timeout(grace + Duration::from_secs(60))
}

/// `docker rm -f ID…`.
pub fn remove_cmd(ids: &[String], what: &str) -> Cmd {
    Cmd::new("docker", format!("remove {what}"))
        .args(["rm", "-f"])
        .args(ids)
        .timeout(Duration::from_secs(60))
}

/// `docker start ID…`: a stopped container started again as it was.
pub fn start_cmd(ids: &[String], what: &str) -> Cmd {
    Cmd::new("docker", format!("start {what} again"))
        .arg("start")
        .args(ids)
        .timeout(Duration::from_secs(60))
}

/// `docker logs --tail N ID`: the container's own output, without compose's prefixes.
pub fn logs_cmd(id: &str, lines: usize, what: &str) -> Cmd {
    Cmd::new("docker", format!("read the logs of {what}"))
        .args(["logs", "--tail", &lines.to_string(), id])
        .timeout(Duration::from_secs(20))
}

/// What `cutover logs` asks of `docker logs`.
#[derive(Debug, Clone, Default)]
pub struct LogsRequest {
    pub follow: bool,
    pub since: Option<Duration>,
    pub tail: Option<u64>,
}

/// `docker logs [--follow] [--since Ns] [--tail N] ID`, streamed to the user.
pub fn follow_logs_cmd(id: &str, req: &LogsRequest, what: &str) -> Cmd {
    let mut cmd = Cmd::new("docker", format!("read the logs of {what}")).arg("logs");
    if req.follow {
        cmd = cmd.arg("--follow");
    }
    if let Some(since) = req.since {
        cmd = cmd.args(["--since", &format!("{}s", since.as_secs().max(1))]);
    }
    if let Some(n) = req.tail {
        cmd = cmd.args(["--tail", &n.to_string()]);
    }
    cmd.arg(id)
}

/// How `docker exec` is attached: a terminal, piped stdin, or nothing (on the box behind
/// `--host`, where stdin is the relay's control channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecInput {
    Terminal,
    Piped,
    Closed,
}

/// `docker exec [-it|-i] ID COMMAND…`.
pub fn exec_cmd(id: &str, input: ExecInput, command: &[String], what: &str) -> Cmd {
    let cmd = Cmd::new("docker", format!("run a command in {what}")).arg("exec");
    let cmd = match input {
        ExecInput::Terminal => cmd.arg("-it"),
        ExecInput::Piped => cmd.arg("-i"),
        ExecInput::Closed => cmd,
    };
    cmd.arg(id).args(command)
}

/// Stops the containers with a grace period, then removes them; nothing to do for no ids.
pub fn stop_and_remove(what: &str, ids: &[String], grace: Duration) -> Result<(), DockerError> {
    stop_and_remove_through(super::engine_api::Api::local(), what, ids, grace)
}

/// [`stop_and_remove`] through `api` when there is one, the CLI for the containers it could
/// not reach.
fn stop_and_remove_through(
    api: Option<&super::engine_api::Api>,
    what: &str,
    ids: &[String],
    grace: Duration,
) -> Result<(), DockerError> {
    if ids.is_empty() {
        return Ok(());
    }
    // Through the engine's socket: no `docker` processes on the deploy's path. Each
    // container stops on its own thread, as `docker stop` stops them all at once. The
    // containers the socket could not be asked about go to the CLI, whose error says why;
    // only those: `docker stop` of one already removed here would fail on "No such
    // container" before its `rm` removed the others.
    let (mut left, mut failed) = (ids.to_vec(), None);
    if let Some(api) = api {
        let results: Vec<_> = std::thread::scope(|scope| {
            let stops: Vec<_> = ids
                .iter()
                .map(|id| scope.spawn(move || api.stop_and_remove(id, grace)))
                .collect();
            stops
                .into_iter()
                .map(|s| s.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        left.clear();
        for (id, result) in ids.iter().zip(results) {
            match result {
                Ok(()) => {}
                Err(super::engine_api::ApiError::Unreachable { .. }) => left.push(id.clone()),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
    }
    if !left.is_empty() {
        stop_cmd(&left, grace, what).run()?;
        remove_cmd(&left, what).run()?;
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Stops the containers, keeping them (to be started again or removed later).
pub fn stop(ids: &[String], grace: Duration, what: &str) -> Result<(), ProcessError> {
    if ids.is_empty() {
        return Ok(());
    }
    stop_cmd(ids, grace, what).run().map(|_| ())
}

/// Starts stopped containers again.
pub fn start(ids: &[String], what: &str) -> Result<(), ProcessError> {
    start_cmd(ids, what).run().map(|_| ())
}

/// The last `lines` lines a container printed, stdout and stderr together, printable
/// ([`super::printable_log`]).
pub fn tail_logs(id: &str, lines: usize, what: &str) -> Result<String, ProcessError> {
    let out = logs_cmd(id, lines, what).run()?;
    Ok(super::printable_log(&format!(
        "{}{}",
        out.stdout, out.stderr
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ids() -> Vec<String> {
        vec!["abc".into(), "def".into()]
    }

    #[test]
    fn stop_gives_the_grace_in_seconds_and_every_id() {
        let cmd = stop_cmd(&ids(), Duration::from_millis(10_900), "web-blue");
        assert_eq!(cmd.argv(), ["docker", "stop", "-t", "10", "abc", "def"]);
    }

    #[test]
    fn remove_forces_and_start_restarts_by_id() {
        assert_eq!(
            remove_cmd(&ids(), "web-blue").argv(),
            ["docker", "rm", "-f", "abc", "def"]
        );
        assert_eq!(
            start_cmd(&ids(), "web-scheduler-blue").argv(),
            ["docker", "start", "abc", "def"]
        );
    }

    #[test]
    fn logs_read_the_tail_of_one_container() {
        assert_eq!(
            logs_cmd("abc", 5, "web-green").argv(),
            ["docker", "logs", "--tail", "5", "abc"]
        );
    }

    #[test]
    fn logs_and_exec_for_the_user() {
        let req = LogsRequest {
            follow: true,
            since: Some(Duration::from_millis(300)),
            tail: Some(50),
        };
        assert_eq!(
            follow_logs_cmd("abc", &req, "web").argv(),
            ["docker", "logs", "--follow", "--since", "1s", "--tail", "50", "abc"]
        );
        let command = ["sh".to_string(), "-c".into(), "echo hi".into()];
        assert_eq!(
            exec_cmd("abc", ExecInput::Terminal, &command, "web").argv(),
            ["docker", "exec", "-it", "abc", "sh", "-c", "echo hi"]
        );
        assert_eq!(
            exec_cmd("abc", ExecInput::Closed, &command, "web").argv()[..3],
            ["docker", "exec", "abc"]
        );
    }

    /// Answers the `docker` commands naming `claim`, recording them.
    struct Cli {
        claim: &'static str,
        seen: std::sync::Mutex<Vec<Vec<String>>>,
    }

    impl crate::process::fake::Fake for Cli {
        fn answer(
            &self,
            argv: &[String],
            _cmd: &Cmd,
        ) -> Option<Result<crate::process::Output, ProcessError>> {
            if argv[0] != "docker" || !argv.iter().any(|a| a == self.claim) {
                return None;
            }
            self.seen.lock().unwrap().push(argv.to_vec());
            Some(Ok(crate::process::fake::exited(0, "", "")))
        }
    }

    #[test]
    fn only_the_containers_the_socket_could_not_reach_go_to_the_cli() {
        // A stand-in engine that stops and removes `stopok1` and drops the connection of
        // any request about the other container (an engine restarting, a stop timed out).
        let (_dir, socket, _) = super::super::engine_api::stand_in::engine(|_, path| {
            path.contains("stopok1").then(|| (204, String::new()))
        });
        let cli = Arc::new(Cli {
            claim: "stopcli2",
            seen: Default::default(),
        });
        let _installed = crate::process::fake::install(cli.clone());
        let api = super::super::engine_api::Api::at(&socket);
        let ids = vec!["stopok1".to_string(), "stopcli2".to_string()];
        stop_and_remove_through(Some(&api), "web-blue", &ids, Duration::from_secs(3)).unwrap();
        assert_eq!(
            *cli.seen.lock().unwrap(),
            vec![
                vec!["docker", "stop", "-t", "3", "stopcli2"],
                vec!["docker", "rm", "-f", "stopcli2"],
            ]
        );
    }

    #[test]
    fn nothing_to_stop_runs_nothing() {
        // No ids: no `docker` is run at all (it would fail with a usage error).
        assert!(stop_and_remove("nothing", &[], Duration::from_secs(1)).is_ok());
        assert!(stop(&[], Duration::from_secs(1), "nothing").is_ok());
    }
}
