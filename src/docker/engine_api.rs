//! The Docker Engine API over the engine's unix socket, for what a deploy asks on its path:
//! a project's containers (list + inspect) and stopping and removing the old color. Each
//! `docker` process costs ~15–25 ms of Go start-up on a small box, and a deploy ran a dozen;
//! here every question is one HTTP exchange on one kept-alive socket connection (ureq, with a
//! unix-socket transport through its `unversioned` connector API: no HTTP code of ours).
//!
//! Used only where the CLI would talk to that same socket: `DOCKER_HOST` unset or
//! `unix://…`, and no docker context chosen (`DOCKER_CONTEXT`, or `currentContext` in the
//! CLI's config.json, could point anywhere). Otherwise, or when the socket cannot be reached
//! (no permission, no engine), the callers run the CLI as before, whose error says why. An
//! answer that does not parse is an error naming the request, never an empty list.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};

/// Why the engine's API could not answer. `Unreachable`: the caller runs the CLI instead.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the Docker engine's socket {socket} did not answer: {why}")]
    Unreachable { socket: String, why: String },
    #[error("{request} on {socket}: HTTP {code}: {message}")]
    Status {
        request: String,
        socket: String,
        code: u16,
        message: String,
    },
    #[error("{request} on {socket} answered what cutover cannot read as {what}: {source}")]
    Unparsable {
        request: String,
        socket: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// A client of one engine socket.
pub struct Api {
    socket: PathBuf,
    agent: ureq::Agent,
}

/// The engine's socket the CLI would use, when cutover can use it as well (see the module doc).
pub fn local_socket() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            socket_for(
                std::env::var("DOCKER_HOST").ok().as_deref(),
                std::env::var("DOCKER_CONTEXT").ok().as_deref(),
                current_context().as_deref(),
            )
        })
        .clone()
}

/// Where `DOCKER_HOST` and the chosen context lead, when it is a local socket.
fn socket_for(host: Option<&str>, context: Option<&str>, current: Option<&str>) -> Option<PathBuf> {
    let chosen = context
        .filter(|c| !c.is_empty())
        .or(current.filter(|c| !c.is_empty()));
    if chosen.is_some_and(|c| c != "default") {
        return None;
    }
    match host.filter(|h| !h.is_empty()) {
        None => Some(PathBuf::from("/var/run/docker.sock")),
        Some(h) => h
            .strip_prefix("unix://")
            .filter(|p| p.starts_with('/'))
            .map(PathBuf::from),
    }
}

/// `currentContext` from the docker CLI's config.json (`$DOCKER_CONFIG`, else ~/.docker): a
/// file that cannot be read or parsed counts as a context chosen, so the CLI decides.
fn current_context() -> Option<String> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
    let text = match std::fs::read_to_string(dir.join("config.json")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(_) => return Some("(unreadable config.json)".into()),
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => v
            .get("currentContext")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        Err(_) => Some("(unparsable config.json)".into()),
    }
}

