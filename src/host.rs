//! Facts about this machine that deploys and bootstrap decide on: memory and swap from
//! `/proc/meminfo`, and TCP listeners and connections (from the kernel's socket table over
//! sock_diag, `crate::sock_diag`, else `/proc/net/tcp{,6}`).
//!
//! Connections are counted rather than asking the app: any app behind nginx has its
//! in-flight requests as established sockets on its published host port, so draining works
//! without an app-specific endpoint.

use std::path::Path;

use crate::sock_diag::State as Socket;

/// The `/proc/meminfo` figures cutover uses, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemInfo {
    pub total: u64,
    pub available: u64,
    pub swap_free: u64,
}

impl MemInfo {
    pub fn read() -> anyhow::Result<MemInfo> {
        Self::read_from(Path::new("/proc/meminfo"))
    }

    pub fn read_from(path: &Path) -> anyhow::Result<MemInfo> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("could not read {}: {e}", path.display()))?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> MemInfo {
        let mut info = MemInfo::default();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let kib: u64 = value.parse().unwrap_or(0);
            let bytes = kib * 1024;
            match key {
                "MemTotal:" => info.total = bytes,
                "MemAvailable:" => info.available = bytes,
                "SwapFree:" => info.swap_free = bytes,
                _ => {}
            }
        }
        info
    }

    /// What another container could use without the OOM killer: free RAM plus free swap.
    pub fn headroom(&self) -> u64 {
        self.available + self.swap_free
    }
}

/// Established TCP connections whose local or remote port is `port` (both address families).
///
/// Asked of the kernel over sock_diag ([`crate::sock_diag`]: filtered by state and port in
/// the kernel, ~1 ms however many sockets in TIME_WAIT the box holds); where that fails (a kernel without
/// `inet_diag`, a seccomp filter), read from `/proc/net/tcp{,6}`, which lists every socket,
/// TIME_WAIT too: ~30 ms under the benchmark's 150 connections a second, paid by every drain.
/// When neither can be read the count is unknown, an error: taken for 0, it would end a drain
/// with requests still in flight.
pub fn established_connections(port: u16) -> anyhow::Result<usize> {
    sockets(Socket::Established, &[port])
}

/// Whether something listens on `port`, on any address: a color published by Docker's
/// userland proxy does; with `userland-proxy: false` nothing does, and a DNAT to it (the nft
/// switch) would reach nothing. An error when neither sock_diag nor `/proc` can answer.
pub fn listening(port: u16) -> anyhow::Result<bool> {
    Ok(sockets(Socket::Listening, &[port])? > 0)
}

/// Who listens on a set of ports, as [`listening_on_any`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listener {
    Nobody,
    On(u16),
    /// The look at them all counted a listener, the look at each could not name it (it
    /// went in between, or the look failed): still a listener, never "nobody".
    OneOf(Vec<u16>),
}

