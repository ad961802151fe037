//! The box's releases: `<remote.dir>/releases/<stamp>` each hold one synced copy of the
//! project, and `current` names the one last deployed. A sync only unpacks a new release; the
//! command that uses it makes it `current` once it succeeded ([`promote`]), under the
//! project's deploy lock, so a deploy refused by the lock (or one that failed) never moves
//! `current`, and old releases are pruned only there, never one in use.
//!
//! Pruned: releases older than `current` beyond the newest [`KEEP_OLDER`], and releases newer
//! than `current` (dry runs, refused or failed deploys); either only once a day old, when no
//! command can still be running in them (a deploy queued with `--lock-wait` reads its release
//! while it waits, and may be older than the one just promoted).

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use crate::state::{Holder, StateDir};

/// Releases older than `current` that are kept (for inspection; rollbacks do not need them).
pub const KEEP_OLDER: usize = 4;

/// How long a release newer than `current` may still be in use by a command.
const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How long a promote waits for the deploy lock (another deploy may have started).
pub const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Makes `release` (`<root>/releases/<stamp>`) the box's `current` release, then prunes;
/// under the deploy lock, waiting up to `wait` for it.
pub fn promote(release: &Path, state_dir: &Path, wait: Duration) -> anyhow::Result<()> {
    let (root, stamp) = split(release)?;
    // Only a copy the sync made: a hand-typed `--on-box-promote` elsewhere must not prune
    // the directories beside it.
    if !release.join(crate::config::SYNC_MARKER).is_file() {
        anyhow::bail!(
            "{} is not a synced release (no {}): not making it current",
            release.display(),
            crate::config::SYNC_MARKER
        );
    }
    let holder = Holder {
        pid: std::process::id(),
        user: crate::state::current_user(),
        started: crate::state::now_rfc3339(),
        action: format!("make release {stamp} current"),
    };
    let _lock = StateDir::new(state_dir)
        .lock(wait, &holder)
        .context("the command succeeded, but its release was not made `current`")?;
    let current = root.join("current");
    // A newer release promoted while this command waited for the lock (a deploy queued with
    // --lock-wait that finished first) stays current: `current` never moves back in time.
    let newer = std::fs::read_link(&current)
        .ok()
        .and_then(|link| link.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|now| now.as_str() > stamp);
    if newer {
        return prune(&root.join("releases"), stamp, SystemTime::now());
    }
    let staged = root.join(".current.new");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(Path::new("releases").join(stamp), &staged)
        .with_context(|| format!("could not create {}", staged.display()))?;
    std::fs::rename(&staged, &current)
        .with_context(|| format!("could not point {} at {stamp}", current.display()))?;
    prune(&root.join("releases"), stamp, SystemTime::now())
}

/// `<root>/releases/<stamp>` → (`<root>`, `<stamp>`); anything else is not a release.
fn split(release: &Path) -> anyhow::Result<(&Path, &str)> {
    let stamp = release.file_name().and_then(|n| n.to_str());
    let releases = release.parent();
    match (stamp, releases) {
        (Some(stamp), Some(releases))
            if releases.file_name().is_some_and(|n| n == "releases") && !stamp.starts_with('.') =>
        {
            let root = releases.parent().unwrap_or(Path::new("/"));
            Ok((root, stamp))
        }
        _ => anyhow::bail!(
            "{} is not a synced release (expected <remote.dir>/releases/<stamp>)",
            release.display()
        ),
    }
}

/// Removes what [`promote`]'s module doc says; `current` is never a candidate.
fn prune(releases: &Path, current: &str, now: SystemTime) -> anyhow::Result<()> {
    let mut older = Vec::new();
    for entry in std::fs::read_dir(releases)
        .with_context(|| format!("could not list {}", releases.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == current {
            continue;
        }
        // Stamps are zero-padded seconds first: text order is time order.
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_AFTER);
        if name.starts_with('.') || name.as_str() > current {
            if stale {
                remove(&entry.path())?;
            }
        } else {
            older.push((name, stale));
        }
    }
    older.sort();
    let excess = older.len().saturating_sub(KEEP_OLDER);
    for (name, stale) in &older[..excess] {
        if *stale {
            remove(&releases.join(name))?;
        }
    }
    Ok(())
}