impl Api {
    /// A client of the socket at `socket`; no connection is made until the first request.
    pub fn at(socket: impl Into<PathBuf>) -> Api {
        let socket = socket.into();
        let config = ureq::Agent::config_builder()
            // The connector dials the socket whatever a proxy says; none, so no proxy's
            // credentials from the environment go into the engine's request headers.
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .max_redirects(0)
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            UnixConnector(Arc::from(socket.as_path())),
            NoResolver,
        );
        Api { socket, agent }
    }

    /// The client of [`local_socket`], if there is one: one per process, so its requests
    /// share a kept-alive connection. None in unit tests, whose stand-in engine answers the
    /// CLI's command lines (`process::fake`); the real engine's tests run the binary.
    pub fn local() -> Option<&'static Api> {
        static LOCAL: OnceLock<Option<Api>> = OnceLock::new();
        if cfg!(test) {
            return None;
        }
        LOCAL.get_or_init(|| local_socket().map(Api::at)).as_ref()
    }

    fn socket(&self) -> String {
        self.socket.display().to_string()
    }

    /// Sends one request; the status and the body (at most 16 MiB).
    fn exchange(
        &self,
        method: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<(u16, String), ApiError> {
        // The host is a placeholder: the connector always dials the socket.
        let url = format!("http://docker{path}");
        let started = std::time::Instant::now();
        let traced = |outcome: &str| {
            let line = format!("{method} {path}  [Docker engine API at {}]", self.socket());
            crate::process::trace(&line, started.elapsed(), outcome);
        };
        let sent = match method {
            "POST" => (self.agent.post(&url).config())
                .timeout_global(Some(timeout))
                .build()
                .send_empty(),
            "DELETE" => (self.agent.delete(&url).config())
                .timeout_global(Some(timeout))
                .build()
                .call(),
            _ => (self.agent.get(&url).config())
                .timeout_global(Some(timeout))
                .build()
                .call(),
        };
        let mut response = sent.map_err(|e| {
            traced("unreachable");
            self.unreachable(e.to_string())
        })?;
        let code = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(16 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| {
                traced(&format!("HTTP {code}, body unreadable"));
                self.unreachable(e.to_string())
            })?;
        traced(&format!("HTTP {code}"));
        Ok((code, body))
    }

    fn unreachable(&self, why: String) -> ApiError {
        ApiError::Unreachable {
            socket: self.socket(),
            why,
        }
    }

    fn status(&self, request: &str, code: u16, body: &str) -> ApiError {
        // The engine's errors are `{"message": "..."}`.
        let message = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| body.trim().chars().take(200).collect());
        ApiError::Status {
            request: request.to_string(),
            socket: self.socket(),
            code,
            message,
        }
    }

    fn parse<T: DeserializeOwned>(
        &self,
        request: &str,
        what: &'static str,
        body: &str,
    ) -> Result<T, ApiError> {
        serde_json::from_str(body).map_err(|source| ApiError::Unparsable {
            request: request.to_string(),
            socket: self.socket(),
            what,
            source,
        })
    }

    /// The containers carrying `label` (`key=value`), stopped ones too, inspected: the same
    /// objects `docker inspect` prints. A container removed between the list and its inspect
    /// is left out, as the CLI's list-then-inspect does.
    pub fn inspect_labelled<T: DeserializeOwned>(
        &self,
        label: &str,
        what: &'static str,
    ) -> Result<Vec<T>, ApiError> {
        let filters = serde_json::json!({ "label": [label] }).to_string();
        let path = format!(
            "/containers/json?all=1&filters={}",
            percent_encode(&filters)
        );
        let request = format!("GET {path}");
        let (code, body) = self.exchange("GET", &path, Duration::from_secs(30))?;
        if code != 200 {
            return Err(self.status(&request, code, &body));
        }
        #[derive(serde::Deserialize)]
        struct Listed {
            #[serde(rename = "Id")]
            id: String,
        }
        let listed: Vec<Listed> = self.parse(&request, "a container list", &body)?;
        let mut out = Vec::with_capacity(listed.len());
        for Listed { id } in listed {
            let path = format!("/containers/{}/json", percent_encode(&id));
            let request = format!("GET {path}");
            let (code, body) = self.exchange("GET", &path, Duration::from_secs(30))?;
            match code {
                200 => out.push(self.parse(&request, what, &body)?),
                404 => {}
                _ => return Err(self.status(&request, code, &body)),
            }
        }
        Ok(out)
    }

    /// Stops `id` (SIGTERM, SIGKILL after `grace`) and removes it, as `docker stop -t` and
    /// `docker rm -f` do. A container already gone counts as removed.
    pub fn stop_and_remove(&self, id: &str, grace: Duration) -> Result<(), ApiError> {
        let id = percent_encode(id);
        let path = format!("/containers/{id}/stop?t={}", grace.as_secs());
        let (code, body) = self.exchange("POST", &path, grace + Duration::from_secs(60))?;
        // 304: already stopped.
        if !matches!(code, 204 | 304 | 404) {
            return Err(self.status(&format!("POST {path}"), code, &body));
        }
        let path = format!("/containers/{id}?force=1");
        let (code, body) = self.exchange("DELETE", &path, Duration::from_secs(60))?;
        if !matches!(code, 204 | 404) {
            return Err(self.status(&format!("DELETE {path}"), code, &body));
        }
        Ok(())
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Dials the engine's socket whatever the URL says.
#[derive(Debug)]
struct UnixConnector(Arc<Path>);

impl<In: Transport> Connector<In> for UnixConnector {
    type Out = UnixTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<In>,
    ) -> Result<Option<UnixTransport>, ureq::Error> {
        let stream = UnixStream::connect(&*self.0)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(UnixTransport { stream, buffers }))
    }
}

