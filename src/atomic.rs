//! Atomic file replacement: write a temp file in the same directory, fsync, rename.
//!
//! A reader (nginx reloading, the next `cutover status`, a crash mid-write) sees the old file
//! or the new one, never half of either. The temp file sits beside the target because rename
//! is only atomic within one filesystem.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context as _;

/// The directory [`write`] creates its temp file in, and so must be able to write: `path`'s
/// parent, or `.` for a bare file name.
pub fn temp_dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `contents`, creating parent directories; `mode` sets the permissions.
pub fn write(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = temp_dir_of(path);
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".cutover-tmp")
        .tempfile_in(dir)
        .with_context(|| format!("could not create a temp file in {}", dir.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| {
            format!(
                "could not set permissions on a temp file in {}",
                dir.display()
            )
        })?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("could not write a temp file in {}", dir.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("could not replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_file_with_mode_and_leaves_no_temp_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write(&path, b"one", 0o644).unwrap();
        write(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }
}
