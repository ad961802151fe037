#!/usr/bin/env bash
# The aarch64 cross toolchain: a Debian unstable (sid) root holding Debian's own rustc and
# cargo, the arm64 standard library (libstd-rust-dev:arm64) and the cross gcc
# (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross: the linker and the static glibc). No rustup
# download; the host's apt sources and system stay untouched (the root is a debootstrap'd
# chroot read from the mirror this machine's apt already uses).
#
#   scripts/cross-root.sh          prints the root's directory (building it when needed)
#
# Cached by script hash: ${XDG_CACHE_HOME:-$HOME/.cache}/cutover-test/cross-root/<hash>/root,
# <hash> being the sha256 of this script + scripts/debian-mirror.sh; a stale root of an older
# script is removed. scripts/release.sh --target aarch64-unknown-linux-gnu builds in it.
# Needs root (debootstrap, chroot).
#   CUTOVER_DEBIAN_MIRROR   the mirror (default: the one apt already uses)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
base=${XDG_CACHE_HOME:-$HOME/.cache}/cutover-test/cross-root
key=$(cat "$here/cross-root.sh" "$here/debian-mirror.sh" | sha256sum | cut -c1-16)
dir="$base/$key"

if [[ -f "$dir/ready" ]]; then
    echo "$dir/root"
    exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "cross-root.sh: building the aarch64 toolchain root needs root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null 2>&1 || [[ -x /usr/sbin/debootstrap ]] \
    || { echo "cross-root.sh: debootstrap is not installed (apt: debootstrap)" >&2; exit 1; }
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=scripts/debian-mirror.sh
source "$here/debian-mirror.sh"
mirror=$(debian_mirror)
suite=sid

mkdir -p "$base"
# One build at a time per cache (worktrees and CI share it): the second waits, then finds
# the root ready. While the lock is held no other build runs, so a `build.*` left here is a
# killed run's; a root of another script hash is swept only once it is a day old, since
# another checkout may be compiling in it right now.
exec 9>"$base/.lock"
flock 9
if [[ -f "$dir/ready" ]]; then
    echo "$dir/root"
    exit 0
fi
find "$base" -mindepth 1 -maxdepth 1 -name 'build.*' -exec rm -rf {} + 2>/dev/null || true
find "$base" -mindepth 1 -maxdepth 1 ! -name "$key" ! -name '.lock' ! -name 'build.*' -mtime +0 \
    -exec rm -rf {} + 2>/dev/null || true
work=$(mktemp -d "$base/build.XXXXXX")
root="$work/root"
cleanup() { umount "$root/proc" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start=$(date +%s)
echo "cross root: debootstrap $suite minbase from $mirror" >&2
# minbase alone: debootstrap's own resolver cannot configure rustc's dependency tree (it
# fails in the second stage); apt inside the root can.
# ca-certificates: apt inside the root must reach an https mirror too.
debootstrap --variant=minbase --include=ca-certificates "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" "$root/debootstrap/debootstrap.log" >&2 2>/dev/null; exit 1; }
echo "cross root: debootstrap done in $(( $(date +%s) - start ))s" >&2

# The toolchain. The cross gcc is only the linker driver, and libc6-dev-arm64-cross the
# static libc.a it links: Rust itself needs no C compiler for this tree (no crate builds C
# code). The arm64 standard library is a foreign-arch package (arm64 added to dpkg), and
# Multi-Arch: same, so its version is rustc's.
echo "deb [arch=amd64,arm64] $mirror $suite main" >"$root/etc/apt/sources.list"
# sid's Release file is valid for a week only, and a mirror that serves a snapshot (or a
# machine whose clock is ahead of it) would be refused as expired. The signature is still
# checked: only the freshness window is not.
echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99cutover-no-valid-until"
mount -t proc proc "$root/proc"
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
in_root dpkg --add-architecture arm64
in_root apt-get update -qq </dev/null
in_root apt-get install -y -qq --no-install-recommends \
    ca-certificates rustc cargo gcc-aarch64-linux-gnu libc6-dev-arm64-cross </dev/null >"$work/apt.log" 2>&1 \
    || { tail -n 30 "$work/apt.log" >&2; exit 1; }
# shellcheck disable=SC2016
rust_version=$(in_root dpkg-query -W -f '${Version}' rustc)
in_root apt-get install -y -qq --no-install-recommends "libstd-rust-dev:arm64=$rust_version" </dev/null >"$work/apt.log" 2>&1 \
    || { tail -n 30 "$work/apt.log" >&2; exit 1; }
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/*
umount "$root/proc"
echo "cross root: $(in_root rustc -V), $(in_root cargo -V), $(in_root aarch64-linux-gnu-gcc --version | head -n1)" >&2
[[ -d "$root/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib" ]] \
    || { echo "cross-root.sh: no aarch64 std in the root (libstd-rust-dev:arm64)" >&2; exit 1; }

rm -rf "$dir"
mkdir -p "$dir"
mv "$root" "$dir/root"
touch "$dir/ready"
echo "cross root: built in $(( $(date +%s) - start ))s ($(du -sh "$dir/root" | cut -f1))" >&2
echo "$dir/root"
