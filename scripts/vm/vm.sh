#!/usr/bin/env bash
# Boots, reboots and stops the test VM: a 1 GiB, 2-CPU QEMU guest (software emulation: this
# machine has no usable KVM) of the image scripts/vm/image.sh builds.
#
#   scripts/vm/vm.sh start RUN_DIR    boot a fresh sparse copy of the image; waits
#                                     (bounded) for sshd; writes RUN_DIR/env, ssh_config,
#                                     known_hosts; a hung boot fails with the serial log tail
#   scripts/vm/vm.sh reboot RUN_DIR   reboot the guest and wait for sshd again
#   scripts/vm/vm.sh stop RUN_DIR     power it off (kills QEMU by its pid file; bounded)
#
# RUN_DIR/env (shell syntax): VM_SSH_PORT, VM_HTTP_PORT (host loopback ports forwarded to the
# guest's 22 and 80), VM_SSH_CONFIG (for `ssh -F` / CUTOVER_SSH_CONFIG: Host `box`, user
# admin, the image's key, the image's pinned host key), VM_PID, VM_SERIAL_LOG.
#   CUTOVER_VM_BOOT_TIMEOUT   seconds to wait for sshd (default 240)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cmd=${1:?usage: vm.sh start|reboot|stop RUN_DIR}
run=${2:?usage: vm.sh start|reboot|stop RUN_DIR}
boot_timeout=${CUTOVER_VM_BOOT_TIMEOUT:-240}

vm_ssh() {
    ssh -F "$run/ssh_config" -o ConnectTimeout=10 -o BatchMode=yes box "$@"
}

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

pick_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 40000))
        port_free "$p" && { echo "$p"; return 0; }
    done
    echo "no free loopback port found" >&2
    return 1
}

serial_tail() {
    echo "--- last 40 lines of the VM's serial log ($run/serial.log):" >&2
    tail -n 40 "$run/serial.log" 2>/dev/null | sed 's/\r$//' >&2 || true
}

qemu_alive() { [[ -f "$run/qemu.pid" ]] && kill -0 "$(cat "$run/qemu.pid")" 2>/dev/null; }

# Waits until `ssh box true` works, bounded; fails with the serial log tail.
wait_for_sshd() {
    local what=$1 start=$SECONDS
    while ! vm_ssh true 2>/dev/null; do
        if ! qemu_alive; then
            echo "vm: QEMU exited while waiting for sshd ($what)" >&2
            serial_tail
            return 1
        fi
        if (( SECONDS - start >= boot_timeout )); then
            echo "vm: sshd did not answer within ${boot_timeout}s ($what)" >&2
            serial_tail
            return 1
        fi
        sleep 2
    done
    echo "vm: sshd up after $((SECONDS - start))s ($what)" >&2
}

stop() {
    qemu_alive || { rm -f "$run/qemu.pid"; return 0; }
    local pid
    pid=$(cat "$run/qemu.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$run/qemu.pid"
    echo "vm: stopped (pid $pid)" >&2
}

start() {
    command -v qemu-system-x86_64 >/dev/null || { echo "vm: qemu-system-x86_64 is not installed" >&2; return 1; }
    local image
    image=$(bash "$here/image.sh")
    mkdir -p "$run"
    stop
    rm -f "$run/disk.raw" "$run/serial.log"
    # The image stays pristine: every run boots its own sparse copy (~600 MB of data, seconds;
    # no qemu-img needed).
    cp --sparse=always "$image/disk.raw" "$run/disk.raw"
    install -m 0600 "$image/client_key" "$run/client_key"
    local attempt ssh_port http_port
    for attempt in 1 2 3; do
        ssh_port=$(pick_port)
        http_port=$(pick_port)
        [[ "$ssh_port" != "$http_port" ]] || continue
        if qemu-system-x86_64 -accel tcg,thread=multi -smp 2 -m 1024 \
            -kernel "$image/vmlinuz" \
            -append "root=/dev/nvme0n1 rw console=ttyS0 net.ifnames=1 systemd.show_status=1" \
            -drive "file=$run/disk.raw,if=none,id=root,format=raw,discard=unmap" \
            -device nvme,drive=root,serial=root \
            -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$ssh_port-:22,hostfwd=tcp:127.0.0.1:$http_port-:80" \
            -device virtio-net-pci,netdev=net0 \
            -display none -monitor none -serial "file:$run/serial.log" \
            -pidfile "$run/qemu.pid" -daemonize 2>"$run/qemu.err"; then
            break
        fi
        # Most likely a port taken between the check and QEMU's bind: try others.
        echo "vm: QEMU did not start (attempt $attempt): $(cat "$run/qemu.err")" >&2
        [[ $attempt -lt 3 ]] || return 1
    done
    cat >"$run/ssh_config" <<EOF
Host box 127.0.0.1
  HostName 127.0.0.1
  Port $ssh_port
  User admin
  IdentityFile $run/client_key
  IdentitiesOnly yes
  UserKnownHostsFile $run/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  ServerAliveInterval 5
  ServerAliveCountMax 6
EOF
    echo "[127.0.0.1]:$ssh_port $(cut -d' ' -f1,2 "$image/host_key.pub")" >"$run/known_hosts"
    cat >"$run/env" <<EOF
VM_SSH_PORT=$ssh_port
VM_HTTP_PORT=$http_port
VM_SSH_CONFIG=$run/ssh_config
VM_PID=$(cat "$run/qemu.pid")
VM_SERIAL_LOG=$run/serial.log
VM_IMAGE=$image
EOF
    echo "vm: booting (pid $(cat "$run/qemu.pid"), ssh 127.0.0.1:$ssh_port, http 127.0.0.1:$http_port)" >&2
    wait_for_sshd boot || { stop; return 1; }
}

reboot() {
    local boot_id
    boot_id=$(vm_ssh cat /proc/sys/kernel/random/boot_id)
    vm_ssh sudo -n systemctl reboot >/dev/null 2>&1 || true
    local start=$SECONDS
    # Wait for the old system to go away (a new boot id), then for sshd.
    while true; do
        local now
        now=$(vm_ssh cat /proc/sys/kernel/random/boot_id 2>/dev/null || true)
        [[ -n "$now" && "$now" != "$boot_id" ]] && break
        if (( SECONDS - start >= boot_timeout )); then
            echo "vm: the VM did not come back within ${boot_timeout}s after reboot" >&2
            serial_tail
            return 1
        fi
        qemu_alive || { echo "vm: QEMU exited during reboot" >&2; serial_tail; return 1; }
        sleep 2
    done
    echo "vm: rebooted in $((SECONDS - start))s" >&2
}

case "$cmd" in
    start) start ;;
    reboot) reboot ;;
    stop) stop ;;
    *) echo "usage: vm.sh start|reboot|stop RUN_DIR" >&2; exit 2 ;;
esac
