//! The kernel's TCP socket table, asked in-process over `NETLINK_SOCK_DIAG`: the question
//! `ss` asks, with no `ss` process. Two of these looks sit on a deploy's path in nft mode (who
//! listens on the switch ports, before observe; the drain's count of the old color's
//! connections), and an `ss` started by a deploy costs 15–40 ms on a busy 2-core box (a
//! process start), where the dump itself takes about a millisecond.
//!
//! The kernel filters by TCP state (so the TIME_WAIT sockets of a busy site are never sent)
//! and by port, with the bytecode `ss` sends (so are the box's other connections); the ports
//! are matched here again. Every reply is parsed by `netlink-packet-sock-diag`; one that
//! does not parse, a netlink error, or a dump the kernel
//! ended with an error code is an error naming the look (fail closed: never a short count,
//! which would end a drain early or take a port a service listens on). Bounded: a look whose
//! replies have not all come within [`REPLY_WITHIN`] is an error too, and a signal's handler
//! running meanwhile (SIGINT/SIGTERM are caught during a deploy) only makes it wait on.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, AF_UNSPEC, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

/// The TCP state a look counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `ss -l`: a listening socket, by its local port.
    Listening,
    /// `ss state established`: a connection, by its local or its remote port.
    Established,
}

/// How long the kernel may take to answer one look (both families' dumps).
pub const REPLY_WITHIN: Duration = Duration::from_secs(5);

/// How many times a dump the kernel marked interrupted (`NLM_F_DUMP_INTR`: the table changed
/// under it, a socket may be missing) is asked again before the look fails.
const DUMP_TRIES: usize = 3;

/// One reply datagram's room: the kernel fills at most 32 KiB per dump reply.
const REPLY_ROOM: usize = 64 * 1024;

/// The TCP sockets (IPv4 and IPv6) in `state` on any of `ports`: for [`State::Listening`]
/// the local port, for [`State::Established`] either end's (both ends of a loopback
/// connection are on this box, and each counts). `crate::host` traces it for `-v`.
pub fn count(state: State, ports: &[u16]) -> anyhow::Result<usize> {
    let socket = open().with_context(|| state.asked_on(ports))?;
    Look::new(&socket, &mut vec![0; REPLY_ROOM], state, ports).count()
}

/// One look: both families' dumps, asked through `socket` one after the other (each read to
/// its end before the next is asked, so only its own replies reach the socket), read into
/// `buf`, all within [`REPLY_WITHIN`].
struct Look<'a> {
    socket: &'a Socket,
    buf: &'a mut [u8],
    state: State,
    ports: &'a [u16],
    deadline: Instant,
}

impl State {
    /// `listening` or `established`, as the looks are told.
    pub fn words(self) -> &'static str {
        match self {
            State::Listening => "listening",
            State::Established => "established",
        }
    }

    /// The look, in words, for its errors.
    fn asked_on(self, ports: &[u16]) -> String {
        format!(
            "ask the kernel for the TCP sockets {} on port(s) {ports:?}",
            self.words()
        )
    }
}

/// Looks asked inside another network namespace: a container's, named by one of its processes
/// (`/proc/PID/ns/net`). A netlink socket answers for the namespace it was opened in, and
/// setns(2) moves only the calling thread: so a short-lived thread of its own enters the
/// namespace, opens the one socket every look asks through, hands it back and ends; the rest
/// of cutover stays in the host's. A look is then two dumps on that socket into one buffer
/// (no thread to wake, no socket to open). Entering needs CAP_SYS_ADMIN over the namespace
/// (root): [`InNetns::of_process`] fails without it, and the caller goes without these looks.
/// A look that fails leaves the socket unread to an unknown point: every look after it fails.
pub struct InNetns {
    socket: Socket,
    buf: Vec<u8>,
    spent: bool,
}

