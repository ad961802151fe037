//! The `docker save` archive, cut down to what the box lacks (`--ship`).
//!
//! `docker load` looks a layer up by its chain ID in the layer store before it opens the
//! layer's file (moby `image/tarexport/load.go`: `l.lss.Get(r.ChainID())`), so an archive
//! without the files of the layers the box already has loads there all the same. Which layers
//! those are is decided by chain ID (a layer and everything under it), not diff ID alone: the
//! same diff on another base is another layer.
//!
//! Layouts: `manifest.json` naming each layer's file, as Docker 20.10 writes
//! (`<id>/layer.tar`) and newer engines too, beside their OCI `index.json`
//! (`blobs/sha256/<digest>`). An archive with no `manifest.json` (OCI-only) is refused: its
//! layer files cannot be matched to layers, and guessing would ship a broken image.

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context as _};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The chain IDs of an image's layers, bottom first: `chain(0) = diff(0)`,
/// `chain(n) = sha256(chain(n-1) + " " + diff(n))` (the OCI image spec's ChainID).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let chain = match out.last() {
            None => diff.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex(&Sha256::digest(format!("{parent} {diff}").as_bytes()))
            ),
        };
        out.push(chain);
    }
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One entry of `manifest.json`.
#[derive(Debug, Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// What [`filter`] kept and left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// Bytes of the archive written (what crosses the wire).
    pub size: u64,
    /// Its sha256, hex.
    pub sha256: String,
    pub layers: usize,
    /// Layers whose file is in the archive (the box lacks them).
    pub layers_sent: usize,
    /// Bytes of the layer files kept, without tar headers.
    pub layer_bytes_sent: u64,
}

