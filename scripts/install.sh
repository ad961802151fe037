#!/bin/sh
# Install a cutover release: download its tarball and sha256, verify, install the binary.
#
#   sh install.sh VERSION                          e.g. sh install.sh 0.1.0 (a leading v is accepted)
#   curl -fsSL URL/install.sh | sh -s VERSION      the same, the script read from stdin
#
# Picks the tarball for this machine by `uname -m` (x86_64/amd64 or aarch64/arm64 Linux;
# anything else is refused by name), checks it against its .sha256 (which must name that
# tarball) and refuses on a mismatch, leaving nothing installed; takes only the regular file
# cutover-VERSION-TRIPLE/cutover from it, copies it to a temp file in $DESTDIR$PREFIX/bin,
# runs its --version there (not in TMPDIR, which may be mounted noexec), then renames it over
# the old binary (atomic). A directory where the binary goes is refused, not installed into.
#
# Environment:
#   CUTOVER_RELEASE_URL  base URL: $CUTOVER_RELEASE_URL/vVERSION/cutover-VERSION-TRIPLE.tar.gz
#                        (default: the project's GitHub releases)
#   PREFIX               default /usr/local (so /usr/local/bin/cutover)
#   DESTDIR              prepended to PREFIX (staging, tests)
# Needs: sh, curl or wget, tar, gzip, sha256sum (or shasum), mktemp.
set -eu

# Everything is in functions called on the last line: piped into `sh`, the whole script is
# read before any of it runs, so a download cut short runs nothing, and nothing it starts can
# read the rest of the script from stdin.

usage() {
    echo "usage: sh install.sh VERSION   (or: curl -fsSL URL/install.sh | sh -s VERSION)" >&2
    echo "  e.g. sh install.sh 0.1.0; CUTOVER_RELEASE_URL, PREFIX and DESTDIR in the environment" >&2
}

die() { echo "install.sh: $*" >&2; exit 1; }

fetch() { # URL FILE
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 3 -o "$2" "$1" </dev/null
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$1" </dev/null
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

# The sha256 a `sha256sum` line gives for FILE_NAME: one line, `HASH  NAME` or `HASH *NAME`
# (surrounding blanks, a CR and upper-case hex tolerated). A line naming another file is
# refused: that hash says nothing about this tarball.
expected_sha256() { # SHA256_FILE FILE_NAME URL
    file=$1 want=$2 from=$3
    lines=$(tr -d '\r' <"$file" | grep -c '[^[:space:]]' || true)
    [ "$lines" = 1 ] || die "$from holds $lines lines, expected one: '<sha256>  $want'"
    # Split on blanks (globbing off: the line is the server's text).
    set -f
    # shellcheck disable=SC2046
    set -- $(tr -d '\r' <"$file" | grep '[^[:space:]]')
    set +f
    [ $# -eq 2 ] || die "$from is not '<sha256>  $want'"
    hash=$(printf '%s' "$1" | tr 'A-F' 'a-f')
    case "$hash" in
        *[!0-9a-f]*|'') die "$from does not hold a sha256: '$1'" ;;
    esac
    [ ${#hash} -eq 64 ] || die "$from does not hold a sha256: '$1'"
    [ "${2#\*}" = "$want" ] || die "$from is the sha256 of '${2#\*}', not of $want; nothing was installed"
    echo "$hash"
}

main() {
    [ $# -eq 1 ] || { usage; exit 2; }
    version=${1#v}
    case "$version" in
        ''|[!0-9A-Za-z]*|*[!0-9A-Za-z.+-]*) die "not a version: '$1' (expected e.g. 0.1.0)" ;;
    esac

    [ "$(uname -s)" = Linux ] || die "cutover releases are Linux binaries; this is $(uname -s)"
    arch=$(uname -m)
    case "$arch" in
        '') die "uname -m printed nothing: cannot tell which release this machine needs (there are x86_64 and aarch64)" ;;
        x86_64|amd64) triple=x86_64-unknown-linux-gnu ;;
        aarch64|arm64) triple=aarch64-unknown-linux-gnu ;;
        armv6l|armv7l|armv8l|armhf|arm)
            die "no cutover release for $arch (there are x86_64 and aarch64): a 32-bit ARM system; a Raspberry Pi 3/4/5 or an ARM server with a 64-bit OS reports aarch64" ;;
        *) die "no cutover release for $arch (there are x86_64 and aarch64)" ;;
    esac

    base=${CUTOVER_RELEASE_URL:-https://github.com/cutover-dev/cutover/releases/download}
    base=${base%/}
    name="cutover-$version-$triple"
    url="$base/v$version/$name.tar.gz"
    prefix=${PREFIX:-/usr/local}
    bindir="${DESTDIR:-}$prefix/bin"

    work=$(mktemp -d)
    tmp=""
    trap 'rm -rf "$work"; [ -z "$tmp" ] || rm -f "$tmp"' EXIT
    trap 'exit 130' INT TERM

    echo "install.sh: downloading $url" >&2
    fetch "$url" "$work/$name.tar.gz" || die "could not download $url"
    fetch "$url.sha256" "$work/$name.tar.gz.sha256" || die "could not download $url.sha256"

    expected=$(expected_sha256 "$work/$name.tar.gz.sha256" "$name.tar.gz" "$url.sha256") || exit 1
    actual=$(sha256_of "$work/$name.tar.gz")
    if [ "$actual" != "$expected" ]; then
        die "sha256 mismatch for $name.tar.gz: expected $expected, got $actual; nothing was installed"
    fi

    # Only the binary's member, as a plain file: a symlink or device there would make the
    # copy below install something else (or read something else), so it is refused.
    mkdir "$work/x"
    tar -xzf "$work/$name.tar.gz" -C "$work/x" --no-same-owner "$name/cutover" </dev/null 2>"$work/tar.err" \
        || die "$name.tar.gz holds no $name/cutover ($(head -n1 "$work/tar.err"))"
    bin="$work/x/$name/cutover"
    if [ -L "$bin" ] || [ ! -f "$bin" ]; then
        die "$name.tar.gz: $name/cutover is not a regular file; nothing was installed"
    fi
    mkdir -p "$bindir" 2>/dev/null || true
    if [ ! -d "$bindir" ] || [ ! -w "$bindir" ]; then
        die "cannot write to $bindir: run it as root (sudo sh install.sh $version) or set PREFIX (e.g. PREFIX=\$HOME/.local); nothing was installed"
    fi
    # mv onto a directory (or a symlink to one) would move the binary into it and report
    # success with nothing installed.
    [ ! -d "$bindir/cutover" ] || die "$bindir/cutover is a directory, not a binary: nothing was installed (remove it first)"
    # The temp file is mktemp's (never a name someone could have planted a symlink at), in
    # the binary's own directory: it is tried there, so a noexec TMPDIR does not matter, and
    # the rename below is atomic.
    tmp=$(mktemp "$bindir/.cutover.XXXXXX") || die "cannot create a temp file in $bindir"
    cp "$bin" "$tmp"
    chmod 0755 "$tmp"
    # Prove it runs on this machine before it replaces anything.
    got=$("$tmp" --version </dev/null) || die "the downloaded cutover does not run on this machine ($bindir may be mounted noexec); nothing was installed"
    [ "$got" = "cutover $version" ] || die "the downloaded binary says '$got', expected 'cutover $version'; nothing was installed"
    mv -f "$tmp" "$bindir/cutover"
    tmp=""
    echo "install.sh: installed $bindir/cutover ($got, $triple, sha256 $actual)" >&2
}

main "$@"
