//! The swap file: its size (the AWS table), allocation, `mkswap`, `swapon` and its one
//! `/etc/fstab` line.
//!
//! A t2.micro has 1 GiB of RAM and a blue/green overlap runs two app containers at once, so
//! swap is what keeps the OOM killer away during a deploy. The pitfalls this module exists
//! for (docs/ARCHITECTURE.md, "Known pitfalls"): `swapon` on an already active file exits 255, so it is
//! only run when the file is not in `/proc/swaps`; the kernel refuses swap files with holes,
//! so a `fallocate` that leaves holes (or is unsupported) falls back to writing zeros with
//! `dd`; the file is 0600 from the moment it exists, since swapped-out pages can hold
//! secrets; and re-running never adds a second fstab line (seed 004 did).

use std::fs::OpenOptions;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context as _;

use super::cloud_init::{Instance, Part, SwapView, View};
use super::{sbin, Options, StepDef, StepRun};
use crate::config::{Size, Swap};
use crate::process::Cmd;

/// Step "swap file"; in the user-data, cloud-init's `swap:` module makes the file.
pub const FILE: StepDef = StepDef {
    name: "swap file",
    run: |opts, step, _| file_step(opts, step),
    cloud_init: Part::Writes(cloud_init_swap),
};

/// Step "swapon".
pub const SWAPON: StepDef = StepDef {
    name: "swapon",
    run: |opts, step, _| swapon_step(opts, step),
    cloud_init: Part::DoneBy {
        step: "swap file",
        how: "cloud-init's swap: module runs swapon on the file it makes",
    },
};

/// Step "fstab".
pub const FSTAB: StepDef = StepDef {
    name: "fstab",
    run: |opts, step, _| fstab_step(opts, step),
    cloud_init: Part::DoneBy {
        step: "swap file",
        how: "cloud-init's swap: module adds the file's fstab line",
    },
};

/// Where the swap file lives on the box (`DIR/swapfile` under `--root`).
pub const SWAP_FILE: &str = "/swapfile";

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The AWS recommendation ("How do I allocate memory to work as swap space…", repost.aws)
/// for a box with `mem_total` bytes of RAM:
///
/// | RAM          | swap        |
/// | ------------ | ----------- |
/// | ≤ 2 GiB      | 2 × RAM     |
/// | 2 – 8 GiB    | = RAM       |
/// | > 8 GiB      | 4 GiB       |
///
/// `MemTotal` excludes memory the kernel reserves (a t2.micro reports about 950 MiB), so RAM
/// is first rounded up to a multiple of 512 MiB: a t2.micro gets 2 GiB (what seed 004 made by
/// hand), a 512 MiB nano gets 1 GiB.
pub fn auto_size(mem_total: u64) -> u64 {
    let ram = mem_total.div_ceil(512 * MIB).max(1) * 512 * MIB;
    if ram <= 2 * GIB {
        2 * ram
    } else if ram <= 8 * GIB {
        ram
    } else {
        4 * GIB
    }
}

/// The swap size to set up, or why there is none.
pub fn wanted_size(swap: Swap) -> anyhow::Result<Result<u64, String>> {
    Ok(match swap {
        Swap::Off => Err("swap is off (--swap off / host.swap: off)".to_string()),
        Swap::Size(size) => Ok(size.bytes().div_ceil(MIB) * MIB),
        Swap::Auto => {
            let mem = crate::host::MemInfo::read()?;
            Ok(auto_size(mem.total))
        }
    })
}

/// The fstab line cutover writes for the swap file.
pub fn fstab_line(file: &str) -> String {
    format!("{file} none swap sw 0 0")
}

