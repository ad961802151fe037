#!/usr/bin/env bash
# Build cutover's release artifact: a statically linked Linux binary in a tarball, with its sha256.
#
#   scripts/release.sh [--profile release|dev] [--target TRIPLE] [--version V] [--out DIR]
#
# Writes DIR/cutover-V-TRIPLE.tar.gz (one directory cutover-V-TRIPLE/ holding `cutover`,
# README.md and BUILD-INFO: version, target, profile and the exact toolchain, also logged)
# and DIR/cutover-V-TRIPLE.tar.gz.sha256 (`sha256sum` format, so `sha256sum -c` checks it) and DIR/install.sh (scripts/install.sh). Prints the tarball's path on stdout, progress on stderr.
#
#   --profile release   (default) what a release ships: LTO, stripped
#   --profile dev       a static binary from the tests' own dev build: for this machine's
#                       target one extra link instead of a second build of every dependency;
#                       for the cross target a dev build (no LTO), stripped
#   --target TRIPLE     x86_64-unknown-linux-gnu (default) or aarch64-unknown-linux-gnu.
#                       On an x86_64 machine the aarch64 build runs in Debian's own cross
#                       toolchain (rustc, libstd-rust-dev:arm64, gcc-aarch64-linux-gnu), a
#                       cached chroot made by scripts/cross-root.sh (needs root and debootstrap)
#   --version V         default: the version in Cargo.toml
#   --out DIR           default: target/dist
#
# Static glibc (`-C target-feature=+crt-static` on the gnu target) needs no libc at run time:
# the binary is checked to have no program interpreter and no shared libraries, and to be
# an ELF of the target's architecture. Honours CARGO_TARGET_DIR (not for the cross build,
# whose target directory is cached beside its root: scripts/cross-cargo.sh) and CARGO_HOME
# (crates come from the registry as usual, through the host's CARGO_HOME bound into the
# chroot).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
profile=release
target=x86_64-unknown-linux-gnu
version=""
out=""

usage() { sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --profile) profile=${2:?--profile needs release or dev}; shift 2 ;;
        --target) target=${2:?--target needs a triple}; shift 2 ;;
        --version) version=${2:?--version needs a version}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "release.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$profile" in release|dev) ;; *) echo "release.sh: --profile is release or dev, not $profile" >&2; exit 2 ;; esac
case "$target" in
    x86_64-unknown-linux-gnu|aarch64-unknown-linux-gnu) ;;
    *) echo "release.sh: --target is x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu, not $target" >&2; exit 2 ;;
esac
if [[ -z "$version" ]]; then
    version=$(sed -nE 's/^version = "([^"]+)"$/\1/p' "$repo_root/Cargo.toml" | head -n1)
fi
[[ "$version" =~ ^[0-9A-Za-z][0-9A-Za-z.+-]*$ ]] || { echo "release.sh: not a version: '$version'" >&2; exit 2; }
target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
out=${out:-$target_dir/dist}

log() { echo "release: $*" >&2; }

# --- the static binary ----------------------------------------------------------------------
start=$(date +%s)
scratch=$(mktemp -d)
build_log="$scratch/build.log"
trap 'rm -rf "$scratch"' EXIT
machine=$(uname -m)
host_triple="$machine-unknown-linux-gnu"

# Cross: cargo in Debian's cross toolchain root (scripts/cross-cargo.sh), the binary copied
# out under the shared target directory's lock.
cross_build() { # CARGO_PROFILE EXTRA_RUSTFLAGS
    bin="$scratch/cutover"
    env -u CARGO_ENCODED_RUSTFLAGS RUSTFLAGS="-C target-feature=+crt-static${2:+ $2}" \
        bash "$repo_root/scripts/cross-cargo.sh" \
        --copy "$target/$([[ $1 == dev ]] && echo debug || echo "$1")/cutover" "$bin" \
        build --locked -p cutover --bin cutover --profile "$1" --target "$target"
}

