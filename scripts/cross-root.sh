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
# script is removed. Beside the root: `versions` (the exact package versions installed, printed
# on every call) and `target/` (scripts/cross-cargo.sh's cargo target directory, so a clean
# clone rebuilds only cutover itself). scripts/release.sh --target aarch64-unknown-linux-gnu
# builds in it. Needs root (debootstrap, chroot); every directory of the cache must be root's
# and writable by nobody else (a chroot run as root is no boundary).
#
# The rustc: the newest version for which the archive carries both rustc (amd64) and
# libstd-rust-dev (arm64), looking at sid and testing. sid's arm64 build of a new rustc can lag
# its amd64 one by days (then apt cannot install both); testing only takes a rustc once every
# release architecture has built it, so it always has a pair that agrees. No pair, or one
# older than Cargo.toml's rust-version: an error naming every version seen.
#   CUTOVER_DEBIAN_MIRROR   the mirror (default: the one apt already uses)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
base=${XDG_CACHE_HOME:-$HOME/.cache}/cutover-test/cross-root
key=$(cat "$here/cross-root.sh" "$here/debian-mirror.sh" | sha256sum | cut -c1-16)
dir="$base/$key"

# The root runs as root (chroot, with /dev bound in): whoever can write into the cache can
# replace its rustc and so run anything as root here. Every directory from the root up must
# be root's and not writable by group or others (a sticky one, like /tmp, is fine). Both the
# path as given and the one its symlinks resolve to are walked: a symlinked cache directory's
# real parents are where someone else could swap it.
check_owner() { # PATH
    local d uid mode
    for d in "$1" "$(realpath -m -- "$1")"; do
        while :; do
            if [[ -e "$d" ]]; then
                read -r uid mode < <(stat -L -c '%u %a' "$d")
                [[ "$uid" == 0 ]] || { echo "cross-root.sh: $d is owned by uid $uid, not root: refusing to run a toolchain as root from it (remove it, or set XDG_CACHE_HOME)" >&2; exit 1; }
                if (( 8#$mode & 8#022 )) && ! (( 8#$mode & 8#1000 )); then
                    echo "cross-root.sh: $d is writable by group or others (mode $mode): refusing to run a toolchain as root from it" >&2; exit 1
                fi
            fi
            [[ "$d" == / ]] && break
            d=$(dirname "$d")
        done
    done
}

# The versions installed, on stderr (the cached case included: the build log names them).
report() { sed 's/^/cross root: /' "$dir/versions" >&2; }

if [[ -f "$dir/ready" ]]; then
    [[ $(id -u) -ne 0 ]] || check_owner "$dir/root"
    report
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
# The crate's minimum rustc (Cargo.toml's rust-version).
msrv=$(sed -nE 's/^rust-version = "([0-9.]+)"$/\1/p' "$here/../Cargo.toml" | head -n1)

mkdir -p "$base"
check_owner "$base"
# One build at a time per cache (worktrees and CI share it): the second waits, then finds
# the root ready. While the lock is held no other build runs, so a `build.*` left here is a
# killed run's; a root of another script hash is swept only once it is a day old, since
# another checkout may be compiling in it right now.
exec 9>"$base/.lock"
flock 9
if [[ -f "$dir/ready" ]]; then
    report
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
# Multi-Arch: same, so its version must be rustc's.
printf 'deb [arch=amd64,arm64] %s %s main\n' "$mirror" sid "$mirror" testing >"$root/etc/apt/sources.list"
# sid's Release file is valid for a week only, and a mirror that serves a snapshot (or a
# machine whose clock is ahead of it) would be refused as expired. The signature is still
# checked: only the freshness window is not.
echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99cutover-no-valid-until"
mount -t proc proc "$root/proc"
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
in_root dpkg --add-architecture arm64
in_root apt-get update -qq </dev/null

# Every version of PACKAGE the sources carry (apt-cache show's Version fields), newest first;
# none when the archive has no such package (apt-cache then fails: the error below names
# what was seen, where pipefail would have ended the script with no message).
versions_of() {
    { in_root apt-cache show "$1" 2>/dev/null </dev/null || true; } | sed -n 's/^Version: //p' | sort -u | sort_versions
}
sort_versions() { # newest first, by dpkg's own ordering
    local vs=() v i j t
    while read -r v; do vs+=("$v"); done
    for ((i = 0; i < ${#vs[@]}; i++)); do
        for ((j = i + 1; j < ${#vs[@]}; j++)); do
            if in_root dpkg --compare-versions "${vs[j]}" gt "${vs[i]}"; then t=${vs[i]}; vs[i]=${vs[j]}; vs[j]=$t; fi
        done
    done
    [[ ${#vs[@]} -eq 0 ]] || printf '%s\n' "${vs[@]}"
}
rustc_versions=$(versions_of rustc:amd64)
std_versions=$(versions_of libstd-rust-dev:arm64)
rust_version=""
while read -r v; do
    [[ -n "$v" ]] && grep -qxF -- "$v" <<<"$std_versions" && { rust_version=$v; break; }
done <<<"$rustc_versions"
seen="rustc (amd64): $(tr '\n' ' ' <<<"$rustc_versions"); libstd-rust-dev (arm64): $(tr '\n' ' ' <<<"$std_versions")"
[[ -n "$rust_version" ]] || {
    echo "cross-root.sh: no rustc version that sid and testing carry for both amd64 and arm64 ($seen): the arm64 standard library must be rustc's own version; retry once the archive has caught up" >&2
    exit 1
}
newest=$(head -n1 <<<"$rustc_versions")
[[ "$rust_version" == "$newest" ]] \
    || echo "cross root: rustc $newest has no libstd-rust-dev:arm64 of its version yet; using $rust_version ($seen)" >&2
upstream=${rust_version%%[+~-]*}
if [[ -n "$msrv" ]] && ! in_root dpkg --compare-versions "$upstream" ge "$msrv"; then
    echo "cross-root.sh: Debian's rustc $rust_version is older than Cargo.toml's rust-version $msrv ($seen)" >&2
    exit 1
fi
# rustc, its cargo (the same source package) and the arm64 std at one version, so apt can
# only install a pair that agrees.
in_root apt-get install -y -qq --no-install-recommends \
    ca-certificates "rustc=$rust_version" "cargo=$rust_version" "libstd-rust-dev:arm64=$rust_version" \
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross </dev/null >"$work/apt.log" 2>&1 \
    || { tail -n 30 "$work/apt.log" >&2; echo "cross-root.sh: apt could not install rustc, cargo and libstd-rust-dev:arm64 $rust_version ($seen)" >&2; exit 1; }
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/*
umount "$root/proc"
[[ -d "$root/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib" ]] \
    || { echo "cross-root.sh: no aarch64 std in the root (libstd-rust-dev:arm64)" >&2; exit 1; }
# What the root holds, exactly: printed on every call and written into each aarch64 tarball
# (scripts/release.sh's BUILD-INFO).
# shellcheck disable=SC2016
{
    in_root dpkg-query -W -f '${Package}:${Architecture} ${Version}\n' \
        rustc cargo libstd-rust-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross libc6:arm64
    echo "rustc -V: $(in_root rustc -V)"
    echo "aarch64-linux-gnu-gcc --version: $(in_root aarch64-linux-gnu-gcc --version | head -n1)"
} >"$work/versions"
[[ "$(grep -c "^rustc:amd64 $rust_version\$\|^libstd-rust-dev:arm64 $rust_version\$" "$work/versions")" == 2 ]] \
    || { cat "$work/versions" >&2; echo "cross-root.sh: the installed rustc and libstd-rust-dev:arm64 are not both $rust_version" >&2; exit 1; }

rm -rf "$dir"
mkdir -p "$dir"
mv "$root" "$dir/root"
mv "$work/versions" "$dir/versions"
touch "$dir/ready"
report
echo "cross root: built in $(( $(date +%s) - start ))s ($(du -sh "$dir/root" | cut -f1))" >&2
echo "$dir/root"