/// No name to resolve: the connector ignores the address.
#[derive(Debug)]
struct NoResolver;

impl Resolver for NoResolver {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut addrs = self.empty();
        addrs.push(std::net::SocketAddr::from(([127, 0, 0, 1], 80)));
        Ok(addrs)
    }
}

#[derive(Debug)]
struct UnixTransport {
    stream: UnixStream,
    buffers: LazyBuffers,
}

/// The socket timeout for what is left of `timeout` (None: no limit; never zero, which
/// `set_read_timeout` refuses).
fn socket_timeout(timeout: &NextTimeout) -> Option<Duration> {
    timeout
        .not_zero()
        .map(|t| (*t).max(Duration::from_millis(1)))
}

impl Transport for UnixTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.set_write_timeout(socket_timeout(&timeout))?;
        let output = &self.buffers.output()[..amount];
        self.stream
            .write_all(output)
            .map_err(|e| timed_out(e, &timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.set_read_timeout(socket_timeout(&timeout))?;
        let input = self.buffers.input_append_buf();
        let amount = loop {
            match self.stream.read(input) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.map_err(|e| timed_out(e, &timeout))?,
            }
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        // Open when a read would block: no EOF and no stray bytes waiting.
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8];
        let open = matches!(self.stream.read(&mut byte),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        open && self.stream.set_nonblocking(false).is_ok()
    }
}

fn timed_out(e: std::io::Error, timeout: &NextTimeout) -> ureq::Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ureq::Error::Timeout(timeout.reason)
        }
        _ => e.into(),
    }
}

/// What the unit tests here and in `containers.rs` stand on.
#[cfg(test)]
pub(crate) mod stand_in {
    use std::io::{BufRead as _, Write as _};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::sync::Arc;

    /// A stand-in engine on a unix socket: answers each request (every connection kept
    /// alive, on a thread of its own, as the engine does: a client may open a second while
    /// its first waits in its pool) from `reply(method, path)`, recording the request lines;
    /// a `None` reply drops the connection unanswered (an engine restarting, a stop timed out).
    pub(crate) fn engine(
        reply: impl Fn(&str, &str) -> Option<(u16, String)> + Send + Sync + 'static,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let reply = Arc::new(reply);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let stream = stream.unwrap();
                let (log, reply) = (log.clone(), reply.clone());
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        // The headers, up to the blank line (no request here has a body).
                        loop {
                            let mut header = String::new();
                            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                                break;
                            }
                        }
                        let mut parts = line.split_whitespace();
                        let (method, path) = (parts.next().unwrap(), parts.next().unwrap());
                        log.lock().unwrap().push(format!("{method} {path}"));
                        let Some((code, body)) = reply(method, path) else {
                            return;
                        };
                        let _ = write!(
                            writer,
                            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                    }
                });
            }
        });
        (dir, path, seen)
    }
}

#[cfg(test)]
mod tests {
    use super::stand_in::engine;
    use super::*;

