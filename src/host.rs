//! Facts about this machine that deploys and bootstrap decide on: memory and swap from
//! `/proc/meminfo`, and open TCP connections from `/proc/net/tcp{,6}`.
//!
//! Connections are counted rather than asking the app: any app behind nginx has its
//! in-flight requests as established sockets on its published host port, so draining works
//! without an app-specific endpoint.

use std::path::Path;

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
pub fn established_connections(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| count_established(&text, port))
        .sum()
}

/// Counts `/proc/net/tcp` rows in state 01 (ESTABLISHED) with `port` on either end.
pub fn count_established(table: &str, port: u16) -> usize {
    let port_hex = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 3
                && cols[3] == "01"
                && [cols[1], cols[2]]
                    .iter()
                    .any(|addr| addr.rsplit(':').next() == Some(port_hex.as_str()))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn sees_a_real_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let before = established_connections(port);
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _server = listener.accept().unwrap();
        assert_eq!(established_connections(port), before + 2);
    }
}
