//! Facts about this machine that deploys and bootstrap decide on: memory and swap from
//! `/proc/meminfo`, and open TCP connections (from the kernel's socket table through `ss`,
//! else `/proc/net/tcp{,6}`).
//!
//! Connections are counted rather than asking the app: any app behind nginx has its
//! in-flight requests as established sockets on its published host port, so draining works
//! without an app-specific endpoint.

use std::path::Path;
use std::time::Duration;

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
/// Asked of the kernel through `ss` (sock_diag: filtered by state and port in the kernel, ~5 ms
/// however many sockets the box holds); where `ss` is missing or fails, read from
/// `/proc/net/tcp{,6}`, which lists every socket, TIME_WAIT too: ~30 ms under the benchmark's
/// 150 connections a second, paid by every drain. When neither can be read the count is
/// unknown, an error: taken for 0, it would end a drain with requests still in flight.
pub fn established_connections(port: u16) -> anyhow::Result<usize> {
    match established_by_ss(port) {
        Some(count) => Ok(count),
        None => established_in_proc(port),
    }
}

/// `ss -H -t -n state established '( sport = :P or dport = :P )'`: one line per socket.
fn established_by_ss(port: u16) -> Option<usize> {
    let filter = format!("( sport = :{port} or dport = :{port} )");
    ss_sockets(
        &["state", "established", &filter],
        "count the established connections on a port".into(),
        Duration::from_secs(5),
    )
    .ok()
}

/// Whether something listens on `port`, on any address (`ss -l`): a color published by
/// Docker's userland proxy does; with `userland-proxy: false` nothing does, and a DNAT to it
/// (the nft switch) would reach nothing. An error when `ss` cannot answer.
pub fn listening(port: u16) -> anyhow::Result<bool> {
    let filter = format!("( sport = :{port} )");
    let count = ss_sockets(
        &["-l", &filter],
        format!("look for a listener on port {port}"),
        Duration::from_secs(10),
    )?;
    Ok(count > 0)
}

/// Who listens on a set of ports, as [`listening_on_any`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listener {
    Nobody,
    On(u16),
    /// The look at them all counted a listener, the look at each could not name it (it
    /// went in between, or `ss` failed): still a listener, never "nobody".
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

/// Who listens on `ports`: one `ss -l` for them all (the common answer, nobody, in one
/// process); only when it counts one is each asked alone, to name it. An error only when
/// that first look fails.
pub fn listening_on_any(ports: &[u16]) -> anyhow::Result<Listener> {
    let filter = ports
        .iter()
        .map(|p| format!("sport = :{p}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let count = ss_sockets(
        &["-l", &format!("( {filter} )")],
        format!("look for a listener on ports {ports:?}"),
        Duration::from_secs(10),
    )?;
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

/// `ss -H -t -n ARGS`: the TCP sockets it lists, one line each (no header).
fn ss_sockets(args: &[&str], summary: String, timeout: Duration) -> anyhow::Result<usize> {
    let out = crate::process::Cmd::new("ss", summary)
        .args(["-H", "-t", "-n"])
        .args(args.iter().copied())
        .timeout(timeout)
        .run()?;
    Ok(out.stdout.lines().filter(|l| !l.trim().is_empty()).count())
}

/// The same count from `/proc/net/tcp{,6}`.
pub fn established_in_proc(port: u16) -> anyhow::Result<usize> {
    established_in_tables(
        port,
        [Path::new("/proc/net/tcp"), Path::new("/proc/net/tcp6")],
    )
}

/// The count from socket tables; one that is missing is skipped (a kernel without IPv6 has no
/// `tcp6`), but at least one must be read.
fn established_in_tables<'a>(
    port: u16,
    tables: impl IntoIterator<Item = &'a Path>,
) -> anyhow::Result<usize> {
    let mut read = 0;
    let mut count = 0;
    let mut errors = Vec::new();
    for path in tables {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                read += 1;
                count += count_established(&text, port);
            }
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    if read == 0 {
        anyhow::bail!(
            "cannot count the connections on port {port}: `ss` failed and no socket table could be read ({})",
            errors.join("; ")
        );
    }
    Ok(count)
}

/// Counts `/proc/net/tcp` rows in state 01 (ESTABLISHED) with `port` on either end.
pub fn count_established(table: &str, port: u16) -> usize {
    let port_hex = format!("{port:04X}");
    let on_port = |addr: &str| addr.rsplit(':').next() == Some(port_hex.as_str());
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut cols = line.split_whitespace().skip(1);
            match (cols.next(), cols.next(), cols.next()) {
                (Some(local), Some(remote), Some("01")) => on_port(local) || on_port(remote),
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
        if crate::process::which("ss").is_none() {
            return;
        }
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
    fn counts_only_established_rows_on_the_port() {
        let table = "  sl  local_address rem_address   st\n\
           0: 0100007F:1F91 00000000:0000 0A 0\n\
           1: 0100007F:1F91 0100007F:D2A0 01 0\n\
           2: 0100007F:D2A0 0100007F:1F91 01 0\n\
           3: 0100007F:1F92 0100007F:D2A1 01 0\n\
           4: 0100007F:1F91 0100007F:D2A2 06 0\n";
        assert_eq!(count_established(table, 8081), 2);
        assert_eq!(count_established(table, 8082), 1);
    }

    #[test]
    fn no_readable_socket_table_is_an_error_not_zero() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("tcp");
        let err = established_in_tables(8080, [missing.as_path()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot count the connections on port 8080"),
            "{err}"
        );
        let table = dir.path().join("tcp6");
        std::fs::write(
            &table,
            "  sl  local_address rem_address   st\n   1: 0100007F:1F90 0100007F:D2A0 01 0\n",
        )
        .unwrap();
        assert_eq!(
            established_in_tables(8080, [missing.as_path(), table.as_path()]).unwrap(),
            1
        );
    }

    #[test]
    fn ss_and_proc_see_the_same_real_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(established_connections(port).unwrap(), 0);
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        // Both ends of one loopback connection are on this machine.
        assert_eq!(established_in_proc(port).unwrap(), 2);
        assert_eq!(established_connections(port).unwrap(), 2);
        if crate::process::which("ss").is_some() {
            assert_eq!(established_by_ss(port), Some(2));
        }
    }
}
