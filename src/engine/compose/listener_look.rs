//! The health gate's look at the new color's listeners: while the app boots, whether anything
//! listens on its port inside the container's network namespace, asked of the kernel
//! (`crate::sock_diag::InNetns`, as root) rather than by connecting; the gate
//! (`health_gate.rs`) polls over HTTP once something listens.

use std::time::Duration;

use crate::health::Answer;

/// The gate's pace while it looks at the new color's listeners ([`ListenerLook`]), for the
/// whole boot. A look is two sock_diag dumps on one socket opened in the container's network
/// namespace (0.022 ms, as much CPU, in a release build on the benchmark box:
/// `examples/look-cost.rs`; no connection, no conntrack entry), so a boot of any length costs
/// ~1% of a core while it lasts (more with the wake-up of each round), and the gate sees the
/// app's port open within ~2 ms of its `listen`. (When each look opened its sockets on a thread
/// of its own it cost 0.07–0.13 ms, and the looks backed off to 5 ms after the first second:
/// the 5 s boot's pass came ~4 ms later than the 1 s boot's.)
const LOOK_EVERY: Duration = Duration::from_millis(2);

/// While the listener look says nothing listens, an HTTP poll is made anyway this often: the
/// look only ever holds a poll back, and were it ever wrong (a namespace this cannot know of,
/// a runtime whose sockets are not the kernel's, a template publishing another port) the gate
/// would still pass, this much later; and an HTTP answer to such a poll ends the looks. For
/// the same reason the looks end this long before the gate's deadline: its last moments are
/// polled, so a wrong look cannot turn a late pass into a timeout.
const POLL_ANYWAY_EVERY: Duration = Duration::from_millis(250);

/// The new color's container as the watcher last saw it running, alone for its service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Running {
    pub id: String,
    pub pid: u32,
}

/// Whether anything listens on the app's port inside the new color's container, looked at in
/// its network namespace ([`crate::sock_diag::InNetns`]) while the app boots. An HTTP poll
/// before that is a connection through Docker's proxy (or its DNAT) that can only fail, and
/// a conntrack entry that lingers for minutes; the look costs neither, so it can run every
/// 2 ms ([`LOOK_EVERY`]) where polls back off to 25 ms. It never passes the gate: it only
/// tells the gate to look again rather than connect. Wherever it cannot be had (not root, no
/// process from the engine yet, a process not in the container's cgroup, the namespace the
/// host's, a look that fails) the gate polls as before; and it ends, the gate polling, when
/// the container's process changes or an HTTP poll is answered.
pub(super) struct ListenerLook {
    port: u16,
    state: Listening,
    /// When the last HTTP poll was answered (or the gate began).
    polled: std::time::Instant,
    /// The gate's deadline: the looks end [`POLL_ANYWAY_EVERY`] before it.
    deadline: std::time::Instant,
    /// The last HTTP poll's answer, in words, for the words of the wait.
    last_poll: Option<String>,
    /// The gate's rounds that were a look, not a poll.
    pub held_back: u32,
    /// Whether a process is the container's, by its cgroup file ([`in_the_container`]; a
    /// stand-in's for the tests).
    vet: fn(&str, &Running) -> anyhow::Result<()>,
}

enum Listening {
    /// No look yet: the watcher has not given the container's process.
    Unknown,
    Looking {
        inside: crate::sock_diag::InNetns,
        entered: Running,
        looks: u32,
        since: std::time::Instant,
    },
    /// Something listened (the gate polls from now on), or the look cannot be had.
    Done,
}

impl ListenerLook {
    pub fn new(port: u16, deadline: std::time::Instant) -> ListenerLook {
        let now = std::time::Instant::now();
        ListenerLook {
            port,
            state: Listening::Unknown,
            polled: now,
            deadline,
            last_poll: None,
            held_back: 0,
            vet: in_the_container,
        }
    }

