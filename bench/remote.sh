#!/usr/bin/env bash
# The --host benchmark: a deploy through SSH (`cutover --host box deploy`) against the same
# deploy run on the box itself, same app, same box, same nginx, alternating; plus the TCP
# connections each remote deploy opens (sshd's own log of accepted connections).
#
#   bench/remote.sh [--cycles N]
#
#   --cycles N   remote/local deploy pairs (default 5); each deploy switches color
#
# The "box" is this machine: a private sshd on a free loopback port (its own config, host key
# and authorized_keys in a temp dir, LogLevel VERBOSE), the user cutover-box (created if
# missing, in the docker group), its own nginx in a prefix it owns. Needs root, sshd
# (openssh-server), docker with the demo images, nginx, python3. Everything it starts is
# removed on exit. Prints a markdown table; raw numbers go to bench/results/remote.json.
# The set-up it shares with run.sh (nginx, the project's cutover.yml, the build) is
# bench/lib.sh.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CYCLES=5
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cycles) CYCLES=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "remote.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
BOX_USER=cutover-box
DEPLOY_LIMIT_S=120

[[ $(id -u) -eq 0 ]] || { echo "remote.sh needs root (box user, sshd)" >&2; exit 1; }
need docker nginx python3 ssh ssh-keygen sshd runuser
demo_images
build_release

# ---- the box -------------------------------------------------------------------------------
log "box: user $BOX_USER, sshd, nginx"
id "$BOX_USER" >/dev/null 2>&1 || useradd -m -s /bin/sh "$BOX_USER"
usermod -p '*' -aG docker "$BOX_USER"
box_home=$(getent passwd "$BOX_USER" | cut -d: -f6)
v2_plugin=${DOCKER_CONFIG:-$HOME/.cache/cutover-test/docker-config}/cli-plugins/docker-compose
if [[ -e "$v2_plugin" ]]; then
    mkdir -p "$box_home/.docker/cli-plugins"
    cmp -s "$v2_plugin" "$box_home/.docker/cli-plugins/docker-compose" \
        || cp -L "$v2_plugin" "$box_home/.docker/cli-plugins/docker-compose"
    chown -R "$BOX_USER" "$box_home/.docker"
fi

root=$(mktemp -d /tmp/cutover-bench-remote.XXXXXX)
chmod 0755 "$root"
project="cutover-bench-remote-$$"
sshd_pid=""
cleanup() {
    if [[ -n "$sshd_pid" ]]; then kill "$sshd_pid" 2>/dev/null || true; fi
    if [[ -f "$root/box/nginx/nginx.pid" ]]; then
        kill -QUIT "$(cat "$root/box/nginx/nginx.pid")" 2>/dev/null || true
    fi
    remove_compose_project "$project"
    sleep 0.2
    rm -rf "$root"
}
trap cleanup EXIT

read -r ssh_port blue green nginx_port < <(free_ports 4)
(cd "$root" && ssh-keygen -q -t ed25519 -N '' -f host_key && ssh-keygen -q -t ed25519 -N '' -f client_key)
cp "$root/client_key.pub" "$root/authorized_keys"
mkdir -p "$root/box/data" "$root/box/state" /run/sshd
cat >"$root/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $root/host_key
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile $root/authorized_keys
PidFile $root/sshd.pid
AllowUsers $BOX_USER
LogLevel VERBOSE
SetEnv XDG_DATA_HOME=$root/box/data XDG_STATE_HOME=$root/box/state PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin DOCKER_CONFIG=$box_home/.docker
EOF
echo "[127.0.0.1]:$ssh_port $(cut -d' ' -f1,2 "$root/host_key.pub")" >"$root/known_hosts"
cat >"$root/ssh_config" <<EOF
Host box
  HostName 127.0.0.1
  Port $ssh_port
  User $BOX_USER
  IdentityFile $root/client_key
  IdentitiesOnly yes
  UserKnownHostsFile $root/known_hosts
  GlobalKnownHostsFile /dev/null
EOF
/usr/sbin/sshd -f "$root/sshd_config" -E "$root/sshd.log"
for _ in $(seq 100); do [[ -s "$root/sshd.pid" ]] && break; sleep 0.05; done
sshd_pid=$(cat "$root/sshd.pid")
export CUTOVER_SSH_CONFIG=$root/ssh_config

# ---- the project (here) ------------------------------------------------------------------
prefix=$root/box/nginx
mkdir -p "$root/local"
{
    demo_project_yml "$project" 1000 "$blue" "$green" "$prefix" "$nginx_port" 30s
    printf 'remote:\n  host: box\n  dir: %s\n' "$root/box/project"
} >"$root/local/cutover.yml"
(cd "$root/local" && "$BIN" render --out rendered >/dev/null)
write_nginx_conf "$prefix"
cp "$root/local/rendered/nginx-site.conf" "$prefix/site.conf"
cp "$root/local/rendered/service-url.inc" "$prefix/service-url.inc"
chown -R "$BOX_USER" "$root/box"
nginx_in "$prefix"
runuser -u "$BOX_USER" -- /usr/sbin/nginx "${NGINX[@]:1}"

connections() { grep -c 'Connection from' "$root/sshd.log" || true; }

remote_deploy() { # image -> prints "seconds connections"
    local before after t0 t1
    before=$(connections)
    t0=$(now)
    (cd "$root/local" && timeout "$DEPLOY_LIMIT_S" "$BIN" deploy --image "$1" </dev/null >"$root/out.json" 2>"$root/err.txt") \
        || { cat "$root/err.txt" >&2; exit 1; }
    t1=$(now)
    after=$(connections)
    echo "$(python3 -c "print(f'{$t1-$t0:.3f}')") $((after - before))"
}

