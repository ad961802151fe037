#!/usr/bin/env bash
# The demo command: builds cutover and runs `cutover demo`, a full blue/green cycle of the
# bundled demo app under live traffic, on this machine's Docker engine with a private nginx
# on a loopback port. Installs nginx (and compose v1) with apt when missing.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    missing+=(docker-compose)
fi
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "installing: ${missing[*]}"
    sudo_cmd=(); [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    # Keep the package from starting a system nginx on :80; the demo runs its own.
    policy_created=""
    if [[ $(id -u) -eq 0 && ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
    [[ -z "$policy_created" ]] || rm -f /usr/sbin/policy-rc.d
fi

cargo build --release --locked -p cutover
exec target/release/cutover demo "$@"