    #[test]
    fn the_socket_is_the_clis_own_or_none() {
        let default = Some(PathBuf::from("/var/run/docker.sock"));
        assert_eq!(socket_for(None, None, None), default);
        assert_eq!(socket_for(Some(""), Some(""), Some("default")), default);
        assert_eq!(
            socket_for(Some("unix:///run/user/1000/docker.sock"), None, None),
            Some(PathBuf::from("/run/user/1000/docker.sock"))
        );
        // Elsewhere, or a context that may point elsewhere: the CLI decides.
        assert_eq!(socket_for(Some("tcp://10.0.0.1:2375"), None, None), None);
        assert_eq!(socket_for(Some("ssh://box"), None, None), None);
        assert_eq!(socket_for(None, Some("remote"), None), None);
        assert_eq!(socket_for(None, None, Some("rootless")), None);
        assert_eq!(socket_for(None, Some("default"), Some("rootless")), default);
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Thing {
        #[serde(rename = "Id")]
        id: String,
    }

    #[test]
    fn lists_by_label_then_inspects_each_leaving_out_one_removed_meanwhile() {
        let (_dir, socket, seen) = engine(|_, path| {
            Some(match path {
                p if p.starts_with("/containers/json?") => {
                    (200, r#"[{"Id":"aaa"},{"Id":"gone"},{"Id":"bbb"}]"#.into())
                }
                "/containers/gone/json" => (404, r#"{"message":"No such container: gone"}"#.into()),
                p => {
                    let id = p
                        .trim_start_matches("/containers/")
                        .trim_end_matches("/json");
                    (200, format!(r#"{{"Id":"{id}","Other":1}}"#))
                }
            })
        });
        let api = Api::at(&socket);
        let found: Vec<Thing> = api
            .inspect_labelled("com.docker.compose.project=demo", "containers")
            .unwrap();
        assert_eq!(
            found,
            vec![Thing { id: "aaa".into() }, Thing { id: "bbb".into() }]
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 4, "{seen:?}");
        // The filter is JSON, percent-encoded.
        assert!(
            seen[0].contains(
                "filters=%7B%22label%22%3A%5B%22com.docker.compose.project%3Ddemo%22%5D%7D"
            ),
            "{seen:?}"
        );
    }

    #[test]
    fn garbage_and_errors_are_errors_naming_the_request_never_an_empty_list() {
        let (_dir, socket, _) = engine(|_, path| {
            Some(match path {
                p if p.starts_with("/containers/json?") => (200, "[{not json".into()),
                _ => (500, r#"{"message":"engine on fire"}"#.into()),
            })
        });
        let api = Api::at(&socket);
        let err = api
            .inspect_labelled::<Thing>("x=y", "containers")
            .unwrap_err()
            .to_string();
        assert!(err.contains("GET /containers/json?all=1"), "{err}");
        assert!(err.contains("a container list"), "{err}");
        let err = api
            .stop_and_remove("abc", Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("POST /containers/abc/stop?t=1"), "{err}");
        assert!(err.contains("engine on fire"), "{err}");
        // No engine at all: unreachable, which sends the caller to the CLI.
        let none = Api::at(socket.with_file_name("nothing.sock"));
        assert!(matches!(
            none.inspect_labelled::<Thing>("x=y", "containers"),
            Err(ApiError::Unreachable { .. })
        ));
    }

    #[test]
    fn stop_then_remove_and_a_container_already_gone_is_removed() {
        let (_dir, socket, seen) = engine(|method, _| {
            Some(match method {
                "POST" => (304, String::new()),
                _ => (404, r#"{"message":"No such container"}"#.into()),
            })
        });
        Api::at(&socket)
            .stop_and_remove("abc", Duration::from_secs(7))
            .unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                "POST /containers/abc/stop?t=7".to_string(),
                "DELETE /containers/abc?force=1".to_string()
            ]
        );
    }
}