impl InNetns {
    /// Enters the network namespace of process `pid`, once `vet` has accepted the process's
    /// cgroup file (`/proc/PID/cgroup`, its text). Both are opened through one `/proc/PID`
    /// directory descriptor, the namespace first: a descriptor that keeps naming that one
    /// process, whose lookups fail once it has exited, so a PID reused in between is never
    /// the one entered after another was vetted. An error when it cannot be opened or entered
    /// (the process is gone, no privilege), when `vet` refuses, or when the namespace is this
    /// process's own: a look there is one [`count`] gives already, and a caller asking of a
    /// container's namespace would be told of the host's sockets.
    pub fn of_process(
        pid: u32,
        vet: impl FnOnce(&str) -> anyhow::Result<()>,
    ) -> anyhow::Result<InNetns> {
        use std::io::Read as _;
        use std::os::unix::fs::MetadataExt as _;
        let dir = format!("/proc/{pid}");
        let process = std::fs::File::open(&dir).with_context(|| format!("open {dir}"))?;
        let open_in = |name: &str| -> anyhow::Result<std::fs::File> {
            let fd = rustix::fs::openat(
                &process,
                name,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(std::io::Error::from)
            .with_context(|| format!("open {dir}/{name}"))?;
            Ok(std::fs::File::from(fd))
        };
        let namespace = open_in("ns/net")?;
        let mut cgroup = String::new();
        open_in("cgroup")?
            .read_to_string(&mut cgroup)
            .with_context(|| format!("read {dir}/cgroup"))?;
        vet(&cgroup)?;
        let path = format!("{dir}/ns/net");
        let ours = std::fs::metadata("/proc/thread-self/ns/net")
            .context("read /proc/thread-self/ns/net")?;
        let theirs = namespace
            .metadata()
            .with_context(|| format!("read {path}"))?;
        if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
            anyhow::bail!("{path} is this process's own network namespace");
        }
        Self::enter(namespace, &path)
    }

    /// The socket of the looks, opened by a thread of its own moved into `namespace` (named
    /// `path` in errors); the thread ends with it handed back.
    fn enter(namespace: std::fs::File, path: &str) -> anyhow::Result<InNetns> {
        use std::os::fd::AsFd as _;
        let opened = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("sock_diag-netns".into())
                .spawn_scoped(scope, || {
                    rustix::thread::move_into_link_name_space(
                        namespace.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(std::io::Error::from)
                    .with_context(|| format!("enter the namespace {path}"))?;
                    open()
                })
                .context("start a thread to enter another network namespace")?
                .join()
                .map_err(|_| anyhow::anyhow!("the thread entering {path} panicked"))?
        })?;
        Ok(InNetns {
            socket: opened,
            buf: vec![0; REPLY_ROOM],
            spent: false,
        })
    }

    /// [`count`], asked inside the namespace.
    pub fn count(&mut self, state: State, ports: &[u16]) -> anyhow::Result<usize> {
        if self.spent {
            anyhow::bail!("an earlier look in this network namespace failed");
        }
        // Spent until the look has read its dumps to their ends (a panic in between too).
        self.spent = true;
        let counted = Look::new(&self.socket, &mut self.buf, state, ports).count();
        self.spent = counted.is_err();
        counted
    }
}

