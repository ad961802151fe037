#!/usr/bin/env bash
# Build the demo app as a static binary and make local images `cutover-demo:<tag>` from it.
#
#   scripts/demo-image.sh [--selftest] [--repo NAME] [--target TRIPLE] [TAG...]
#                                                      (default: cutover-demo v1 v2, this machine's arch)
#
# The Docker engine we test on has no registry, so nothing can be pulled: each image is a
# single-file root filesystem (/app) brought in with `docker import`, which needs no builder
# and no base image. Each image bakes `VERSION=<tag>` so v1 and v2 answer differently.
#
# Idempotent: an image whose label `cutover.demo.sha256` matches the binary and whose
# VERSION matches its tag is left alone. Image refs go to stdout, progress to stderr.
# Honours CARGO_TARGET_DIR. `--selftest` runs each image on a loopback port, checks `/`, `/health`,
# `POST /echo` and the `/ws` handshake, then `docker stop`s it: exit 0 promptly (SIGTERM handling).
# `--target aarch64-unknown-linux-gnu` on an x86_64 machine builds in Debian's cross
# toolchain (scripts/cross-cargo.sh) and imports a linux/arm64 image (for an ARM box, where
# `cutover demo` runs it); its selftest runs the image's /app under qemu-user
# (qemu-aarch64, or qemu-aarch64-static) on a loopback port and checks `/` and `/health` the same way.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
host_target="$(uname -m)-unknown-linux-gnu"
target=$host_target
repo=cutover-demo
label=cutover.demo.sha256