    /// Words for the wait ("nothing listens …", after the last HTTP poll's answer) when
    /// nothing listens in the container yet; None when the gate should poll.
    pub fn nothing_yet(&mut self, running: Option<&Running>) -> Option<String> {
        match (&self.state, running) {
            (Listening::Unknown, Some(running)) => self.enter(running),
            // Another process (a restart, a container replaced): the namespace entered is
            // not the one the probe reaches.
            (Listening::Looking { entered, .. }, Some(now)) if entered != now => {
                self.end(&format!(
                    "the container's process changed (pid {} of {} → pid {} of {})",
                    entered.pid,
                    short(&entered.id),
                    now.pid,
                    short(&now.id)
                ))
            }
            // Gone, or more than one container for the service: which one the probe reaches
            // is not known.
            (Listening::Looking { .. }, None) => {
                self.end("the watcher no longer names one running container")
            }
            _ => {}
        }
        if self
            .deadline
            .saturating_duration_since(std::time::Instant::now())
            <= POLL_ANYWAY_EVERY
        {
            self.end("the gate's deadline is near: its last moments are polled");
        }
        let Listening::Looking { inside, looks, .. } = &mut self.state else {
            return None;
        };
        if self.polled.elapsed() >= POLL_ANYWAY_EVERY {
            return None;
        }
        *looks += 1;
        match inside.count(crate::sock_diag::State::Listening, &[self.port]) {
            Ok(0) => {
                self.held_back += 1;
                let nothing = format!("nothing listens on port {} in the container yet", self.port);
                Some(match &self.last_poll {
                    Some(answer) => format!("{answer}; {nothing}"),
                    None => nothing,
                })
            }
            Ok(n) => {
                self.end(&format!("{n} socket(s) listening: the gate polls"));
                None
            }
            Err(e) => {
                self.end(&format!("a look failed, the gate polls instead: {e:#}"));
                None
            }
        }
    }

    /// An HTTP poll's answer, kept for the words of the wait: one that came while no
    /// listener was seen ends the looks (they cannot be seeing what the probe reaches).
    pub fn heard(&mut self, answer: &Answer) {
        self.polled = std::time::Instant::now();
        self.last_poll = Some(answer.describe());
        if matches!(answer, Answer::Status { .. })
            && matches!(self.state, Listening::Looking { .. })
        {
            self.end(&format!(
                "{} while no listener was seen: the gate polls",
                answer.describe()
            ));
        }
    }

    /// The wait before the next look while looking; None otherwise.
    pub fn pace(&self) -> Option<Duration> {
        matches!(self.state, Listening::Looking { .. }).then_some(LOOK_EVERY)
    }

    fn enter(&mut self, running: &Running) {
        let started = std::time::Instant::now();
        let vet = self.vet;
        let entered =
            crate::sock_diag::InNetns::of_process(running.pid, |cgroup| vet(cgroup, running));
        crate::process::trace(
            &format!(
                "sock_diag: enter the network namespace of pid {} (container {})",
                running.pid,
                short(&running.id)
            ),
            started.elapsed(),
            &match &entered {
                Ok(_) => "entered".to_string(),
                Err(e) => format!("failed, the gate polls instead: {e:#}"),
            },
        );
        self.state = match entered {
            Ok(inside) => Listening::Looking {
                inside,
                entered: running.clone(),
                looks: 0,
                since: std::time::Instant::now(),
            },
            Err(_) => Listening::Done,
        };
    }

    /// Ends the looks, traced once for `-v` (one line per look would drown it).
    fn end(&mut self, why: &str) {
        if let Listening::Looking { looks, since, .. } =
            std::mem::replace(&mut self.state, Listening::Done)
        {
            crate::process::trace(
                &format!(
                    "sock_diag: {looks} look(s) for a listener on port {} in the container",
                    self.port
                ),
                since.elapsed(),
                why,
            );
        }
    }
}

impl Drop for ListenerLook {
    fn drop(&mut self) {
        self.end("the gate ended first");
    }
}