impl<'a> Look<'a> {
    fn new(socket: &'a Socket, buf: &'a mut [u8], state: State, ports: &'a [u16]) -> Look<'a> {
        Look {
            socket,
            buf,
            state,
            ports,
            deadline: Instant::now() + REPLY_WITHIN,
        }
    }

    /// The sockets both families' dumps counted.
    fn count(mut self) -> anyhow::Result<usize> {
        let counted = [AF_INET, AF_INET6].into_iter().try_fold(0, |sum, family| {
            Ok::<_, anyhow::Error>(sum + self.dump(family)?)
        });
        counted.with_context(|| self.state.asked_on(self.ports))
    }

    /// One family's dump, counted; asked again while the kernel marks it interrupted.
    fn dump(&mut self, family: u8) -> anyhow::Result<usize> {
        for _ in 0..DUMP_TRIES {
            let tally = self.dump_once(family)?;
            if !tally.interrupted {
                return Ok(tally.count);
            }
        }
        anyhow::bail!(
            "the kernel's sock_diag dump was interrupted by changes to the socket table \
             {DUMP_TRIES} times in a row (NLM_F_DUMP_INTR)"
        )
    }

    /// One dump, asked and read to its end.
    fn dump_once(&mut self, family: u8) -> anyhow::Result<Tally> {
        let (state, ports) = (self.state, self.ports);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: match state {
                    State::Listening => StateFlags::LISTEN,
                    State::Established => StateFlags::ESTABLISHED,
                },
                socket_id: match family {
                    AF_INET6 => SocketId::new_v6(),
                    _ => SocketId::new_v4(),
                },
            })
            .into(),
        );
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        bytes.extend(port_filter(state, ports));
        let length = u32::try_from(bytes.len()).context("a sock_diag request over 4 GiB")?;
        bytes[..4].copy_from_slice(&length.to_ne_bytes());
        self.socket
            .send(&bytes, 0)
            .context("send the sock_diag dump request")?;
        let on_port = |id: &SocketId| match state {
            State::Listening => ports.contains(&id.source_port),
            State::Established => {
                ports.contains(&id.source_port) || ports.contains(&id.destination_port)
            }
        };
        let mut tally = Tally::default();
        loop {
            let size = receive(self.socket, self.buf, self.deadline)?;
            if tally.take(&self.buf[..size], on_port)? {
                return Ok(tally);
            }
        }
    }
}

/// A NETLINK_SOCK_DIAG socket connected to the kernel.
fn open() -> anyhow::Result<Socket> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).context("open a NETLINK_SOCK_DIAG socket")?;
    socket
        .bind_auto()
        .context("bind the NETLINK_SOCK_DIAG socket")?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connect the NETLINK_SOCK_DIAG socket to the kernel")?;
    Ok(socket)
}

