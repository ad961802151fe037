#!/bin/sh
# Install a cutover release: download its tarball and sha256, verify, install the binary.
#
#   sh install.sh VERSION            e.g. sh install.sh 0.1.0   (a leading v is accepted)
#
# Picks the tarball for this machine (x86_64 or aarch64 Linux), checks it against its
# .sha256 and refuses on a mismatch, leaving nothing installed; then installs `cutover`
# into $DESTDIR$PREFIX/bin atomically (a temp file renamed over the old binary).
#
# Environment:
#   CUTOVER_RELEASE_URL  base URL: $CUTOVER_RELEASE_URL/vVERSION/cutover-VERSION-TRIPLE.tar.gz
#                        (default: the project's GitHub releases)
#   PREFIX               default /usr/local (so /usr/local/bin/cutover)
#   DESTDIR              prepended to PREFIX (staging, tests)
#   CUTOVER_ARCH         override `uname -m` (x86_64, aarch64/arm64)
# Needs: sh, curl or wget, tar, gzip, sha256sum (or shasum), mktemp.
set -eu

default_url=https://github.com/cutover-dev/cutover/releases/download

die() { echo "install.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
version=${1#v}
case "$version" in
    ''|*[!0-9A-Za-z.+-]*) die "not a version: '$1' (expected e.g. 0.1.0)" ;;
esac

[ "$(uname -s)" = Linux ] || die "cutover releases are Linux binaries; this is $(uname -s)"
arch=${CUTOVER_ARCH:-$(uname -m)}
case "$arch" in
    x86_64|amd64) triple=x86_64-unknown-linux-gnu ;;
    aarch64|arm64) triple=aarch64-unknown-linux-gnu ;;
    *) die "no cutover release for $arch (there are x86_64 and aarch64)" ;;
esac

base=${CUTOVER_RELEASE_URL:-$default_url}
base=${base%/}
name="cutover-$version-$triple"
url="$base/v$version/$name.tar.gz"
prefix=${PREFIX:-/usr/local}
bindir="${DESTDIR:-}$prefix/bin"

fetch() { # URL FILE
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 3 -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$1"
    else
        die "need curl or wget to download $1"
    fi
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        die "need sha256sum or shasum to verify the download"
    fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"; rm -f "$bindir/.cutover.tmp.$$"' EXIT
trap 'exit 130' INT TERM

echo "install.sh: downloading $url" >&2
fetch "$url" "$work/$name.tar.gz" || die "could not download $url"
fetch "$url.sha256" "$work/$name.tar.gz.sha256" || die "could not download $url.sha256"

expected=$(cut -d' ' -f1 <"$work/$name.tar.gz.sha256")
case "$expected" in
    *[!0-9a-f]*|'') die "$url.sha256 does not hold a sha256" ;;
esac
[ ${#expected} -eq 64 ] || die "$url.sha256 does not hold a sha256"
actual=$(sha256_of "$work/$name.tar.gz")
if [ "$actual" != "$expected" ]; then
    die "sha256 mismatch for $name.tar.gz: expected $expected, got $actual; nothing was installed"
fi

tar -xzf "$work/$name.tar.gz" -C "$work"
[ -f "$work/$name/cutover" ] || die "$name.tar.gz holds no $name/cutover"
# Prove it runs on this machine before it replaces anything.
got=$("$work/$name/cutover" --version) || die "the downloaded cutover does not run on this machine"
[ "$got" = "cutover $version" ] || die "the downloaded binary says '$got', expected 'cutover $version'"

mkdir -p "$bindir"
cp "$work/$name/cutover" "$bindir/.cutover.tmp.$$"
chmod 0755 "$bindir/.cutover.tmp.$$"
mv -f "$bindir/.cutover.tmp.$$" "$bindir/cutover"
echo "install.sh: installed $bindir/cutover ($got, $triple, sha256 $actual)" >&2