/// Reads `manifest.json` from the archive at `full`; fails closed on an unknown layout.
fn read_manifest(full: &Path) -> anyhow::Result<Vec<String>> {
    let file =
        std::fs::File::open(full).with_context(|| format!("could not open {}", full.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut saw_index = false;
    for entry in archive
        .entries()
        .context("could not read the `docker save` archive")?
    {
        let mut entry = entry.context("could not read the `docker save` archive")?;
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if name == "index.json" {
            saw_index = true;
        }
        if name == "manifest.json" {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .context("could not read manifest.json")?;
            let entries: Vec<ManifestEntry> = serde_json::from_str(&text).with_context(|| {
                format!("`docker save` wrote a manifest.json cutover cannot read: {text:.200}")
            })?;
            let [entry] = &entries[..] else {
                bail!(
                    "`docker save` of one image wrote {} manifest entries, expected 1",
                    entries.len()
                );
            };
            return Ok(entry.layers.clone());
        }
    }
    if saw_index {
        bail!(
            "`docker save` wrote an OCI layout without manifest.json (index.json only); cutover \
             cannot tell which layer files the box already has, so it does not ship this format. \
             Push the image to a registry and set `registry:` instead"
        );
    }
    bail!(
        "`docker save` wrote an archive with no manifest.json: not an image archive cutover knows"
    )
}

/// Writes `full` (a `docker save` of one image whose layers are `diff_ids`, bottom first) to
/// `out` without the files of the layers whose chain ID is in `box_has`.
pub fn filter(
    full: &Path,
    diff_ids: &[String],
    box_has: &HashSet<String>,
    out: &Path,
) -> anyhow::Result<Filtered> {
    let files = read_manifest(full)?;
    if files.len() != diff_ids.len() {
        bail!(
            "`docker save` lists {} layer files and `docker image inspect` {} layers; refusing to \
             guess which is which",
            files.len(),
            diff_ids.len()
        );
    }
    let chains = chain_ids(diff_ids);
    // A file is sent when any layer that names it is missing on the box.
    let needed: BTreeSet<&str> = files
        .iter()
        .zip(&chains)
        .filter(|(_, chain)| !box_has.contains(*chain))
        .map(|(file, _)| file.as_str())
        .collect();
    let layer_files: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    let input =
        std::fs::File::open(full).with_context(|| format!("could not open {}", full.display()))?;
    let output = std::fs::File::create(out)
        .with_context(|| format!("could not create {}", out.display()))?;
    let mut hashing = Hashing {
        inner: std::io::BufWriter::new(output),
        hasher: Sha256::new(),
        size: 0,
    };
    let mut layer_bytes_sent = 0;
    {
        let mut builder = tar::Builder::new(&mut hashing);
        let mut archive = tar::Archive::new(input);
        for entry in archive
            .entries()
            .context("could not read the `docker save` archive")?
        {
            let entry = entry.context("could not read the `docker save` archive")?;
            let name = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            if layer_files.contains(name.as_str()) && !needed.contains(name.as_str()) {
                continue;
            }
            if layer_files.contains(name.as_str()) {
                layer_bytes_sent += entry.header().size()?;
            }
            let mut header = entry.header().clone();
            builder
                .append_data(&mut header, &name, entry)
                .with_context(|| format!("could not write {}", out.display()))?;
        }
        builder
            .finish()
            .with_context(|| format!("could not write {}", out.display()))?;
    }
    hashing
        .inner
        .flush()
        .with_context(|| format!("could not write {}", out.display()))?;
    Ok(Filtered {
        size: hashing.size,
        sha256: hex(&hashing.hasher.finalize()),
        layers: diff_ids.len(),
        layers_sent: files
            .iter()
            .zip(&chains)
            .filter(|(_, c)| !box_has.contains(*c))
            .count(),
        layer_bytes_sent,
    })
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(path: &Path, files: &[(&str, &[u8])]) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, bytes) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *bytes).unwrap();
        }
        b.finish().unwrap();
    }

    fn names(path: &Path) -> Vec<String> {
        let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn chain_ids_follow_the_oci_spec() {
        let diffs = ["sha256:aa".to_string(), "sha256:bb".to_string()];
        let chains = chain_ids(&diffs);
        assert_eq!(chains[0], "sha256:aa");
        let expected = hex(&Sha256::digest(b"sha256:aa sha256:bb"));
        assert_eq!(chains[1], format!("sha256:{expected}"));
    }

    #[test]
    fn layers_the_box_has_are_left_out_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.tar");
        let manifest =
            br#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":["l1/layer.tar","l2/layer.tar"]}]"#;
        archive(
            &full,
            &[
                ("l1/layer.tar", &[1u8; 4096]),
                ("l1/json", b"{}"),
                ("l2/layer.tar", &[2u8; 2048]),
                ("c.json", b"{}"),
                ("manifest.json", manifest),
            ],
        );
        let diffs = vec!["sha256:d1".to_string(), "sha256:d2".to_string()];
        let chains = chain_ids(&diffs);
        let out = dir.path().join("out.tar");
        let has: HashSet<String> = [chains[0].clone()].into();
        let f = filter(&full, &diffs, &has, &out).unwrap();
        assert_eq!(
            names(&out),
            ["l1/json", "l2/layer.tar", "c.json", "manifest.json"]
        );
        assert_eq!((f.layers, f.layers_sent, f.layer_bytes_sent), (2, 1, 2048));
        assert_eq!(f.size, std::fs::metadata(&out).unwrap().len());
        assert_eq!(f.sha256, hex(&Sha256::digest(std::fs::read(&out).unwrap())));

        // The same diff on a base the box lacks is another layer: sent.
        let has: HashSet<String> = [chains[1].clone()].into();
        let f = filter(&full, &diffs, &has, &out).unwrap();
        assert_eq!(f.layers_sent, 1);
        assert!(names(&out).contains(&"l1/layer.tar".to_string()));
    }

    #[test]
    fn unknown_layouts_fail_closed() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("oci.tar");
        archive(&full, &[("index.json", b"{}"), ("oci-layout", b"{}")]);
        let err = filter(&full, &[], &HashSet::new(), &dir.path().join("o")).unwrap_err();
        assert!(
            err.to_string().contains("OCI layout without manifest.json"),
            "{err}"
        );
        archive(&full, &[("manifest.json", br#"[{"Layers":["a"]}]"#)]);
        let err = filter(&full, &[], &HashSet::new(), &dir.path().join("o")).unwrap_err();
        assert!(err.to_string().contains("refusing to guess"), "{err}");
    }
}