fn remove(path: &Path) -> anyhow::Result<()> {
    std::fs::remove_dir_all(path).with_context(|| format!("could not remove {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(root: &Path, stamp: &str) -> std::path::PathBuf {
        let dir = root.join("releases").join(stamp);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(crate::config::SYNC_MARKER), "{}").unwrap();
        dir
    }

    fn names(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root.join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn promote_points_current_at_the_release_and_keeps_newer_ones_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let state = root.join(".cutover");
        for s in 1..=7 {
            release(root, &format!("000000000{s}.0-1"));
        }
        // A deploy in release 3 succeeds while 4–7 were synced by later, refused runs (or
        // are still waiting for the lock): nothing newer than 3 may go.
        let promoted = root.join("releases/0000000003.0-1");
        promote(&promoted, &state, Duration::ZERO).unwrap();
        assert_eq!(
            std::fs::read_link(root.join("current")).unwrap(),
            Path::new("releases/0000000003.0-1")
        );
        assert_eq!(names(root).len(), 7, "{:?}", names(root));
        // Later, release 7 is promoted: 3–6 are older now. All are fresh, so all stay (one
        // may be read by a deploy waiting for the lock)...
        promote(
            &root.join("releases/0000000007.0-1"),
            &state,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(names(root).len(), 7, "{:?}", names(root));
        // ...and a day later, the newest 4 of them stay.
        let later = SystemTime::now() + STALE_AFTER + Duration::from_secs(60);
        prune(&root.join("releases"), "0000000007.0-1", later).unwrap();
        assert_eq!(
            names(root),
            [
                "0000000003.0-1",
                "0000000004.0-1",
                "0000000005.0-1",
                "0000000006.0-1",
                "0000000007.0-1"
            ]
        );
    }

    #[test]
    fn current_never_moves_back_to_an_older_release() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let state = root.join(".cutover");
        let older = release(root, "0000000001.0-1");
        let newer = release(root, "0000000002.0-1");
        promote(&newer, &state, Duration::ZERO).unwrap();
        // The older deploy finished first but promotes last: nothing moves.
        promote(&older, &state, Duration::ZERO).unwrap();
        assert_eq!(
            std::fs::read_link(root.join("current")).unwrap(),
            Path::new("releases/0000000002.0-1")
        );
    }

    #[test]
    fn newer_releases_go_only_once_stale() {
        let dir = tempfile::tempdir().unwrap();
        let releases = dir.path().join("releases");
        for s in [
            "0000000001.0-1",
            "0000000002.0-1",
            ".incoming-0000000003.0-1",
        ] {
            release(dir.path(), s);
        }
        let later = SystemTime::now() + STALE_AFTER + Duration::from_secs(60);
        prune(&releases, "0000000001.0-1", SystemTime::now()).unwrap();
        assert_eq!(names(dir.path()).len(), 3);
        prune(&releases, "0000000001.0-1", later).unwrap();
        assert_eq!(names(dir.path()), ["0000000001.0-1"]);
    }

    #[test]
    fn only_a_release_dir_is_promoted() {
        let dir = tempfile::tempdir().unwrap();
        // Beside other folders in a `releases/` that the sync did not make: nothing moves.
        for other in [
            "aaa-notes",
            "bbb-blog",
            "ccc-shop",
            "ddd-api",
            "eee-old",
            "myapp",
        ] {
            std::fs::create_dir_all(dir.path().join("releases").join(other)).unwrap();
        }
        for bad in [
            "project",
            "releases/.incoming-1",
            "releases",
            "releases/myapp",
        ] {
            let err = promote(
                &dir.path().join(bad),
                &dir.path().join(".cutover"),
                Duration::ZERO,
            )
            .unwrap_err();
            assert!(
                err.to_string().contains("is not a synced release"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_held_lock_keeps_current_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let state = root.join(".cutover");
        let first = release(root, "0000000001.0-1");
        promote(&first, &state, Duration::ZERO).unwrap();
        let holder = Holder {
            pid: 1,
            user: "someone".into(),
            started: "now".into(),
            action: "deploy".into(),
        };
        let _held = StateDir::new(&state).lock(Duration::ZERO, &holder).unwrap();
        let second = release(root, "0000000002.0-1");
        let err = promote(&second, &state, Duration::ZERO).unwrap_err();
        assert!(
            format!("{err:#}").contains("was not made `current`"),
            "{err:#}"
        );
        assert_eq!(
            std::fs::read_link(root.join("current")).unwrap(),
            Path::new("releases/0000000001.0-1")
        );
    }
}