# The binary the first remote deploy installed (one file, named by its sha256).
box_bin() { find "$root/box/data/cutover/bin" -maxdepth 1 -name 'cutover-*' | sort | head -n1; }

local_deploy() { # image -> prints seconds (on the box, as the box user, no SSH)
    local t0 t1 bin
    bin=$(box_bin)
    t0=$(now)
    timeout "$DEPLOY_LIMIT_S" runuser -u "$BOX_USER" -- env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
        HOME="$box_home" DOCKER_CONFIG="$box_home/.docker" XDG_STATE_HOME="$root/box/state" \
        "$bin" -C "$root/box/project/current" deploy --image "$1" </dev/null >/dev/null 2>"$root/err.txt" \
        || { cat "$root/err.txt" >&2; exit 1; }
    t1=$(now)
    python3 -c "print(f'{$t1-$t0:.3f}')"
}

# ---- measure --------------------------------------------------------------------------------
log "first remote deploy (uploads the binary)"
read -r first_s first_conns < <(remote_deploy cutover-demo:v1)
first_upload=$(grep -o 'install .*' "$root/err.txt" | head -n1 || true)
echo "    ${first_s}s, $first_conns connection(s): $first_upload" >&2

remote_s=(); local_s=(); conns=(); connect_ms=(); sync_ms=()
for i in $(seq "$CYCLES"); do
    log "cycle $i/$CYCLES: remote deploy v2, then local deploy v1"
    read -r s c < <(remote_deploy cutover-demo:v2)
    remote_s+=("$s"); conns+=("$c")
    connect_ms+=("$(sed -nE 's/.*✓ connect +([0-9.]+)(ms|s).*/\1 \2/p' "$root/err.txt" | awk '{print ($2=="s") ? $1*1000 : $1}')")
    sync_ms+=("$(sed -nE 's/.*✓ sync +([0-9.]+)(ms|s).*/\1 \2/p' "$root/err.txt" | awk '{print ($2=="s") ? $1*1000 : $1}')")
    grep -q 'already installed' "$root/err.txt" || { echo "the binary was uploaded again" >&2; exit 1; }
    l=$(local_deploy cutover-demo:v1)
    local_s+=("$l")
    echo "    remote ${s}s ($c connection(s)), local ${l}s" >&2
done

log "status: remote vs local, 10 each"
status_remote=(); status_local=()
for _ in $(seq 10); do
    t0=$(now); (cd "$root/local" && "$BIN" status --json </dev/null >/dev/null 2>&1); t1=$(now)
    status_remote+=("$(python3 -c "print(f'{$t1-$t0:.3f}')")")
    t0=$(now)
    runuser -u "$BOX_USER" -- env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="$box_home" \
        DOCKER_CONFIG="$box_home/.docker" XDG_STATE_HOME="$root/box/state" "$(box_bin)" -C "$root/box/project/current" status --json >/dev/null 2>&1
    t1=$(now)
    status_local+=("$(python3 -c "print(f'{$t1-$t0:.3f}')")")
done

mkdir -p bench/results
python3 - "$first_s" "$first_conns" "${#remote_s[@]}" "${remote_s[@]}" "${local_s[@]}" "${conns[@]}" \
    "${connect_ms[@]}" "${sync_ms[@]}" "${status_remote[@]}" "${status_local[@]}" <<'PY'
import json, os, platform, statistics as st, subprocess, sys
a = sys.argv[1:]
first_s, first_conns, n = float(a[0]), int(a[1]), int(a[2])
rest = a[3:]
take = lambda k: [float(x) for x in rest[:k]]
remote = take(n); rest = rest[n:]
local = take(n); rest = rest[n:]
conns = [int(x) for x in rest[:n]]; rest = rest[n:]
connect = take(n); rest = rest[n:]
sync = take(n); rest = rest[n:]
s_remote = take(10); rest = rest[10:]
s_local = take(10)
med = st.median
def rng(xs, unit="s", scale=1):
    return f"{med(xs)*scale:.2f} {unit} ({min(xs)*scale:.2f} – {max(xs)*scale:.2f})"
extra = [r - l for r, l in zip(remote, local)]
load = os.getloadavg()
rows = [
    ("remote deploy (`--host`, binary installed), wall", "", rng(remote)),
    ("the same deploy run on the box, wall", "", rng(local)),
    ("remote − local, per pair", "≤ 0.5 s", rng(extra) + (" PASS" if med(extra) <= 0.5 else " **MISS**")),
    ("of which: connect + inspect the box (one SSH handshake)", "", f"{med(connect):.0f} ms"),
    ("of which: project sync (tar stream)", "", f"{med(sync):.0f} ms"),
    ("TCP connections per remote deploy (sshd `Connection from`)", "1", f"{max(conns)} (every deploy: {sorted(set(conns))})" + (" PASS" if max(conns) == 1 else " **MISS**")),
    ("first remote deploy, incl. uploading the binary", "", f"{first_s:.2f} s ({first_conns} connection)"),
    ("`status --json`: remote / on the box (median of 10)", "", f"{med(s_remote)*1000:.0f} ms / {med(s_local)*1000:.0f} ms"),
]
md = ["| measure | target | result |", "| --- | --- | --- |"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
md.append("")
md.append(f"{n} pairs, boot 1 s, compose as detected; load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs.")
print("\n".join(md))
json.dump(dict(remote_s=remote, local_s=local, extra_s=extra, connections=conns, connect_ms=connect,
               sync_ms=sync, first_s=first_s, first_connections=first_conns,
               status_remote_s=s_remote, status_local_s=s_local, loadavg=load,
               ssh=subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()),
          open("bench/results/remote.json", "w"), indent=1)
PY
