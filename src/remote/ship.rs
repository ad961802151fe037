//! `deploy --ship` / `ship: ssh`: a local image sent to the box over the open SSH connection,
//! no registry anywhere.
//!
//! 1. The local image's layers (`docker image inspect`, typed JSON).
//! 2. The box's layers: `docker image inspect` of every image there, read here as typed JSON
//!    (fail closed: output that does not parse stops the ship, never "the box has nothing",
//!    which would only cost bytes, nor "the box has everything", which would break the load).
//! 3. `docker save` here, minus the layers the box has ([`super::ship_tar`]), into a private
//!    temp dir; its size and sha256 are known before a byte is sent.
//! 4. One session on the master connection: the box writes the stream to a 0600 temp file in
//!    its state dir, checks size and sha256, and only then runs `docker load`. The temp file
//!    goes on every path (the `trap` covers exit, SIGTERM/SIGHUP/SIGINT and a stream cut short
//!    by a dropped connection, which reaches the box as EOF), so an interrupted transfer leaves
//!    nothing half-loaded. Last, the box reports the loaded image's ID, checked against ours.
//!
//! Prints nothing; the caller passes a progress callback and a stop flag.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Deserialize;

use super::ship_tar::{self, Filtered};
use super::ssh::Session;

/// `CUTOVER_SHIP_BWLIMIT`: bytes per second the transfer may use (a shared uplink).
pub const BWLIMIT_ENV: &str = "CUTOVER_SHIP_BWLIMIT";

const CHUNK: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
struct Inspected {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "RootFS")]
    root_fs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// The image archive, ready to send.
pub struct Prepared {
    pub image: String,
    id: String,
    /// Bytes of the full `docker save`.
    pub full_size: u64,
    pub filtered: Filtered,
    dir: tempfile::TempDir,
}

impl Prepared {
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("ship.tar")
    }
}

/// How the transfer ended.
pub struct Sent {
    pub took: Duration,
}

/// Why a ship stopped; `Interrupted` is the caller's stop flag (exit 130).
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("interrupted while shipping {0}: the box discarded the partial transfer, nothing was loaded")]
    Interrupted(String),
}

/// Steps 1–3: what to send for `image`, given the box the session reaches.
pub fn prepare(session: &mut Session, image: &str) -> anyhow::Result<Prepared> {
    let local = inspect_local(image)?;
    let box_has = box_chain_ids(session)?;
    let dir = tempfile::Builder::new()
        .prefix("cutover-ship-")
        .tempdir()
        .context("could not create a private temp dir for the image archive")?;
    let full = dir.path().join("full.tar");
    crate::docker::images::save_cmd(image, &full).run()?;
    let full_size = std::fs::metadata(&full)
        .with_context(|| format!("could not read {}", full.display()))?
        .len();
    let filtered = ship_tar::filter(
        &full,
        &local.root_fs.layers,
        &box_has,
        &dir.path().join("ship.tar"),
    )
    .with_context(|| format!("could not prepare {image} for shipping"))?;
    std::fs::remove_file(&full).with_context(|| format!("could not remove {}", full.display()))?;
    Ok(Prepared {
        image: image.to_string(),
        id: local.id,
        full_size,
        filtered,
        dir,
    })
}

fn inspect_local(image: &str) -> anyhow::Result<Inspected> {
    let out = crate::docker::images::inspect_cmd(image).run_unchecked()?;
    if !out.success() {
        bail!(
            "{image} is not an image in this machine's Docker engine (`docker image inspect` \
             failed: {}); --ship sends a local image: build it here first",
            crate::process::tail(out.stderr.trim(), 3)
        );
    }
    let mut images: Vec<Inspected> =
        crate::docker::inspect::parse("docker image inspect", "image JSON", &out.stdout)?;
    match images.len() {
        1 => Ok(images.remove(0)),
        n => bail!("`docker image inspect {image}` described {n} images, expected 1"),
    }
}

/// The chain IDs of every layer of every image on the box.
fn box_chain_ids(session: &mut Session) -> anyhow::Result<HashSet<String>> {
    // An image removed between the list and the inspect fails the inspect: fail closed.
    let script = "docker image ls -q --no-trunc | sort -u | xargs -r docker image inspect --";
    let out = session.exec_ok(
        script,
        "list the box's image layers (docker image inspect)",
        None,
    )?;
    if out.stdout.trim().is_empty() {
        return Ok(HashSet::new());
    }
    let images: Vec<Inspected> = crate::docker::inspect::parse(
        "docker image inspect (on the box)",
        "image JSON",
        &out.stdout,
    )?;
    Ok(images
        .iter()
        .flat_map(|i| ship_tar::chain_ids(&i.root_fs.layers))
        .collect())
}

