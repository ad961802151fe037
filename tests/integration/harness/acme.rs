//! An ACME server on loopback, with no internet: Debian's `pebble` (the ACME test CA) and
//! `pebble-challtestsrv` (its mock DNS, answering 127.0.0.1 for every name), for the
//! `cutover tls issue` tests ([`Acme`]).
//!
//! pebble's package ships no certificate for its own HTTPS listener, so [`Acme::start`] makes
//! one with openssl (a throwaway CA that certbot trusts through `REQUESTS_CA_BUNDLE`).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::common::{free_port, require};

/// Every tool the ACME tests drive; without one they skip loudly (and fail under CI).
pub(crate) fn ready() -> bool {
    crate::harness::project::ready()
        && [
            ("pebble", "run the ACME test server"),
            ("pebble-challtestsrv", "resolve test domains for pebble"),
            ("certbot", "get certificates"),
            ("openssl", "make pebble's TLS certificate and read serials"),
            ("curl", "fetch over HTTPS with pebble's root trusted"),
        ]
        .iter()
        .all(|(tool, why)| require(tool, why))
}

pub(crate) fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// pebble + its mock DNS on loopback, stopped (killed by pid) when dropped.
pub(crate) struct Acme {
    dir: tempfile::TempDir,
    port: u16,
    children: Vec<Child>,
}

impl Acme {
    /// Starts pebble validating http-01 challenges against `127.0.0.1:http_port`.
    pub(crate) fn start(http_port: u16) -> Acme {
        let dir = tempfile::tempdir().unwrap();
        let d = &dir.path().to_path_buf();
        let openssl =
            |args: &[&str]| run(Command::new("openssl").args(args).current_dir(d), "openssl");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=cutover test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(d.join("ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        let (port, management) = (free_port(), free_port());
        let (dns, dns_management) = (free_port(), free_port());
        let config = json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": d.join("cert.pem"),
            "privateKey": d.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(d.join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(d.join(name)).unwrap();
        let mut children = vec![Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .arg("-dns01")
            .arg(format!("127.0.0.1:{dns}"))
            .arg("-management")
            .arg(format!("127.0.0.1:{dns_management}"))
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap()];
        children.push(
            Command::new("pebble")
                .arg("-config")
                .arg(d.join("pebble.json"))
                .arg("-dnsserver")
                .arg(format!("127.0.0.1:{dns}"))
                // Real challenges, answered at once; no deliberately rejected nonces.
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env_remove("PEBBLE_VA_ALWAYS_VALID")
                .stdout(log("pebble.log"))
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let acme = Acme {
            dir,
            port,
            children,
        };
        wait_for_port(dns_management, "pebble-challtestsrv");
        wait_for_port(port, "pebble");
        wait_for_port(management, "pebble's management endpoint");
        // The root that signs issued certificates (a new one every pebble start).
        let root = run(
            Command::new("curl")
                .args(["-sSf", "--cacert"])
                .arg(acme.listener_ca())
                .arg(format!("https://127.0.0.1:{management}/roots/0")),
            "fetch pebble's root",
        );
        std::fs::write(acme.issuer_root(), root).unwrap();
        acme
    }

    pub(crate) fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The CA of pebble's own HTTPS listener (for certbot's `REQUESTS_CA_BUNDLE`).
    pub(crate) fn listener_ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The root issued certificates chain to (for curl's `--cacert`).
    pub(crate) fn issuer_root(&self) -> PathBuf {
        self.dir.path().join("issuer-root.pem")
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Acme {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