selftest=0
tags=()
next_is_repo=0
next_is_target=0
for arg in "$@"; do
    if [[ $next_is_target -eq 1 ]]; then
        case "$arg" in
            x86_64-unknown-linux-gnu|aarch64-unknown-linux-gnu) target=$arg ;;
            *) echo "demo-image.sh: --target is x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu, not $arg" >&2; exit 2 ;;
        esac
        next_is_target=0; continue
    fi
    if [[ $next_is_repo -eq 1 ]]; then
        [[ "$arg" =~ ^[a-z0-9][a-z0-9._-]{0,127}$ ]] || { echo "demo-image.sh: not a repository name: $arg" >&2; exit 2; }
        repo=$arg; next_is_repo=0; continue
    fi
    case "$arg" in
        --selftest) selftest=1 ;;
        --repo) next_is_repo=1 ;;
        --target) next_is_target=1 ;;
        -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "demo-image.sh: unknown option $arg" >&2; exit 2 ;;
        *)
            if [[ ! "$arg" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
                echo "demo-image.sh: not a valid image tag: $arg" >&2; exit 2
            fi
            tags+=("$arg") ;;
    esac
done
[[ ${#tags[@]} -gt 0 ]] || tags=(v1 v2)

log() { echo "demo-image: $*" >&2; }

# --- the static binary ------------------------------------------------------------------
# RUSTFLAGS with an explicit --target only reach target artifacts (not build scripts or
# proc macros), and land in target/<triple>/, so host builds keep their cache.
target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
if [[ "$target" == "$host_target" ]]; then
    log "building static binary (cargo build --release --target $target)"
    # (CARGO_ENCODED_RUSTFLAGS, even empty, would override RUSTFLAGS: drop it.)
    (cd "$repo_root" && env -u CARGO_ENCODED_RUSTFLAGS \
        RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" cargo build --quiet --release --locked \
        -p cutover-demo-app --target "$target")
    bin="$target_dir/$target/release/cutover-demo-app"
else
    [[ "$host_target" == x86_64-unknown-linux-gnu && "$target" == aarch64-unknown-linux-gnu ]] \
        || { log "no cross toolchain for $target on $(uname -m)"; exit 2; }
    log "building static binary (--target $target in Debian's cross toolchain)"
    # Copied out under the shared cross target directory's lock (scripts/cross-cargo.sh).
    bin_dir=$(mktemp -d)
    trap 'rm -rf "$bin_dir"' EXIT
    bin="$bin_dir/cutover-demo-app"
    env -u CARGO_ENCODED_RUSTFLAGS RUSTFLAGS="-C target-feature=+crt-static" \
        bash "$repo_root/scripts/cross-cargo.sh" --copy "$target/release/cutover-demo-app" "$bin" \
        build --quiet --release --locked -p cutover-demo-app --target "$target" >&2
fi
[[ -x "$bin" ]] || { log "no binary at $bin"; exit 1; }

# Static means: no program interpreter and no dynamic section. `file` says so in words;
# `ldd` prints "not a dynamic executable" (or "statically linked") for such a file.
file_out=$(file -b "$bin")
if [[ "$file_out" != *"statically linked"* && "$file_out" != *"static-pie linked"* ]]; then
    log "binary is not static: $file_out"; exit 1
fi
case "$target" in
    x86_64-*) elf_arch="x86-64"; platform=linux/amd64 ;;
    aarch64-*) elf_arch="ARM aarch64"; platform=linux/arm64 ;;
esac
[[ "$file_out" == *"$elf_arch"* ]] || { log "binary is not an $elf_arch ELF: $file_out"; exit 1; }
if ldd "$bin" 2>&1 | grep -q '=>'; then
    log "ldd lists shared libraries for $bin:"; ldd "$bin" >&2; exit 1
fi
sha=$(sha256sum "$bin" | cut -d' ' -f1)
kind=$(grep -oE 'static-pie linked|statically linked' <<<"$file_out" | head -n1)
log "static binary ok: $bin ($(du -h "$bin" | cut -f1), $kind, ldd: $(ldd "$bin" 2>&1 | xargs)); sha256 ${sha:0:12}"

# --- the images -------------------------------------------------------------------------
ctx=$(mktemp -d)
trap 'rm -rf "$ctx" "${bin_dir:-}"' EXIT
install -m 0755 "$bin" "$ctx/app"
mkdir -m 1777 "$ctx/tmp"
tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -C "$ctx" -cf "$ctx/rootfs.tar" app tmp

# foreign_image REF TAG: a `docker save` tarball of the one-layer image (rootfs.tar) for
# $platform, on stdout.
foreign_image() {
    local dir="$ctx/image-$2"
    rm -rf "$dir" && mkdir -p "$dir"
    python3 - "$ctx/rootfs.tar" "$dir" "$1" "$2" "${platform#linux/}" "$label" "$sha" <<'PY'
import hashlib, json, shutil, sys
layer, out, ref, tag, arch, label, sha = sys.argv[1:]
diff = hashlib.sha256(open(layer, "rb").read()).hexdigest()
shutil.copy(layer, f"{out}/{diff}.tar")
config = {
    "architecture": arch, "os": "linux",
    "config": {"Entrypoint": ["/app"], "ExposedPorts": {"8080/tcp": {}},
               "Env": ["PORT=8080", f"VERSION={tag}"], "Labels": {label: sha}},
    "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff}"]},
    "history": [{"comment": f"cutover demo app {tag}"}],
}
blob = json.dumps(config, sort_keys=True).encode()
name = hashlib.sha256(blob).hexdigest() + ".json"
open(f"{out}/{name}", "wb").write(blob)
json.dump([{"Config": name, "RepoTags": [ref], "Layers": [f"{diff}.tar"]}], open(f"{out}/manifest.json", "w"))
PY
    tar -C "$dir" -cf - .
}

for tag in "${tags[@]}"; do
    ref="$repo:$tag"
    have=$(docker image inspect -f "{{index .Config.Labels \"$label\"}} {{range .Config.Env}}{{.}} {{end}}" "$ref" 2>/dev/null || true)
    if [[ "$have" == "$sha "* && " $have " == *" VERSION=$tag "* ]] \
        && [[ "$(docker image inspect -f '{{.Os}}/{{.Architecture}}' "$ref")" == "$platform" ]]; then
        log "$ref is up to date"
    else
        if [[ "$target" == "$host_target" ]]; then
            docker import \
                --change 'ENTRYPOINT ["/app"]' \
                --change 'EXPOSE 8080' \
                --change "ENV PORT=8080 VERSION=$tag" \
                --change "LABEL $label=$sha" \
                --message "cutover demo app $tag" \
                "$ctx/rootfs.tar" "$ref" >/dev/null
        else
            # `docker import --platform` is ignored by an engine without experimental
            # features: the image would say amd64. A `docker save` layout with its config's
            # architecture set, loaded, says arm64.
            foreign_image "$ref" "$tag" | docker load >/dev/null
        fi
        log "made $ref ($(docker image inspect -f '{{.Size}}' "$ref") bytes)"
    fi
    echo "$ref"
done

# --- optional self test -----------------------------------------------------------------
[[ $selftest -eq 1 ]] || exit 0

# echo_and_ws_ok PORT LABEL: POST /echo answers its body, and GET /ws upgrades with RFC
# 6455's accept value for its example key (the handshake only: curl stops after 1 s).
echo_and_ws_ok() {
    local echo ws
    echo=$(curl -fsS -m 2 --data-binary 'post on a kept connection' "http://127.0.0.1:$1/echo")
    [[ "$echo" == "post on a kept connection" ]] || { log "selftest $2: POST /echo answered '$echo'"; return 1; }
    ws=$(curl -sS -i -m 1 -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
        -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' "http://127.0.0.1:$1/ws" 2>/dev/null || true)
    [[ "$ws" == "HTTP/1.1 101 "* && "$ws" == *"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="* ]] \
        || { log "selftest $2: GET /ws answered '${ws%%$'\r'*}'"; return 1; }
}

# A foreign-arch image does not run on this engine: its /app, taken out of the image, runs
# under qemu-user instead, with the environment the image bakes.
if [[ "$target" != "$host_target" ]]; then
    qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static) \
        || { log "selftest: qemu-aarch64 is not installed (apt: qemu-user)"; exit 1; }
    for tag in "${tags[@]}"; do
        ref="$repo:$tag"
        cid=$(docker create --platform "$platform" "$ref")
        docker cp "$cid:/app" "$ctx/app-$tag" >/dev/null
        docker rm "$cid" >/dev/null
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        env -i PORT="$port" VERSION="$tag" COLOR=selftest "$qemu" "$ctx/app-$tag" >"$ctx/app-$tag.log" 2>&1 &
        app_pid=$!
        trap 'kill "$app_pid" 2>/dev/null || true; rm -rf "$ctx" "${bin_dir:-}"' EXIT
        body=""
        for _ in $(seq 1 100); do
            body=$(curl -fsS -m 2 "http://127.0.0.1:$port/" 2>/dev/null) && break
            sleep 0.1
        done
        [[ "$body" == "version=$tag color=selftest" ]] || { log "selftest $ref (qemu-user): / answered '$body'"; cat "$ctx/app-$tag.log" >&2; exit 1; }
        health=$(curl -fsS -m 2 "http://127.0.0.1:$port/health")
        [[ "$health" == "ok color=selftest version=$tag" ]] || { log "selftest $ref (qemu-user): /health answered '$health'"; exit 1; }
        echo_and_ws_ok "$port" "$ref (qemu-user)" || exit 1
        kill -TERM "$app_pid"
        code=0; wait "$app_pid" || code=$?
        [[ $code -eq 0 ]] || { log "selftest $ref (qemu-user): exit code $code after SIGTERM"; exit 1; }
        log "selftest $ref ok ($platform under qemu-user): /, /health, /echo and /ws answered on 127.0.0.1:$port, SIGTERM -> exit 0"
    done
    exit 0
fi

for tag in "${tags[@]}"; do
    ref="$repo:$tag"
    name="cutover-demo-selftest-$$-$tag"
    cid=$(docker run -d --name "$name" -e COLOR=selftest -p 127.0.0.1::8080 "$ref")
    cleanup_container() { docker rm -f "$name" >/dev/null 2>&1 || true; }
    trap 'cleanup_container; rm -rf "$ctx" "${bin_dir:-}"' EXIT
    port=$(docker port "$cid" 8080/tcp | head -n1 | sed 's/.*://')
    body=""
    for _ in $(seq 1 50); do
        body=$(curl -fsS -m 2 "http://127.0.0.1:$port/" 2>/dev/null) && break
        sleep 0.1
    done
    [[ "$body" == "version=$tag color=selftest" ]] || { log "selftest $ref: / answered '$body'"; exit 1; }
    health=$(curl -fsS -m 2 "http://127.0.0.1:$port/health")
    [[ "$health" == "ok color=selftest version=$tag" ]] || { log "selftest $ref: /health answered '$health'"; exit 1; }
    echo_and_ws_ok "$port" "$ref" || exit 1
    start=$(date +%s%N)
    docker stop -t 10 "$cid" >/dev/null
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
    cleanup_container
    if [[ "$code" != 0 ]]; then log "selftest $ref: exit code $code after docker stop"; exit 1; fi
    if (( ms > 5000 )); then log "selftest $ref: docker stop took ${ms}ms (SIGTERM ignored?)"; exit 1; fi
    log "selftest $ref ok: /, /health, /echo and /ws answered on 127.0.0.1:$port, docker stop -> exit $code in ${ms}ms"
done