/// Whether the process whose cgroup file reads `cgroup` is the container's: a cgroup of it
/// ends in the container's id (Docker's `/docker/<id>` or `…/docker-<id>.scope`), so a PID the
/// engine gave that was reused since, or that means another process in this PID namespace
/// (cutover in a container), is not entered; nor one in a cgroup that merely has the id
/// inside its name (anyone with a delegated cgroup could make one).
fn in_the_container(cgroup: &str, running: &Running) -> anyhow::Result<()> {
    let id = running.id.as_str();
    let names_it = |line: &str| {
        let last = line.rsplit('/').next().unwrap_or_default();
        last == id
            || last
                .strip_prefix("docker-")
                .and_then(|l| l.strip_suffix(".scope"))
                == Some(id)
    };
    if id.len() < 12 || !cgroup.lines().any(names_it) {
        anyhow::bail!(
            "/proc/{}/cgroup does not name container {}",
            running.pid,
            running.id
        );
    }
    Ok(())
}

/// A container id as `docker ps` shows it.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process in a network namespace of its own that listens on 8080 there when told,
    /// as the container it stands in for: its id is what its cgroup file names.
    struct Inside {
        app: std::process::Child,
        said: crate::sock_diag::tests::Said,
        running: Running,
    }

    impl Inside {
        /// [`Inside::start`] for `test` where it can run (root); None, said loudly, where not.
        fn if_root(test: &str) -> Option<Inside> {
            crate::sock_diag::tests::root_or_say_so(test).then(Inside::start)
        }

        fn start() -> Inside {
            let script = "import socket,sys\n\
print('inside', flush=True)\n\
sys.stdin.readline(); s=socket.socket(); s.bind(('0.0.0.0',8080)); s.listen()\n\
print('listening', flush=True); sys.stdin.readline()\n";
            let (app, mut said) = crate::sock_diag::tests::python_in_a_netns_of_its_own(script);
            assert_eq!(said.next().unwrap().unwrap(), "inside");
            let pid = app.id();
            Inside {
                app,
                said,
                running: Running {
                    id: "0123456789abcdef-inside".into(),
                    pid,
                },
            }
        }

        fn listen(&mut self) {
            use std::io::Write as _;
            writeln!(self.app.stdin.as_mut().unwrap()).unwrap();
            assert_eq!(self.said.next().unwrap().unwrap(), "listening");
        }
    }

    impl Drop for Inside {
        fn drop(&mut self) {
            drop(self.app.stdin.take());
            let _ = self.app.wait();
        }
    }

    /// A gate far from its deadline.
    fn look() -> ListenerLook {
        ListenerLook::new(8080, std::time::Instant::now() + Duration::from_secs(60))
    }

    /// [`look_inside`] that has entered `running`'s namespace and seen nothing listen yet.
    fn looking_at(running: &Running) -> ListenerLook {
        let mut look = look_inside();
        assert!(look.nothing_yet(Some(running)).is_some());
        look
    }

    /// [`look`], taking [`Inside`]'s stand-in process for the container.
    fn look_inside() -> ListenerLook {
        let mut look = look();
        look.vet = |_, running| match running.id.ends_with("-inside") {
            true => Ok(()),
            false => anyhow::bail!("not the stand-in"),
        };
        look
    }

    #[test]
    fn the_listener_look_is_not_had_without_a_process_or_for_one_outside_the_container() {
        assert_eq!(look().nothing_yet(None), None);
        // This process: its cgroup does not name the container.
        let mut stranger_look = look();
        let stranger = Running {
            id: "0123456789abcdef0123".into(),
            pid: std::process::id(),
        };
        assert_eq!(stranger_look.nothing_yet(Some(&stranger)), None);
        assert!(matches!(stranger_look.state, Listening::Done));
        // Taken for the container, but in this process's own namespace.
        let own = Running {
            id: "0123456789abcdef-inside".into(),
            pid: std::process::id(),
        };
        let mut own_look = look_inside();
        assert_eq!(own_look.nothing_yet(Some(&own)), None);
        assert!(matches!(own_look.state, Listening::Done));
    }

    #[test]
    fn a_process_is_the_containers_only_when_a_cgroup_of_it_ends_in_the_containers_id() {
        let id = "4f2c0e9a1b3d5f7e9a1b3d5f7e9a1b3d5f7e9a1b3d5f7e9a1b3d5f7e9a1b3d5f";
        let running = Running {
            id: id.into(),
            pid: 42,
        };
        for named in [
            format!("0::/system.slice/docker-{id}.scope\n"),
            format!("12:pids:/docker/{id}\n0::/docker/{id}\n"),
            format!("4:memory:/\n1:cpu:/docker/{id}\n"),
        ] {
            assert!(in_the_container(&named, &running).is_ok(), "{named}");
        }
        for not_named in [
            "0::/\n".to_string(),
            format!("0::/user.slice/x{id}y\n"),
            format!("0::/user.slice/docker-{id}.scope/child\n"),
            format!("0::/docker/{id}/nested\n"),
            format!("0::/docker-{id}\n"),
        ] {
            let e = in_the_container(&not_named, &running)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("/proc/42/cgroup does not name container {id}")),
                "{not_named}: {e}"
            );
        }
        let short = Running {
            id: "4f2c0e".into(),
            pid: 42,
        };
        assert!(in_the_container("0::/docker/4f2c0e\n", &short).is_err());
    }

    #[test]
    fn the_listener_look_holds_polls_back_only_while_nothing_listens_in_the_namespace() {
        let Some(mut inside) = Inside::if_root("the_listener_look_holds_polls_back…") else {
            return;
        };
        let running = inside.running.clone();
        let mut look = look_inside();
        assert_eq!(
            look.nothing_yet(Some(&running)).as_deref(),
            Some("nothing listens on port 8080 in the container yet")
        );
        assert_eq!(look.pace(), Some(Duration::from_millis(2)));
        // Now and then a poll anyway; its answer is in the words after.
        look.polled -= POLL_ANYWAY_EVERY;
        assert_eq!(look.nothing_yet(Some(&running)), None);
        look.heard(&Answer::NoAnswer("connection refused".into()));
        assert_eq!(
            look.nothing_yet(Some(&running)).as_deref(),
            Some("connection refused; nothing listens on port 8080 in the container yet")
        );
        inside.listen();
        assert_eq!(look.nothing_yet(Some(&running)), None);
        assert!(matches!(look.state, Listening::Done));
        assert_eq!(look.pace(), None);
    }

    #[test]
    fn the_listener_look_ends_when_the_process_changes_or_a_poll_is_answered() {
        let Some(inside) = Inside::if_root("the_listener_look_ends_when…") else {
            return;
        };
        let running = inside.running.clone();
        let mut look = looking_at(&running);
        let restarted = Running {
            pid: running.pid + 1,
            ..running.clone()
        };
        assert_eq!(look.nothing_yet(Some(&restarted)), None);
        assert!(matches!(look.state, Listening::Done));

        let mut look = looking_at(&running);
        look.heard(&Answer::Status {
            code: 200,
            body: String::new(),
        });
        assert!(matches!(look.state, Listening::Done));
        assert_eq!(look.nothing_yet(Some(&running)), None);

        // The watcher naming no single container (gone, or scaled to two).
        let mut look = looking_at(&running);
        assert_eq!(look.nothing_yet(None), None);
        assert!(matches!(look.state, Listening::Done));
    }

    #[test]
    fn the_gates_last_moments_are_polled_not_looked_at() {
        let Some(inside) = Inside::if_root("the_gates_last_moments_are_polled…") else {
            return;
        };
        let running = inside.running.clone();
        let mut look = looking_at(&running);
        // Nothing listens in the stand-in; still, within POLL_ANYWAY_EVERY of the deadline
        // every round is a poll, and the looks are over.
        look.deadline = std::time::Instant::now() + POLL_ANYWAY_EVERY / 2;
        assert_eq!(look.nothing_yet(Some(&running)), None);
        assert!(matches!(look.state, Listening::Done));
        assert_eq!(look.pace(), None);
        // A gate whose timeout is shorter than that never looks at all.
        let mut short = look_inside();
        short.deadline = std::time::Instant::now() + POLL_ANYWAY_EVERY;
        assert_eq!(short.nothing_yet(Some(&running)), None);
        assert!(matches!(short.state, Listening::Done));
    }
}
