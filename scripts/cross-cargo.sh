#!/usr/bin/env bash
# Run cargo in Debian's aarch64 cross toolchain (the root of scripts/cross-root.sh, built
# when missing): for scripts/release.sh and scripts/demo-image.sh on an x86_64 machine.
#
#   scripts/cross-cargo.sh CARGO_ARGS...      e.g. build --locked -p cutover --release --target aarch64-unknown-linux-gnu
#
# cargo runs inside the root, in a mount namespace of its own (its bind mounts vanish with
# it, even when killed): the repository read-only at /src, the cross target directory
# (${CARGO_TARGET_DIR:-target}/cross-debian, printed by --target-dir) at /target, the host's
# CARGO_HOME (registry cache and its locks: crates come from the registry as usual) at
# /cargo-home. RUSTFLAGS passes through. No C code is compiled (no crate here builds any),
# so the cross gcc is only the linker and its static libc. Needs root.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cross_dir="${CARGO_TARGET_DIR:-$repo_root/target}/cross-debian"
if [[ "${1:-}" == --target-dir ]]; then echo "$cross_dir"; exit 0; fi
[[ $(id -u) -eq 0 ]] || { echo "cross-cargo.sh: the cross build runs in a chroot: needs root" >&2; exit 1; }
root=$(bash "$repo_root/scripts/cross-root.sh")
cargo_home=${CARGO_HOME:-$HOME/.cargo}
mkdir -p "$cross_dir" "$cargo_home" "$root/src" "$root/target" "$root/cargo-home"
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
        CARGO_TARGET_DIR=/target CARGO_TERM_COLOR=never \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        RUSTFLAGS="${RUSTFLAGS:-}" \
        sh -c 'cd /src && exec cargo "$@"' _ "$@"
