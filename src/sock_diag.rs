//! The kernel's TCP socket table, asked in-process over `NETLINK_SOCK_DIAG`: the question
//! `ss` asks, with no `ss` process. Two of these looks sit on a deploy's path in nft mode (who
//! listens on the switch ports, before observe; the drain's count of the old color's
//! connections), and an `ss` started by a deploy costs 15–40 ms on a busy 2-core box (a
//! process start), where the dump itself takes about a millisecond.
//!
//! The kernel filters by TCP state (so the TIME_WAIT sockets of a busy site are never sent);
//! the ports are matched here, on the few sockets left. Every reply is parsed by
//! `netlink-packet-sock-diag`; one that does not parse, or a netlink error, is an error naming
//! the look (fail closed: never "no sockets"). Bounded: a reply that does not come within
//! [`REPLY_WITHIN`] is an error too.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
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

/// How long the kernel may take to answer one dump.
pub const REPLY_WITHIN: Duration = Duration::from_secs(5);

/// The TCP sockets (IPv4 and IPv6) in `state` on any of `ports`: for [`State::Listening`]
/// the local port, for [`State::Established`] either end's (both ends of a loopback
/// connection are on this box, and each counts). Traced for `-v` like a subprocess.
pub fn count(state: State, ports: &[u16]) -> anyhow::Result<usize> {
    let started = Instant::now();
    let what = match state {
        State::Listening => "listening",
        State::Established => "established",
    };
    let line = format!("sock_diag: TCP sockets {what} on port(s) {ports:?}");
    let counted = [AF_INET, AF_INET6].into_iter().try_fold(0, |sum, family| {
        Ok::<_, anyhow::Error>(sum + dump(family, state, ports)?)
    });
    let outcome = match &counted {
        Ok(n) => format!("{n} socket(s)"),
        Err(e) => format!("failed: {e:#}"),
    };
    crate::process::trace(&line, started.elapsed(), &outcome);
    counted
        .with_context(|| format!("ask the kernel for the TCP sockets {what} on port(s) {ports:?}"))
}

/// One family's dump, counted.
fn dump(family: u8, state: State, ports: &[u16]) -> anyhow::Result<usize> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).context("open a NETLINK_SOCK_DIAG socket")?;
    socket
        .bind_auto()
        .context("bind the NETLINK_SOCK_DIAG socket")?;
    rustix::net::sockopt::set_socket_timeout(
        &socket,
        rustix::net::sockopt::Timeout::Recv,
        Some(REPLY_WITHIN),
    )
    .context("bound the NETLINK_SOCK_DIAG socket's reads")?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connect the NETLINK_SOCK_DIAG socket to the kernel")?;
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
    socket
        .send(&bytes, 0)
        .context("send the sock_diag dump request")?;
    let on_port = |id: &SocketId| match state {
        State::Listening => ports.contains(&id.source_port),
        State::Established => {
            ports.contains(&id.source_port) || ports.contains(&id.destination_port)
        }
    };
    let mut count = 0;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let size = socket
            .recv(&mut buf, 0)
            .context("read the kernel's sock_diag reply")?;
        let mut offset = 0;
        while offset < size {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[offset..size])
                .map_err(|e| anyhow::anyhow!("a sock_diag reply that does not parse: {e}"))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    if on_port(&response.header.socket_id) {
                        count += 1;
                    }
                }
                NetlinkPayload::Done(_) => return Ok(count),
                NetlinkPayload::Error(e) => {
                    anyhow::bail!("the kernel refused the sock_diag dump: {e}")
                }
                NetlinkPayload::Noop => {}
                other => anyhow::bail!("an unexpected sock_diag reply: {other:?}"),
            }
            if length == 0 {
                anyhow::bail!("a sock_diag reply of length 0");
            }
            offset += length;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