/// `existing` with exactly one swap entry for `file`, or `None` when it already has exactly
/// one. Every other byte is kept: other entries, comments, blank lines, a missing final
/// newline (one is added before the appended line). Of several entries for `file` (seed 004
/// re-run), the first swap entry stays where it is and the others go.
pub fn fstab_with_swap(existing: &str, file: &str) -> Option<String> {
    let fields = |line: &str| -> Option<(String, Option<String>)> {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            return None;
        }
        let mut it = t.split_whitespace();
        Some((it.next()?.to_string(), it.nth(1).map(str::to_string)))
    };
    let lines: Vec<&str> = existing.split_inclusive('\n').collect();
    let matches: Vec<usize> = (0..lines.len())
        .filter(|&i| fields(lines[i]).is_some_and(|(spec, _)| spec == file))
        .collect();
    let keep = matches
        .iter()
        .copied()
        .find(|&i| fields(lines[i]).is_some_and(|(_, ty)| ty.as_deref() == Some("swap")));
    if matches.len() == 1 && keep.is_some() {
        return None;
    }
    let mut out = String::with_capacity(existing.len() + 40);
    for (i, line) in lines.iter().enumerate() {
        if matches.contains(&i) && Some(i) != keep {
            continue;
        }
        out.push_str(line);
    }
    if keep.is_none() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&fstab_line(file));
        out.push('\n');
    }
    Some(out)
}

/// The swap areas in `/proc/swaps` (kernel escapes spaces as `\040`).
pub fn active_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(|f| f.replace("\\040", " "))
        .collect()
}

fn read_active_swaps() -> anyhow::Result<Vec<String>> {
    match std::fs::read_to_string("/proc/swaps") {
        Ok(text) => Ok(active_swaps(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).context("could not read /proc/swaps"),
    }
}

/// Whether `path` carries a swap signature (`SWAPSPACE2` at the end of the first page, for
/// the page sizes Linux uses on x86_64 and arm64).
pub fn has_swap_signature(path: &Path) -> anyhow::Result<bool> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("could not open {}", path.display()))?;
    let len = f.metadata()?.len();
    for page in [4096u64, 16384, 65536] {
        if len < page {
            break;
        }
        let mut magic = [0u8; 10];
        f.seek(SeekFrom::Start(page - 10))?;
        f.read_exact(&mut magic)
            .with_context(|| format!("could not read {}", path.display()))?;
        if &magic == b"SWAPSPACE2" {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether every byte of `path` is allocated on disk (swapon refuses files with holes).
pub fn fully_allocated(path: &Path) -> anyhow::Result<bool> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("could not read the metadata of {}", path.display()))?;
    Ok(meta.blocks() * 512 >= meta.len())
}

/// How the swap file's blocks get allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    Fallocate,
    Dd,
}

/// Creates `path` with mode 0600 (before any byte is written) and allocates `size` bytes:
/// `fallocate`, or `dd` from /dev/zero when fallocate fails or leaves holes. Returns how.
pub fn allocate(path: &Path, size: u64, prefer: Allocation) -> anyhow::Result<Allocation> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    // The umask may have taken bits away but never adds any; make it exactly 0600.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("could not chmod {}", path.display()))?;
    if prefer == Allocation::Fallocate {
        let ok = Cmd::new("fallocate", format!("allocate {}", path.display()))
            .args(["-l", &size.to_string()])
            .arg(path)
            .run()
            .is_ok();
        if ok && fully_allocated(path)? {
            return Ok(Allocation::Fallocate);
        }
    }
    Cmd::new("dd", format!("write {} with zeros", path.display()))
        .arg("if=/dev/zero")
        .arg(format!("of={}", path.display()))
        .arg("bs=1M")
        .arg(format!("count={}", size.div_ceil(MIB)))
        .arg("conv=fsync")
        .run()?;
    Ok(Allocation::Dd)
}

fn show(bytes: u64) -> String {
    Size(bytes).to_string()
}

