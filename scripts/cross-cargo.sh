#!/usr/bin/env bash
# Run cargo in Debian's aarch64 cross toolchain (the root of scripts/cross-root.sh, built
# when missing): for scripts/release.sh and scripts/demo-image.sh on an x86_64 machine.
#
#   scripts/cross-cargo.sh CARGO_ARGS...      e.g. build --locked -p cutover --release --target aarch64-unknown-linux-gnu
#   scripts/cross-cargo.sh --target-dir       prints the cross target directory
#
# cargo runs inside the root, in a mount namespace of its own (its bind mounts vanish with
# it, even when killed): the repository read-only at /src/<checkout>, the cross target
# directory at /target, the host's CARGO_HOME (registry cache and its locks: crates come from
# the registry as usual) at /cargo-home. RUSTFLAGS passes through. No C code is compiled (no
# crate here builds any), so the cross gcc is only the linker and its static libc. Needs root.
#
# The target directory lives in the cache beside the root (<cache>/cross-root/<hash>/target,
# so it goes when the root does): every checkout on the machine shares the compiled crates,
# and a clean clone rebuilds only cutover itself. Each checkout is mounted at a path of its
# own (/src/<sha of its path and inode>): cargo judges a workspace crate fresh by its files'
# mtimes, which only mean something within one checkout, so one checkout's build is never
# taken for another's. cargo's own lock on the target directory (flock, the same inode through
# the bind mount) makes a second concurrent build wait.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "cross-cargo.sh: the cross build runs in a chroot: needs root" >&2; exit 1; }
if [[ "${1:-}" == --target-dir ]]; then
    # Only the path: the root's versions (its stderr) are shown when it is built in.
    err=$(mktemp)
    root=$(bash "$repo_root/scripts/cross-root.sh" 2>"$err") || { cat "$err" >&2; rm -f "$err"; exit 1; }
    rm -f "$err"
    echo "$(dirname "$root")/target"
    exit 0
fi
root=$(bash "$repo_root/scripts/cross-root.sh")
cross_dir="$(dirname "$root")/target"
checkout=$(printf '%s %s' "$repo_root" "$(stat -c %i "$repo_root")" | sha256sum | cut -c1-16)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
mkdir -p "$cross_dir" "$cargo_home" "$root/src/$checkout" "$root/target" "$root/cargo-home"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# shellcheck disable=SC2016
unshare --mount --propagation private bash -euc '
    root=$1; repo=$2; src=$3; cross_dir=$4; cargo_home=$5; shift 5
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --bind "$repo" "$root$src"
    mount -o remount,bind,ro "$root$src"
    mount --bind "$cross_dir" "$root/target"
    mount --bind "$cargo_home" "$root/cargo-home"
    exec chroot "$root" "$@"' _ "$root" "$repo_root" "/src/$checkout" "$cross_dir" "$cargo_home" \
    env -i PATH=/usr/bin:/bin HOME=/root LC_ALL=C.UTF-8 CARGO_HOME=/cargo-home \
        CARGO_TARGET_DIR=/target CARGO_TERM_COLOR=never \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        RUSTFLAGS="${RUSTFLAGS:-}" \
        sh -c 'cd "$0" && exec cargo "$@"' "/src/$checkout" "$@"
