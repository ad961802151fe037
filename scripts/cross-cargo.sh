#!/usr/bin/env bash
# Run cargo in Debian's aarch64 cross toolchain (the root of scripts/cross-root.sh, built
# when missing): for scripts/release.sh and scripts/demo-image.sh on an x86_64 machine.
#
#   scripts/cross-cargo.sh [--copy PATH DEST] CARGO_ARGS...
#       e.g. --copy aarch64-unknown-linux-gnu/release/cutover /tmp/x build --locked -p cutover --release --target aarch64-unknown-linux-gnu
#   --copy PATH DEST   after cargo succeeds, copy PATH (relative to the target directory) to
#                      DEST while still holding the target directory's lock: another
#                      checkout's build cannot replace it in between
#
# cargo runs inside the root, in a mount namespace of its own (its bind mounts vanish with
# it, even when killed): the repository read-only at /src, the cross target directory at
# /target, the host's CARGO_HOME (registry cache and its locks: crates come from the registry
# as usual) at /cargo-home. RUSTFLAGS passes through. No C code is compiled (no crate here
# builds any), so the cross gcc is only the linker and its static libc. Needs root.
#
# The target directory lives in the cache beside the root (<cache>/cross-root/<hash>/target,
# so it goes when the root does): every checkout on the machine shares the compiled
# dependencies, and a clean clone rebuilds only the workspace's own crates. One cross build at
# a time per target directory (flock on target/.lock, which a second one waits for). cargo
# judges a workspace crate fresh by its files' mtimes, which only mean something within one
# checkout (another worktree's older files would pass for built), so when the last build
# here was another checkout's (target/.checkout: its path and inode), the workspace crates'
# fingerprints are dropped first and they rebuild. No incremental data: it would be one
# checkout's, and large.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "cross-cargo.sh: the cross build runs in a chroot: needs root" >&2; exit 1; }
copy_from="" copy_to=""
if [[ "${1:-}" == --copy ]]; then
    copy_from=${2:?--copy needs PATH DEST}; copy_to=${3:?--copy needs PATH DEST}; shift 3
fi
root=$(bash "$repo_root/scripts/cross-root.sh")
# In use: a cold cross-root.sh of another script sweeps roots by this directory's age (a
# day), so one that another checkout builds in every day must not look a day old.
touch "$(dirname "$root")"
cross_dir="$(dirname "$root")/target"
cargo_home=${CARGO_HOME:-$HOME/.cargo}
mkdir -p "$cross_dir" "$cargo_home" "$root/src" "$root/target" "$root/cargo-home"

exec 8>"$cross_dir/.lock"
flock 8
checkout="$repo_root $(stat -c %i "$repo_root")"
if [[ "$(cat "$cross_dir/.checkout" 2>/dev/null)" != "$checkout" ]]; then
    find "$cross_dir" -mindepth 3 -maxdepth 4 -type d -path '*/.fingerprint/cutover-*' -exec rm -rf {} + 2>/dev/null || true
    rm -f "$cross_dir/.checkout"
fi

cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# shellcheck disable=SC2016
unshare --mount --propagation private bash -euc '
    root=$1; repo=$2; cross_dir=$3; cargo_home=$4; shift 4
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --bind "$repo" "$root/src"
    mount -o remount,bind,ro "$root/src"
    mount --bind "$cross_dir" "$root/target"
    mount --bind "$cargo_home" "$root/cargo-home"
    exec chroot "$root" "$@"' _ "$root" "$repo_root" "$cross_dir" "$cargo_home" \
    env -i PATH=/usr/bin:/bin HOME=/root LC_ALL=C.UTF-8 CARGO_HOME=/cargo-home \
        CARGO_TARGET_DIR=/target CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0 \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        RUSTFLAGS="${RUSTFLAGS:-}" \
        sh -c 'cd /src && exec cargo "$@"' _ "$@"
echo "$checkout" >"$cross_dir/.checkout"
if [[ -n "$copy_from" ]]; then
    [[ -f "$cross_dir/$copy_from" ]] || { echo "cross-cargo.sh: cargo built no $copy_from" >&2; exit 1; }
    cp "$cross_dir/$copy_from" "$copy_to"
fi