/// Step "swap file": a fully allocated 0600 file of the wanted size with a swap signature.
/// An existing valid swap file of another size is left alone (resizing an active swap file
/// means swapoff, which can need more RAM than a 1 GiB box has free); the note says how.
pub fn file_step(opts: &Options, step: &mut StepRun<'_>) -> anyhow::Result<()> {
    let size = match wanted_size(opts.swap)? {
        Ok(size) => size,
        Err(reason) => {
            step.skip(reason);
            return Ok(());
        }
    };
    let path = step.target.path(Path::new(SWAP_FILE));
    step.summary(format!("{} ({})", path.display(), show(size)));
    let active =
        step.target.on_live_system() && read_active_swaps()?.iter().any(|s| s == SWAP_FILE);
    if !active && step.target.on_live_system() && opts.swap == Swap::Auto {
        let others = read_active_swaps()?;
        if !others.is_empty() {
            step.skip(format!(
                "the box already has swap ({}); pass --swap SIZE to add {SWAP_FILE} anyway",
                others.join(", ")
            ));
            return Ok(());
        }
    }
    let exists = path.exists();
    let valid = exists && fully_allocated(&path)? && has_swap_signature(&path)?;
    if active || valid {
        let len = std::fs::metadata(&path)
            .with_context(|| format!("could not read the metadata of {}", path.display()))?
            .len();
        if len.abs_diff(size) >= MIB {
            step.note(format!(
                "{} is {}, not {}: left as is (to resize: swapoff {SWAP_FILE} && rm {SWAP_FILE}, then rerun)",
                path.display(),
                show(len),
                show(size)
            ));
        }
        step.summary(format!(
            "{} ({}, swap signature)",
            path.display(),
            show(len)
        ));
        step.ensure_mode(&path, 0o600, false)?;
        return Ok(());
    }
    if exists {
        // Not active, and no signature or holes: a leftover of an interrupted run.
        step.change(format!(
            "remove {} (not a usable swap file: no signature or holes)",
            path.display()
        ));
        if !step.dry_run() {
            std::fs::remove_file(&path)
                .with_context(|| format!("could not remove {}", path.display()))?;
        }
    }
    step.change(format!(
        "create {} ({}, mode 0600; fallocate, dd if it fails or leaves holes)",
        path.display(),
        show(size)
    ));
    let mkswap = Cmd::new(
        sbin("mkswap"),
        format!("write a swap signature to {}", path.display()),
    )
    .arg(&path);
    if step.dry_run() {
        step.file_command(&mkswap)?;
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    let how = allocate(&path, size, Allocation::Fallocate)?;
    if how == Allocation::Dd {
        step.note("fallocate failed or left holes on this filesystem: wrote zeros with dd");
    }
    step.file_command(&mkswap)?;
    Ok(())
}

/// Step "swapon": enable the swap file now, unless `/proc/swaps` already lists it.
pub fn swapon_step(opts: &Options, step: &mut StepRun<'_>) -> anyhow::Result<()> {
    if let Err(reason) = wanted_size_cheap(opts.swap) {
        step.skip(reason);
        return Ok(());
    }
    let swapon = Cmd::new(sbin("swapon"), format!("enable swap on {SWAP_FILE}")).arg(SWAP_FILE);
    if !step.target.on_live_system() {
        step.live_command(&swapon)?;
        step.skip("live-system command (--root): listed below");
        return Ok(());
    }
    if read_active_swaps()?.iter().any(|s| s == SWAP_FILE) {
        step.summary(format!("{SWAP_FILE} is active (/proc/swaps)"));
        return Ok(());
    }
    if !Path::new(SWAP_FILE).exists() && !step.dry_run() {
        step.skip(format!(
            "no {SWAP_FILE} (the swap file step did not create one)"
        ));
        return Ok(());
    }
    step.summary(format!("enable {SWAP_FILE} now"));
    step.live_command(&swapon)?;
    Ok(())
}

fn wanted_size_cheap(swap: Swap) -> Result<(), String> {
    match swap {
        Swap::Off => Err("swap is off (--swap off / host.swap: off)".to_string()),
        _ => Ok(()),
    }
}

/// The user-data's `swap:`: `--swap SIZE`, or sized for the instance's RAM with `--swap auto`
/// (cloud-init's own `auto` would give a t2.micro only 1 GiB).
fn cloud_init_swap(instance: &Instance<'_>, view: &mut View) {
    view.swap = match instance.opts.swap {
        Swap::Off => None,
        Swap::Size(size) => Some(SwapView {
            filename: SWAP_FILE.into(),
            size: size.bytes(),
            why: format!("{size} (--swap)"),
        }),
        Swap::Auto => {
            let size = auto_size(instance.ram);
            Some(SwapView {
                filename: SWAP_FILE.into(),
                size,
                why: format!(
                    "{} for {} of RAM (AWS table; set --ram or --swap for another instance type)",
                    Size(size),
                    Size(instance.ram)
                ),
            })
        }
    };
}

/// Step "fstab": exactly one line for the swap file, everything else untouched.
pub fn fstab_step(opts: &Options, step: &mut StepRun<'_>) -> anyhow::Result<()> {
    if let Err(reason) = wanted_size_cheap(opts.swap) {
        step.skip(reason);
        return Ok(());
    }
    let live = Path::new("/etc/fstab");
    let path = step.target.path(live);
    // With --auto skipping (other swap present) there is no swap file to mount.
    if step.target.on_live_system() && !Path::new(SWAP_FILE).exists() && !step.dry_run() {
        step.skip(format!("no {SWAP_FILE} to mount"));
        return Ok(());
    }
    let (existing, mode) = match std::fs::read(&path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o7777;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
            (text, mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o644),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    step.summary(format!("{} has one line for {SWAP_FILE}", path.display()));
    if let Some(updated) = fstab_with_swap(&existing, SWAP_FILE) {
        step.write_file(live, updated.as_bytes(), mode)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_size_follows_the_aws_table() {
        // t2.micro's MemTotal is a little under 1 GiB.
        assert_eq!(auto_size(965 * MIB), 2 * GIB);
        assert_eq!(auto_size(450 * MIB), GIB);
        assert_eq!(auto_size(2 * GIB), 4 * GIB);
        assert_eq!(auto_size(3900 * MIB), 4 * GIB);
        assert_eq!(auto_size(8 * GIB), 8 * GIB);
        assert_eq!(auto_size(16 * GIB), 4 * GIB);
    }

    #[test]
    fn fstab_gets_one_line_and_keeps_everything_else() {
        let base =
            "# /etc/fstab: static file system information.\nUUID=abc / ext4 defaults 0 1\n\n";
        let once = fstab_with_swap(base, "/swapfile").unwrap();
        assert_eq!(once, format!("{base}/swapfile none swap sw 0 0\n"));
        assert_eq!(fstab_with_swap(&once, "/swapfile"), None);
        // No final newline: one is added, nothing else moves.
        let bare = "UUID=abc / ext4 defaults 0 1";
        assert_eq!(
            fstab_with_swap(bare, "/swapfile").unwrap(),
            "UUID=abc / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n"
        );
        // A commented-out swap line is a comment, not an entry.
        let commented = "#/swapfile none swap sw 0 0\n";
        assert_eq!(
            fstab_with_swap(commented, "/swapfile").unwrap(),
            "#/swapfile none swap sw 0 0\n/swapfile none swap sw 0 0\n"
        );
    }

    #[test]
    fn fstab_duplicates_from_seed_reruns_collapse_to_the_first() {
        let dup = "UUID=abc / ext4 defaults 0 1\n/swapfile swap swap defaults 0 0\n# keep\n/swapfile swap swap defaults 0 0\n";
        assert_eq!(
            fstab_with_swap(dup, "/swapfile").unwrap(),
            "UUID=abc / ext4 defaults 0 1\n/swapfile swap swap defaults 0 0\n# keep\n"
        );
        let other = "/swapfile2 none swap sw 0 0\n";
        assert!(fstab_with_swap(other, "/swapfile")
            .unwrap()
            .ends_with("/swapfile none swap sw 0 0\n"));
    }

    #[test]
    fn proc_swaps_lists_filenames() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/swapfile                               file\t\t2097148\t\t0\t\t-2\n/my\\040swap file 1 0 -3\n";
        assert_eq!(active_swaps(text), ["/swapfile", "/my swap"]);
        assert!(active_swaps("Filename Type Size Used Priority\n").is_empty());
    }

    #[test]
    fn dd_fallback_writes_a_fully_allocated_0600_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swapfile");
        let how = allocate(&path, 2 * MIB, Allocation::Dd).unwrap();
        assert_eq!(how, Allocation::Dd);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 2 * MIB);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(fully_allocated(&path).unwrap());
        assert!(!has_swap_signature(&path).unwrap());
        // create_new: an existing file is never clobbered.
        assert!(allocate(&path, MIB, Allocation::Dd).is_err());
    }

    #[test]
    fn a_sparse_file_is_not_fully_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(4 * MIB).unwrap();
        assert!(!fully_allocated(&path).unwrap());
    }
}
