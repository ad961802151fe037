#!/usr/bin/env bash
# The test VM's disk: a fresh EC2-style Debian box (1 GiB, no swap, user `admin` with
# passwordless sudo), cached and rebuilt only when these scripts change.
#
#   scripts/vm/image.sh            prints the image directory (building it when needed)
#
# The image directory (${XDG_CACHE_HOME:-$HOME/.cache}/cutover-test/vm/<hash>/) holds:
#   disk.raw        sparse 8 GiB ext4 root filesystem (never booted: each run boots an overlay)
#   vmlinuz         the kernel, booted with -kernel (no boot loader, no initramfs)
#   client_key      the SSH key of `admin` (authorized_keys in the image)
#   host_key.pub    the VM's SSH host key, generated here so the test can pin it
# <hash> is the sha256 of scripts/vm/rootfs.sh + image.sh; the root filesystem tarball of
# stage 1 is cached apart under rootfs-<hash of rootfs.sh>, so editing only this file
# rebuilds in seconds. Needs root (debootstrap, chroot, file ownership in the image).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
base=${XDG_CACHE_HOME:-$HOME/.cache}/cutover-test/vm
rootfs_key=$(cat "$here/rootfs.sh" "$here/../debian-mirror.sh" | sha256sum | cut -c1-16)
image_key=$(cat "$here/rootfs.sh" "$here/../debian-mirror.sh" "$here/image.sh" | sha256sum | cut -c1-16)
stage1="$base/rootfs-$rootfs_key"
image="$base/$image_key"

if [[ -f "$image/disk.raw" && -f "$image/vmlinuz" && -f "$image/client_key" ]]; then
    echo "$image"
    exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "building the VM image needs root (debootstrap, chroot)" >&2; exit 1; }
mkdir -p "$base"
# A stale build of an older script is dead weight (an image is ~1 GB on disk).
find "$base" -mindepth 1 -maxdepth 1 ! -name "rootfs-$rootfs_key" ! -name "$image_key" \
    -exec rm -rf {} + 2>/dev/null || true

if [[ ! -f "$stage1/rootfs.tar" ]]; then
    bash "$here/rootfs.sh" "$stage1" >&2
else
    echo "vm image: root filesystem cached ($stage1)" >&2
fi

work=$(mktemp -d "$base/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"
tar -C "$root" -xf "$stage1/rootfs.tar"

echo "box" >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 box\n' >"$root/etc/hosts"
printf '/dev/nvme0n1 / ext4 rw,noatime,errors=remount-ro 0 1\n' >"$root/etc/fstab"
# slirp's DNS; minbase bookworm has no resolved.
printf 'nameserver 10.0.2.3\n' >"$root/etc/resolv.conf"
mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/10-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
EOF
ln -sf /lib/systemd/system/systemd-networkd.service \
    "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
# Not waiting for "online" and no apt timers: they would lock apt under bootstrap's feet.
for unit in systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
    apt-daily.service apt-daily-upgrade.service e2scrub_reap.service e2scrub_all.timer \
    fstrim.timer man-db.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# A serial console root shell is not needed; the serial log is the kernel + systemd output.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"

# The EC2 user: `admin`, passwordless sudo, the test's key.
chroot "$root" useradd --create-home --shell /bin/bash --groups sudo admin
printf 'admin ALL=(ALL) NOPASSWD:ALL\n' >"$root/etc/sudoers.d/90-admin"
chmod 0440 "$root/etc/sudoers.d/90-admin"
ssh-keygen -q -t ed25519 -N '' -C cutover-vm-test -f "$work/client_key"
install -d -m 0700 -o 1000 -g 1000 "$root/home/admin/.ssh"
install -m 0600 -o 1000 -g 1000 "$work/client_key.pub" "$root/home/admin/.ssh/authorized_keys"

# The VM's host key, made here so the test pins it (known_hosts) instead of trusting on first use.
rm -f "$root"/etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -C box -f "$root/etc/ssh/ssh_host_ed25519_key"
cat >"$root/etc/ssh/sshd_config.d/10-cutover-test.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
UseDNS no
EOF

mkfs.ext4 -q -F -L root -E lazy_itable_init=1,lazy_journal_init=1 -d "$root" "$work/disk.raw" 8G >&2
cp "$stage1/vmlinuz" "$work/vmlinuz"
cp "$root/etc/ssh/ssh_host_ed25519_key.pub" "$work/host_key.pub"
mkdir -p "$image"
mv "$work/disk.raw" "$work/vmlinuz" "$work/client_key" "$work/client_key.pub" "$work/host_key.pub" "$image/"
echo "vm image: built $image ($(du -h "$image/disk.raw" | cut -f1) used of 8 GiB)" >&2
echo "$image"
