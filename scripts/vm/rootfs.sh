#!/usr/bin/env bash
# Stage 1 of the test VM: a pristine Debian bookworm root filesystem as a tarball, plus the
# cloud kernel, plus the .debs `cutover bootstrap` will install, already in apt's cache.
#
#   scripts/vm/rootfs.sh OUT_DIR      writes OUT_DIR/rootfs.tar and OUT_DIR/vmlinuz
#
# Why this shape (measured on a nested guest without KVM, see issue #16):
#   - debootstrap minbase + systemd-sysv, udev (loads virtio_net and the modules docker
#     needs), openssh-server, iproute2, ca-certificates, sudo:
#     what an EC2 Debian image has that cutover relies on, nothing more;
#   - Debian's cloud kernel, unpacked with `dpkg -x` (no initramfs: NVMe and ext4 are built
#     in); its modules go into the root filesystem (virtio_net, overlay, bridge, netfilter);
#   - docker.io, docker-compose and nginx are DOWNLOADED (not installed) into
#     /var/cache/apt/archives: the box stays pristine (bootstrap really installs them), but
#     apt inside the emulated VM fetches nothing big.
# Needs root (debootstrap, chroot). The mirror is the one this machine's apt uses.
set -euo pipefail

out=${1:?usage: rootfs.sh OUT_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/debian-mirror.sh
source "$here/../debian-mirror.sh"
mirror=$(debian_mirror)
suite=bookworm

work=$(mktemp -d "${out%/}.rootfs.XXXXXX")
root="$work/root"
cleanup() {
    # A chroot's /proc must be gone before the tree is removed.
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "vm rootfs: debootstrap $suite minbase from $mirror"
debootstrap --variant=minbase \
    --include=systemd-sysv,udev,openssh-server,iproute2,ca-certificates,sudo,kmod,curl \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
EOF
mount -t proc proc "$root/proc"
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
in_root apt-get update -qq
# What bootstrap's `apt-get install -y docker.io docker-compose nginx` will want (with
# recommends, as bootstrap runs it), fetched now.
in_root apt-get install -y -qq --download-only docker.io docker-compose nginx >/dev/null
echo "vm rootfs: $(ls "$root/var/cache/apt/archives/"*.deb | wc -l) .debs pre-downloaded for bootstrap"

# The kernel: unpacked, not installed (an installed kernel package wants an initramfs).
kdir="$work/kernel"
mkdir -p "$kdir"
kpkg=$(in_root apt-cache depends linux-image-cloud-amd64 | sed -nE 's/^ *Depends: (linux-image-[0-9].*)$/\1/p' | head -n1)
[[ -n "$kpkg" ]] || { echo "no linux-image-*-cloud-amd64 package found" >&2; exit 1; }
(cd "$kdir" && in_root sh -c "cd /tmp && apt-get download -qq $kpkg" && mv "$root"/tmp/"$kpkg"_*.deb .)
dpkg -x "$kdir/$kpkg"_*.deb "$kdir/x"
kver=${kpkg#linux-image-}
mkdir -p "$root/lib/modules"
cp -a "$kdir/x/lib/modules/$kver" "$root/lib/modules/"
in_root depmod "$kver"
echo "vm rootfs: kernel $kver"

umount "$root/proc"
mkdir -p "$out"
cp "$kdir/x/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
tar -C "$root" --numeric-owner -cf "$out/rootfs.tar.tmp" .
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/rootfs.tar.tmp" "$out/rootfs.tar"
echo "vm rootfs: $(du -h "$out/rootfs.tar" | cut -f1) in $out/rootfs.tar"