/// The box side: stdin into a 0600 temp file in `state_dir`, size and sha256 checked, then
/// `docker load`, the temp file removed on every path; prints the loaded image's ID last.
/// A client that vanished without a FIN leaves `head` waiting until sshd notices; its file
/// stops growing, and the next ship removes any left untouched for an hour.
fn receive_script(state_dir: &str, prepared: &Prepared) -> String {
    let q = crate::process::shell_quote;
    let size = prepared.filtered.size;
    format!(
        "set -u; umask 077; d={dir}; mkdir -p \"$d\" || exit 1; \
         find \"$d\" -maxdepth 1 -name '.ship-*' -mmin +60 -exec rm -f {{}} + 2>/dev/null; \
         t=$(mktemp \"$d/.ship-XXXXXX\") || exit 1; \
         trap 'rm -f \"$t\"' EXIT; trap 'exit 143' HUP INT TERM PIPE; \
         head -c {size} > \"$t\"; n=$(wc -c < \"$t\" | tr -d ' '); \
         if [ \"$n\" != {size} ]; then echo \"the transfer stopped after $n of {size} bytes; \
         nothing was loaded\" >&2; exit 3; fi; \
         if ! printf '%s  %s\\n' {sha} \"$t\" | sha256sum -c --status -; then echo \"the image \
         archive arrived damaged (sha256 mismatch); nothing was loaded\" >&2; exit 4; fi; \
         docker load -q -i \"$t\" >&2 || exit 5; \
         docker image inspect --format '{{{{.Id}}}}' -- {image}",
        dir = q(state_dir),
        sha = prepared.filtered.sha256,
        image = q(&prepared.image),
    )
}

/// Step 4: streams the archive to the box, `progress(bytes_sent)` after each chunk; `stop`
/// ends the transfer early (the box then discards it).
pub fn send(
    session: &Session,
    prepared: &Prepared,
    state_dir: &str,
    progress: &mut dyn FnMut(u64),
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<Sent> {
    let started = Instant::now();
    let limit = bwlimit()?;
    let mut file = std::fs::File::open(prepared.path())
        .with_context(|| format!("could not open {}", prepared.path().display()))?;
    let mut child = session.start_script(
        &receive_script(state_dir, prepared),
        "ship the image to the box",
    )?;
    let readers = [child.stdout.take(), child.stderr.take()].map(|pipe| {
        pipe.map(|mut p| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = p.read_to_string(&mut text);
                text
            })
        })
    });
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    let mut interrupted = false;
    loop {
        if stop() {
            interrupted = true;
            break;
        }
        let n = file
            .read(&mut buf)
            .context("could not read the image archive")?;
        if n == 0 {
            break;
        }
        let Some(stdin) = child.stdin() else { break };
        if stdin.write_all(&buf[..n]).is_err() {
            // The box side ended early; its exit status and stderr say why.
            break;
        }
        sent += n as u64;
        progress(sent);
        if let Some(rate) = limit {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    child.close_stdin();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let [stdout, stderr] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
    if interrupted {
        return Err(ShipError::Interrupted(prepared.image.clone()).into());
    }
    if !status.success() {
        let why = match status.code() {
            Some(255) => session.describe_lost(),
            _ => crate::process::tail(stderr.trim(), 10),
        };
        bail!(
            "failed to ship {} to {}: {why}",
            prepared.image,
            session.target
        );
    }
    let loaded = stdout.lines().last().unwrap_or_default().trim();
    if loaded != prepared.id {
        bail!(
            "shipped {} but the box reports image {loaded:?} for it, expected {}",
            prepared.image,
            prepared.id
        );
    }
    Ok(Sent {
        took: started.elapsed(),
    })
}

fn bwlimit() -> anyhow::Result<Option<u64>> {
    match std::env::var(BWLIMIT_ENV) {
        Err(_) => Ok(None),
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .with_context(|| {
                format!("{BWLIMIT_ENV}={v:?}: expected bytes per second, e.g. 1000000")
            }),
    }
}