impl Listener {
    /// `port 9100` or `one of ports 9100, 9101`; None for [`Listener::Nobody`].
    pub fn which(&self) -> Option<String> {
        match self {
            Listener::Nobody => None,
            Listener::On(port) => Some(format!("port {port}")),
            Listener::OneOf(ports) => Some(format!(
                "one of ports {}",
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// Who listens on `ports`: one look for them all (the common answer, nobody); only when it
/// counts one is each asked alone, to name it. An error only when that first look fails.
pub fn listening_on_any(ports: &[u16]) -> anyhow::Result<Listener> {
    let count = sockets(Socket::Listening, ports)?;
    Ok(name_listener(ports, count, listening))
}

/// The decision of [`listening_on_any`] once `count` listeners were seen on `ports`:
/// `listens` names the port; where it fails or finds none, a listener was still seen.
fn name_listener(
    ports: &[u16],
    count: usize,
    mut listens: impl FnMut(u16) -> anyhow::Result<bool>,
) -> Listener {
    if count == 0 {
        return Listener::Nobody;
    }
    for &port in ports {
        match listens(port) {
            Ok(true) => return Listener::On(port),
            Ok(false) => {}
            Err(_) => break,
        }
    }
    Listener::OneOf(ports.to_vec())
}

/// The TCP sockets in `state` on `ports`: sock_diag, else the `/proc` tables; both failing
/// is one error saying why each did.
fn sockets(state: Socket, ports: &[u16]) -> anyhow::Result<usize> {
    // Traced for `-v` like a subprocess: it stands in for one (`ss`).
    let started = std::time::Instant::now();
    let counted = crate::sock_diag::count(state, ports);
    let outcome = match &counted {
        Ok(n) => format!("{n} socket(s)"),
        Err(e) => format!("failed: {e:#}"),
    };
    crate::process::trace(
        &format!(
            "sock_diag: TCP sockets {} on port(s) {ports:?}",
            state.words()
        ),
        started.elapsed(),
        &outcome,
    );
    counted.or_else(|diag| {
        in_tables(
            state,
            ports,
            [Path::new("/proc/net/tcp"), Path::new("/proc/net/tcp6")],
        )
        .map_err(|proc| proc.context(format!("{diag:#}")))
    })
}

/// The same count from `/proc/net/tcp{,6}`.
pub fn established_in_proc(port: u16) -> anyhow::Result<usize> {
    in_tables(
        Socket::Established,
        &[port],
        [Path::new("/proc/net/tcp"), Path::new("/proc/net/tcp6")],
    )
}

/// The count from socket tables; one that is missing is skipped (a kernel without IPv6 has no
/// `tcp6`), but at least one must be read.
fn in_tables<'a>(
    state: Socket,
    ports: &[u16],
    tables: impl IntoIterator<Item = &'a Path>,
) -> anyhow::Result<usize> {
    let mut read = 0;
    let mut count = 0;
    let mut errors = Vec::new();
    for path in tables {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                read += 1;
                count += count_in_table(&text, state, ports);
            }
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    if read == 0 {
        anyhow::bail!(
            "cannot count the TCP sockets on port(s) {ports:?}: no socket table could be read ({})",
            errors.join("; ")
        );
    }
    Ok(count)
}

/// Counts `/proc/net/tcp` rows in `state` (01 ESTABLISHED, by either end's port; 0A LISTEN,
/// by the local port) on any of `ports`.
pub fn count_in_table(table: &str, state: Socket, ports: &[u16]) -> usize {
    let on_port = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            .is_some_and(|p| ports.contains(&p))
    };
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut cols = line.split_whitespace().skip(1);
            match (state, cols.next(), cols.next(), cols.next()) {
                (Socket::Established, Some(local), Some(remote), Some("01")) => {
                    on_port(local) || on_port(remote)
                }
                (Socket::Listening, Some(local), Some(_), Some("0A")) => on_port(local),
                _ => false,
            }
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_counted_is_never_reported_as_nobody_when_it_cannot_be_named() {
        let ports = [9100, 9101];
        let never = |_: u16| -> anyhow::Result<bool> { panic!("asked with a count of 0") };
        assert_eq!(name_listener(&ports, 0, never), Listener::Nobody);
        assert_eq!(
            name_listener(&ports, 1, |p| Ok(p == 9101)),
            Listener::On(9101)
        );
        // Gone between the two looks, or `ss` failing on the second: a listener still.
        let gone = name_listener(&ports, 1, |_| Ok(false));
        assert_eq!(gone, Listener::OneOf(vec![9100, 9101]));
        assert_eq!(gone.which().unwrap(), "one of ports 9100, 9101");
        let failed = name_listener(&ports, 2, |_| anyhow::bail!("ss: broken"));
        assert_eq!(failed, Listener::OneOf(vec![9100, 9101]));
        assert_eq!(Listener::On(9100).which().unwrap(), "port 9100");
        assert_eq!(Listener::Nobody.which(), None);
    }

    #[test]
    fn a_listener_on_loopback_is_seen_and_a_free_port_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listening(port).unwrap());
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let free_port = free.local_addr().unwrap().port();
        drop(free);
        assert_eq!(
            listening_on_any(&[free_port, port]).unwrap(),
            Listener::On(port)
        );
        drop(listener);
        assert_eq!(
            listening_on_any(&[free_port, port]).unwrap(),
            Listener::Nobody
        );
        assert!(!listening(port).unwrap());
    }

    #[test]
    fn meminfo_parses_kib_into_bytes() {
        let text = "MemTotal:        1006300 kB\nMemFree:  1 kB\nMemAvailable:     300000 kB\nSwapTotal: 2097148 kB\nSwapFree:  2000000 kB\n";
        let info = MemInfo::parse(text);
        assert_eq!(info.total, 1006300 * 1024);
        assert_eq!(info.headroom(), (300000 + 2000000) * 1024);
    }

    #[test]
    fn counts_only_the_rows_in_the_state_on_the_ports() {
        let table = "  sl  local_address rem_address   st\n\
           0: 0100007F:1F91 00000000:0000 0A 0\n\
           1: 0100007F:1F91 0100007F:D2A0 01 0\n\
           2: 0100007F:D2A0 0100007F:1F91 01 0\n\
           3: 0100007F:1F92 0100007F:D2A1 01 0\n\
           4: 0100007F:1F91 0100007F:D2A2 06 0\n\
           5: 00000000:D2A1 00000000:0000 0A 0\n";
        assert_eq!(count_in_table(table, Socket::Established, &[8081]), 2);
        assert_eq!(count_in_table(table, Socket::Established, &[8082]), 1);
        assert_eq!(count_in_table(table, Socket::Established, &[8081, 8082]), 3);
        assert_eq!(count_in_table(table, Socket::Listening, &[8081]), 1);
        // A listener by its local port only: 0xD2A1 is a remote port in row 3.
        assert_eq!(count_in_table(table, Socket::Listening, &[0xD2A1]), 1);
        assert_eq!(count_in_table(table, Socket::Listening, &[8082]), 0);
    }

    #[test]
    fn no_readable_socket_table_is_an_error_not_zero() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("tcp");
        let err = in_tables(Socket::Established, &[8080], [missing.as_path()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot count the TCP sockets on port(s) [8080]"),
            "{err}"
        );
        let table = dir.path().join("tcp6");
        std::fs::write(
            &table,
            "  sl  local_address rem_address   st\n   1: 0100007F:1F90 0100007F:D2A0 01 0\n",
        )
        .unwrap();
        assert_eq!(
            in_tables(
                Socket::Established,
                &[8080],
                [missing.as_path(), table.as_path()]
            )
            .unwrap(),
            1
        );
    }

    #[test]
    fn sock_diag_and_proc_see_the_same_real_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(established_connections(port).unwrap(), 0);
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        // Both ends of one loopback connection are on this machine.
        assert_eq!(established_in_proc(port).unwrap(), 2);
        assert_eq!(established_connections(port).unwrap(), 2);
        assert_eq!(
            crate::sock_diag::count(Socket::Established, &[port]).unwrap(),
            2
        );
    }
}