/// The request's `INET_DIAG_REQ_BYTECODE`: the kernel sends only the sockets on `ports` (the
/// local port; for a connection the remote one too), as `ss` asks for `( sport = :P or dport =
/// :P )`. Without it every established socket of the box is sent and parsed here: 18,000
/// unrelated connections made each look ~90 ms (debug build), 50 times a second in a drain.
fn port_filter(state: State, ports: &[u16]) -> Vec<u8> {
    const INET_DIAG_REQ_BYTECODE: u16 = 1;
    const INET_DIAG_BC_JMP: u8 = 1;
    const INET_DIAG_BC_S_COND: u8 = 7;
    const INET_DIAG_BC_D_COND: u8 = 8;
    // The op (code, yes, no), then `inet_diag_hostcond` (family AF_UNSPEC and prefix 0: any
    // address; 2 bytes of padding; the port). A port-only S_COND is as old as sock_diag.
    const COND: usize = 4 + 8;
    const JMP: usize = 4;
    let conds: Vec<(u8, u16)> = ports
        .iter()
        .flat_map(|&port| {
            let remote = (state == State::Established).then_some((INET_DIAG_BC_D_COND, port));
            std::iter::once((INET_DIAG_BC_S_COND, port)).chain(remote)
        })
        .collect();
    // No filter (every socket sent, matched here) rather than lengths that do not fit.
    if conds.is_empty() || conds.len() * (COND + JMP) + 4 > usize::from(u16::MAX) {
        return Vec::new();
    }
    // iproute2's layout for an `or` (ssfilter_bytecompile): every `yes` steps to the next op,
    // the path the kernel's audit walks. A condition met steps into a jump to the end
    // (landing exactly there accepts the socket); one not met skips that jump, to the next
    // condition; the last one not met jumps past the end, which refuses it.
    let total = conds.len() * (COND + JMP) - JMP;
    let mut code = Vec::with_capacity(total);
    for (i, &(cond, port)) in conds.iter().enumerate() {
        code.extend([cond, COND as u8]);
        code.extend(((COND + JMP) as u16).to_ne_bytes());
        code.extend([AF_UNSPEC, 0, 0, 0]);
        code.extend(i32::from(port).to_ne_bytes());
        if i + 1 < conds.len() {
            let to_end = (total - code.len()) as u16;
            code.extend([INET_DIAG_BC_JMP, JMP as u8]);
            code.extend(to_end.to_ne_bytes());
        }
    }
    let mut attribute = Vec::with_capacity(4 + total);
    attribute.extend(((4 + total) as u16).to_ne_bytes());
    attribute.extend(INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    attribute.extend(code);
    attribute
}

/// One reply datagram into `buf`, waiting until `deadline`.
fn receive(socket: &Socket, buf: &mut [u8], deadline: Instant) -> anyhow::Result<usize> {
    use rustix::event::{PollFd, PollFlags};
    use rustix::net::RecvFlags;
    let room = buf.len();
    let length = retried_until(deadline, |timeout| {
        let mut fds = [PollFd::new(socket, PollFlags::IN)];
        rustix::event::poll(&mut fds, Some(&timeout))?;
        // TRUNC: the datagram's whole length, so one that did not fit is seen, not cut.
        rustix::net::recv(socket, &mut *buf, RecvFlags::DONTWAIT | RecvFlags::TRUNC)
            .map(|(_, length)| length)
    })?;
    if length > room {
        anyhow::bail!("a sock_diag reply of {length} bytes, more than the {room} read");
    }
    Ok(length)
}

/// `read` (a wait of at most the time it is given, then a read) until it gives a length.
/// EINTR tries again with the time left: a signal's handler ran (the deploy catches SIGINT and
/// SIGTERM), and SA_RESTART restarts neither poll(2) nor a socket read with a timeout, so a
/// Ctrl-C would otherwise fail the drain's count. EAGAIN (nothing yet) tries again too. Past
/// `deadline`, an error naming the bound.
fn retried_until(
    deadline: Instant,
    mut read: impl FnMut(rustix::event::Timespec) -> rustix::io::Result<usize>,
) -> anyhow::Result<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = match rustix::event::Timespec::try_from(left) {
            Ok(timeout) if !left.is_zero() => timeout,
            _ => anyhow::bail!(
                "no complete sock_diag reply from the kernel within {}",
                crate::report::duration(REPLY_WITHIN)
            ),
        };
        match read(timeout) {
            Ok(length) => return Ok(length),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            Err(e) => {
                return Err(std::io::Error::from(e)).context("read the kernel's sock_diag reply")
            }
        }
    }
}

/// One dump's replies as they come.
#[derive(Debug, Default)]
struct Tally {
    /// The sockets on the ports.
    count: usize,
    /// The sockets the kernel sent (its filter is `port_filter`'s).
    sent: usize,
    /// The kernel marked a reply `NLM_F_DUMP_INTR`: the count may be short.
    interrupted: bool,
}