# What built it, for BUILD-INFO and the log: the cross root's exact package versions, or this
# machine's rustc.
if [[ "$target" != "$host_triple" ]]; then
    [[ "$machine" == x86_64 && "$target" == aarch64-unknown-linux-gnu ]] \
        || { echo "release.sh: no cross toolchain for $target on $machine" >&2; exit 2; }
    # The toolchain root first, its progress and versions shown (minutes when not cached).
    cross_root=$(bash "$repo_root/scripts/cross-root.sh")
    toolchain=$(cat "$(dirname "$cross_root")/versions")
    # The versions file is written once, when the root is built: the root's rustc and arm64
    # std as dpkg has them now must be the ones it names, or BUILD-INFO would not say what
    # compiled this binary (an apt-get run in the root by hand, an edited file).
    # shellcheck disable=SC2016
    now=$(chroot "$cross_root" dpkg-query -W -f '${Package}:${Architecture} ${Version}\n' \
        rustc libstd-rust-dev:arm64 2>&1) \
        || { log "could not read the cross root's packages ($cross_root): $now"; exit 1; }
    while read -r line; do
        grep -qxF -- "$line" <<<"$toolchain" || {
            log "the cross root holds $line, which its versions file does not name (changed since it was built): remove $(dirname "$cross_root") to rebuild it"
            exit 1
        }
    done <<<"$now"
    log "building cutover $version ($profile profile, static, --target $target in Debian's cross toolchain)"
    if [[ "$profile" == release ]]; then
        cross_build release "" 2>"$build_log" || { cat "$build_log" >&2; exit 1; }
    else
        cross_build dev "-C strip=symbols" 2>"$build_log" || { cat "$build_log" >&2; exit 1; }
    fi
elif [[ "$profile" == release ]]; then
    toolchain="rustc -V: $(cd "$repo_root" && rustc -V)"
    # RUSTFLAGS with an explicit --target only reach target artifacts (not build scripts or
    # proc macros) and land in target/<triple>/, so the host's dev builds keep their cache.
    # (CARGO_ENCODED_RUSTFLAGS, even empty, would override RUSTFLAGS: drop it.)
    log "building cutover $version (release profile, static, --target $target)"
    if ! (cd "$repo_root" && env -u CARGO_ENCODED_RUSTFLAGS \
            RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
            cargo build --locked -p cutover --bin cutover --release --target "$target" 2>"$build_log"); then
        cat "$build_log" >&2; exit 1
    fi
    bin="$target_dir/$target/release/cutover"
else
    # The tests' build: only the final link is static (`cargo rustc` passes the flags to the
    # binary's crate alone), so every dependency is the test build's own, already compiled;
    # the cost is one more link. Debug info stripped: a 20 MB binary instead of ~100 MB.
    toolchain="rustc -V: $(cd "$repo_root" && rustc -V)"
    log "building cutover $version (dev profile, static link of the test build's crates)"
    if ! (cd "$repo_root" && cargo rustc --locked -p cutover --bin cutover --profile dev \
            -- -C target-feature=+crt-static -C strip=symbols 2>"$build_log"); then
        cat "$build_log" >&2; exit 1
    fi
    bin="$target_dir/debug/cutover"
fi
[[ -x "$bin" ]] || { log "no binary at $bin"; exit 1; }
log "built in $(( $(date +%s) - start ))s: $bin ($(stat -c %s "$bin") bytes)"

# Static means: no program interpreter and no dynamic section. (`file` reads any arch.)
file_out=$(file -b "$bin")
if [[ "$file_out" != *"statically linked"* && "$file_out" != *"static-pie linked"* ]]; then
    log "the binary is not static: $file_out"; exit 1
fi
case "$target" in
    x86_64-*) elf_arch="x86-64" ;;
    aarch64-*) elf_arch="ARM aarch64" ;;
esac
[[ "$file_out" == *"$elf_arch"* ]] || { log "the binary is not an $elf_arch ELF: $file_out"; exit 1; }

# --- tarball and checksum -------------------------------------------------------------------
name="cutover-$version-$target"
stage=$(mktemp -d)
trap 'rm -rf "$scratch" "$stage"' EXIT
mkdir "$stage/$name"
install -m 0755 "$bin" "$stage/$name/cutover"
install -m 0644 "$repo_root/README.md" "$stage/$name/README.md"
printf 'cutover %s\ntarget %s\nprofile %s\n%s\n' "$version" "$target" "$profile" "$toolchain" >"$stage/$name/BUILD-INFO"
log "toolchain: $(grep '^rustc -V: ' <<<"$toolchain" | cut -d' ' -f3-)"
mkdir -p "$out"
tarball="$out/$name.tar.gz"
# Reproducible: fixed owner, mtime and order.
tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -C "$stage" -cf - "$name" \
    | gzip -n -9 >"$tarball.tmp"
mv "$tarball.tmp" "$tarball"
(cd "$out" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256.tmp" && mv "$name.tar.gz.sha256.tmp" "$name.tar.gz.sha256")
# The installer travels with the tarballs: CI fetches $CUTOVER_RELEASE_URL/vVERSION/install.sh.
install -m 0755 "$repo_root/scripts/install.sh" "$out/install.sh"
log "wrote $tarball ($(stat -c %s "$tarball") bytes) and $name.tar.gz.sha256"
echo "$tarball"