impl Tally {
    /// Takes one reply datagram (netlink messages, each 4-byte aligned); true at the dump's
    /// end (`NLMSG_DONE`).
    fn take(&mut self, reply: &[u8], on_port: impl Fn(&SocketId) -> bool) -> anyhow::Result<bool> {
        let mut offset = 0;
        while offset < reply.len() {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&reply[offset..])
                .map_err(|e| anyhow::anyhow!("a sock_diag reply that does not parse: {e}"))?;
            let length = message.header.length as usize;
            if length == 0 {
                anyhow::bail!("a sock_diag reply of length 0");
            }
            if message.header.flags & NLM_F_DUMP_INTR != 0 {
                self.interrupted = true;
            }
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    self.sent += 1;
                    if on_port(&response.header.socket_id) {
                        self.count += 1;
                    }
                }
                NetlinkPayload::Done(done) if done.code == 0 => return Ok(true),
                // The dump stopped short (its error in NLMSG_DONE): sockets are missing.
                NetlinkPayload::Done(done) => anyhow::bail!(
                    "the kernel ended the sock_diag dump with an error: {}",
                    std::io::Error::from_raw_os_error(done.code.saturating_abs())
                ),
                NetlinkPayload::Error(e) if e.code.is_none() => {
                    anyhow::bail!("an acknowledgement where the sock_diag dump was expected")
                }
                NetlinkPayload::Error(e) => {
                    anyhow::bail!("the kernel refused the sock_diag dump: {e}")
                }
                NetlinkPayload::Noop => {}
                other => anyhow::bail!("an unexpected sock_diag reply: {other:?}"),
            }
            offset += length.next_multiple_of(4);
        }
        Ok(false)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What a [`python_in_a_netns_of_its_own`] says, line by line.
    pub(crate) type Said = std::io::Lines<std::io::BufReader<std::process::ChildStdout>>;

    /// `script` run by python3 in a network namespace of its own (`unshare --net`), its stdin
    /// and stdout piped: a stand-in for a container's process.
    pub(crate) fn python_in_a_netns_of_its_own(script: &str) -> (std::process::Child, Said) {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new("unshare")
            .args(["--net", "--", "python3", "-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) and python3, which scripts/test.sh installs");
        let said = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        (child, said)
    }

    /// Whether a test that needs root can run; under CI (whose runs are root) it must.
    pub(crate) fn root_or_say_so(test: &str) -> bool {
        if rustix::process::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "{test} needs root, and CI is set"
        );
        eprintln!("*** {test} NOT RUN: it needs root (entering a network namespace)");
        false
    }

    #[test]
    fn a_look_in_another_network_namespace_counts_its_sockets_not_the_hosts() {
        if !root_or_say_so("a_look_in_another_network_namespace…") {
            return;
        }
        // A process in a network namespace of its own, listening there (on any address: its
        // loopback is down) until its stdin closes, then waiting for its stdin's second line.
        use std::io::Write as _;
        let script = "import socket,sys\n\
s=socket.socket(); s.bind(('0.0.0.0',0)); s.listen()\n\
print(s.getsockname()[1], flush=True)\n\
sys.stdin.readline(); s.close(); print('closed', flush=True); sys.stdin.readline()\n";
        let (mut inside, mut said) = python_in_a_netns_of_its_own(script);
        let port: u16 = said.next().unwrap().unwrap().trim().parse().unwrap();
        let mut look = InNetns::of_process(inside.id(), |_| Ok(())).unwrap();
        assert_eq!(look.count(State::Listening, &[port]).unwrap(), 1);
        assert_eq!(look.count(State::Listening, &[port ^ 1]).unwrap(), 0);
        // The host's own table is another: what it counts on that port is not the namespace's.
        let host_before = count(State::Listening, &[port]).unwrap();
        let mut stdin = inside.stdin.take().unwrap();
        writeln!(stdin).unwrap();
        assert_eq!(said.next().unwrap().unwrap(), "closed");
        assert_eq!(look.count(State::Listening, &[port]).unwrap(), 0);
        assert_eq!(count(State::Listening, &[port]).unwrap(), host_before);
        drop(stdin);
        inside.wait().unwrap();
        // Its last process gone, the namespace lives on with the look's socket: an empty table.
        assert_eq!(look.count(State::Listening, &[port]).ok(), Some(0));
    }

    #[test]
    fn this_processs_own_namespace_is_not_entered_as_another() {
        let e = InNetns::of_process(std::process::id(), |_| Ok(()))
            .err()
            .expect("our own namespace was taken for another")
            .to_string();
        assert!(e.contains("this process's own network namespace"), "{e}");
        let e = InNetns::of_process(u32::MAX, |_| Ok(()))
            .err()
            .expect("a process that does not exist")
            .to_string();
        assert!(e.contains(&format!("open /proc/{}", u32::MAX)), "{e}");
    }

    #[test]
    fn a_listener_and_both_ends_of_a_connection_are_counted_on_their_ports_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let other = std::net::TcpListener::bind("[::1]:0").unwrap();
        let port6 = other.local_addr().unwrap().port();
        assert_eq!(count(State::Listening, &[port]).unwrap(), 1);
        assert_eq!(count(State::Listening, &[port6]).unwrap(), 1);
        assert_eq!(count(State::Listening, &[port, port6]).unwrap(), 2);
        assert_eq!(count(State::Established, &[port]).unwrap(), 0);
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        assert_eq!(count(State::Established, &[port]).unwrap(), 2);
        // The listener is not a connection, and a connection is not a listener.
        assert_eq!(count(State::Listening, &[port]).unwrap(), 1);
        assert_eq!(count(State::Established, &[port6]).unwrap(), 0);
        drop(listener);
        drop(other);
        assert_eq!(count(State::Listening, &[port, port6]).unwrap(), 0);
    }

    /// One netlink message with `flags`, as the kernel would send it.
    fn message(flags: u16, payload: NetlinkPayload<SockDiagMessage>) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        let mut message = NetlinkMessage::new(header, payload);
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    /// A socket's record, from `port` to 40000.
    fn socket_on(port: u16) -> Vec<u8> {
        use netlink_packet_sock_diag::inet::{InetResponse, InetResponseHeader};
        let mut socket_id = SocketId::new_v4();
        socket_id.source_port = port;
        socket_id.destination_port = 40000;
        let response = InetResponse {
            header: InetResponseHeader {
                family: AF_INET,
                state: 1,
                timer: None,
                socket_id,
                recv_queue: 0,
                send_queue: 0,
                uid: 0,
                inode: 1,
            },
            nlas: Default::default(),
        };
        message(
            netlink_packet_core::NLM_F_MULTIPART,
            SockDiagMessage::InetResponse(Box::new(response)).into(),
        )
    }

    fn done(flags: u16, code: i32) -> Vec<u8> {
        let mut done = netlink_packet_core::DoneMessage::default();
        done.code = code;
        message(
            netlink_packet_core::NLM_F_MULTIPART | flags,
            NetlinkPayload::Done(done),
        )
    }

    fn on_8080(id: &SocketId) -> bool {
        id.source_port == 8080
    }

    #[test]
    fn a_reply_of_several_messages_is_counted_to_its_done() {
        let mut tally = Tally::default();
        let reply = [socket_on(8080), socket_on(9090), socket_on(8080)].concat();
        assert!(!tally.take(&reply, on_8080).unwrap());
        assert!(tally
            .take(&[socket_on(8080), done(0, 0)].concat(), on_8080)
            .unwrap());
        assert_eq!(tally.count, 3);
        assert!(!tally.interrupted);
    }

    #[test]
    fn a_dump_the_kernel_ended_with_an_error_is_an_error_not_a_short_count() {
        // NLMSG_DONE carries the dump's error (-ENOBUFS here): the sockets after it are
        // missing, and a drain taking the short count would stop the old color too early.
        let mut tally = Tally::default();
        let reply = [socket_on(8080), done(0, -105)].concat();
        let e = tally.take(&reply, on_8080).unwrap_err().to_string();
        assert!(
            e.contains("the kernel ended the sock_diag dump with an error")
                && e.contains("No buffer space"),
            "{e}"
        );
    }

    #[test]
    fn a_dump_the_kernel_marked_interrupted_is_noted_for_asking_again() {
        let mut tally = Tally::default();
        let reply = [socket_on(8080), done(NLM_F_DUMP_INTR, 0)].concat();
        assert!(tally.take(&reply, on_8080).unwrap());
        assert!(tally.interrupted);
    }

    #[test]
    fn an_error_an_acknowledgement_or_a_cut_reply_fails_the_look() {
        let refused = {
            let mut e = netlink_packet_core::ErrorMessage::default();
            e.code = std::num::NonZeroI32::new(-1);
            message(0, NetlinkPayload::Error(e))
        };
        let e = Tally::default().take(&refused, on_8080).unwrap_err();
        assert!(
            e.to_string()
                .contains("the kernel refused the sock_diag dump")
                && e.to_string().contains("Operation not permitted"),
            "{e}"
        );
        let ack = message(0, NetlinkPayload::Error(Default::default()));
        let e = Tally::default().take(&ack, on_8080).unwrap_err();
        assert!(e.to_string().contains("an acknowledgement"), "{e}");
        let cut = socket_on(8080);
        let e = Tally::default()
            .take(&cut[..cut.len() - 8], on_8080)
            .unwrap_err();
        assert!(e.to_string().contains("does not parse"), "{e}");
    }

    #[test]
    fn an_interrupted_wait_waits_on_for_the_time_left_and_no_longer() {
        // EINTR twice (a SIGINT's handler ran), nothing yet once, then the reply.
        let mut answers = [
            Err(rustix::io::Errno::INTR),
            Err(rustix::io::Errno::INTR),
            Err(rustix::io::Errno::AGAIN),
            Ok(72),
        ]
        .into_iter();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            retried_until(deadline, |_| answers.next().unwrap()).unwrap(),
            72
        );
        // Interrupted again and again: the bound still holds, and the error names it.
        let started = Instant::now();
        let e = retried_until(started + Duration::from_millis(200), |timeout| {
            assert!(timeout.tv_sec == 0 && timeout.tv_nsec <= 200_000_000);
            std::thread::sleep(Duration::from_millis(20));
            Err(rustix::io::Errno::INTR)
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("no complete sock_diag reply from the kernel within 5.00s"),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        let e = retried_until(deadline, |_| Err(rustix::io::Errno::BADF)).unwrap_err();
        assert!(
            format!("{e:#}").contains("read the kernel's sock_diag reply: Bad file descriptor"),
            "{e:#}"
        );
    }

    #[test]
    fn a_kernel_that_does_not_answer_is_an_error_naming_the_bound() {
        // Asked nothing, so no reply comes: before, SO_RCVTIMEO's "Resource temporarily
        // unavailable".
        let socket = open().unwrap();
        let mut buf = vec![0; REPLY_ROOM];
        let started = Instant::now();
        let e = receive(&socket, &mut buf, started + Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("no complete sock_diag reply"), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn the_kernel_sends_only_the_sockets_on_the_ports() {
        let ours = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = ours.local_addr().unwrap().port();
        let other = std::net::TcpListener::bind("[::1]:0").unwrap();
        let other_port = other.local_addr().unwrap().port();
        let mut held = Vec::new();
        for _ in 0..50 {
            let client = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
            held.push((client, other.accept().unwrap().0));
        }
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        held.push((client, ours.accept().unwrap().0));
        let sent = |family, state, ports: &[u16]| {
            let (socket, mut buf) = (open().unwrap(), vec![0; REPLY_ROOM]);
            let tally = Look::new(&socket, &mut buf, state, ports)
                .dump_once(family)
                .unwrap();
            assert_eq!(tally.sent, tally.count, "{family} {state:?} {ports:?}");
            tally.count
        };
        assert_eq!(sent(AF_INET, State::Established, &[port]), 2);
        assert_eq!(sent(AF_INET6, State::Established, &[port]), 0);
        assert_eq!(sent(AF_INET6, State::Established, &[other_port]), 100);
        assert_eq!(sent(AF_INET6, State::Established, &[1, other_port, 2]), 100);
        assert_eq!(sent(AF_INET, State::Listening, &[port]), 1);
        assert_eq!(sent(AF_INET, State::Listening, &[1, 2, 3]), 0);
        assert_eq!(sent(AF_INET6, State::Listening, &[other_port, port]), 1);
        // By the local port only: the clients' ports are remote ports of the listener's
        // connections, and no listener's.
        let client_port = held[0].0.local_addr().unwrap().port();
        assert_eq!(sent(AF_INET6, State::Listening, &[client_port]), 0);
        assert_eq!(sent(AF_INET6, State::Established, &[client_port]), 2);
    }

    #[test]
    fn many_sockets_span_several_replies_and_are_all_counted() {
        // More sockets than one netlink reply holds (a reply is a few KiB of ~100-byte records).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut held = Vec::new();
        for _ in 0..300 {
            let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let (server, _) = listener.accept().unwrap();
            held.push((client, server));
        }
        assert_eq!(count(State::Established, &[port]).unwrap(), 600);
    }
}
